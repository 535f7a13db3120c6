use std::collections::{BTreeSet, HashMap};

use http::{HeaderName, HeaderValue};
use opentelemetry::{
    baggage::BaggageExt,
    propagation::{Extractor, Injector},
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
};

use opentelemetry_sdk::propagation::TraceContextPropagator;

use super::jaeger::parse_uber_trace_id;
use super::*;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN_ID: &str = "00f067aa0ba902b7";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn all() -> TextMapCompositePropagator {
    composite(&[
        Propagator::TraceContext,
        Propagator::Baggage,
        Propagator::Jaeger,
    ])
}

fn span_context(cx: &Context) -> SpanContext {
    cx.span().span_context().clone()
}

#[test]
fn cap_members_returns_a_value_that_fits_unchanged() {
    for value in ["", "a=1", "a=1,b=2,c=3", " a=1 , b=2 "] {
        assert!(matches!(cap_members(value, 64, 3), Cow::Borrowed(v) if v == value));
    }
    // Exactly at both limits.
    assert!(matches!(cap_members("a=1,b=2", 7, 2), Cow::Borrowed(_)));
}

#[test]
fn cap_members_cuts_at_the_member_limit() {
    assert_eq!(cap_members("a=1,b=2,c=3", 64, 2), "a=1,b=2");
    assert_eq!(cap_members("a=1,b=2,c=3", 64, 1), "a=1");
    assert_eq!(cap_members("a=1,b=2,c=3", 64, 0), "");
}

#[test]
fn cap_members_cuts_at_the_byte_limit_between_members() {
    assert_eq!(cap_members("a=1,b=2,c=3", 10, 64), "a=1,b=2");
    assert_eq!(cap_members("a=1,b=2,c=3", 7, 64), "a=1,b=2");
    assert_eq!(cap_members("a=1,b=2,c=3", 6, 64), "a=1");
    assert_eq!(cap_members("a=1,b=2,c=3", 2, 64), "");
    // Never inside a member, and never skipping to a shorter one after a long one.
    assert_eq!(cap_members("abcdef=1", 4, 64), "");
    assert_eq!(cap_members("a=1,long=xxxxxx,b=2", 12, 64), "a=1");
}

#[test]
fn cap_members_trims_whitespace_and_skips_empty_members() {
    assert_eq!(cap_members(" a=1 ,, \t,\tb=2 ,c=3", 64, 2), "a=1,b=2");
    assert_eq!(cap_members(",,,a=1,,,,b=2,,,", 64, 2), "a=1,b=2");
    assert_eq!(cap_members("   a=1   ,   b=2   ", 8, 64), "a=1,b=2");
    assert_eq!(cap_members(", ,\t,", 3, 64), "");
}

#[test]
fn tracestate_is_capped_to_512_bytes_of_whole_members() {
    // 40 members of 20 bytes: 24 fit in 512 bytes (24 * 21 - 1 = 503).
    let members: Vec<String> = (0..40)
        .map(|i| format!("k{i:02}={}", "v".repeat(16)))
        .collect();
    let h = headers(&[
        (TRACEPARENT, &format!("00-{TRACE_ID}-{SPAN_ID}-01")),
        (TRACESTATE, &members.join(",")),
    ]);
    let expected = members[..24].join(",");
    assert_eq!(HeaderExtractor::new(&h).get(TRACESTATE), Some(&*expected));
    let sc = span_context(&extract(&all(), &h));
    assert_eq!(sc.trace_state().header(), expected);
}

#[test]
fn tracestate_is_capped_to_32_members() {
    let members: Vec<String> = (0..40).map(|i| format!("k{i}=v")).collect();
    let h = headers(&[(TRACESTATE, &members.join(","))]);
    let expected = members[..32].join(",");
    assert_eq!(HeaderExtractor::new(&h).get("TraceState"), Some(&*expected));
}

#[test]
fn list_lines_are_joined_then_capped() {
    let h = headers(&[
        (TRACESTATE, "a=1, b=2"),
        (TRACESTATE, ""),
        (TRACESTATE, "c=3"),
        (BAGGAGE, "k1=v1"),
        (BAGGAGE, "k2=v2;p"),
    ]);
    let extractor = HeaderExtractor::new(&h);
    assert_eq!(extractor.get(TRACESTATE), Some("a=1,b=2,c=3"));
    assert_eq!(extractor.get(BAGGAGE), Some("k1=v1,k2=v2;p"));

    let lines: Vec<String> = (0..40).map(|i| format!("k{i}=v")).collect();
    let pairs: Vec<(&str, &str)> = lines.iter().map(|l| (TRACESTATE, l.as_str())).collect();
    let h = headers(&pairs);
    let expected = lines[..32].join(",");
    assert_eq!(HeaderExtractor::new(&h).get(TRACESTATE), Some(&*expected));
}

#[test]
fn a_list_with_a_non_ascii_line_reads_as_missing() {
    let mut h = headers(&[(TRACESTATE, "a=1"), (BAGGAGE, "k=v")]);
    h.append(TRACESTATE, HeaderValue::from_bytes(b"b=\xc3\xa9").unwrap());
    h.insert(BAGGAGE, HeaderValue::from_bytes(b"k=\xff").unwrap());
    let extractor = HeaderExtractor::new(&h);
    assert_eq!(extractor.get(TRACESTATE), None);
    assert_eq!(extractor.get(BAGGAGE), None);
}

#[test]
fn other_keys_read_their_first_visible_ascii_value() {
    let mut h = headers(&[(UBER_TRACE_ID, "first"), (UBER_TRACE_ID, "second")]);
    h.insert("x-bin", HeaderValue::from_bytes(b"\xff").unwrap());
    let extractor = HeaderExtractor::new(&h);
    assert_eq!(extractor.get("Uber-Trace-Id"), Some("first"));
    assert_eq!(extractor.get("x-bin"), None);
    assert_eq!(extractor.get("missing"), None);
    assert_eq!(extractor.get("not a header name"), None);
    let mut keys = extractor.keys();
    keys.sort_unstable();
    assert_eq!(keys, ["uber-trace-id", "x-bin"]);
}

#[test]
fn malformed_traceparent_starts_no_remote_context_and_tracestate_is_ignored() {
    let cases = [
        format!("ff-{TRACE_ID}-{SPAN_ID}-01"),
        format!("00-4bf92f3577b34da6a3ce929d0e0e47zz-{SPAN_ID}-01"),
        format!("00-{TRACE_ID}-00f067aa0ba902bg-01"),
        format!("00-{TRACE_ID}-{SPAN_ID}-0g"),
        "00-4bf92f35-00f067aa-01".to_owned(),
        format!("00-{TRACE_ID}-+0f067aa0ba902b7-01"),
        format!("00-00000000000000000000000000000000-{SPAN_ID}-01"),
        format!("00-{TRACE_ID}-0000000000000000-01"),
        format!("00-{}-{SPAN_ID}-01", TRACE_ID.to_uppercase()),
        format!("00-{TRACE_ID}-{}-01", SPAN_ID.to_uppercase()),
        format!("0A-{TRACE_ID}-{SPAN_ID}-01"),
        format!("00-{TRACE_ID}-{SPAN_ID}-01-extra"),
        format!("00-{TRACE_ID}-{SPAN_ID}-01-"),
        format!("00-{TRACE_ID}-{SPAN_ID}-1"),
        format!("00_{TRACE_ID}_{SPAN_ID}_01"),
        format!("01-{TRACE_ID}-{SPAN_ID}-01x"),
        String::new(),
    ];
    for traceparent in cases {
        let h = headers(&[
            (TRACEPARENT, &traceparent),
            (TRACESTATE, "congo=t61rcWkgMzE"),
        ]);
        assert_eq!(
            HeaderExtractor::new(&h).get(TRACEPARENT),
            None,
            "{traceparent}"
        );
        let sc = span_context(&extract(&all(), &h));
        assert!(!sc.is_valid(), "{traceparent} gave {sc:?}");
        assert!(!sc.is_remote(), "{traceparent}");
        assert_eq!(sc.trace_state().header(), "", "{traceparent}");
    }
}

#[test]
fn sdk_alone_accepts_short_ids_and_a_trailing_dash() {
    // Why HeaderExtractor validates `traceparent` itself: TraceContextPropagator 0.33 does
    // not check id lengths or a trailing field separator.
    for traceparent in ["00-1-2-01", &format!("00-{TRACE_ID}-{SPAN_ID}-01-")] {
        let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
        let cx = TraceContextPropagator::new().extract_with_context(&Context::new(), &carrier);
        assert!(cx.span().span_context().is_valid(), "{traceparent}");
    }
}

#[test]
fn later_traceparent_versions_may_append_fields() {
    for traceparent in [
        format!("01-{TRACE_ID}-{SPAN_ID}-01"),
        format!("cc-{TRACE_ID}-{SPAN_ID}-01-what-the-future-holds"),
    ] {
        let h = headers(&[(TRACEPARENT, &traceparent)]);
        let sc = span_context(&extract(&all(), &h));
        assert_eq!(sc.trace_id(), TraceId::from_hex(TRACE_ID).unwrap());
    }
}

#[test]
fn duplicate_traceparent_reads_as_missing() {
    let traceparent = format!("00-{TRACE_ID}-{SPAN_ID}-01");
    let h = headers(&[(TRACEPARENT, &traceparent), (TRACEPARENT, &traceparent)]);
    assert_eq!(HeaderExtractor::new(&h).get(TRACEPARENT), None);
    assert!(!span_context(&extract(&all(), &h)).is_valid());
}

#[test]
fn non_ascii_traceparent_reads_as_missing() {
    let mut h = HeaderMap::new();
    let value = format!("00-{TRACE_ID}-{SPAN_ID}-01\u{e9}");
    h.insert(
        TRACEPARENT,
        HeaderValue::from_bytes(value.as_bytes()).unwrap(),
    );
    assert_eq!(HeaderExtractor::new(&h).get(TRACEPARENT), None);
}

#[test]
fn traceparent_and_tracestate_round_trip() {
    let traceparent = format!("00-{TRACE_ID}-{SPAN_ID}-01");
    let tracestate = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
    let h = headers(&[(TRACEPARENT, &traceparent), (TRACESTATE, tracestate)]);
    let propagator = composite(&[Propagator::TraceContext]);
    let cx = extract(&propagator, &h);
    let sc = span_context(&cx);
    assert!(sc.is_remote() && sc.is_sampled());
    assert_eq!(sc.trace_id(), TraceId::from_hex(TRACE_ID).unwrap());
    assert_eq!(sc.span_id(), SpanId::from_hex(SPAN_ID).unwrap());

    let mut out = HeaderMap::new();
    inject(&propagator, &cx, &mut out);
    assert_eq!(out[TRACEPARENT], *traceparent);
    assert_eq!(out[TRACESTATE], tracestate);
}

#[test]
fn baggage_beyond_64_members_keeps_the_first_64() {
    // Empty members in between do not count (the SDK alone would count them).
    let members: Vec<String> = (0..100).map(|i| format!("k{i}=v{i}")).collect();
    let h = headers(&[(BAGGAGE, &format!(" , {}", members.join(", ,")))]);
    let cx = extract(&all(), &h);
    assert_eq!(cx.baggage().len(), 64);
    for i in 0..64 {
        assert_eq!(
            cx.baggage().get(format!("k{i}")).unwrap().as_str(),
            format!("v{i}")
        );
    }
    assert!(cx.baggage().get("k64").is_none());
}

#[test]
fn baggage_beyond_8192_bytes_keeps_whole_members() {
    // The SDK alone drops a baggage header longer than 8192 bytes entirely.
    let members: Vec<String> = (0..40)
        .map(|i| format!("k{i:02}={}", "v".repeat(250)))
        .collect();
    let h = headers(&[(BAGGAGE, &members.join(","))]);
    // 32 members of 254 bytes plus commas: 8159 bytes; a 33rd would make 8414.
    let expected = members[..32].join(",");
    assert_eq!(HeaderExtractor::new(&h).get(BAGGAGE), Some(&*expected));
    assert_eq!(extract(&all(), &h).baggage().len(), 32);
}

#[test]
fn baggage_round_trips() {
    let h = headers(&[(BAGGAGE, "k1=v1, k2=v%20two;meta=1")]);
    let propagator = composite(&[Propagator::Baggage]);
    let cx = extract(&propagator, &h);
    assert_eq!(cx.baggage().get("k2").unwrap().as_str(), "v two");
    let mut out = HeaderMap::new();
    inject(&propagator, &cx, &mut out);
    let members: BTreeSet<&str> = out[BAGGAGE].to_str().unwrap().split(',').collect();
    assert_eq!(members, BTreeSet::from(["k1=v1", "k2=v%20two;meta=1"]));
}

#[test]
fn uber_trace_id_parse_table() {
    let t128 = TraceId::from_hex(TRACE_ID).unwrap();
    let t64 = TraceId::from_hex("a3ce929d0e0e4736").unwrap();
    let span = SpanId::from_hex(SPAN_ID).unwrap();
    let valid: &[(&str, TraceId, SpanId, bool)] = &[
        (&format!("{TRACE_ID}:{SPAN_ID}:0:1"), t128, span, true),
        (&format!("a3ce929d0e0e4736:{SPAN_ID}:0:1"), t64, span, true),
        (&format!("{TRACE_ID}%3A{SPAN_ID}%3A0%3A1"), t128, span, true),
        (&format!("{TRACE_ID}%3a{SPAN_ID}:0%3a1"), t128, span, true),
        (&format!("{TRACE_ID}:{SPAN_ID}:0:0"), t128, span, false),
        (&format!("{TRACE_ID}:{SPAN_ID}:0:3"), t128, span, true),
        (&format!("{TRACE_ID}:{SPAN_ID}:0:2"), t128, span, true),
        (&format!("{TRACE_ID}:{SPAN_ID}:0:01"), t128, span, true),
        (&format!("{TRACE_ID}:{SPAN_ID}:0:8"), t128, span, false),
        (
            &format!("{TRACE_ID}:{SPAN_ID}:53995c3f42cd8ad8:1"),
            t128,
            span,
            true,
        ),
        (
            &format!("{}:{}:0:1", TRACE_ID.to_uppercase(), SPAN_ID.to_uppercase()),
            t128,
            span,
            true,
        ),
        ("1:2:0:0", TraceId::from(1), SpanId::from(2), false),
        (&format!(" {TRACE_ID}:{SPAN_ID}:0:1 "), t128, span, true),
    ];
    for &(value, trace_id, span_id, sampled) in valid {
        let sc = parse_uber_trace_id(value).unwrap_or_else(|| panic!("{value} is valid"));
        assert_eq!(sc.trace_id(), trace_id, "{value}");
        assert_eq!(sc.span_id(), span_id, "{value}");
        assert_eq!(sc.is_sampled(), sampled, "{value}");
        assert!(sc.is_remote(), "{value}");
    }
    let invalid = [
        String::new(),
        format!("0:{SPAN_ID}:0:1"),
        format!("{TRACE_ID}:0:0:1"),
        format!("{TRACE_ID}:{SPAN_ID}:0"),
        format!("{TRACE_ID}:{SPAN_ID}:0:1:0"),
        format!("0{TRACE_ID}:{SPAN_ID}:0:1"),
        format!("{TRACE_ID}:0{SPAN_ID}:0:1"),
        format!("{TRACE_ID}:{SPAN_ID}:0:"),
        format!("{TRACE_ID}:{SPAN_ID}:0:100"),
        format!("{TRACE_ID}:{SPAN_ID}:0:g"),
        format!("{TRACE_ID}::0:1"),
        format!(":{SPAN_ID}:0:1"),
        format!("+{}:{SPAN_ID}:0:1", &TRACE_ID[1..]),
        format!("{TRACE_ID}:{SPAN_ID}:0:+1"),
        format!("xyz:{SPAN_ID}:0:1"),
        format!("{TRACE_ID}%ZZ{SPAN_ID}:0:1"),
        format!("{TRACE_ID}:{SPAN_ID}:0:1%FF"),
    ];
    for value in invalid {
        assert_eq!(parse_uber_trace_id(&value), None, "{value}");
    }
}

#[test]
fn invalid_uber_trace_id_leaves_the_context_unchanged() {
    let h = headers(&[(UBER_TRACE_ID, "0:1:0:1")]);
    let cx = Context::new().with_baggage([opentelemetry::KeyValue::new("k", "v")]);
    let out = JaegerPropagator::new().extract_with_context(&cx, &HeaderExtractor::new(&h));
    assert!(!span_context(&out).is_valid());
    assert_eq!(out.baggage().len(), 1);
}

#[test]
fn jaeger_round_trips_and_writes_nothing_for_an_invalid_context() {
    let propagator = JaegerPropagator::new();
    assert_eq!(propagator.fields().collect::<Vec<_>>(), [UBER_TRACE_ID]);
    for (incoming, outgoing) in [
        (
            "a3ce929d0e0e4736:b7:c:3",
            "0000000000000000a3ce929d0e0e4736:00000000000000b7:0:1",
        ),
        (
            &format!("{TRACE_ID}:{SPAN_ID}:0:0"),
            &format!("{TRACE_ID}:{SPAN_ID}:0:0"),
        ),
    ] {
        let cx = extract(&propagator, &headers(&[(UBER_TRACE_ID, incoming)]));
        let mut out = HeaderMap::new();
        inject(&propagator, &cx, &mut out);
        assert_eq!(out[UBER_TRACE_ID], outgoing);
    }
    let mut out = HeaderMap::new();
    inject(&propagator, &Context::new(), &mut out);
    assert!(out.is_empty());
}

#[test]
fn injector_skips_invalid_names_and_values() {
    let mut h = headers(&[(TRACESTATE, "old=1")]);
    let mut injector = HeaderInjector(&mut h);
    injector.set("bad name", "v".to_owned());
    injector.set("x-ok", "line\nbreak".to_owned());
    injector.set("", "v".to_owned());
    injector.set("TraceState", "new=2".to_owned());
    assert_eq!(h.len(), 1);
    assert_eq!(h[TRACESTATE], "new=2");
}

#[test]
fn composite_reads_formats_in_order_and_writes_all() {
    let jaeger_trace = "11111111111111111111111111111111";
    let h = headers(&[
        (TRACEPARENT, &format!("00-{TRACE_ID}-{SPAN_ID}-01")),
        (
            UBER_TRACE_ID,
            &format!("{jaeger_trace}:2222222222222222:0:0"),
        ),
        (BAGGAGE, "k=v"),
    ]);
    let w3c_last = composite(&[
        Propagator::Jaeger,
        Propagator::Baggage,
        Propagator::TraceContext,
    ]);
    let jaeger_last = composite(&[
        Propagator::TraceContext,
        Propagator::Baggage,
        Propagator::Jaeger,
    ]);
    let cx = extract(&w3c_last, &h);
    assert_eq!(
        span_context(&cx).trace_id(),
        TraceId::from_hex(TRACE_ID).unwrap()
    );
    assert_eq!(cx.baggage().len(), 1);
    let cx = extract(&jaeger_last, &h);
    assert_eq!(
        span_context(&cx).trace_id(),
        TraceId::from_hex(jaeger_trace).unwrap()
    );

    let mut out = HeaderMap::new();
    inject(&jaeger_last, &cx, &mut out);
    assert_eq!(
        out[TRACEPARENT],
        format!("00-{jaeger_trace}-2222222222222222-00")
    );
    assert_eq!(
        out[UBER_TRACE_ID],
        format!("{jaeger_trace}:2222222222222222:0:0")
    );
    assert_eq!(out[BAGGAGE], "k=v");

    let mut fields: Vec<&str> = jaeger_last.fields().collect();
    fields.sort_unstable();
    assert_eq!(fields, [BAGGAGE, TRACEPARENT, TRACESTATE, UBER_TRACE_ID]);
    assert_eq!(composite(&[]).fields().count(), 0);
}

#[test]
fn extract_ignores_the_current_context() {
    let outer = SpanContext::new(
        TraceId::from(7),
        SpanId::from(7),
        TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    );
    let _guard = Context::new().with_remote_span_context(outer).attach();
    assert!(!span_context(&extract(&all(), &HeaderMap::new())).is_valid());
}

/// The configured formats skip a request that carries none of their headers, and read every
/// other one exactly as the propagators do.
#[test]
fn configured_extraction_reads_what_the_propagators_read() {
    let formats = [
        Propagator::TraceContext,
        Propagator::Baggage,
        Propagator::Jaeger,
    ];
    let incoming = IncomingContext::configured(&formats);
    let traceparent = format!("00-{TRACE_ID}-{SPAN_ID}-01");
    let uber = format!("{TRACE_ID}:{SPAN_ID}:0:1");
    let cases: [&[(&str, &str)]; 6] = [
        &[],
        &[
            ("accept", "application/json"),
            ("user-agent", "skopeo/1.13"),
        ],
        &[("traceparent", &traceparent)],
        &[("tracestate", "vendor=x")],
        &[("baggage", "k=v")],
        &[("uber-trace-id", &uber)],
    ];
    for case in cases {
        let headers = headers(case);
        let ours = incoming.extract(&headers);
        let theirs = extract(&composite(&formats), &headers);
        assert_eq!(span_context(&ours), span_context(&theirs), "{case:?}");
        assert_eq!(
            ours.baggage().get("k").map(ToString::to_string),
            theirs.baggage().get("k").map(ToString::to_string),
            "{case:?}"
        );
    }
    assert!(span_context(&incoming.extract(&headers(cases[2]))).is_valid());
    assert!(span_context(&incoming.extract(&headers(cases[5]))).is_valid());
}
