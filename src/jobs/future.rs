//! [`JobFuture`]: the instrumented job, settled by a [`SettleGuard`] holding its [`JobRun`].

use std::{
    any::Any,
    fmt,
    future::Future,
    panic::{self, AssertUnwindSafe},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use pin_project_lite::pin_project;
use tracing::Span;

use super::{series::TypeSeries, JobOutcome, JobStatus, MAX_STATUS_DESCRIPTION};
use crate::{
    metrics::{
        toolkit::{Outcome, Settle, SettleGuard},
        with_exemplar, SpanIds,
    },
    text::capped,
};

/// One job run: what its [`SettleGuard`] records, exactly once, however the future ends.
///
/// | how the job ended | [`Outcome`] | `status` |
/// |---|---|---|
/// | resolved to a successful [`JobOutcome`] | `Complete` | `success` |
/// | resolved to a failed one | `Complete` | `fail`, with its message |
/// | panicked while polled | `Panicked` | `fail`, with the panic message |
/// | dropped before it completed | `Cancelled` | `stop` |
pub(super) struct JobRun {
    series: Arc<TypeSeries>,
    span: Span,
    start: Instant,
    /// Set when the job resolved to a failed outcome or panicked: its message, if any.
    failure: Option<Option<String>>,
}

impl JobRun {
    fn failed(&mut self, message: Option<String>) {
        self.failure = Some(message);
    }
}

impl Settle for JobRun {
    fn settle(&mut self, outcome: Outcome) {
        let status = match outcome {
            Outcome::Complete if self.failure.is_none() => JobStatus::Success,
            Outcome::Complete | Outcome::Error | Outcome::Panicked => JobStatus::Fail,
            Outcome::Cancelled => JobStatus::Stop,
        };
        self.span.record("job.status", status.as_str());
        if status == JobStatus::Fail {
            self.span.record("otel.status_code", "ERROR");
            if let Some(message) = self.failure.take().flatten() {
                self.span.record(
                    "otel.status_description",
                    capped(&message, MAX_STATUS_DESCRIPTION),
                );
            }
        }
        let seconds = self.start.elapsed().as_secs_f64();
        with_exemplar(SpanIds::of(&self.span), || {
            self.series.record(status, seconds)
        });
    }

    fn span(&self) -> Option<&Span> {
        Some(&self.span)
    }
}

impl fmt::Debug for JobRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobRun")
            .field("type", &self.series.label())
            .finish_non_exhaustive()
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("Box<dyn Any>");
    format!("panicked: {message}")
}

pin_project! {
    /// The future of an instrumented job, from [`Jobs::run`](super::Jobs::run): resolves to the
    /// job's output.
    ///
    /// A panic inside the job is counted as `fail` and then resumed; dropping this future
    /// before it completes counts the job as `stop`.
    pub struct JobFuture<F> {
        // Declared first so the job's own state is dropped before the run is counted.
        #[pin]
        inner: F,
        guard: Option<SettleGuard<JobRun>>,
    }
}

impl<F> fmt::Debug for JobFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobFuture")
            .field("finished", &self.guard.is_none())
            .finish_non_exhaustive()
    }
}

impl<F> JobFuture<F> {
    /// Starts the clock of one run of `inner`, counted in `series` and recorded on `span`.
    pub(super) fn new(inner: F, series: Arc<TypeSeries>, span: Span) -> Self {
        JobFuture {
            inner,
            guard: Some(SettleGuard::new(JobRun {
                series,
                span,
                start: Instant::now(),
                failure: None,
            })),
        }
    }
}

impl<F> Future for JobFuture<F>
where
    F: Future,
    F::Output: JobOutcome,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(guard) = this.guard.as_mut() else {
            // Polled after completion: the inner future decides what that means.
            return this.inner.poll(cx);
        };
        // The guard tells a panic as everywhere (it is dropped mid-poll); catching it here
        // only reads its message for the span, before it goes on to the task.
        let polled = panic::catch_unwind(AssertUnwindSafe(|| {
            guard.poll(|| this.inner.as_mut().poll(cx))
        }));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => {
                if let Some(run) = guard.state() {
                    if output.is_failure() {
                        run.failed(output.failure_message());
                    }
                }
                guard.settle(Outcome::Complete);
                *this.guard = None;
                Poll::Ready(output)
            }
            Err(payload) => {
                if let Some(run) = guard.state() {
                    run.failed(Some(panic_message(&*payload)));
                }
                // Dropped mid-poll, the guard settles the run as `Panicked`.
                *this.guard = None;
                panic::resume_unwind(payload)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_cuts_at_char_boundaries() {
        assert_eq!(capped("héllo", 2), "h");
        assert_eq!(capped("héllo", 3), "hé");
        assert_eq!(capped("abc", 10), "abc");
    }

    #[test]
    fn panic_messages_read_str_and_string_payloads() {
        assert_eq!(panic_message(&"out of disk"), "panicked: out of disk");
        assert_eq!(panic_message(&String::from("x")), "panicked: x");
        assert_eq!(panic_message(&7_u8), "panicked: Box<dyn Any>");
    }
}
