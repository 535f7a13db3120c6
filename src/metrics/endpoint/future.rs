//! [`EndpointFuture`]: a render slot, the refresh hook, then the render on the blocking pool.

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    panic::{catch_unwind, AssertUnwindSafe},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use tokio::{
    sync::{AcquireError, OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
};

use super::{negotiate::Answer, plain, refresh_failed, refresh_panicked, rendered, Refresh};
use crate::metrics::registry::{MetricsRegistry, UnknownComponent};

/// Waiting for a render slot.
type SlotFuture = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

pin_project_lite::pin_project! {
    /// Response future of [`MetricsEndpoint`]: a render slot, the refresh hook, then the render.
    pub struct EndpointFuture<R: Refresh = ()> {
        // `None` once the slot is held (or for an answer that needs none).
        slot: Option<SlotFuture>,
        // `None` once it is done, failed or panicked (it is never polled again).
        #[pin]
        refresh: Option<R::Future>,
        state: State,
    }
}

/// What a render needs.
pub(super) struct Render {
    registry: MetricsRegistry,
    components: Vec<String>,
    head: bool,
    answer: Answer,
    /// The render slot, given back when the render ends.
    slot: Option<OwnedSemaphorePermit>,
}

impl Render {
    /// A render of `components` (every family when empty) of `registry`.
    pub(super) fn new(
        registry: MetricsRegistry,
        components: Vec<String>,
        head: bool,
        answer: Answer,
    ) -> Self {
        Self {
            registry,
            components,
            head,
            answer,
            slot: None,
        }
    }

    fn run(self) -> Result<Bytes, UnknownComponent> {
        let names: Vec<&str> = self.components.iter().map(String::as_str).collect();
        self.registry
            .render_body(&names, self.answer.format, self.answer.names)
    }
}

enum State {
    Ready(Option<Response<Full<Bytes>>>),
    /// Waiting for the refresh; the render starts when it is done.
    Refreshing(Option<Render>),
    Rendering {
        task: JoinHandle<Result<Bytes, UnknownComponent>>,
        head: bool,
        answer: Answer,
    },
}

impl<R: Refresh> EndpointFuture<R> {
    /// Waits for a slot of `renders`, then for `refresh`, then runs `render`.
    pub(super) fn render(
        renders: Arc<Semaphore>,
        refresh: Option<R::Future>,
        render: Render,
    ) -> Self {
        Self {
            slot: Some(Box::pin(renders.acquire_owned())),
            refresh,
            state: State::Refreshing(Some(render)),
        }
    }

    pub(super) fn ready(res: Response<Full<Bytes>>) -> Self {
        Self {
            slot: None,
            refresh: None,
            state: State::Ready(Some(res)),
        }
    }
}

impl<R: Refresh> fmt::Debug for EndpointFuture<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointFuture").finish_non_exhaustive()
    }
}

impl<R: Refresh> Future for EndpointFuture<R> {
    type Output = Result<Response<Full<Bytes>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(slot) = this.slot.as_mut() {
            let held = std::task::ready!(slot.as_mut().poll(cx)).ok();
            *this.slot = None;
            if let State::Refreshing(Some(render)) = this.state {
                render.slot = held;
            }
        }
        if let Some(refresh) = this.refresh.as_mut().as_pin_mut() {
            match catch_unwind(AssertUnwindSafe(|| refresh.poll(cx))) {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(Ok(()))) => {}
                Ok(Poll::Ready(Err(err))) => refresh_failed(err.into()),
                Err(panic) => refresh_panicked(&*panic),
            }
            this.refresh.set(None);
        }
        loop {
            match this.state {
                State::Ready(res) => {
                    return Poll::Ready(Ok(res.take().unwrap_or_else(|| {
                        plain(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "polled after completion\n",
                        )
                    })))
                }
                State::Refreshing(render) => {
                    let Some(render) = render.take() else {
                        *this.state = State::Ready(None);
                        continue;
                    };
                    let (head, answer) = (render.head, render.answer);
                    *this.state = match tokio::runtime::Handle::try_current() {
                        Ok(rt) => State::Rendering {
                            task: rt.spawn_blocking(move || render.run()),
                            head,
                            answer,
                        },
                        // Outside a tokio runtime there are no async workers to protect.
                        Err(_) => State::Ready(Some(rendered(render.run(), head, answer))),
                    };
                }
                State::Rendering { task, head, answer } => {
                    let res = match std::task::ready!(Pin::new(task).poll(cx)) {
                        Ok(result) => rendered(result, *head, *answer),
                        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n"),
                    };
                    *this.state = State::Ready(None);
                    return Poll::Ready(Ok(res));
                }
            }
        }
    }
}
