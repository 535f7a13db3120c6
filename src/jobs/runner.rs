//! [`Jobs`]: runs a job's future as a `run-job` span counted in the task metrics.

use std::{
    fmt,
    future::Future,
    sync::{Arc, OnceLock},
};

use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{
    series::{self, JobTable},
    JobContext, JobFuture, JobOutcome, COMPONENT, DEFAULT_MAX_JOB_TYPES,
};
use crate::metrics::{
    toolkit::{self, RecorderRef},
    MetricsRegistry,
};

/// Runs jobs instrumented with a `run-job` span and task metrics; see the [module docs](super).
///
/// Built with [`new`](Self::new) (a [`MetricsRegistry`]),
/// [`with_recorder`](Self::with_recorder) (any `metrics` recorder) or
/// [`from_telemetry`](Self::from_telemetry) (a started `Telemetry`), then the `with_*`
/// setters, which only store their value. The families are described (and served under
/// `?comp=jobservice`) and the series table is built once, at the first [`run`](Self::run);
/// the clones of a `Jobs` share that table and its metric handles.
#[derive(Clone)]
pub struct Jobs {
    recorder: RecorderRef,
    /// The registry the families are served from under [`COMPONENT`].
    registry: Option<MetricsRegistry>,
    prefix: Arc<str>,
    max_types: usize,
    table: Arc<OnceLock<JobTable>>,
}

impl fmt::Debug for Jobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jobs")
            .field("recorder", &self.recorder)
            .field("prefix", &self.prefix)
            .field("max_types", &self.max_types)
            .field("built", &self.table.get().is_some())
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
    /// Jobs recording `task_total`, `task_process_time_seconds` and
    /// `task_type_overflow_total` into `registry`, described, and served under the
    /// `jobservice` component; no prefix (see [`with_prefix`](Self::with_prefix)), at most
    /// [`DEFAULT_MAX_JOB_TYPES`] job types.
    pub fn new(registry: &MetricsRegistry) -> Self {
        // The component exists from now on, so that `?comp=jobservice` is served (empty)
        // before the first run; its families are added when the table is built.
        registry.register_component(COMPONENT, std::iter::empty::<&str>());
        let mut jobs = Self::with_recorder_ref(RecorderRef::from(registry));
        jobs.registry = Some(registry.clone());
        jobs
    }

    /// Jobs recording into `recorder` (described there, served under no `?comp=`): for tests
    /// with `metrics_util`'s `DebuggingRecorder`, or for other exporters.
    pub fn with_recorder(recorder: Arc<dyn metrics::Recorder + Send + Sync>) -> Self {
        Self::with_recorder_ref(RecorderRef::Shared(recorder))
    }

    fn with_recorder_ref(recorder: RecorderRef) -> Self {
        Self {
            recorder,
            registry: None,
            prefix: Arc::from(""),
            max_types: DEFAULT_MAX_JOB_TYPES,
            table: Arc::default(),
        }
    }

    /// A setter changed what the table is built from: the next run builds a new one.
    fn changed(mut self) -> Self {
        self.table = Arc::default();
        self
    }

    /// Puts `prefix` before the family names: `{prefix}task_total`, ... Typically the
    /// configuration's `{namespace}_{subsystem}_` (`harbor_jobservice_` for Harbor's
    /// jobservice). Defaults to none.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self.changed()
    }

    /// Sets the cap on distinct job names with their own series; further names share
    /// `type="_overflow"` and are counted in `task_type_overflow_total`. Defaults to
    /// [`DEFAULT_MAX_JOB_TYPES`].
    pub fn with_max_types(mut self, max_types: usize) -> Self {
        self.max_types = max_types;
        self.changed()
    }

    /// The series table, built (and its families described and served) on first use.
    fn table(&self) -> &JobTable {
        self.table.get_or_init(|| {
            let families = series::families(&self.prefix);
            toolkit::declare(
                &self.recorder,
                self.registry.as_ref(),
                &[COMPONENT],
                &families,
            );
            JobTable::new(self.recorder.clone(), &families, self.max_types)
        })
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
        JobFuture::new(future, self.table().series(&info.name), span)
    }
}

#[cfg(test)]
mod tests {
    use std::{panic::AssertUnwindSafe, pin::pin};

    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

    use super::*;

    fn info(name: &str) -> JobInfo {
        JobInfo {
            id: "1".into(),
            name: name.into(),
            periodic: false,
        }
    }

    /// Every counter as `name{type,status}` (or the bare name) with its value, sorted.
    fn counters(snapshotter: &Snapshotter) -> Vec<(String, u64)> {
        let mut counters: Vec<_> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| {
                let DebugValue::Counter(n) = value else {
                    return None;
                };
                let key = key.key();
                let labels: Vec<_> = key.labels().map(|l| l.value().to_owned()).collect();
                let name = match labels.as_slice() {
                    [] => key.name().to_owned(),
                    labels => format!("{}{{{}}}", key.name(), labels.join(",")),
                };
                Some((name, n))
            })
            .collect();
        counters.sort();
        counters
    }

    #[tokio::test]
    async fn jobs_record_into_any_recorder_with_every_status_and_the_overflow_counter() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let jobs = Jobs::with_recorder(Arc::new(recorder))
            .with_prefix("jobservice_")
            .with_max_types(1);
        assert!(
            counters(&snapshotter).is_empty(),
            "nothing before the first run"
        );
        jobs.run(info("SCAN"), JobContext::default(), async {})
            .await;
        let failed = jobs
            .clone()
            .run(info("SCAN"), JobContext::default(), async {
                Err::<(), _>("no")
            });
        assert_eq!(failed.await, Err("no"));
        drop(jobs.run(info("SCAN"), JobContext::default(), async {}));
        jobs.run(info("GC"), JobContext::default(), async {}).await;
        fn collect_garbage() -> Result<(), String> {
            panic!("out of disk")
        }
        let mut panicked = pin!(jobs.run(info("GC"), JobContext::default(), async {
            collect_garbage()
        }));
        let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let waker = std::task::Waker::noop();
            let _ = panicked
                .as_mut()
                .poll(&mut std::task::Context::from_waker(waker));
        }));
        assert!(caught.is_err(), "the panic goes on");
        jobs.run(info("GC"), JobContext::default(), async {}).await;

        assert_eq!(
            counters(&snapshotter),
            [
                ("jobservice_task_total{SCAN,fail}".to_owned(), 1),
                ("jobservice_task_total{SCAN,stop}".to_owned(), 1),
                ("jobservice_task_total{SCAN,success}".to_owned(), 1),
                ("jobservice_task_total{_overflow,fail}".to_owned(), 1),
                ("jobservice_task_total{_overflow,stop}".to_owned(), 0),
                ("jobservice_task_total{_overflow,success}".to_owned(), 2),
                ("jobservice_task_type_overflow_total".to_owned(), 3),
            ]
        );
    }

    #[test]
    fn setters_only_store_and_the_table_is_built_once_for_every_clone() {
        let registry = MetricsRegistry::new(&Default::default()).unwrap();
        let jobs = Jobs::new(&registry).with_prefix("old_").with_prefix("new_");
        let served = registry.render_components(&[COMPONENT]).unwrap();
        assert_eq!(served, "", "served, empty, before the first run");
        let clone = jobs.clone();
        drop(jobs.run(info("A"), JobContext::default(), async {}));
        assert!(std::ptr::eq(jobs.table(), clone.table()));
        assert_eq!(registry.components(), [COMPONENT]);
        let text = registry.render_components(&[COMPONENT]).unwrap();
        assert!(text.contains("new_task_type_overflow_total 0"), "{text}");
        assert!(text.contains("# HELP new_task_total "), "{text}");
        assert!(!text.contains("old_"), "{text}");
    }
}
