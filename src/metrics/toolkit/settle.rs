//! [`SettleGuard`]: settles a request, call or job exactly once, however it ends.

use std::fmt;

use http::HeaderMap;
use tracing::Span;

/// How a request, call or job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It ran to its end: the response body ended (or was empty), the job's future resolved.
    Complete,
    /// It failed on its own terms: the service returned an error, the body failed mid-stream.
    Error,
    /// It was dropped before its end: the client went away, the job was cancelled.
    Cancelled,
    /// The future or body panicked while it was polled.
    Panicked,
}

/// What settling means to one integration: the metrics it records, the span it ends.
///
/// Implemented by each integration's per-request state; [`SettleGuard`] calls
/// [`settle`](Self::settle) exactly once.
pub trait Settle {
    /// Records the end of the request with `outcome`.
    fn settle(&mut self, outcome: Outcome);

    /// Reads the response head (status, headers, extensions) when the response future of a
    /// [`SettleFuture`](super::SettleFuture) resolves. Defaults to nothing.
    fn on_response<B>(&mut self, response: &http::Response<B>) {
        let _ = response;
    }

    /// Counts a data frame of `len` bytes of the response body of a
    /// [`SettleBody`](super::SettleBody), as it is passed on. Defaults to nothing.
    fn on_data(&mut self, len: usize) {
        let _ = len;
    }

    /// Reads a data frame of the response body of a [`SettleBody`](super::SettleBody) as it
    /// is passed on (gRPC counts the messages in it). Defaults to
    /// [`on_data`](Self::on_data) with its length.
    fn on_data_frame<D: bytes::Buf>(&mut self, data: &D) {
        self.on_data(data.remaining());
    }

    /// Reads the trailers, the last frame of a body (gRPC's `grpc-status`). Called just before
    /// [`settle`](Self::settle) with [`Outcome::Complete`]. Defaults to nothing.
    fn on_trailers(&mut self, trailers: &HeaderMap) {
        let _ = trailers;
    }

    /// A span to enter while the inner future or body is polled. Defaults to none.
    fn span(&self) -> Option<&Span> {
        None
    }

    /// An OpenTelemetry context to make current while the inner future or body is polled (a
    /// call the layer sampled out: spans opened inside follow it). Defaults to none.
    fn context(&self) -> Option<&opentelemetry::Context> {
        None
    }
}

/// Holds a [`Settle`] state from the start of a request to its end, and settles it exactly
/// once: with the outcome it is told, or when dropped unsettled, as
/// [`Cancelled`](Outcome::Cancelled) — or [`Panicked`](Outcome::Panicked) when it is dropped
/// during a [`poll`](Self::poll) (the poll panicked and an outer `catch_unwind` drops us
/// later) or while the thread unwinds.
///
/// ```
/// use towerscope::metrics::toolkit::{Outcome, Settle, SettleGuard};
///
/// struct Seen(Vec<Outcome>);
/// struct Record<'a>(&'a std::cell::RefCell<Seen>);
/// impl Settle for Record<'_> {
///     fn settle(&mut self, outcome: Outcome) {
///         self.0.borrow_mut().0.push(outcome);
///     }
/// }
///
/// let seen = std::cell::RefCell::new(Seen(Vec::new()));
/// let mut guard = SettleGuard::new(Record(&seen));
/// guard.settle(Outcome::Complete);
/// guard.settle(Outcome::Error); // already settled: ignored
/// drop(guard);
/// drop(SettleGuard::new(Record(&seen))); // dropped unsettled
/// assert_eq!(seen.borrow().0, [Outcome::Complete, Outcome::Cancelled]);
/// ```
pub struct SettleGuard<S: Settle> {
    state: Option<S>,
    /// Set while the inner future or body is polled: still set at drop means the poll
    /// panicked.
    polling: bool,
}

impl<S: Settle> SettleGuard<S> {
    /// Starts guarding `state`.
    pub fn new(state: S) -> Self {
        Self {
            state: Some(state),
            polling: false,
        }
    }

    /// The state, until it is settled.
    pub fn state(&mut self) -> Option<&mut S> {
        self.state.as_mut()
    }

    /// Whether the state was settled.
    pub fn is_settled(&self) -> bool {
        self.state.is_none()
    }

    /// Runs one poll of the inner future or body, inside the state's span if it has one; a
    /// panic inside `poll` is settled as [`Outcome::Panicked`] when the guard drops.
    pub fn poll<T>(&mut self, poll: impl FnOnce() -> T) -> T {
        let _entered = self.state.as_ref().and_then(S::span).map(Span::enter);
        let _current = self
            .state
            .as_ref()
            .and_then(S::context)
            .map(|cx| cx.clone().attach());
        self.polling = true;
        let out = poll();
        self.polling = false;
        out
    }

    /// Settles with `outcome`; later calls do nothing.
    pub fn settle(&mut self, outcome: Outcome) {
        if let Some(mut state) = self.state.take() {
            state.settle(outcome);
        }
    }

    /// Reads `trailers` and settles as [`Outcome::Complete`].
    pub fn settle_with_trailers(&mut self, trailers: &HeaderMap) {
        if let Some(state) = self.state.as_mut() {
            state.on_trailers(trailers);
        }
        self.settle(Outcome::Complete);
    }
}

impl<S: Settle> Drop for SettleGuard<S> {
    fn drop(&mut self) {
        if self.state.is_some() {
            let outcome = if self.polling || std::thread::panicking() {
                Outcome::Panicked
            } else {
                Outcome::Cancelled
            };
            self.settle(outcome);
        }
    }
}

impl<S: Settle> fmt::Debug for SettleGuard<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettleGuard")
            .field("settled", &self.state.is_none())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{
        panic::{catch_unwind, AssertUnwindSafe},
        sync::{Arc, Mutex},
    };

    use super::*;

    /// A state that writes down how it was settled.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Recorded(pub(crate) Arc<Mutex<Vec<Outcome>>>);

    impl Recorded {
        pub(crate) fn outcomes(&self) -> Vec<Outcome> {
            self.0.lock().unwrap().clone()
        }
    }

    impl Settle for Recorded {
        fn settle(&mut self, outcome: Outcome) {
            self.0.lock().unwrap().push(outcome);
        }
    }

    #[test]
    fn settles_once_with_the_first_outcome() {
        for outcome in [
            Outcome::Complete,
            Outcome::Error,
            Outcome::Cancelled,
            Outcome::Panicked,
        ] {
            let seen = Recorded::default();
            let mut guard = SettleGuard::new(seen.clone());
            guard.settle(outcome);
            guard.settle(Outcome::Complete);
            assert!(guard.is_settled());
            drop(guard);
            assert_eq!(seen.outcomes(), [outcome]);
        }
    }

    #[test]
    fn a_guard_dropped_unsettled_is_cancelled() {
        let seen = Recorded::default();
        let mut guard = SettleGuard::new(seen.clone());
        assert_eq!(guard.poll(|| 7), 7);
        drop(guard);
        assert_eq!(seen.outcomes(), [Outcome::Cancelled]);
    }

    #[test]
    fn a_panic_inside_a_poll_is_panicked_even_when_caught_outside() {
        let seen = Recorded::default();
        let mut guard = SettleGuard::new(seen.clone());
        let caught = catch_unwind(AssertUnwindSafe(|| guard.poll(|| panic!("handler"))));
        assert!(caught.is_err());
        assert!(seen.outcomes().is_empty(), "not settled until dropped");
        drop(guard);
        assert_eq!(seen.outcomes(), [Outcome::Panicked]);
    }

    #[test]
    fn a_guard_dropped_while_unwinding_is_panicked() {
        let seen = Recorded::default();
        let guard = SettleGuard::new(seen.clone());
        let caught = catch_unwind(AssertUnwindSafe(move || {
            let _guard = guard;
            panic!("job");
        }));
        assert!(caught.is_err());
        assert_eq!(seen.outcomes(), [Outcome::Panicked]);
    }

    #[test]
    fn trailers_are_read_before_completing() {
        #[derive(Default)]
        struct Trailers(Arc<Mutex<Vec<String>>>);
        impl Settle for Trailers {
            fn settle(&mut self, outcome: Outcome) {
                self.0.lock().unwrap().push(format!("{outcome:?}"));
            }
            fn on_trailers(&mut self, trailers: &HeaderMap) {
                let status = trailers["grpc-status"].to_str().unwrap().to_owned();
                self.0.lock().unwrap().push(status);
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut guard = SettleGuard::new(Trailers(seen.clone()));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "5".parse().unwrap());
        guard.settle_with_trailers(&trailers);
        drop(guard);
        assert_eq!(*seen.lock().unwrap(), ["5", "Complete"]);
    }
}
