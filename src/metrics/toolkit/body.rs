//! [`SettleBody`]: a response body that settles its request when the stream ends.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::{Outcome, Settle, SettleGuard};

pin_project! {
    /// A response body carrying a [`SettleGuard`] to the end of the stream.
    ///
    /// | what happened | outcome |
    /// |---|---|
    /// | the inner body returned `None`, or `is_end_stream` after a frame | [`Complete`](Outcome::Complete) |
    /// | a frame of trailers (the last frame; read with [`Settle::on_trailers`]) | [`Complete`](Outcome::Complete) |
    /// | the inner body returned an error | [`Error`](Outcome::Error) |
    /// | dropped with `is_end_stream` true (hyper does not poll such a body to `None`) | [`Complete`](Outcome::Complete) |
    /// | dropped before its end (the client went away) | [`Cancelled`](Outcome::Cancelled) |
    /// | a poll of the inner body panicked | [`Panicked`](Outcome::Panicked) |
    ///
    /// The state is settled, and so dropped (ending a span it holds), as soon as the stream
    /// ends, not when the server frees the body.
    pub struct SettleBody<B, S>
    where
        B: Body,
        S: Settle,
    {
        #[pin]
        inner: B,
        guard: Option<SettleGuard<S>>,
    }

    impl<B, S> PinnedDrop for SettleBody<B, S>
    where
        B: Body,
        S: Settle,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(guard) = this.guard.as_mut() {
                if this.inner.is_end_stream() {
                    guard.settle(Outcome::Complete);
                }
            }
        }
    }
}

impl<B: Body, S: Settle> SettleBody<B, S> {
    /// Wraps `inner`; with `None`, a plain pass-through.
    pub fn new(inner: B, guard: Option<SettleGuard<S>>) -> Self {
        Self { inner, guard }
    }
}

impl<B: Body + fmt::Debug, S: Settle> fmt::Debug for SettleBody<B, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettleBody")
            .field("inner", &self.inner)
            .field("settled", &self.guard.is_none())
            .finish()
    }
}

impl<B: Body, S: Settle> Body for SettleBody<B, S> {
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
        let polled = guard.poll(|| this.inner.as_mut().poll_frame(cx));
        let ended = match &polled {
            Poll::Pending => false,
            Poll::Ready(None) => {
                guard.settle(Outcome::Complete);
                true
            }
            Poll::Ready(Some(Err(_))) => {
                guard.settle(Outcome::Error);
                true
            }
            Poll::Ready(Some(Ok(frame))) => match frame.trailers_ref() {
                Some(trailers) => {
                    guard.settle_with_trailers(trailers);
                    true
                }
                None => {
                    if let (Some(data), Some(state)) = (frame.data_ref(), guard.state()) {
                        state.on_data_frame(data);
                    }
                    if this.inner.is_end_stream() {
                        guard.settle(Outcome::Complete);
                    }
                    guard.is_settled()
                }
            },
        };
        if ended {
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

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        panic::{catch_unwind, AssertUnwindSafe},
        task::Waker,
    };

    use bytes::Bytes;
    use http::HeaderMap;
    use http_body_util::{BodyExt, Full};

    use super::*;
    use crate::metrics::toolkit::settle::tests::Recorded;

    type Frames = VecDeque<Result<Frame<Bytes>, std::io::Error>>;

    /// A body that yields `frames`, then `None`, and never says it ended before.
    struct Stream(Frames);

    impl Body for Stream {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    fn stream(frames: Frames) -> Stream {
        Stream(frames)
    }

    fn body<B: Body>(inner: B) -> (SettleBody<B, Recorded>, Recorded) {
        let seen = Recorded::default();
        (
            SettleBody::new(inner, Some(SettleGuard::new(seen.clone()))),
            seen,
        )
    }

    type Polled<B> = Poll<Option<Result<Frame<<B as Body>::Data>, <B as Body>::Error>>>;

    fn poll_once<B: Body + Unpin>(b: &mut B) -> Polled<B> {
        Pin::new(b).poll_frame(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn ends_on_is_end_stream_after_the_last_frame() {
        let (mut b, seen) = body(Full::new(Bytes::from_static(b"hello")));
        assert!(matches!(poll_once(&mut b), Poll::Ready(Some(Ok(_)))));
        assert_eq!(seen.outcomes(), [Outcome::Complete], "settled before None");
        drop(b);
        assert_eq!(seen.outcomes(), [Outcome::Complete]);
    }

    #[test]
    fn ends_on_none() {
        let frames: Frames = [Ok(Frame::data(Bytes::from_static(b"a")))].into();
        let (mut b, seen) = body(stream(frames));
        assert!(matches!(poll_once(&mut b), Poll::Ready(Some(Ok(_)))));
        assert!(seen.outcomes().is_empty());
        assert!(matches!(poll_once(&mut b), Poll::Ready(None)));
        assert_eq!(seen.outcomes(), [Outcome::Complete]);
    }

    #[test]
    fn an_error_mid_stream_is_an_error() {
        let frames: Frames = [
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Err(std::io::Error::other("disk")),
        ]
        .into();
        let (mut b, seen) = body(stream(frames));
        let _ = poll_once(&mut b);
        assert!(matches!(poll_once(&mut b), Poll::Ready(Some(Err(_)))));
        drop(b);
        assert_eq!(seen.outcomes(), [Outcome::Error]);
    }

    #[test]
    fn dropped_before_its_end_is_cancelled() {
        let frames: Frames = [
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Ok(Frame::data(Bytes::from_static(b"b"))),
        ]
        .into();
        let (mut b, seen) = body(stream(frames));
        let _ = poll_once(&mut b);
        drop(b);
        assert_eq!(seen.outcomes(), [Outcome::Cancelled]);
    }

    #[test]
    fn an_empty_body_dropped_unpolled_is_complete() {
        let (b, seen) = body(http_body_util::Empty::<Bytes>::new());
        drop(b);
        assert_eq!(seen.outcomes(), [Outcome::Complete]);
    }

    #[test]
    fn trailers_end_the_stream() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let frames: Frames = [
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Ok(Frame::trailers(trailers)),
        ]
        .into();
        let (mut b, seen) = body(stream(frames));
        let _ = poll_once(&mut b);
        let _ = poll_once(&mut b);
        assert_eq!(seen.outcomes(), [Outcome::Complete]);
    }

    #[test]
    fn a_panicking_body_is_panicked() {
        struct Boom;
        impl Body for Boom {
            type Data = Bytes;
            type Error = std::io::Error;
            fn poll_frame(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
                panic!("body")
            }
        }
        let (b, seen) = body(Boom);
        let mut b = Box::pin(b);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            let _ = b
                .as_mut()
                .poll_frame(&mut Context::from_waker(Waker::noop()));
        }));
        assert!(caught.is_err());
        drop(b);
        assert_eq!(seen.outcomes(), [Outcome::Panicked]);
    }

    #[tokio::test]
    async fn a_body_without_a_guard_passes_through() {
        let b: SettleBody<_, Recorded> = SettleBody::new(Full::new(Bytes::from_static(b"x")), None);
        assert_eq!(b.collect().await.unwrap().to_bytes(), "x");
    }
}
