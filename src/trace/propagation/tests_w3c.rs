//! W3C Trace Context test vectors, levels 1 and 2, written from the specification's text:
//! `tracestate` keys, values and lists, and the `random` trace flag, in and out.

use std::collections::HashMap;

use http::{HeaderName, HeaderValue};
use opentelemetry::{
    trace::{
        Span as _, SpanContext, SpanId, TraceContextExt, TraceFlags, TraceState, Tracer,
        TracerProvider as _,
    },
    Context,
};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

use super::{tracestate, *};

const IDS: &str = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";

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

fn w3c() -> TextMapCompositePropagator {
    composite(&[Propagator::TraceContext])
}

/// What a service forwards for a request carrying `traceparent` with `flags` and these
/// `tracestate` lines, when it forwards the caller's context unchanged: the outgoing
/// `traceparent` and `tracestate` (`None` when none is written).
fn forwarded(flags: &str, tracestate: &[&str]) -> (String, Option<String>) {
    let traceparent = format!("00-{IDS}-{flags}");
    let mut pairs = vec![(TRACEPARENT, traceparent.as_str())];
    pairs.extend(tracestate.iter().map(|line| (TRACESTATE, *line)));
    let cx = extract(&w3c(), &headers(&pairs));
    assert!(cx.span().span_context().is_valid(), "{pairs:?}");
    let mut out = HeaderMap::new();
    inject(&w3c(), &cx, &mut out);
    let header = |name| out.get(name).map(|v| v.to_str().unwrap().to_owned());
    (header(TRACEPARENT).unwrap(), header(TRACESTATE))
}

fn forwarded_state(tracestate: &str) -> Option<String> {
    forwarded("01", &[tracestate]).1
}

#[test]
fn simple_keys_at_the_length_limit() {
    let longest = format!("a{}", "z".repeat(255));
    assert_eq!(
        forwarded_state(&format!("{longest}=1")),
        Some(format!("{longest}=1"))
    );
    // 257 characters: the whole list goes, valid members with it.
    let too_long = format!("a{}", "z".repeat(256));
    assert_eq!(forwarded_state(&format!("foo=1,{too_long}=1")), None);
}

#[test]
fn key_characters() {
    for valid in ["a", "a_-*/09", "z0", "abc/def", "0a", "9", "0_-*/@"] {
        let member = format!("{valid}=1");
        assert_eq!(forwarded_state(&member), Some(member.clone()), "{valid}");
    }
    // First character lcalpha or DIGIT; no uppercase, no other punctuation, nothing empty.
    for invalid in [
        "_a", "*a", "/a", "@a", "Foo", "fOo", "foo.bar", "foo bar", "foo!", "",
    ] {
        assert_eq!(
            forwarded_state(&format!("{invalid}=1,ok=2")),
            None,
            "{invalid:?}"
        );
    }
}

/// Level 2's key: `@` anywhere but first, any number of times, 256 characters in all. The
/// test suite's cases (`test_tracestate_key_length_limit`,
/// `test_tracestate_key_illegal_vendor_format`), each beside a valid member that must stay.
#[test]
fn keys_with_at_signs() {
    for valid in [
        format!("{}@{}", "t".repeat(241), "v".repeat(14)),
        format!("{}@v", "t".repeat(242)),
        format!("t@{}", "v".repeat(15)),
        format!("t@{}", "v".repeat(254)),
        "foo@".to_owned(),
        "foo@@bar".to_owned(),
        "foo@bar@baz".to_owned(),
        "0@v".to_owned(),
        "t@0v".to_owned(),
        "t@_v".to_owned(),
    ] {
        let list = format!("{valid}=1,bar=2");
        assert_eq!(forwarded_state(&list), Some(list.clone()), "{valid}");
    }
    // Forwarded as received although opentelemetry 0.33's `TraceState` refuses them.
    for refused in [format!("t@{}", "v".repeat(14)), "foo@@bar".to_owned()] {
        assert!(TraceState::from_key_value([(refused.as_str(), "1")]).is_err());
    }
    // 257 characters with an `@`, or an `@` first: the whole list goes.
    for invalid in [
        format!("t@{}", "v".repeat(255)),
        "@foo".to_owned(),
        "@".to_owned(),
        "T@v".to_owned(),
        "t@V".to_owned(),
        "t@v.w".to_owned(),
    ] {
        assert_eq!(
            forwarded_state(&format!("{invalid}=1,bar=2")),
            None,
            "{invalid}"
        );
    }
}

#[test]
fn value_boundary_characters() {
    // nblk-chr = %x21-2B / %x2D-3C / %x3E-7E, each end of each range.
    for value in ["!", "+", "-", "<", ">", "~", "a!+-<>~z", "\"#$%&'()*"] {
        let member = format!("foo={value}");
        assert_eq!(forwarded_state(&member), Some(member.clone()), "{value}");
    }
    // A space inside or in front is part of the value; after it, optional whitespace.
    assert_eq!(forwarded_state("foo= a b"), Some("foo= a b".to_owned()));
    assert_eq!(forwarded_state("foo=a  "), Some("foo=a".to_owned()));
    // `=` inside, a tab inside, a lone space, nothing: invalid.
    for invalid in ["foo=a=b", "foo=a\tb", "foo= ", "foo="] {
        assert_eq!(
            forwarded_state(&format!("{invalid},ok=1")),
            None,
            "{invalid:?}"
        );
    }
    // Characters a header value cannot carry, read through the grammar directly.
    for invalid in ["foo=a\x7fb", "foo=\u{e9}", "foo=a\nb", "foo=a,b"] {
        assert_eq!(tracestate::parse(invalid), None, "{invalid:?}");
    }
}

#[test]
fn value_length_limit() {
    let longest = "v".repeat(256);
    let member = format!("foo={longest}");
    // 260 bytes: within the 512-byte cap.
    assert_eq!(forwarded_state(&member), Some(member.clone()));
    assert_eq!(forwarded_state(&format!("foo={longest}v")), None);
}

#[test]
fn empty_value_drops_the_whole_list() {
    // The test suite's case: the grammar needs at least one character.
    assert_eq!(forwarded_state("foo=,bar=3"), None);
    assert_eq!(forwarded_state("foo"), None);
    assert_eq!(forwarded_state("=1"), None);
}

#[test]
fn optional_whitespace_and_empty_members() {
    assert_eq!(
        forwarded_state("foo=1 \t , \t bar=2, \t baz=3"),
        Some("foo=1,bar=2,baz=3".to_owned())
    );
    assert_eq!(
        forwarded_state(",,foo=1,, ,\t,bar=2,"),
        Some("foo=1,bar=2".to_owned())
    );
    // Empty and whitespace-only headers are accepted, and nothing empty is sent on.
    for empty in ["", " ", "\t", ",", " , ,"] {
        assert_eq!(forwarded_state(empty), None, "{empty:?}");
    }
    assert_eq!(tracestate::parse(" , "), Some(vec![]));
}

/// A repeated key keeps its first member; the list is inherited (the test suite's
/// `test_tracestate_duplicated_keys` accepts both kept or one of them).
#[test]
fn duplicate_keys_keep_the_first() {
    assert_eq!(forwarded_state("foo=1,foo=1"), Some("foo=1".to_owned()));
    assert_eq!(
        forwarded_state("foo=1,bar=2,foo=3"),
        Some("foo=1,bar=2".to_owned())
    );
    // Across header lines, once combined.
    assert_eq!(
        forwarded("01", &["foo=1", "bar=2", "foo=2"]).1,
        Some("foo=1,bar=2".to_owned())
    );
    // A repeated key does not excuse a broken member elsewhere.
    assert_eq!(forwarded_state("foo=1,foo=2,bar="), None);
    // Different keys across lines combine in order.
    assert_eq!(
        forwarded("01", &["bar01=01,bar02=02", "bar03=03"]).1,
        Some("bar01=01,bar02=02,bar03=03".to_owned())
    );
    // A tenant of another system is another key.
    assert_eq!(
        forwarded_state("t@a=1,t@b=2,t=3"),
        Some("t@a=1,t@b=2,t=3".to_owned())
    );
}

#[test]
fn thirty_three_members_keep_the_first_thirty_two() {
    let members: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
    assert_eq!(
        forwarded_state(&members.join(",")),
        Some(members[..32].join(","))
    );
    // The member past the cap is not judged: it is not kept either way.
    let mut with_bad = members[..32].to_vec();
    with_bad.push("BAD=1".to_owned());
    assert_eq!(
        forwarded_state(&with_bad.join(",")),
        Some(members[..32].join(","))
    );
    // 32 members, the last a repeated key: 31 go on.
    let mut duplicated = members[..31].to_vec();
    duplicated.push("k0=again".to_owned());
    assert_eq!(
        forwarded_state(&duplicated.join(",")),
        Some(members[..31].join(","))
    );
}

#[test]
fn an_invalid_tracestate_leaves_traceparent_alone() {
    let (traceparent, state) = forwarded("01", &["foo=,bar=3"]);
    assert_eq!(traceparent, format!("00-{IDS}-01"));
    assert_eq!(state, None);
}

#[test]
fn any_carrier_gets_the_grammar_and_the_cap() {
    // The global propagator reads maps other than HeaderMap: same rules there.
    let key = format!("{}@{}", "t".repeat(241), "v".repeat(14));
    let members: Vec<String> = (0..40).map(|i| format!("k{i}=v")).collect();
    for (state, expected) in [
        (format!("{key}=1"), Some(format!("{key}=1"))),
        ("foo=,bar=3".to_owned(), None),
        (members.join(","), Some(members[..32].join(","))),
    ] {
        let carrier = HashMap::from([
            (TRACEPARENT.to_owned(), format!("00-{IDS}-01")),
            (TRACESTATE.to_owned(), state),
        ]);
        let cx = W3cPropagator::new().extract_with_context(&Context::new(), &carrier);
        let mut out = HashMap::new();
        W3cPropagator::new().inject_context(&cx, &mut out);
        assert_eq!(out.get(TRACESTATE), expected.as_ref());
    }
}

/// A member the SDK's `TraceState` cannot hold is forwarded as received while the trace
/// state is the one extraction built; once a span changes it, the SDK's list is written.
#[test]
fn a_list_the_sdk_cannot_hold_survives_until_changed() {
    let key = format!("{}@{}", "t".repeat(241), "v".repeat(14));
    let list = format!("congo=1,{key}=2,rojo=3");
    let h = headers(&[(TRACEPARENT, &format!("00-{IDS}-01")), (TRACESTATE, &list)]);
    let cx = extract(&w3c(), &h);
    let sc = cx.span().span_context().clone();
    assert_eq!(sc.trace_state().header(), "congo=1,rojo=3");

    // A child span in the same trace, with the parent's trace state.
    let child = SpanContext::new(
        sc.trace_id(),
        SpanId::from(5),
        sc.trace_flags(),
        false,
        sc.trace_state().clone(),
    );
    let mut out = HeaderMap::new();
    inject(
        &w3c(),
        &cx.with_remote_span_context(child.clone()),
        &mut out,
    );
    assert_eq!(out[TRACESTATE], list);

    let changed = SpanContext::new(
        child.trace_id(),
        child.span_id(),
        child.trace_flags(),
        false,
        child.trace_state().insert("ours", "x").unwrap(),
    );
    let mut out = HeaderMap::new();
    inject(&w3c(), &cx.with_remote_span_context(changed), &mut out);
    assert_eq!(out[TRACESTATE], "ours=x,congo=1,rojo=3");
}

/// No input panics, and whatever parses is made of valid members and parses back the same.
#[test]
fn the_grammar_holds_on_generated_input() {
    let fragments = [
        "a", "z9", "_-*/", "@", "t@v", "=", "=1", ",", ", ", "\t", " ", "!~", "A", "k=v", "@@",
        "=x=", "0",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut valid, mut invalid) = (0, 0);
    for _ in 0..20_000 {
        let pieces = next() % 8;
        let input: String = (0..pieces)
            .map(|_| fragments[(next() % fragments.len() as u64) as usize])
            .collect();
        let Some(members) = tracestate::parse(&input) else {
            invalid += 1;
            continue;
        };
        valid += usize::from(!members.is_empty());
        for &(key, value) in &members {
            assert!(
                tracestate::is_key(key) && tracestate::is_value(value),
                "{input:?}"
            );
        }
        let joined: Vec<String> = members.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            tracestate::parse(&joined.join(",")),
            Some(members),
            "{input:?}"
        );
    }
    // The generator reaches both sides of the grammar.
    assert!(
        valid > 500 && invalid > 500,
        "{valid} valid, {invalid} invalid"
    );
}

#[test]
fn random_flag_is_kept_in_and_out() {
    // Level 2: 0x02 is `random`; bits above 0x03 are reserved and written as zero.
    for (incoming, kept) in [
        ("00", "00"),
        ("01", "01"),
        ("02", "02"),
        ("03", "03"),
        ("0b", "03"),
        ("0a", "02"),
        ("fc", "00"),
        ("ff", "03"),
    ] {
        let h = headers(&[(TRACEPARENT, &format!("00-{IDS}-{incoming}"))]);
        let sc = extract(&w3c(), &h).span().span_context().clone();
        assert_eq!(
            format!("{:02x}", sc.trace_flags().to_u8()),
            kept,
            "{incoming}"
        );
        assert_eq!(forwarded(incoming, &[]).0, format!("00-{IDS}-{kept}"));
    }
}

/// Spans the SDK builds under a remote parent carry `random` on: sampled children through
/// their flags, children it drops through the note extraction left in the context.
#[test]
fn sdk_children_propagate_the_random_flag() {
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .build();
    let tracer = provider.tracer("test");
    for (incoming, outgoing) in [("03", "03"), ("02", "02"), ("01", "01"), ("00", "00")] {
        let h = headers(&[(TRACEPARENT, &format!("00-{IDS}-{incoming}"))]);
        let parent = extract(&w3c(), &h);
        let child = tracer.start_with_context("child", &parent);
        let child_id = child.span_context().span_id();
        let cx = parent.with_span(child);
        let mut out = HeaderMap::new();
        inject(&w3c(), &cx, &mut out);
        let trace_id = &IDS[..32];
        assert_eq!(
            out[TRACEPARENT],
            format!("00-{trace_id}-{child_id}-{outgoing}"),
            "{incoming}"
        );
    }
}

#[test]
fn a_root_span_the_layer_starts_carries_random() {
    use crate::trace::sampling::{decide, Decision};
    for rate in [1.0, 0.0] {
        let cx = match decide(rate, &Context::new()) {
            Decision::Sampled(sc) => Context::new().with_remote_span_context(sc),
            Decision::SampledOut(cx) => cx,
        };
        let sc = cx.span().span_context().clone();
        let mut out = HeaderMap::new();
        inject(&w3c(), &cx, &mut out);
        let flags = if rate == 1.0 { "03" } else { "02" };
        assert_eq!(
            out[TRACEPARENT],
            format!("00-{}-{}-{flags}", sc.trace_id(), sc.span_id())
        );
    }
}

#[test]
fn invalid_traceparent_ignores_tracestate_and_flags_need_a_valid_one() {
    let cx = extract(
        &w3c(),
        &headers(&[(TRACEPARENT, "00-1-2-03"), (TRACESTATE, "foo=1")]),
    );
    assert!(!cx.span().span_context().is_valid());
    let mut out = HeaderMap::new();
    inject(&w3c(), &cx, &mut out);
    assert!(out.is_empty());
    // TraceFlags 0.33 holds the bit; only the propagator masked it.
    assert_eq!((TraceFlags::new(0x03) & RANDOM).to_u8(), 0x02);
}
