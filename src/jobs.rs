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
//!   (summary with the registry's quantiles), where `type` is the job name, registered under
//!   the `?comp=jobservice` component.
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
//! counted under `type="_overflow"` (their spans keep the real name).
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
//! let jobs = Jobs::new(&registry, "harbor_jobservice_");
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

use crate::text::capped;
use std::{
    any::Any,
    collections::HashMap,
    fmt,
    future::Future,
    panic::{self, AssertUnwindSafe},
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock, PoisonError, RwLock,
    },
    task::{Context, Poll},
    time::Instant,
};

use http::HeaderValue;
use metrics::{
    Counter, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::PrometheusRecorder;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use pin_project_lite::pin_project;
use tracing::{field::Empty, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    metrics::{MetricsRegistry, OVERFLOW_OPERATION},
    request_id::{self, RequestId},
};

/// The `?comp=` component the job families are registered under.
pub const COMPONENT: &str = "jobservice";

/// Default cap on distinct job names with their own series.
pub const DEFAULT_MAX_JOB_TYPES: usize = 1000;

/// Longest failure message recorded as the span's status description, in bytes.
pub const MAX_STATUS_DESCRIPTION: usize = 1024;

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

// ---------------------------------------------------------------------------------------------
// Outcomes

/// How a job ended; the `status` label and the span's `job.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// The job's future resolved to a successful outcome.
    Success,
    /// The job's future resolved to a failed outcome, or panicked.
    Fail,
    /// The job's future was dropped before it completed: the job was cancelled.
    Stop,
}

impl JobStatus {
    /// All statuses, in label order.
    pub const ALL: [JobStatus; 3] = [JobStatus::Success, JobStatus::Fail, JobStatus::Stop];

    /// The label value: `success`, `fail` or `stop` (Harbor's words).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Fail => "fail",
            Self::Stop => "stop",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a job's future resolves to: a success or a failure.
///
/// Implemented for `Result<T, E>` (failed when `Err`, described by `E`'s `Display`) and for
/// `()` (always a success). Implement it for your own outcome type:
///
/// ```
/// use towerscope::jobs::JobOutcome;
///
/// enum Replication { Done, Skipped, Failed(String) }
///
/// impl JobOutcome for Replication {
///     fn is_failure(&self) -> bool {
///         matches!(self, Replication::Failed(_))
///     }
///     fn failure_message(&self) -> Option<String> {
///         match self {
///             Replication::Failed(why) => Some(why.clone()),
///             _ => None,
///         }
///     }
/// }
/// assert!(Replication::Failed("registry down".into()).is_failure());
/// assert!(!Replication::Skipped.is_failure() && !Replication::Done.is_failure());
/// ```
pub trait JobOutcome {
    /// Whether the job failed (status `fail`).
    fn is_failure(&self) -> bool;

    /// The failure, for the span's status description. Called only when
    /// [`is_failure`](Self::is_failure) is true. Defaults to none.
    fn failure_message(&self) -> Option<String> {
        None
    }
}

impl<T, E: fmt::Display> JobOutcome for Result<T, E> {
    fn is_failure(&self) -> bool {
        self.is_err()
    }

    fn failure_message(&self) -> Option<String> {
        self.as_ref().err().map(ToString::to_string)
    }
}

impl JobOutcome for () {
    fn is_failure(&self) -> bool {
        false
    }
}

// ---------------------------------------------------------------------------------------------
// Context

/// What a job carries from the request that enqueued it: that request's span context (for
/// the span link) and its request id.
///
/// Capture it where the job is enqueued, with [`capture`](Self::capture). To store it with a
/// job in a database, keep [`to_traceparent`](Self::to_traceparent) and the request id as two
/// strings, or serialize the context with serde (`{"traceparent": ..., "request_id": ...}`,
/// both optional; deserializing ignores an invalid `traceparent` or request id rather than
/// losing the job).
///
/// `tracestate` and baggage are not carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobContext {
    span_context: SpanContext,
    request_id: Option<RequestId>,
}

impl Default for JobContext {
    /// An empty context: no link, no request id (e.g. a periodic job started by a scheduler).
    fn default() -> Self {
        Self {
            span_context: SpanContext::NONE,
            request_id: None,
        }
    }
}

impl JobContext {
    /// The context of the code running now: the current `tracing` span's OpenTelemetry span
    /// context and [`request_id::current`]. Inside a handler behind
    /// [`Telemetry::layer`](crate::Telemetry::layer), that is the request's server span (or a
    /// span inside it) and its `X-Request-ID`. Outside a traced span, the span context is
    /// invalid and the job's span gets no link.
    pub fn capture() -> Self {
        let cx = Span::current().context();
        Self {
            span_context: cx.span().span_context().clone(),
            request_id: request_id::current(),
        }
    }

    /// A context from its parts.
    pub fn new(span_context: SpanContext, request_id: Option<RequestId>) -> Self {
        Self {
            span_context,
            request_id,
        }
    }

    /// Replaces the request id (e.g. one read back from the job's database row).
    pub fn with_request_id(mut self, request_id: RequestId) -> Self {
        self.request_id = Some(request_id);
        self
    }

    /// The span context the job's span links to; invalid when there is none.
    pub fn span_context(&self) -> &SpanContext {
        &self.span_context
    }

    /// The enqueuing request's id, when there was one.
    pub fn request_id(&self) -> Option<&RequestId> {
        self.request_id.as_ref()
    }

    /// The span context as a W3C `traceparent` (`00-{trace id}-{span id}-{flags}`); `None`
    /// when there is no valid span context. Only the sampled flag is kept.
    pub fn to_traceparent(&self) -> Option<String> {
        let sc = &self.span_context;
        if !sc.is_valid() {
            return None;
        }
        let flags = sc.trace_flags() & TraceFlags::SAMPLED;
        Some(format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            flags.to_u8()
        ))
    }

    /// A context (without request id) from a W3C `traceparent`, as written by
    /// [`to_traceparent`](Self::to_traceparent) or received in a header. Follows the W3C
    /// Trace Context rules: lowercase hex, non-zero ids, version `ff` invalid, version `00`
    /// with exactly four fields, later versions with at least four.
    pub fn from_traceparent(traceparent: &str) -> Result<Self, InvalidTraceparent> {
        parse_traceparent(traceparent.trim()).map(|span_context| Self {
            span_context,
            request_id: None,
        })
    }
}

/// A `traceparent` that [`JobContext::from_traceparent`] cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent: {reason}")]
pub struct InvalidTraceparent {
    reason: &'static str,
}

impl InvalidTraceparent {
    /// What is wrong with it.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

fn invalid(reason: &'static str) -> InvalidTraceparent {
    InvalidTraceparent { reason }
}

/// Parses exactly `N` lowercase hex digits into bytes.
fn lower_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

fn parse_traceparent(s: &str) -> Result<SpanContext, InvalidTraceparent> {
    let mut fields = s.split('-');
    let version = fields.next().unwrap_or_default();
    let [version] =
        lower_hex::<1>(version).ok_or(invalid("version is not two lowercase hex digits"))?;
    if version == 0xff {
        return Err(invalid("version ff is forbidden"));
    }
    let (Some(trace_id), Some(span_id), Some(flags)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err(invalid("expected version-traceid-parentid-flags"));
    };
    if version == 0 && fields.next().is_some() {
        return Err(invalid("version 00 has exactly four fields"));
    }
    let trace_id = lower_hex::<16>(trace_id)
        .map(TraceId::from_bytes)
        .ok_or(invalid("trace id is not 32 lowercase hex digits"))?;
    let span_id = lower_hex::<8>(span_id)
        .map(SpanId::from_bytes)
        .ok_or(invalid("parent id is not 16 lowercase hex digits"))?;
    let [flags] = lower_hex::<1>(flags).ok_or(invalid("flags are not two lowercase hex digits"))?;
    if trace_id == TraceId::INVALID {
        return Err(invalid("trace id is all zeros"));
    }
    if span_id == SpanId::INVALID {
        return Err(invalid("parent id is all zeros"));
    }
    Ok(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    ))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

impl serde::Serialize for JobContext {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StoredContext {
            traceparent: self.to_traceparent(),
            request_id: self.request_id.as_ref().map(|id| id.as_str().to_owned()),
        }
        .serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for JobContext {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = StoredContext::deserialize(deserializer)?;
        // Telemetry must never cost a job: a damaged traceparent or id is dropped, not fatal.
        let mut context = stored
            .traceparent
            .and_then(|tp| Self::from_traceparent(&tp).ok())
            .unwrap_or_default();
        context.request_id = stored
            .request_id
            .filter(|id| request_id::is_valid_request_id(id.as_bytes()))
            .and_then(|id| HeaderValue::try_from(id).ok())
            .map(RequestId::new);
        Ok(context)
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// Names and recorder of the two families.
struct Families {
    recorder: Arc<PrometheusRecorder>,
    total: SharedString,
    time: SharedString,
}

/// The handles of one job type: counters of every status, summaries registered on first use.
struct TypeSeries {
    label: SharedString,
    total: [Counter; 3],
    time: [OnceLock<Histogram>; 3],
    families: Arc<Families>,
}

impl TypeSeries {
    fn new(families: Arc<Families>, label: SharedString) -> Self {
        let total = JobStatus::ALL.map(|status| {
            families
                .recorder
                .register_counter(&Self::key(&families.total, &label, status), &METADATA)
        });
        Self {
            label,
            total,
            time: std::array::from_fn(|_| OnceLock::new()),
            families,
        }
    }

    fn key(name: &SharedString, label: &SharedString, status: JobStatus) -> Key {
        Key::from_parts(
            name.clone(),
            vec![
                Label::new("type", label.clone()),
                Label::new("status", SharedString::const_str(status.as_str())),
            ],
        )
    }

    fn record(&self, status: JobStatus, seconds: f64) {
        self.total[status.index()].increment(1);
        self.time[status.index()]
            .get_or_init(|| {
                let key = Self::key(&self.families.time, &self.label, status);
                self.families.recorder.register_histogram(&key, &METADATA)
            })
            .record(seconds);
    }
}

struct JobsInner {
    families: Arc<Families>,
    types: RwLock<HashMap<String, Arc<TypeSeries>, foldhash::fast::RandomState>>,
    overflow: OnceLock<Arc<TypeSeries>>,
    max_types: AtomicUsize,
}

/// Runs jobs instrumented with a `run-job` span and task metrics; see the [module docs](self).
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
        JobFuture {
            inner: future,
            run: Some(Run {
                series: self.series(&info.name),
                span,
                start: Instant::now(),
                outcome: None,
            }),
        }
    }

    /// The handles of job type `name`, registered on first use.
    fn series(&self, name: &str) -> Arc<TypeSeries> {
        let inner = &*self.inner;
        if let Some(series) = inner
            .types
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return series.clone();
        }
        let mut types = inner.types.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = types.get(name) {
            return series.clone();
        }
        if types.len() >= inner.max_types.load(Ordering::Relaxed) {
            drop(types);
            return inner
                .overflow
                .get_or_init(|| {
                    Arc::new(TypeSeries::new(
                        inner.families.clone(),
                        SharedString::const_str(OVERFLOW_OPERATION),
                    ))
                })
                .clone();
        }
        let series = Arc::new(TypeSeries::new(
            inner.families.clone(),
            SharedString::from(name.to_owned()),
        ));
        types.insert(name.to_owned(), series.clone());
        series
    }
}

// ---------------------------------------------------------------------------------------------
// Future

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
    /// The future of an instrumented job, from [`Jobs::run`]: resolves to the job's output.
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
    fn traceparent_parsing_follows_w3c() {
        let ok = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let cx = JobContext::from_traceparent(ok).unwrap();
        assert!(cx.span_context().is_sampled());
        assert!(cx.span_context().is_remote());
        assert_eq!(cx.to_traceparent().as_deref(), Some(ok));
        // Future versions may carry more fields.
        assert!(JobContext::from_traceparent(
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-extra"
        )
        .is_ok());
        for bad in [
            "",
            "00",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333g-01",
            "0-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(JobContext::from_traceparent(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_the_sampled_flag_is_kept() {
        let cx =
            JobContext::from_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03")
                .unwrap();
        assert_eq!(
            cx.to_traceparent().as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
    }

    #[test]
    fn empty_context_has_no_traceparent() {
        assert_eq!(JobContext::default().to_traceparent(), None);
        assert_eq!(JobContext::capture().to_traceparent(), None);
    }

    #[test]
    fn capped_cuts_at_char_boundaries() {
        assert_eq!(capped("héllo", 2), "h");
        assert_eq!(capped("héllo", 3), "hé");
        assert_eq!(capped("abc", 10), "abc");
    }
}
