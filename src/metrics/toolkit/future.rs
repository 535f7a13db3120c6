//! [`SettleFuture`]: a response future that hands its request's guard to the response body.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use http::{Response, StatusCode};
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
    ///   guard into the [`SettleBody`], which settles it when the body ends; a response that
    ///   sends no body (to a `HEAD`, see [`head`](SettleFuture::head), or a 1xx, 204 or 304:
    ///   [`sends_no_body`]) settles as [`Outcome::Complete`] with its head, as the server drops
    ///   such a body unread;
    /// - on a service error, settles it as [`Outcome::Error`];
    /// - dropped before either, the guard settles as cancelled (or panicked).
    pub struct SettleFuture<F, S>
    where
        S: Settle,
    {
        #[pin]
        inner: F,
        guard: Option<SettleGuard<S>>,
        head: bool,
    }
}

/// Whether a response with `status`, to a request that was a `HEAD` (`head`), sends no body:
/// HTTP servers (hyper among them) drop such a body unread (RFC 9110, 6.4.1), so a request
/// settled at the end of its body would look cancelled.
pub fn sends_no_body(head: bool, status: StatusCode) -> bool {
    head || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

impl<F, S: Settle> SettleFuture<F, S> {
    /// Wraps `inner`; with `None`, a pass-through whose body settles nothing.
    pub fn new(inner: F, guard: Option<SettleGuard<S>>) -> Self {
        Self {
            inner,
            guard,
            head: false,
        }
    }

    /// Says whether the request is a `HEAD` (`req.method() == Method::HEAD`): its response is
    /// then settled as complete with the head, as the server never sends (nor polls) its body.
    pub fn head(mut self, head: bool) -> Self {
        self.head = head;
        self
    }
}

impl<F, S: Settle> fmt::Debug for SettleFuture<F, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettleFuture")
            .field("guard", &self.guard)
            .field("head", &self.head)
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
                if sends_no_body(*this.head, res.status()) {
                    if let Some(mut guard) = guard.take() {
                        guard.settle(Outcome::Complete);
                    }
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
    use http::{Response, StatusCode};
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

    fn respond(status: u16, head: bool) -> (Recorded, Response<SettleBody<Full<Bytes>, Recorded>>) {
        let seen = Recorded::default();
        let mut res = Response::new(Full::new(Bytes::from_static(b"{\"errors\":[]}")));
        *res.status_mut() = StatusCode::from_u16(status).unwrap();
        let fut = SettleFuture::new(
            ready(Ok::<_, ()>(res)),
            Some(SettleGuard::new(seen.clone())),
        )
        .head(head);
        (seen, poll_ready(fut).unwrap())
    }

    #[test]
    fn a_response_that_sends_no_body_settles_with_its_head() {
        // A HEAD answered 404 with an error document: the server drops the body unread.
        for (status, head) in [(404, true), (200, true), (204, false), (304, false)] {
            let (seen, res) = respond(status, head);
            assert_eq!(seen.outcomes(), [Outcome::Complete], "{status} head={head}");
            drop(res);
            assert_eq!(seen.outcomes(), [Outcome::Complete], "settled once");
        }
        let (seen, res) = respond(404, false);
        assert!(seen.outcomes().is_empty(), "a GET's 404 body is sent");
        drop(res);
        assert_eq!(seen.outcomes(), [Outcome::Cancelled]);
    }
}
