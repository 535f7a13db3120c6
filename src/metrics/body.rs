//! The request guard and the response body that carries it.
//!
//! A request is "in flight" from the moment the service is called until its response body ends.
//! The [`RequestGuard`] is created in [`MetricsService::call`](super::MetricsService), moved into
//! the response future, then into the [`ResponseBody`]. Whichever of them drops it settles the
//! request exactly once:
//!
//! | what happened                                   | code counted            |
//! |-------------------------------------------------|-------------------------|
//! | body reached its end (or was empty)             | the response status     |
//! | body returned an error mid-stream               | the response status     |
//! | service returned an error                       | 500                     |
//! | future or body dropped early (client went away) | 499                     |
//! | handler panicked through the layer              | 500                     |

use std::{
    fmt,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::series::MethodSeries;

/// Status code counted for a request dropped before it finished (nginx's "client closed").
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Tracks one request from the call of the service to the end of its response body.
pub(crate) struct RequestGuard {
    /// The series whose in-flight gauge this request incremented.
    inflight: Arc<MethodSeries>,
    /// The series the duration and total go to, when the response overrides the operation.
    settled_on: Option<Arc<MethodSeries>>,
    start: Instant,
    status: u16,
    done: bool,
    /// Set while the inner future or body is being polled: still set at drop means the poll
    /// panicked (a panic caught by an outer `catch_unwind` drops us later, not while unwinding).
    polling: bool,
}

impl RequestGuard {
    pub(crate) fn start(series: Arc<MethodSeries>) -> Self {
        series.inflight().increment(1.0);
        Self {
            inflight: series,
            settled_on: None,
            start: Instant::now(),
            status: CLIENT_CLOSED_REQUEST,
            done: false,
            polling: false,
        }
    }

    pub(crate) fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    /// Sends the duration and total to `operation` (a handler's override on the response).
    pub(crate) fn settle_on_operation(&mut self, operation: &crate::operation::OperationId) {
        self.settled_on = self.inflight.sibling(operation);
    }

    /// Records the request as finished with `code`; later calls do nothing.
    pub(crate) fn finish(&mut self, code: u16) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let elapsed = self.start.elapsed().as_secs_f64();
        self.inflight.inflight().decrement(1.0);
        let series = self.settled_on.as_ref().unwrap_or(&self.inflight);
        series.duration().record(elapsed);
        series.count(code);
    }

    /// Marks the start (`true`) and end (`false`) of a poll of the inner future or body.
    pub(crate) fn set_polling(&mut self, polling: bool) {
        self.polling = polling;
    }

    /// Finishes with the response status.
    pub(crate) fn complete(&mut self) {
        self.finish(self.status);
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let code = if self.polling || std::thread::panicking() {
            500
        } else {
            CLIENT_CLOSED_REQUEST
        };
        self.finish(code);
    }
}

impl fmt::Debug for RequestGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestGuard")
            .field("status", &self.status)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// Response body of [`MetricsService`](super::MetricsService): ends the request's
    /// measurement when the inner body ends, fails or is dropped.
    pub struct ResponseBody<B>
    where
        B: Body,
    {
        #[pin]
        inner: B,
        guard: Option<RequestGuard>,
    }

    impl<B> PinnedDrop for ResponseBody<B>
    where
        B: Body,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(guard) = this.guard.as_mut() {
                // hyper drops a body without polling it to `None` once `is_end_stream` is true:
                // that is a complete response, not an abandoned one.
                if this.inner.is_end_stream() {
                    guard.complete();
                }
            }
        }
    }
}

impl<B: Body> ResponseBody<B> {
    pub(crate) fn new(inner: B, guard: Option<RequestGuard>) -> Self {
        Self { inner, guard }
    }
}

impl<B: Body + fmt::Debug> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if let Some(guard) = this.guard.as_mut() {
            guard.set_polling(true);
        }
        let polled = this.inner.as_mut().poll_frame(cx);
        if let Some(guard) = this.guard.as_mut() {
            guard.set_polling(false);
            match &polled {
                Poll::Ready(None) | Poll::Ready(Some(Err(_))) => guard.complete(),
                Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => guard.complete(),
                _ => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
