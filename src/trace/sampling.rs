//! The sampling decision of a server layer that exports its spans itself (see `direct`).
//!
//! The rule is the pipeline's, `ParentBased(TraceIdRatioBased(rate))`: a request whose caller
//! sent a valid parent follows the parent's sampled flag; a new trace is sampled when its
//! trace id falls under the ratio (the SDK's rule, on the SDK's id generator). The layer
//! decides before it builds anything:
//!
//! - **sampled**: the layer starts its span with the ids decided here;
//! - **sampled out**: no span is built; a context naming a non-sampled span of the request's
//!   trace is current while the request is polled, so spans opened inside follow it (not
//!   sampled) and outgoing calls forward it (`-00`).

use opentelemetry::{
    trace::{SpanContext, TraceContextExt, TraceFlags, TraceId, TraceState},
    Context,
};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

/// A server layer's decision for one request.
pub(crate) enum Decision {
    /// Sampled: the span's own ids (trace id, a new span id, sampled flag, the parent's trace
    /// state).
    Sampled(SpanContext),
    /// Sampled out: this context is current while the request is polled.
    SampledOut(Context),
}

/// Decides like `ParentBased(TraceIdRatioBased(rate))` for a request whose extracted context
/// is `parent`.
pub(crate) fn decide(rate: f64, parent: &Context) -> Decision {
    let ids = RandomIdGenerator::default();
    let span = parent.span();
    let sc = span.span_context();
    if sc.is_valid() {
        let own = SpanContext::new(
            sc.trace_id(),
            ids.new_span_id(),
            sc.trace_flags().with_sampled(sc.is_sampled()),
            false,
            sc.trace_state().clone(),
        );
        return if sc.is_sampled() {
            Decision::Sampled(own)
        } else {
            Decision::SampledOut(parent.with_remote_span_context(own))
        };
    }
    let trace_id = ids.new_trace_id();
    let sampled = rate >= 1.0 || {
        let bound = (rate.max(0.0) * (1_u64 << 63) as f64) as u64;
        (low_bits(trace_id) >> 1) < bound
    };
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let own = SpanContext::new(
        trace_id,
        ids.new_span_id(),
        flags,
        false,
        TraceState::default(),
    );
    if sampled {
        Decision::Sampled(own)
    } else {
        Decision::SampledOut(parent.with_remote_span_context(own))
    }
}

/// The low 64 bits of `trace_id`, which the SDK's ratio sampler compares with its bound.
fn low_bits(trace_id: TraceId) -> u64 {
    let bytes = trace_id.to_bytes();
    let mut low = [0; 8];
    low.copy_from_slice(&bytes[8..]);
    u64::from_be_bytes(low)
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceContextExt};

    use super::*;

    fn parent(sampled: bool) -> Context {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(0x42),
            SpanId::from(0x7),
            flags,
            true,
            TraceState::from_key_value([("vendor", "x")]).unwrap(),
        ))
    }

    #[test]
    fn a_valid_parent_decides_and_its_trace_and_state_carry_on() {
        for sampled in [true, false] {
            // The parent's flag wins over the ratio.
            let rate = if sampled { 0.0 } else { 1.0 };
            let (sc, decided_sampled) = match decide(rate, &parent(sampled)) {
                Decision::Sampled(sc) => (sc, true),
                Decision::SampledOut(cx) => (cx.span().span_context().clone(), false),
            };
            assert_eq!(decided_sampled, sampled);
            assert_eq!(sc.trace_id(), TraceId::from(0x42));
            assert_ne!(sc.span_id(), SpanId::from(0x7));
            assert_eq!(sc.is_sampled(), sampled);
            assert!(!sc.is_remote());
            assert_eq!(sc.trace_state().get("vendor"), Some("x"));
        }
    }

    #[test]
    fn new_traces_follow_the_ratio() {
        let sampled = |rate| {
            (0..4000)
                .filter(|_| matches!(decide(rate, &Context::new()), Decision::Sampled(_)))
                .count()
        };
        assert_eq!(sampled(1.0), 4000);
        assert_eq!(sampled(0.0), 0);
        let half = sampled(0.5);
        assert!((1600..=2400).contains(&half), "{half} of 4000 at 0.5");
    }
}
