//! Exemplars: the trace and span id of a sampled request, kept (the last one) beside the
//! counter or histogram bucket it was recorded into, and served in OpenMetrics.
//!
//! The `metrics` facade has no exemplar argument, so the ids travel beside the call: code
//! that records for a sampled request wraps the records in [`with_exemplar`], and the store's
//! counter and histogram cells read the ids from a thread-local while recording (one
//! thread-local read for every record; a clock read per request and a few atomic stores per
//! slot only when ids are set: the slots are sequence locks, never a mutex).

use std::{
    cell::Cell,
    fmt::Write as _,
    sync::{
        atomic::{fence, AtomicU64, Ordering},
        OnceLock,
    },
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
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        if span.is_disabled() {
            return None;
        }
        Self::of_context(&span.context())
    }

    /// The ids of `cx`'s span when it is sampled.
    pub fn of_context(cx: &opentelemetry::Context) -> Option<Self> {
        use opentelemetry::trace::TraceContextExt;
        let span = cx.span();
        let sc = span.span_context();
        sc.is_sampled().then(|| Self {
            trace_id: sc.trace_id(),
            span_id: sc.span_id(),
        })
    }

    /// The ids of the current OpenTelemetry context's span when it is sampled: the server
    /// span behind [`Telemetry::layer`](crate::Telemetry::layer) while its request is
    /// polled, or a `tracing` span entered under an OpenTelemetry layer that makes its context
    /// current (`tracing-opentelemetry` does by default). One thread-local read.
    pub fn current() -> Option<Self> {
        opentelemetry::Context::map_current(Self::of_context)
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
    with_exemplar_at(ids, None, f)
}

/// [`with_exemplar`] with the exemplars' time, `at` (read from the clock when `None`): a
/// request that ends its span at the same moment reads the clock once for both.
pub(crate) fn with_exemplar_at<R>(
    ids: Option<SpanIds>,
    at: Option<SystemTime>,
    f: impl FnOnce() -> R,
) -> R {
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
    let at = at
        .unwrap_or_else(SystemTime::now)
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let _restore = Restore(CURRENT.with(|current| current.replace(Some((ids, at)))));
    f()
}

/// The ids set by [`with_exemplar`] on this thread, with their time.
pub(super) fn current() -> Option<(SpanIds, f64)> {
    CURRENT.with(Cell::get)
}

/// One kept exemplar.
#[derive(Debug, Clone, Copy)]
pub(super) struct Exemplar {
    pub(super) ids: SpanIds,
    pub(super) value: f64,
    /// Unix time, seconds.
    pub(super) at: f64,
}

/// The last exemplar of a counter or bucket: a sequence lock over five words, empty until the
/// first. Recording never waits and never allocates: a writer that finds another one mid-write
/// leaves its exemplar out (the other's is as recent); a reader retries until it reads a whole
/// one.
#[derive(Debug, Default)]
pub(super) struct ExemplarSlot {
    /// Even: stable (0: never written); odd: a write in progress.
    seq: AtomicU64,
    trace_hi: AtomicU64,
    trace_lo: AtomicU64,
    span: AtomicU64,
    value: AtomicU64,
    at: AtomicU64,
}

/// How many times a reader retries a slot that is being written before it leaves the
/// exemplar out of the render (a writer preempted mid-write).
const READ_RETRIES: usize = 1024;

impl ExemplarSlot {
    /// An empty slot.
    pub(super) const fn new() -> Self {
        Self {
            seq: AtomicU64::new(0),
            trace_hi: AtomicU64::new(0),
            trace_lo: AtomicU64::new(0),
            span: AtomicU64::new(0),
            value: AtomicU64::new(0),
            at: AtomicU64::new(0),
        }
    }

    /// Keeps `value` with the current ids, if any.
    pub(super) fn observe(&self, value: f64) {
        if let Some((ids, at)) = current() {
            self.set(ids, value, at);
        }
    }

    pub(super) fn set(&self, ids: SpanIds, value: f64, at: f64) {
        let seq = self.seq.load(Ordering::Relaxed);
        if seq & 1 == 1
            || self
                .seq
                .compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let trace = u128::from_be_bytes(ids.trace_id.to_bytes());
        self.trace_hi.store((trace >> 64) as u64, Ordering::Relaxed);
        self.trace_lo.store(trace as u64, Ordering::Relaxed);
        self.span.store(
            u64::from_be_bytes(ids.span_id.to_bytes()),
            Ordering::Relaxed,
        );
        self.value.store(value.to_bits(), Ordering::Relaxed);
        self.at.store(at.to_bits(), Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
    }

    /// The kept exemplar, if there is one.
    pub(super) fn get(&self) -> Option<Exemplar> {
        for _ in 0..READ_RETRIES {
            let before = self.seq.load(Ordering::Acquire);
            if before == 0 {
                return None;
            }
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let trace = u128::from(self.trace_hi.load(Ordering::Relaxed)) << 64
                | u128::from(self.trace_lo.load(Ordering::Relaxed));
            let span = self.span.load(Ordering::Relaxed);
            let value = f64::from_bits(self.value.load(Ordering::Relaxed));
            let at = f64::from_bits(self.at.load(Ordering::Relaxed));
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == before {
                return Some(Exemplar {
                    ids: SpanIds {
                        trace_id: TraceId::from_bytes(trace.to_be_bytes()),
                        span_id: SpanId::from_bytes(span.to_be_bytes()),
                    },
                    value,
                    at,
                });
            }
        }
        None
    }

    /// Appends ` # {trace_id="…",span_id="…"} value timestamp` when there is one.
    pub(super) fn push(&self, out: &mut String) {
        let Some(e) = self.get() else { return };
        let _ = write!(
            out,
            " # {{trace_id=\"{}\",span_id=\"{}\"}} ",
            e.ids.trace_id, e.ids.span_id
        );
        super::format::push_f64(out, e.value);
        let _ = write!(out, " {:.3}", e.at);
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
        self.0
            .get()
            .map_or(0, |slots| slots.len() * std::mem::size_of::<ExemplarSlot>())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{atomic::AtomicBool, Arc};

    use super::*;

    fn ids(n: u64) -> SpanIds {
        SpanIds {
            trace_id: TraceId::from(u128::from(n) << 64 | u128::from(n)),
            span_id: SpanId::from(n),
        }
    }

    #[test]
    fn an_empty_slot_has_no_exemplar_and_a_set_one_reads_back() {
        let slot = ExemplarSlot::default();
        assert!(slot.get().is_none());
        let mut out = String::new();
        slot.push(&mut out);
        assert!(out.is_empty());
        slot.set(ids(7), 0.25, 1_733_070_000.5);
        let e = slot.get().unwrap();
        assert_eq!((e.ids, e.value, e.at), (ids(7), 0.25, 1_733_070_000.5));
    }

    #[test]
    fn concurrent_writers_and_readers_never_see_a_torn_exemplar() {
        let slot = Arc::new(ExemplarSlot::default());
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (1..=3u64)
            .map(|w| {
                let (slot, stop) = (slot.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = w << 32;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        slot.set(ids(n), n as f64, n as f64);
                    }
                })
            })
            .collect();
        // Read while the writers write, until enough whole exemplars were seen (the writer
        // threads may start late on a busy machine: the bound is a liveness bound only).
        let mut seen = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while seen < 100_000 && std::time::Instant::now() < deadline {
            match slot.get() {
                Some(e) => {
                    let n = u64::from_be_bytes(e.ids.span_id.to_bytes());
                    assert_eq!(e.ids, ids(n), "ids from two writes");
                    assert_eq!(
                        (e.value, e.at),
                        (n as f64, n as f64),
                        "value from another write"
                    );
                    seen += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(
            seen, 100_000,
            "whole exemplars read while the writers wrote"
        );
    }
}
