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
//!
//! W3C Trace Context level 2: a new trace gets the `random` flag (`0x02`), since its id comes
//! from the SDK's `RandomIdGenerator` (all 128 bits from a seeded PRNG, so the 56 rightmost
//! bits the flag speaks for are random); a continued trace keeps the flags its parent sent,
//! `random` included, whatever the decision. The ratio reads the low 64 bits of the trace id
//! as the SDK's `TraceIdRatioBased` does (bits 1–63, [`ratio_sampled`]), so a root span the
//! layer decides and one the SDK's sampler decides agree for the same id; a remote parent's
//! `random` flag changes no decision, since a valid parent's `sampled` flag wins
//! (`ParentBased`).

use opentelemetry::{
    trace::{SpanContext, TraceContextExt, TraceId, TraceState},
    Context,
};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

use super::propagation::{note_random, RANDOM};

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
            Decision::SampledOut(sampled_out(parent, own))
        };
    }
    let trace_id = ids.new_trace_id();
    let sampled = ratio_sampled(rate, trace_id);
    // The trace id is random: level 2's `random` flag says so downstream.
    let flags = RANDOM.with_sampled(sampled);
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
        Decision::SampledOut(sampled_out(parent, own))
    }
}

/// The context of a sampled-out request: `own` as its span, the `random` flag noted for the
/// spans the SDK builds inside it (not sampled, they get empty flags).
fn sampled_out(parent: &Context, own: SpanContext) -> Context {
    note_random(parent.clone(), &own).with_remote_span_context(own)
}

/// Whether a new trace with id `trace_id` is sampled at `rate`: the SDK's
/// `TraceIdRatioBased` rule, its low 64 bits shifted right once compared with `rate * 2^63`.
pub(crate) fn ratio_sampled(rate: f64, trace_id: TraceId) -> bool {
    rate >= 1.0 || {
        let bound = (rate.max(0.0) * (1_u64 << 63) as f64) as u64;
        (low_bits(trace_id) >> 1) < bound
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
    use opentelemetry::trace::{SpanId, SpanKind, TraceContextExt, TraceFlags};
    use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};

    use crate::trace::propagation::propagated_flags;

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

    fn decided(decision: Decision) -> (SpanContext, Context) {
        match decision {
            Decision::Sampled(sc) => (sc, Context::new()),
            Decision::SampledOut(cx) => (cx.span().span_context().clone(), cx),
        }
    }

    #[test]
    fn new_traces_carry_the_random_flag_sampled_or_not() {
        for (rate, flags) in [(1.0, 0x03), (0.0, 0x02)] {
            let (sc, _) = decided(decide(rate, &Context::new()));
            assert_eq!(sc.trace_flags().to_u8(), flags, "rate {rate}");
        }
    }

    #[test]
    fn a_sampled_out_trace_propagates_random_from_spans_with_empty_flags() {
        let (own, cx) = decided(decide(0.0, &Context::new()));
        // What the SDK builds for a span it drops inside the request: same trace, no flags.
        let dropped = SpanContext::new(
            own.trace_id(),
            SpanId::from(9),
            TraceFlags::default(),
            false,
            TraceState::NONE,
        );
        assert_eq!(propagated_flags(&cx, &dropped).to_u8(), 0x02);
        // Another trace's span gains nothing from it.
        let other = SpanContext::new(
            TraceId::from(5),
            SpanId::from(9),
            TraceFlags::default(),
            false,
            TraceState::NONE,
        );
        assert_eq!(propagated_flags(&cx, &other).to_u8(), 0x00);
    }

    #[test]
    fn a_remote_parents_random_flag_is_kept_and_decides_nothing() {
        for (flags, sampled) in [(0x03, true), (0x02, false), (0x01, true), (0x00, false)] {
            let parent = Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from(0x42),
                SpanId::from(0x7),
                TraceFlags::new(flags),
                true,
                TraceState::NONE,
            ));
            let (sc, cx) = decided(decide(0.5, &parent));
            assert_eq!(sc.trace_flags().to_u8(), flags);
            assert_eq!(sc.is_sampled(), sampled);
            if !sampled {
                let dropped = SpanContext::new(
                    sc.trace_id(),
                    SpanId::from(9),
                    TraceFlags::default(),
                    false,
                    TraceState::NONE,
                );
                assert_eq!(propagated_flags(&cx, &dropped).to_u8(), flags & 0x02);
            }
        }
    }

    /// The layer's ratio and the SDK's `TraceIdRatioBased` (the pipeline's sampler for the
    /// spans the SDK starts) decide alike for the same trace id.
    #[test]
    fn the_ratio_decides_as_the_sdk_sampler_for_the_same_trace_id() {
        let ids = RandomIdGenerator::default();
        let mut trace_ids: Vec<TraceId> = (0..2000).map(|_| ids.new_trace_id()).collect();
        // Around the bound of 0.5 (2^62 after the shift), and the extremes.
        trace_ids.extend(
            [0x7fff_ffff_ffff_ffff, 0x8000_0000_0000_0000, 1, u64::MAX]
                .map(|low| TraceId::from(u128::from(low) | (0xabcd_u128 << 64))),
        );
        for rate in [0.0, 0.001, 0.25, 0.5, 0.75, 0.999, 1.0] {
            let sampler = Sampler::TraceIdRatioBased(rate);
            for &trace_id in &trace_ids {
                let sdk = sampler
                    .should_sample(None, trace_id, "s", &SpanKind::Server, &[], &[])
                    .decision
                    == SamplingDecision::RecordAndSample;
                assert_eq!(ratio_sampled(rate, trace_id), sdk, "{rate} {trace_id}");
            }
        }
    }
}
