//! traceparent, tracestate, baggage and uber-trace-id extraction through the composite of
//! every propagator: never a panic, and what is kept stays within the W3C limits.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use opentelemetry::{baggage::BaggageExt, trace::TraceContextExt};
use towerscope::{
    config::Propagator,
    trace::propagation::{composite, extract, MAX_BAGGAGE_MEMBERS, MAX_TRACESTATE_BYTES},
};

const HEADERS: [&str; 4] = ["traceparent", "tracestate", "baggage", "uber-trace-id"];

fuzz_target!(|data: &[u8]| {
    // The input is split on 0xff into the four header values (and repeats of them).
    let mut headers = HeaderMap::new();
    for (i, value) in data.split(|b| *b == 0xff).enumerate() {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static(HEADERS[i % HEADERS.len()]), value);
        }
    }
    let propagator = composite(&[
        Propagator::TraceContext,
        Propagator::Baggage,
        Propagator::Jaeger,
    ]);
    let cx = extract(&propagator, &headers);
    let span = cx.span();
    let sc = span.span_context();
    if sc.is_valid() {
        assert!(sc.trace_state().header().len() <= MAX_TRACESTATE_BYTES);
    }
    assert!(cx.baggage().len() <= MAX_BAGGAGE_MEMBERS);
});
