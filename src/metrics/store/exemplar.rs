//! Exemplars: the trace and span id of a sampled request, kept (the last one) beside the
//! counter or histogram bucket it was recorded into, and served in OpenMetrics.
//!
//! The `metrics` facade has no exemplar argument, so the ids travel beside the call: code
//! that records for a sampled request wraps the records in [`with_exemplar`], and the store's
//! counter and histogram cells read the ids from a thread-local while recording (one
//! thread-local read for every record; a lock and a clock read only when ids are set).

use std::{
    cell::Cell,
    fmt::Write as _,
    sync::{Mutex, OnceLock, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use opentelemetry::trace::{SpanId, TraceId};

/// The ids of a sampled span, for the exemplars of what its request records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanIds {
    /// The trace id.
    pub trace_id: TraceId,
    /// The span id.
    pub span_id: SpanId,
}

impl SpanIds {
    /// The ids of `span`'s OpenTelemetry span when it is sampled (`None` for a disabled span,
    /// one without an OpenTelemetry layer, or one that is not sampled). Looks the span's
    /// context up in the subscriber: call it once per span.
    pub fn of(span: &tracing::Span) -> Option<Self> {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        if span.is_disabled() {
            return None;
        }
        let cx = span.context();
        let otel = cx.span();
        let sc = otel.span_context();
        sc.is_sampled().then(|| Self {
            trace_id: sc.trace_id(),
            span_id: sc.span_id(),
        })
    }
}

thread_local! {
    /// The ids set by [`with_exemplar`], with the time it was called (Unix seconds).
    static CURRENT: Cell<Option<(SpanIds, f64)>> = const { Cell::new(None) };
}

/// Runs `f` with `ids` as the exemplar of every counter increment and histogram observation
/// it makes in a [`MetricsRegistry`](crate::metrics::MetricsRegistry) (other recorders ignore
/// them). With `None`, just runs `f`.
///
/// ```
/// use opentelemetry::trace::{SpanId, TraceId};
/// use towerscope::{config::MetricConfig, metrics::{with_exemplar, MetricsRegistry, SpanIds}};
///
/// let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
/// let ids = SpanIds {
///     trace_id: TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
///     span_id: SpanId::from_hex("00f067aa0ba902b7").unwrap(),
/// };
/// metrics::with_local_recorder(&*registry.recorder(), || {
///     with_exemplar(Some(ids), || metrics::counter!("jobs_total").increment(1));
/// });
/// let text = registry.render_openmetrics(&[]).unwrap();
/// assert!(text.contains(
///     r#"jobs_total 1 # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736",span_id="00f067aa0ba902b7"} 1 "#
/// ));
/// ```
pub fn with_exemplar<R>(ids: Option<SpanIds>, f: impl FnOnce() -> R) -> R {
    let Some(ids) = ids else {
        return f();
    };
    struct Restore(Option<(SpanIds, f64)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|current| current.set(self.0));
        }
    }
    // One clock read for every exemplar `f` records.
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let _restore = Restore(CURRENT.with(|current| current.replace(Some((ids, at)))));
    f()
}

/// The ids set by [`with_exemplar`] on this thread, with their time.
fn current() -> Option<(SpanIds, f64)> {
    CURRENT.with(Cell::get)
}

/// One kept exemplar.
#[derive(Debug, Clone, Copy)]
struct Exemplar {
    ids: SpanIds,
    value: f64,
    /// Unix time, seconds.
    at: f64,
}

/// The last exemplar of a counter or bucket, empty until the first.
#[derive(Debug, Default)]
pub(super) struct ExemplarSlot(OnceLock<Mutex<Exemplar>>);

impl ExemplarSlot {
    /// Keeps `value` with the current ids, if any.
    pub(super) fn observe(&self, value: f64) {
        if let Some((ids, at)) = current() {
            self.set(ids, value, at);
        }
    }

    fn set(&self, ids: SpanIds, value: f64, at: f64) {
        let exemplar = Exemplar { ids, value, at };
        let slot = self.0.get_or_init(|| Mutex::new(exemplar));
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = exemplar;
    }

    /// Appends ` # {trace_id="…",span_id="…"} value timestamp` when there is one.
    pub(super) fn push(&self, out: &mut String) {
        let Some(slot) = self.0.get() else { return };
        let e = *slot.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = write!(
            out,
            " # {{trace_id=\"{}\",span_id=\"{}\"}} ",
            e.ids.trace_id, e.ids.span_id
        );
        super::format::push_f64(out, e.value);
        let _ = write!(out, " {:.3}", e.at);
    }

    pub(super) fn heap_bytes(&self) -> usize {
        if self.0.get().is_some() {
            std::mem::size_of::<Mutex<Exemplar>>()
        } else {
            0
        }
    }
}

/// The exemplar slots of a histogram's buckets (`+Inf` last), allocated at the first.
#[derive(Debug, Default)]
pub(super) struct BucketExemplars(OnceLock<Box<[ExemplarSlot]>>);

impl BucketExemplars {
    /// Keeps `value`, observed into bucket `index` of `buckets` (`+Inf` = `buckets`), with the
    /// current ids, if any.
    pub(super) fn observe(&self, index: usize, buckets: usize, value: f64) {
        if let Some((ids, at)) = current() {
            let slots = self
                .0
                .get_or_init(|| (0..=buckets).map(|_| ExemplarSlot::default()).collect());
            if let Some(slot) = slots.get(index) {
                slot.set(ids, value, at);
            }
        }
    }

    /// The slot of bucket `index`, when any exemplar was kept.
    pub(super) fn get(&self, index: usize) -> Option<&ExemplarSlot> {
        self.0.get().and_then(|slots| slots.get(index))
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.0.get().map_or(0, |slots| {
            slots.len() * std::mem::size_of::<ExemplarSlot>()
                + slots.iter().map(ExemplarSlot::heap_bytes).sum::<usize>()
        })
    }
}
