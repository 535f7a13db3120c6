//! The call guard and the response body that carries it to the end of the response stream.
//!
//! A call is in flight from the moment the service is called until its response stream ends.
//! The [`CallGuard`] is created in [`GrpcService::call`](super::GrpcService), moved into the
//! response future, then into the [`ResponseBody`]; whichever of them finishes or drops it
//! settles the call exactly once.
//!
//! The cases and the codes they are counted with are in the [module docs](super).

use crate::text::capped;
use std::{
    fmt,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Code;
use tracing::Span;

use super::{
    series::OperationSeries,
    status::{code_from_http, is_server_error, status_in, GRPC_MESSAGE},
};
use crate::metrics::CLIENT_CLOSED_REQUEST;

/// Longest `grpc-message` recorded as a span's status description, in bytes.
const MAX_STATUS_DESCRIPTION: usize = 256;

/// Tracks one call from the call of the service to the end of its response stream.
pub(super) struct CallGuard {
    series: Option<Arc<OperationSeries>>,
    span: Option<Span>,
    start: Instant,
    http_status: u16,
    code: Option<Code>,
    /// The decoded `grpc-message` of a server error, for the span.
    message: Option<String>,
    done: bool,
    /// Set while the inner future or body is polled: still set at drop means it panicked.
    polling: bool,
}

impl CallGuard {
    pub(super) fn start(series: Option<Arc<OperationSeries>>, span: Option<Span>) -> Self {
        if let Some(series) = &series {
            series.start();
        }
        Self {
            series,
            span,
            start: Instant::now(),
            http_status: CLIENT_CLOSED_REQUEST,
            code: None,
            message: None,
            done: false,
            polling: false,
        }
    }

    /// Runs a poll of the inner future or body inside the call's span.
    pub(super) fn poll_inner<T>(&mut self, poll: impl FnOnce() -> T) -> T {
        let _entered = self.span.as_ref().map(Span::enter);
        self.polling = true;
        let out = poll();
        self.polling = false;
        out
    }

    /// Notes the response head: its HTTP status, and `grpc-status` of a trailers-only response.
    pub(super) fn on_response(&mut self, status: StatusCode, headers: &HeaderMap) {
        self.http_status = status.as_u16();
        self.read_status(headers);
    }

    /// Reads the status of the trailers (the last frame) and finishes the call.
    pub(super) fn on_trailers(&mut self, trailers: &HeaderMap) {
        self.read_status(trailers);
        self.complete();
    }

    fn read_status(&mut self, headers: &HeaderMap) {
        let Some(code) = status_in(headers) else {
            return;
        };
        self.code = Some(code);
        if is_server_error(code) && self.span.is_some() {
            self.message = headers.get(GRPC_MESSAGE).map(|v| {
                let text = percent_encoding::percent_decode(v.as_bytes()).decode_utf8_lossy();
                capped(&text, MAX_STATUS_DESCRIPTION).to_owned()
            });
        }
    }

    /// Finishes with the status read so far (or the one the HTTP status implies).
    pub(super) fn complete(&mut self) {
        let status = StatusCode::from_u16(self.http_status).unwrap_or(StatusCode::OK);
        let code = self.code.unwrap_or_else(|| code_from_http(status));
        self.finish(self.http_status, code);
    }

    /// Finishes a call whose body failed mid-stream.
    pub(super) fn fail(&mut self) {
        self.finish(self.http_status, self.code.unwrap_or(Code::Unknown));
    }

    /// Records the call as finished; later calls do nothing.
    pub(super) fn finish(&mut self, http_status: u16, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if let Some(series) = &self.series {
            series.finish(self.start.elapsed().as_secs_f64(), http_status, code);
        }
        if let Some(span) = self.span.take() {
            span.record("rpc.grpc.status_code", code as i64);
            if is_server_error(code) {
                match self.message.take() {
                    Some(message) if !message.is_empty() => {
                        span.record("otel.status_description", message);
                    }
                    _ => {
                        span.record("otel.status_code", "ERROR");
                    }
                }
            }
            // Dropping the span here ends it with the call, not when hyper frees the body.
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if self.polling || std::thread::panicking() {
            self.finish(500, Code::Unknown);
        } else {
            self.finish(CLIENT_CLOSED_REQUEST, Code::Cancelled);
        }
    }
}

impl fmt::Debug for CallGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallGuard")
            .field("http_status", &self.http_status)
            .field("code", &self.code)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// Response body of [`GrpcService`](super::GrpcService): reads `grpc-status` from the
    /// trailers and ends the call's measurement and span when the stream ends, fails or is
    /// dropped.
    pub struct ResponseBody<B>
    where
        B: Body,
    {
        #[pin]
        inner: B,
        guard: Option<CallGuard>,
    }

    impl<B> PinnedDrop for ResponseBody<B>
    where
        B: Body,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(guard) = this.guard.as_mut() {
                // hyper drops a body without polling it once `is_end_stream` is true (a
                // trailers-only response): that call is complete, not cancelled.
                if this.inner.is_end_stream() {
                    guard.complete();
                }
            }
        }
    }
}

impl<B: Body> ResponseBody<B> {
    pub(super) fn new(inner: B, guard: Option<CallGuard>) -> Self {
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

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let Some(guard) = this.guard.as_mut() else {
            return this.inner.poll_frame(cx);
        };
        let polled = guard.poll_inner(|| this.inner.as_mut().poll_frame(cx));
        let finished = match &polled {
            Poll::Pending => false,
            Poll::Ready(Some(Ok(frame))) => match frame.trailers_ref() {
                // Trailers are the last frame: the call is over whether or not hyper polls
                // again.
                Some(trailers) => {
                    guard.on_trailers(trailers);
                    true
                }
                None if this.inner.is_end_stream() => {
                    guard.complete();
                    true
                }
                None => false,
            },
            Poll::Ready(Some(Err(_))) => {
                guard.fail();
                true
            }
            Poll::Ready(None) => {
                guard.complete();
                true
            }
        };
        if finished {
            *this.guard = None;
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
