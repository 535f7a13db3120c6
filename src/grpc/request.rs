//! [`RequestBody`]: the request body of a gRPC call, its messages counted as they pass.

use std::{
    fmt,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use http_body::{Body, Frame, SizeHint};
use metrics::Counter;
use pin_project_lite::pin_project;

use super::frames::MessageFrames;

pin_project! {
    /// Request body of [`GrpcService`](super::GrpcService) and
    /// [`GrpcClientService`](super::GrpcClientService): passes the frames on unchanged and
    /// counts the gRPC messages in them (received by a server, sent by a client) as each
    /// message's last byte goes by. A partial message counts nothing; see the
    /// [module docs](super) for the families.
    pub struct RequestBody<B> {
        #[pin]
        inner: B,
        counting: Option<Counting>,
    }
}

/// Where the messages of a request body are counted.
#[derive(Debug)]
pub(super) struct Counting {
    frames: MessageFrames,
    counter: Option<Counter>,
    /// The call's total, for its span.
    tally: Option<Arc<AtomicU64>>,
}

impl Counting {
    /// Counts into `counter` and `tally`; `None` when both are `None` (nothing to count).
    pub(super) fn new(counter: Option<Counter>, tally: Option<Arc<AtomicU64>>) -> Option<Self> {
        (counter.is_some() || tally.is_some()).then(|| Self {
            frames: MessageFrames::default(),
            counter,
            tally,
        })
    }
}

impl<B> RequestBody<B> {
    /// Wraps `inner`; with `None`, a plain pass-through.
    pub(super) fn new(inner: B, counting: Option<Counting>) -> Self {
        Self { inner, counting }
    }

    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: fmt::Debug> fmt::Debug for RequestBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBody")
            .field("inner", &self.inner)
            .field("counts", &self.counting.is_some())
            .finish()
    }
}

impl<B: Body> Body for RequestBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let (Some(counting), Poll::Ready(Some(Ok(frame)))) = (this.counting.as_mut(), &polled) {
            if let Some(data) = frame.data_ref() {
                let ended = counting.frames.read_buf(data);
                if ended > 0 {
                    if let Some(counter) = &counting.counter {
                        counter.increment(ended);
                    }
                    if let Some(tally) = &counting.tally {
                        tally.fetch_add(ended, Ordering::Relaxed);
                    }
                }
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

#[cfg(test)]
mod tests {
    use std::{collections::VecDeque, task::Waker};

    use bytes::Bytes;
    use http_body_util::BodyExt;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;

    type Frames = VecDeque<Result<Frame<Bytes>, std::io::Error>>;

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

    fn data(bytes: &'static [u8]) -> Result<Frame<Bytes>, std::io::Error> {
        Ok(Frame::data(Bytes::from_static(bytes)))
    }

    #[test]
    fn messages_are_counted_as_they_pass_and_a_failed_one_is_not() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let counter = metrics::with_local_recorder(&recorder, || metrics::counter!("msgs"));
        let tally = Arc::new(AtomicU64::new(0));
        let frames: Frames = [
            // One message whole, the next split over two frames, then a third cut by an error.
            data(&[0, 0, 0, 0, 1, 7, 0, 0]),
            data(&[0, 0, 2, 8]),
            data(&[9, 0, 0, 0, 0, 4, 1]),
            Err(std::io::Error::other("reset")),
        ]
        .into();
        let counting = Counting::new(Some(counter), Some(tally.clone()));
        let mut body = RequestBody::new(Stream(frames), counting);
        let mut cx = Context::from_waker(Waker::noop());
        let mut counts = Vec::new();
        while let Poll::Ready(Some(Ok(_))) = Pin::new(&mut body).poll_frame(&mut cx) {
            counts.push(tally.load(Ordering::Relaxed));
        }
        assert_eq!(counts, [1, 1, 2], "counted at each message's last byte");
        let value = snapshotter.snapshot().into_vec().pop().map(|(.., v)| v);
        assert_eq!(value, Some(DebugValue::Counter(2)));
    }

    #[tokio::test]
    async fn without_counting_the_body_passes_through() {
        let body = RequestBody::new(
            http_body_util::Full::new(Bytes::from_static(b"x")),
            Counting::new(None, None),
        );
        assert!(body.counting.is_none());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "x");
    }
}
