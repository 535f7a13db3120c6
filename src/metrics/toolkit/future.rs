//! [`SettleFuture`]: a response future that hands its request's guard to the response body.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use super::{Outcome, Settle, SettleBody, SettleGuard};

pin_project! {
    /// The response future of a layer that settles its requests with a [`SettleGuard`].
    ///
    /// It polls the inner future through the guard (inside the state's span, with panics
    /// detected), then:
    ///
    /// - on a response, lets the state read its head ([`Settle::on_response`]) and moves the
    ///   guard into the [`SettleBody`], which settles it when the body ends;
    /// - on a service error, settles it as [`Outcome::Error`];
    /// - dropped before either, the guard settles as cancelled (or panicked).
    pub struct SettleFuture<F, S>
    where
        S: Settle,
    {
        #[pin]
        inner: F,
        guard: Option<SettleGuard<S>>,
    }
}

impl<F, S: Settle> SettleFuture<F, S> {
    /// Wraps `inner`; with `None`, a pass-through whose body settles nothing.
    pub fn new(inner: F, guard: Option<SettleGuard<S>>) -> Self {
        Self { inner, guard }
    }
}

impl<F, S: Settle> fmt::Debug for SettleFuture<F, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettleFuture")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

impl<F, S, B, E> Future for SettleFuture<F, S>
where
    F: Future<Output = Result<Response<B>, E>>,
    S: Settle,
    B: Body,
{
    type Output = Result<Response<SettleBody<B, S>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let polled = match this.guard.as_mut() {
            Some(guard) => guard.poll(|| this.inner.poll(cx)),
            None => this.inner.poll(cx),
        };
        let result = ready!(polled);
        let mut guard = this.guard.take();
        Poll::Ready(match result {
            Ok(res) => {
                if let Some(state) = guard.as_mut().and_then(SettleGuard::state) {
                    state.on_response(&res);
                }
                Ok(res.map(|body| SettleBody::new(body, guard)))
            }
            Err(err) => {
                if let Some(guard) = guard.as_mut() {
                    guard.settle(Outcome::Error);
                }
                Err(err)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{
        future::{ready, Future},
        pin::pin,
        task::{Context, Poll, Waker},
    };

    use bytes::Bytes;
    use http::Response;
    use http_body_util::Full;

    use super::*;
    use crate::metrics::toolkit::settle::tests::Recorded;

    fn poll_ready<F: Future>(fut: F) -> F::Output {
        match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(out) => out,
            Poll::Pending => panic!("pending"),
        }
    }

    #[test]
    fn a_service_error_is_an_error() {
        let seen = Recorded::default();
        let fut = SettleFuture::new(
            ready(Err::<Response<Full<Bytes>>, _>("down")),
            Some(SettleGuard::new(seen.clone())),
        );
        assert!(poll_ready(fut).is_err());
        assert_eq!(seen.outcomes(), [Outcome::Error]);
    }

    #[test]
    fn the_guard_goes_into_the_body() {
        let seen = Recorded::default();
        let fut = SettleFuture::new(
            ready(Ok::<_, ()>(Response::new(Full::new(Bytes::from_static(
                b"x",
            ))))),
            Some(SettleGuard::new(seen.clone())),
        );
        let res = poll_ready(fut).unwrap();
        assert!(
            seen.outcomes().is_empty(),
            "settled by the body, not the future"
        );
        drop(res);
        assert_eq!(
            seen.outcomes(),
            [Outcome::Cancelled],
            "the body was dropped unread"
        );
    }
}
