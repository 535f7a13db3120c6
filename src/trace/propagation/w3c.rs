//! [`W3cPropagator`]: W3C Trace Context `traceparent` and `tracestate`, levels 1 and 2.

use std::sync::LazyLock;

use opentelemetry::{
    propagation::{text_map_propagator::FieldIter, Extractor, Injector, TextMapPropagator},
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
    Context,
};

use super::{
    cap_members, headers::is_valid_traceparent, tracestate, MAX_TRACESTATE_BYTES,
    MAX_TRACESTATE_MEMBERS, TRACEPARENT, TRACESTATE,
};

static W3C_FIELDS: LazyLock<[String; 2]> =
    LazyLock::new(|| [TRACEPARENT.to_owned(), TRACESTATE.to_owned()]);

/// The level-2 `random` trace flag (`0x02`): at least the 56 rightmost bits of the trace id
/// are random. opentelemetry 0.33 names only [`TraceFlags::SAMPLED`].
pub const RANDOM: TraceFlags = TraceFlags::new(0x02);

/// The flags W3C Trace Context defines (`sampled`, `random`); the others are reserved and
/// are set to zero, as the specification requires.
const KNOWN_FLAGS: TraceFlags = TraceFlags::new(0x03);

/// Propagates span contexts in W3C Trace Context `traceparent` and `tracestate` (levels 1
/// and 2), in place of opentelemetry_sdk's `TraceContextPropagator`, which masks the `random`
/// flag, accepts malformed ids, and checks `tracestate` keys by level 1's `tenant@system`
/// form with an off-by-one (it rejects a 14-character system id, and level 2's `foo@@bar`).
///
/// Extraction:
/// - `traceparent` must be well formed (see [`HeaderExtractor`](super::HeaderExtractor)),
///   whatever the carrier; otherwise the context is returned unchanged.
/// - Flags `sampled` (`0x01`) and `random` (`0x02`) are kept; reserved ones are zeroed.
/// - `tracestate` is capped to 32 members / 512 bytes of whole members, then read by the
///   specification's grammar (the `tracestate` module docs); a list that breaks it is
///   discarded whole, `traceparent` still counts.
///
/// Injection writes `00-{trace id}-{span id}-{flags}` with `sampled` and `random`, and the
/// span context's `tracestate` when it is not empty. Two things the SDK's types cannot hold
/// travel in the [`Context`] beside the span, tied to its trace id: the `random` flag, when
/// an SDK span that is not sampled was given empty flags; and a received list holding a key
/// the SDK's `TraceState` refuses (`t@` and 14 characters, `foo@@bar`): the list is written
/// back as received while the span's `TraceState` is the one extraction built.
///
/// # Example
///
/// ```
/// use http::HeaderMap;
/// use towerscope::trace::propagation::{extract, inject, W3cPropagator};
///
/// let mut incoming = HeaderMap::new();
/// let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03";
/// incoming.insert("traceparent", traceparent.parse().unwrap());
/// incoming.insert("tracestate", "rojo=1 , congo=2".parse().unwrap());
/// let cx = extract(&W3cPropagator::new(), &incoming);
///
/// let mut outgoing = HeaderMap::new();
/// inject(&W3cPropagator::new(), &cx, &mut outgoing);
/// assert_eq!(outgoing["traceparent"], traceparent); // sampled and random
/// assert_eq!(outgoing["tracestate"], "rojo=1,congo=2");
///
/// // An empty value breaks the grammar: the list is dropped, the trace goes on.
/// incoming.insert("tracestate", "foo=,bar=3".parse().unwrap());
/// let cx = extract(&W3cPropagator::new(), &incoming);
/// let mut outgoing = HeaderMap::new();
/// inject(&W3cPropagator::new(), &cx, &mut outgoing);
/// assert_eq!(outgoing["traceparent"], traceparent);
/// assert!(outgoing.get("tracestate").is_none());
/// ```
#[derive(Debug, Clone, Default)]
pub struct W3cPropagator {
    _private: (),
}

impl W3cPropagator {
    /// A W3C Trace Context propagator.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The trace id of a context's trace is random (the `random` flag), whatever the flags of
/// the span context the SDK built.
#[derive(Debug, Clone, Copy)]
struct RandomTraceId(TraceId);

/// A received `tracestate` whose keys the SDK's `TraceState` cannot all hold: `state` holds
/// those it can, `header` the whole list as received (members trimmed, joined with `,`).
#[derive(Debug)]
struct VerbatimTraceState {
    trace_id: TraceId,
    state: TraceState,
    header: String,
}

/// `cx` noting that the trace of `sc` has a random trace id, when `sc` carries the `random`
/// flag: spans the SDK builds in that trace without sampling them still propagate it.
pub(crate) fn note_random(cx: Context, sc: &SpanContext) -> Context {
    if sc.trace_flags() & RANDOM == RANDOM {
        cx.with_value(RandomTraceId(sc.trace_id()))
    } else {
        cx
    }
}

/// The flags `cx`'s span propagates: `sampled` and `random`, `random` also when the context
/// notes it for the span's trace.
pub(crate) fn propagated_flags(cx: &Context, sc: &SpanContext) -> TraceFlags {
    let noted = cx
        .get::<RandomTraceId>()
        .is_some_and(|noted| noted.0 == sc.trace_id());
    let flags = sc.trace_flags() & KNOWN_FLAGS;
    if noted {
        flags | RANDOM
    } else {
        flags
    }
}

impl TextMapPropagator for W3cPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        let flags = propagated_flags(cx, sc).to_u8();
        injector.set(
            TRACEPARENT,
            format!("00-{}-{}-{flags:02x}", sc.trace_id(), sc.span_id()),
        );
        let state = match cx.get::<VerbatimTraceState>() {
            Some(v) if v.trace_id == sc.trace_id() && v.state == *sc.trace_state() => {
                v.header.clone()
            }
            _ => sc.trace_state().header(),
        };
        // The spec: vendors SHOULD avoid sending an empty `tracestate`.
        if !state.is_empty() {
            injector.set(TRACESTATE, state);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let Some((trace_id, span_id, flags)) = extractor.get(TRACEPARENT).and_then(traceparent)
        else {
            return cx.clone();
        };
        let list = extractor.get(TRACESTATE).unwrap_or_default();
        let list = cap_members(list, MAX_TRACESTATE_BYTES, MAX_TRACESTATE_MEMBERS);
        let members = tracestate::parse(&list).unwrap_or_default();
        let (state, verbatim) = match TraceState::from_key_value(members.iter().copied()) {
            Ok(state) => (state, None),
            Err(_) => sdk_subset(&members),
        };
        let sc = SpanContext::new(trace_id, span_id, flags, true, state);
        let mut out = note_random(cx.clone(), &sc);
        if let Some(header) = verbatim {
            out = out.with_value(VerbatimTraceState {
                trace_id,
                state: sc.trace_state().clone(),
                header,
            });
        }
        out.with_remote_span_context(sc)
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(W3C_FIELDS.as_slice())
    }
}

/// A valid `traceparent`'s ids and known flags.
fn traceparent(value: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
    let value = value.trim_matches([' ', '\t']);
    if !is_valid_traceparent(value.as_bytes()) {
        return None;
    }
    let trace_id = TraceId::from_hex(&value[3..35]).ok()?;
    let span_id = SpanId::from_hex(&value[36..52]).ok()?;
    let flags = u8::from_str_radix(&value[53..55], 16).ok()?;
    Some((trace_id, span_id, TraceFlags::new(flags) & KNOWN_FLAGS))
}

/// The members the SDK's `TraceState` accepts, and the whole list as a header.
fn sdk_subset(members: &[(&str, &str)]) -> (TraceState, Option<String>) {
    let held = members
        .iter()
        .filter(|&&member| TraceState::from_key_value([member]).is_ok());
    let state = TraceState::from_key_value(held.copied()).unwrap_or_default();
    let header = members
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    (state, Some(header))
}
