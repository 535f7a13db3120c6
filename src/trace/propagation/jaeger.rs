//! [`JaegerPropagator`]: Jaeger's `uber-trace-id` header.

use std::sync::LazyLock;

use opentelemetry::{
    propagation::{text_map_propagator::FieldIter, Extractor, Injector, TextMapPropagator},
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
    Context,
};
use percent_encoding::percent_decode_str;

use super::UBER_TRACE_ID;

static JAEGER_FIELDS: LazyLock<[String; 1]> = LazyLock::new(|| [UBER_TRACE_ID.to_owned()]);

/// Propagates span contexts in Jaeger's `uber-trace-id` header:
/// `{trace-id}:{span-id}:{parent-span-id}:{flags}`.
///
/// Extraction reads a trace id of 1–32 hex digits and a span id of 1–16 (shorter ids are
/// zero-padded on the left, either case), ignores the deprecated parent span id, and reads the
/// flags as one or two hex digits (the values clients send, 0–3, read the same in decimal):
/// bit 1 (sampled) or bit 2 (debug) makes the context sampled. The colons may be
/// percent-encoded (`%3A`). A value with other than four fields, a zero trace or span id, or
/// anything else malformed leaves the context unchanged; a valid one gives a remote span
/// context with an empty trace state.
///
/// Injection writes `{trace-id:032x}:{span-id:016x}:0:{flags}`, flags `1` when sampled and
/// `0` otherwise, for a valid span context only.
///
/// Jaeger baggage (`uberctx-*` headers) is not read or written: use the W3C `baggage` format.
#[derive(Debug, Clone, Default)]
pub struct JaegerPropagator {
    _private: (),
}

impl JaegerPropagator {
    /// A Jaeger propagator.
    pub fn new() -> Self {
        Self::default()
    }
}

impl TextMapPropagator for JaegerPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let span_context = span.span_context();
        if span_context.is_valid() {
            let flags = u8::from(span_context.is_sampled());
            injector.set(
                UBER_TRACE_ID,
                format!(
                    "{:032x}:{:016x}:0:{flags}",
                    span_context.trace_id(),
                    span_context.span_id()
                ),
            );
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        match extractor.get(UBER_TRACE_ID).and_then(parse_uber_trace_id) {
            Some(span_context) => cx.with_remote_span_context(span_context),
            None => cx.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(JAEGER_FIELDS.as_slice())
    }
}

pub(super) fn parse_uber_trace_id(value: &str) -> Option<SpanContext> {
    let decoded = percent_decode_str(value.trim_matches([' ', '\t']))
        .decode_utf8()
        .ok()?;
    let mut fields = decoded.split(':');
    let (trace_id, span_id, _parent, flags) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    if fields.next().is_some() {
        return None;
    }
    let trace_id = parse_hex(trace_id, 32)?;
    let span_id = u64::try_from(parse_hex(span_id, 16)?).ok()?;
    let flags = parse_hex(flags, 2)?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    let trace_flags = if flags & 0b11 != 0 {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    Some(SpanContext::new(
        TraceId::from(trace_id),
        SpanId::from(span_id),
        trace_flags,
        true,
        TraceState::NONE,
    ))
}

/// 1 to `max_digits` hex digits, nothing else (`from_str_radix` alone would accept a `+`).
fn parse_hex(digits: &str, max_digits: usize) -> Option<u128> {
    if digits.is_empty()
        || digits.len() > max_digits
        || !digits.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    u128::from_str_radix(digits, 16).ok()
}
