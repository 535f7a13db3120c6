//! [`JobFuture`]: the instrumented job, and the `Run` guard that records how it ended.

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
use crate::text::capped;

/// One job run: records its status on the span and in the metrics when dropped, so every way
/// the future can end (completion, panic, cancellation) is counted exactly once.
struct Run {
    series: Arc<TypeSeries>,
    span: Span,
    start: Instant,
    /// Set when the job completed or panicked; `None` at drop means it was cancelled.
    outcome: Option<(JobStatus, Option<String>)>,
}

impl Drop for Run {
    fn drop(&mut self) {
        let (status, message) = self.outcome.take().unwrap_or((JobStatus::Stop, None));
        self.span.record("job.status", status.as_str());
        if status == JobStatus::Fail {
            self.span.record("otel.status_code", "ERROR");
            if let Some(message) = message {
                self.span.record(
                    "otel.status_description",
                    capped(&message, MAX_STATUS_DESCRIPTION),
                );
            }
        }
        self.series
            .record(status, self.start.elapsed().as_secs_f64());
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
        run: Option<Run>,
    }
}

impl<F> fmt::Debug for JobFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobFuture")
            .field("finished", &self.run.is_none())
            .finish_non_exhaustive()
    }
}

impl<F> JobFuture<F> {
    /// Starts the clock of one run of `inner`, counted in `series` and recorded on `span`.
    pub(super) fn new(inner: F, series: Arc<TypeSeries>, span: Span) -> Self {
        JobFuture {
            inner,
            run: Some(Run {
                series,
                span,
                start: Instant::now(),
                outcome: None,
            }),
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
        let Some(run) = this.run.as_mut() else {
            // Polled after completion: the inner future decides what that means.
            return this.inner.poll(cx);
        };
        let polled = {
            let _entered = run.span.enter();
            // Cheap when nothing panics; lets a panicking job be counted before unwinding on.
            panic::catch_unwind(AssertUnwindSafe(|| this.inner.as_mut().poll(cx)))
        };
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => {
                run.outcome = Some(if output.is_failure() {
                    (JobStatus::Fail, output.failure_message())
                } else {
                    (JobStatus::Success, None)
                });
                this.run.take();
                Poll::Ready(output)
            }
            Err(payload) => {
                run.outcome = Some((JobStatus::Fail, Some(panic_message(&*payload))));
                this.run.take();
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
}
