//! Background jobs (Harbor's jobservice): a span and task metrics per job run, linked to the
//! request that enqueued the job.
//!
//! When a request enqueues a job, [`JobContext::capture`] takes the request's span context and
//! `X-Request-ID`; the context is `Clone + Send + 'static` and travels with the job, or is
//! stored beside it as a W3C `traceparent` string ([`JobContext::to_traceparent`],
//! [`JobContext::from_traceparent`]) or through serde. When a worker starts the job,
//! [`Jobs::run`] wraps its future:
//!
//! - a `tracing` span `run-job` (a new trace: the job is *linked* to the enqueuing request's
//!   span, not parented to it, as a job may run long after the request ended), with the fields
//!   `job.id`, `job.name`, `job.periodic`, `request_id` (the enqueuer's) and `job.status`;
//! - `{prefix}task_total{type,status}` (counter) and `{prefix}task_process_time_seconds{type,status}`
//!   (summary with the registry's quantiles), where `type` is the job name, and
//!   `{prefix}task_type_overflow_total` (counter: runs labelled `type="_overflow"`), served
//!   under the `?comp=jobservice` component.
//!
//! The status is `success` when the future resolves to a successful [`JobOutcome`] (`Ok(_)`,
//! `()`), `fail` when it resolves to a failed one (`Err(_)`) or panics (the panic is then
//! resumed), and `stop` when the future is dropped before it completes (the job was
//! cancelled). A failed job's span has status `ERROR` with the error (or panic) message as
//! description, capped at [`MAX_STATUS_DESCRIPTION`] bytes.
//!
//! The process time is measured from [`Jobs::run`] to the end of the job: call `run` when the
//! worker starts the job, not when it is queued. Counters of all three statuses exist from the
//! first run of a job type (so `increase(...{status="fail"}[5m])` is 0, not absent); a
//! summary series appears with its first observation. At most [`DEFAULT_MAX_JOB_TYPES`]
//! distinct job names get their own series (see [`Jobs::with_max_types`]); further names are
//! counted under `type="_overflow"` (their spans keep the real name), and each such run in
//! `task_type_overflow_total`, scraped as 0 from the first run on.
//!
//! # Construction
//!
//! [`Jobs::new`] records into a [`MetricsRegistry`](crate::metrics::MetricsRegistry) and serves
//! the families under `?comp=jobservice`; [`Jobs::with_recorder`] records into any `metrics`
//! recorder (a `DebuggingRecorder` in tests, another exporter). Then [`Jobs::with_prefix`] and
//! [`Jobs::with_max_types`]. [`Jobs::from_telemetry`] takes the registry of a started
//! `Telemetry` and the prefix `{metric.namespace}_{metric.subsystem}_`: Harbor's jobservice
//! runs with `namespace: harbor, subsystem: jobservice`, hence `harbor_jobservice_task_total`.
//!
//! # Example
//!
//! ```
//! use towerscope::{
//!     config::MetricConfig,
//!     jobs::{JobContext, JobInfo, Jobs},
//!     metrics::MetricsRegistry,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
//! let jobs = Jobs::new(&registry).with_prefix("harbor_jobservice_");
//!
//! // In the handler that enqueues the job (here outside any request: an empty context).
//! let context = JobContext::capture();
//! let stored = context.to_traceparent(); // Some("00-...") inside a traced request
//!
//! // In the worker, later.
//! let context = stored
//!     .and_then(|tp| JobContext::from_traceparent(&tp).ok())
//!     .unwrap_or_default();
//! let info = JobInfo { id: "42".into(), name: "GARBAGE_COLLECTION".into(), periodic: false };
//! let out = jobs.run(info, context, async { Ok::<_, std::io::Error>(7) }).await;
//! assert_eq!(out.unwrap(), 7);
//!
//! let text = registry.render_components(&["jobservice"]).unwrap();
//! let series = r#"harbor_jobservice_task_total{type="GARBAGE_COLLECTION",status="success"}"#;
//! let line = text.lines().find(|l| l.starts_with(series)).unwrap();
//! assert_eq!(line, format!("{series} 1"));
//! # }
//! ```
//!
//! [`examples/jobs.rs`](https://github.com/towerscope/towerscope/blob/main/examples/jobs.rs)
//! (`cargo run --example jobs`): a context captured in a request, a job that succeeds and one
//! that fails, their `run-job` spans and `task_*` series.
#![doc = include_str!("../docs/job_queues.md")]

mod context;
mod future;
mod outcome;
mod queue;
mod runner;
mod series;

pub use context::{InvalidTraceparent, JobContext};
pub use future::JobFuture;
pub use outcome::{JobOutcome, JobStatus};
pub use queue::{JobQueues, QueuedJob, RunningJob, ScheduledJob, DEFAULT_MAX_POOLS};
pub use runner::{JobInfo, Jobs};

/// The `?comp=` component the job families are registered under.
pub const COMPONENT: &str = "jobservice";

/// Default cap on distinct job names with their own series.
pub const DEFAULT_MAX_JOB_TYPES: usize = 1000;

/// Longest failure message recorded as the span's status description, in bytes.
pub const MAX_STATUS_DESCRIPTION: usize = 1024;
