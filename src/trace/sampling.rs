//! Sampling decided by the layer before the server span is built.
//!
//! `tracing-opentelemetry` builds a span — registry slot, builder, attribute strings, start,
//! context attach on every poll — before it asks the sampler, so a request that is sampled out
//! costs nearly what an exported one costs. Behind [`Telemetry::layer`](crate::Telemetry::layer)
//! the [`TraceLayer`](super::TraceLayer) makes the pipeline's decision itself, with the same
//! rule (parent-based, trace-id ratio for new traces):
//!
//! - **sampled**: the span is opened as before and, for a new trace, started while
//!   [`LayerRootSampler`] is told the decision is made, so the ratio is not applied twice;
//! - **sampled out**: the span comes from a callsite with the target [`UNSAMPLED_TARGET`],
//!   which `Telemetry::tracing_layer` filters out of the OpenTelemetry layer (log layers still
//!   see it, with the same fields, so log lines keep their `request_id`), and a context naming
//!   a non-sampled span of the request's trace is made current while the request is polled:
//!   spans opened inside follow it (not sampled), and outgoing calls forward it (`-00`).

use std::cell::Cell;

use opentelemetry::{
    trace::{Link, SpanContext, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState},
    Context, KeyValue,
};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, SamplingResult, ShouldSample,
};

use crate::metrics::SpanIds;

/// Target of the server spans of requests that are sampled out; the OpenTelemetry layer of
/// [`Telemetry::tracing_layer`](crate::Telemetry::tracing_layer) does not see them. A log
/// filter written for `towerscope::http` covers it (targets match by prefix).
pub const UNSAMPLED_TARGET: &str = "towerscope::http::unsampled";

/// The same for the server spans of gRPC calls ([`GrpcLayer`](crate::grpc::GrpcLayer)).
pub const GRPC_UNSAMPLED_TARGET: &str = "towerscope::grpc::unsampled";

/// Whether spans of `target` are server spans the layers sampled out.
pub(crate) fn is_sampled_out(target: &str) -> bool {
    target == UNSAMPLED_TARGET || target == GRPC_UNSAMPLED_TARGET
}

thread_local! {
    /// Set while the layer starts a server span of a new trace it has sampled.
    static DECIDED: Cell<bool> = const { Cell::new(false) };
}

/// The pipeline's root sampler: a span started while the layer says it decided is sampled;
/// any other new trace by trace-id ratio.
#[derive(Debug, Clone)]
pub(crate) struct LayerRootSampler {
    rate: f64,
}

impl LayerRootSampler {
    pub(crate) fn new(rate: f64) -> Self {
        Self { rate }
    }
}

impl ShouldSample for LayerRootSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        if DECIDED.with(|decided| decided.replace(false)) {
            return SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: TraceState::default(),
            };
        }
        Sampler::TraceIdRatioBased(self.rate).should_sample(
            parent_context,
            trace_id,
            name,
            span_kind,
            attributes,
            links,
        )
    }
}

/// The layer's decision for one request.
enum Decision {
    /// Sampled; `new_trace` when there is no valid parent (the root sampler is asked).
    Sampled { new_trace: bool },
    /// Sampled out: this context is current while the request is polled.
    SampledOut(Context),
}

/// Decides like `ParentBased(TraceIdRatioBased(rate))`: a valid parent's flag, else the ratio
/// over a fresh trace id (the SDK's rule on the SDK's generator).
fn decide(rate: f64, parent: Option<&Context>) -> Decision {
    let ids = RandomIdGenerator::default();
    if let Some(parent) = parent {
        let span = parent.span();
        let sc = span.span_context();
        if sc.is_valid() {
            if sc.is_sampled() {
                return Decision::Sampled { new_trace: false };
            }
            let child = SpanContext::new(
                sc.trace_id(),
                ids.new_span_id(),
                TraceFlags::default(),
                true,
                sc.trace_state().clone(),
            );
            return Decision::SampledOut(parent.with_remote_span_context(child));
        }
    }
    if rate >= 1.0 {
        return Decision::Sampled { new_trace: true };
    }
    let trace_id = ids.new_trace_id();
    let bound = (rate.max(0.0) * (1_u64 << 63) as f64) as u64;
    let low = u64::from_be_bytes(trace_id.to_bytes()[8..].try_into().unwrap_or([0xff; 8]));
    if (low >> 1) < bound {
        return Decision::Sampled { new_trace: true };
    }
    let sc = SpanContext::new(
        trace_id,
        ids.new_span_id(),
        TraceFlags::default(),
        true,
        TraceState::default(),
    );
    let base = parent.cloned().unwrap_or_default();
    Decision::SampledOut(base.with_remote_span_context(sc))
}

/// Opens a request's server span: with `presample` (the pipeline's rate, when the layer
/// decides) a sampled-out request's span is built by `sampled_out` (a callsite the
/// OpenTelemetry layer does not see), any other by `sampled`, with `parent` set and a new
/// trace the layer sampled started. Returns the span (disabled when no subscriber wants it);
/// for a sampled-out request, the context to make current while it is polled; and the ids of
/// a new trace the layer sampled and started (for exemplars: read from the context the start
/// returned, without a second lookup; `None` in other cases).
pub(crate) fn open(
    presample: Option<f64>,
    parent: Option<Context>,
    sampled: impl FnOnce() -> tracing::Span,
    sampled_out: impl FnOnce() -> tracing::Span,
) -> (tracing::Span, Option<Context>, Option<SpanIds>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    match presample.map(|rate| decide(rate, parent.as_ref())) {
        Some(Decision::SampledOut(cx)) => {
            let span = sampled_out();
            if !span.is_disabled() {
                // An OpenTelemetry layer that does see it (not `Telemetry::tracing_layer`)
                // finds a parent that is not sampled, and drops it.
                let _ = span.set_parent(cx.clone());
            }
            (span, Some(cx), None)
        }
        decision => {
            let span = sampled();
            let mut ids = None;
            if !span.is_disabled() {
                if let Some(parent) = parent {
                    let _ = span.set_parent(parent);
                }
                if let Some(Decision::Sampled { new_trace: true }) = decision {
                    let started = start_decided(&span);
                    let otel = started.span();
                    let sc = otel.span_context();
                    ids = sc.is_sampled().then(|| SpanIds {
                        trace_id: sc.trace_id(),
                        span_id: sc.span_id(),
                    });
                }
            }
            (span, None, ids)
        }
    }
}

/// Starts `span` (the OpenTelemetry span behind it) with the root sampler told that the layer
/// decided to sample it.
fn start_decided(span: &tracing::Span) -> Context {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    DECIDED.with(|decided| decided.set(true));
    // `context()` starts the span, asking the sampler, on this thread.
    let started = span.context();
    DECIDED.with(|decided| decided.set(false));
    started
}
