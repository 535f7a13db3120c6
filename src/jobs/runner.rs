//! [`Jobs`]: runs a job's future as a `run-job` span counted in the task metrics.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock, RwLock,
    },
};

use metrics::{KeyName, Recorder, SharedString, Unit};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{
    series::{Families, JobsInner},
    JobContext, JobFuture, JobOutcome, COMPONENT, DEFAULT_MAX_JOB_TYPES,
};
use crate::metrics::MetricsRegistry;

/// Runs jobs instrumented with a `run-job` span and task metrics; see the [module docs](super).
///
/// Cloning is cheap and shares the metric handles.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<JobsInner>,
}

impl fmt::Debug for Jobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jobs")
            .field("task_total", &self.inner.families.total)
            .field("task_process_time_seconds", &self.inner.families.time)
            .field("max_types", &self.inner.max_types.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What a job is: the fields of its span and the `type` label.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobInfo {
    /// The job's id (span field `job.id`; never a label).
    pub id: String,
    /// The job's name or kind, e.g. `GARBAGE_COLLECTION` (span field `job.name`, label `type`).
    pub name: String,
    /// Whether the job is a periodic (scheduled) one (span field `job.periodic`).
    pub periodic: bool,
}

impl Jobs {
    /// Registers `{prefix}task_total` and `{prefix}task_process_time_seconds` in `registry`,
    /// described, under the `jobservice` component. `prefix` is typically the
    /// configuration's `{namespace}_{subsystem}_` (`harbor_jobservice_` for Harbor).
    pub fn new(registry: &MetricsRegistry, prefix: &str) -> Self {
        let total = format!("{prefix}task_total");
        let time = format!("{prefix}task_process_time_seconds");
        let recorder = registry.recorder();
        recorder.describe_counter(
            KeyName::from(total.clone()),
            None,
            SharedString::const_str(
                "Finished jobs, by type (job name) and status (success, fail, stop: cancelled).",
            ),
        );
        recorder.describe_histogram(
            KeyName::from(time.clone()),
            Some(Unit::Seconds),
            SharedString::const_str("Job process time in seconds, by type (job name) and status."),
        );
        registry.register_component(COMPONENT, [&total, &time]);
        Self {
            inner: Arc::new(JobsInner {
                families: Arc::new(Families {
                    recorder,
                    total: total.into(),
                    time: time.into(),
                }),
                types: RwLock::new(HashMap::default()),
                overflow: OnceLock::new(),
                max_types: AtomicUsize::new(DEFAULT_MAX_JOB_TYPES),
            }),
        }
    }

    /// Sets the cap on distinct job names with their own series; further names share
    /// `type="_overflow"`. Applies to every clone. Defaults to [`DEFAULT_MAX_JOB_TYPES`].
    pub fn with_max_types(self, max_types: usize) -> Self {
        self.inner
            .max_types
            .store(max_types.max(1), Ordering::Relaxed);
        self
    }

    /// Wraps `future`, the job `info`, as a `run-job` span linked to `context` and counted in
    /// the task metrics when it ends, fails, panics or is dropped.
    pub fn run<F>(&self, info: JobInfo, context: JobContext, future: F) -> JobFuture<F>
    where
        F: Future,
        F::Output: JobOutcome,
    {
        let span = tracing::info_span!(
            target: "towerscope::jobs",
            parent: None,
            "run-job",
            otel.name = "run-job",
            otel.status_code = Empty,
            otel.status_description = Empty,
            job.id = info.id.as_str(),
            job.name = info.name.as_str(),
            job.periodic = info.periodic,
            job.status = Empty,
            request_id = Empty,
        );
        if let Some(id) = context.request_id() {
            span.record("request_id", id.as_str());
        }
        span.add_link(context.span_context);
        JobFuture::new(future, self.inner.series(&info.name), span)
    }
}
