//! Property tests: hostile propagation and request-id headers never panic, never get past the
//! W3C limits, and well-formed ones round-trip exactly.
//!
//! Run with `cargo test --test header_fuzz` (2000 cases per property, a few seconds).

use std::convert::Infallible;

use http::{HeaderMap, HeaderValue, Request, Response};
use opentelemetry::{
    baggage::BaggageExt,
    propagation::Extractor,
    trace::{SpanId, TraceContextExt, TraceId},
};
use proptest::{prelude::*, string::string_regex, test_runner::RngAlgorithm};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use towerscope::{
    config::Propagator,
    request_id::{is_valid_request_id, RequestIdLayer},
    trace::propagation::{
        composite, extract, inject, HeaderExtractor, MAX_BAGGAGE_BYTES, MAX_BAGGAGE_MEMBERS,
        MAX_TRACESTATE_BYTES, MAX_TRACESTATE_MEMBERS,
    },
};

const CASES: u32 = 2000;

const ALL: [Propagator; 3] = [
    Propagator::TraceContext,
    Propagator::Baggage,
    Propagator::Jaeger,
];

/// Bytes that matter to the parsers, plus anything at all (controls, `\x80..=\xff`).
fn header_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => prop::sample::select(b"0123456789abcdefABCDEF-=,;:% \t".to_vec()),
        3 => 0x21u8..0x7f,
        1 => any::<u8>(),
    ]
}

/// Mostly short values, sometimes up to ~20 KB (a random unit repeated: cheap to generate, and
/// often a valid header value, unlike 20 KB of independent random bytes).
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    let long = (
        prop::collection::vec(header_byte(), 1..48),
        1..800usize,
        prop::collection::vec(header_byte(), 0..16),
    )
        .prop_map(|(unit, times, tail)| {
            let mut value = unit.repeat(times);
            value.truncate(20_000);
            value.extend(tail);
            value
        });
    prop_oneof![
        8 => prop::collection::vec(header_byte(), 0..80),
        1 => long,
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// A list (`tracestate`, `baggage`) of plausible members, with optional whitespace and empty
/// members, sometimes repeated far beyond the W3C limits (up to ~20 KB).
fn list_bytes() -> impl Strategy<Value = Vec<u8>> {
    // Compiled once: a `&str` strategy parses its regex for every value.
    let key = string_regex("[a-z][a-z0-9_*/-]{0,6}").unwrap();
    let value = string_regex("[\\x20-\\x2b\\x2d-\\x3c\\x3e-\\x7e]{0,20}").unwrap();
    let member = (
        key,
        value,
        prop::sample::select(vec!["", " ", "\t", " \t "]),
    )
        .prop_map(|(key, value, ows)| format!("{ows}{key}={value}{ows}"));
    let members = prop::collection::vec(prop_oneof![9 => member, 1 => Just(String::new())], 0..24);
    let times = prop_oneof![3 => Just(1usize), 1 => 2..60usize];
    (members, times).prop_map(|(members, times)| {
        let list = members.join(",");
        vec![list.as_str(); times].join(",").into_bytes()
    })
}

/// A well-formed version-00 `traceparent`.
fn valid_traceparent() -> impl Strategy<Value = Vec<u8>> {
    (1..=u128::MAX, 1..=u64::MAX, any::<u8>()).prop_map(|(trace_id, span_id, flags)| {
        format!("00-{trace_id:032x}-{span_id:016x}-{flags:02x}").into_bytes()
    })
}

/// A well-formed `uber-trace-id`.
fn valid_uber_trace_id() -> impl Strategy<Value = Vec<u8>> {
    (1..=u128::MAX, 1..=u64::MAX, 0u8..16).prop_map(|(trace_id, span_id, flags)| {
        format!("{trace_id:x}:{span_id:x}:0:{flags:x}").into_bytes()
    })
}

/// Zero to three lines of one header.
fn lines(value: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(value, 0..=3)
}

/// The header lines that `http` accepts; the others are skipped, as a server would reject them.
fn header_map(fields: &[(&'static str, &[Vec<u8>])]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, values) in fields {
        for value in values.iter() {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.append(*name, value);
            }
        }
    }
    headers
}

/// The request id rule, written independently of `towerscope::request_id`.
fn oracle_request_id(bytes: &[u8]) -> bool {
    (1..=128).contains(&bytes.len())
        && bytes.iter().all(|b| {
            b.is_ascii_alphanumeric()
                || [b'-', b'_', b'.', b':', b'+', b'/', b'=', b'@'].contains(b)
        })
}

/// Request ids: mostly from the allowed alphabet (so valid ones are common), near the
/// 128-byte limit, sometimes with any byte mixed in.
fn request_id_bytes() -> impl Strategy<Value = Vec<u8>> {
    let allowed = prop::sample::select(b"ABCXYZabcxyz0189-_.:+/=@".to_vec());
    let byte = prop_oneof![20 => allowed, 1 => any::<u8>()];
    prop_oneof![
        prop::collection::vec(byte.clone(), 0..20),
        prop::collection::vec(byte, 120..140),
        prop::collection::vec(any::<u8>(), 0..200),
    ]
}

/// The non-empty members of a list, trimmed of spaces and tabs.
fn members(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|&b| b == b',')
        .map(|mut m| {
            while let [b' ' | b'\t', rest @ ..] = m {
                m = rest;
            }
            while let [rest @ .., b' ' | b'\t'] = m {
                m = rest;
            }
            m
        })
        .filter(|m| !m.is_empty())
}

/// The members a capped list must keep: as many leading members as fit both limits.
fn oracle_cap(lines: &[Vec<u8>], max_bytes: usize, max_members: usize) -> Vec<&[u8]> {
    let mut kept = Vec::new();
    let mut bytes = 0;
    for member in lines.iter().flat_map(|line| members(line)) {
        let cost = member.len() + usize::from(!kept.is_empty());
        if kept.len() == max_members || bytes + cost > max_bytes {
            break;
        }
        bytes += cost;
        kept.push(member);
    }
    kept
}

fn is_uuid(value: &HeaderValue) -> bool {
    value.len() == 36
        && value
            .to_str()
            .is_ok_and(|s| uuid::Uuid::parse_str(s).is_ok())
}

proptest! {
    #![proptest_config(ProptestConfig {
        rng_algorithm: RngAlgorithm::XorShift,
        ..ProptestConfig::with_cases(CASES)
    })]

    #[test]
    fn hostile_headers_never_panic_or_exceed_limits(
        traceparent in lines(prop_oneof![3 => header_bytes(), 1 => valid_traceparent()]),
        tracestate in lines(prop_oneof![header_bytes(), list_bytes()]),
        baggage in lines(prop_oneof![header_bytes(), list_bytes()]),
        uber_trace_id in lines(prop_oneof![3 => header_bytes(), 1 => valid_uber_trace_id()]),
        request_id in lines(header_bytes()),
    ) {
        let headers = header_map(&[
            ("traceparent", &traceparent),
            ("tracestate", &tracestate),
            ("baggage", &baggage),
            ("uber-trace-id", &uber_trace_id),
            ("x-request-id", &request_id),
        ]);
        let propagator = composite(&ALL);
        let cx = extract(&propagator, &headers);
        let span = cx.span();
        let span_context = span.span_context();
        prop_assert!(span_context.trace_state().header().len() <= MAX_TRACESTATE_BYTES);
        prop_assert!(span_context.trace_state().into_iter().count() <= MAX_TRACESTATE_MEMBERS);
        prop_assert!(cx.baggage().len() <= MAX_BAGGAGE_MEMBERS);
        if span_context.is_valid() {
            prop_assert!(span_context.is_remote());
        }
        // Whatever was read can be written back.
        let mut out = HeaderMap::new();
        inject(&propagator, &cx, &mut out);
    }

    #[test]
    fn long_lists_are_capped_to_a_prefix_of_whole_members(
        trace_id in 1..=u128::MAX,
        span_id in 1..=u64::MAX,
        tracestate in lines(list_bytes()),
        baggage in lines(list_bytes()),
    ) {
        let traceparent = format!("00-{trace_id:032x}-{span_id:016x}-01").into_bytes();
        let headers = header_map(&[
            ("traceparent", &[traceparent]),
            ("tracestate", &tracestate),
            ("baggage", &baggage),
        ]);
        let extractor = HeaderExtractor::new(&headers);
        for (name, lines, max_bytes, max_members) in [
            ("tracestate", &tracestate, MAX_TRACESTATE_BYTES, MAX_TRACESTATE_MEMBERS),
            ("baggage", &baggage, MAX_BAGGAGE_BYTES, MAX_BAGGAGE_MEMBERS),
        ] {
            let got = extractor.get(name);
            if lines.is_empty() {
                prop_assert_eq!(got, None);
                continue;
            }
            let got = got.unwrap_or_default();
            let expected = oracle_cap(lines, max_bytes, max_members);
            prop_assert_eq!(members(got.as_bytes()).collect::<Vec<_>>(), expected.clone());
            prop_assert!(expected.join(&b',').len() <= max_bytes);
            prop_assert!(expected.len() <= max_members);
            prop_assert!(got.len() <= max_bytes);
        }
        let cx = extract(&composite(&ALL), &headers);
        prop_assert!(cx.span().span_context().trace_state().header().len() <= MAX_TRACESTATE_BYTES);
        prop_assert!(cx.baggage().len() <= MAX_BAGGAGE_MEMBERS);
    }

    #[test]
    fn valid_traceparent_round_trips(
        version in prop_oneof![Just(0u8), 1u8..0xff],
        trace_id in 1..=u128::MAX,
        span_id in 1..=u64::MAX,
        flags in any::<u8>(),
        junk in header_bytes(),
        junk_state in header_bytes(),
    ) {
        let suffix = if version == 0 { String::new() } else { "-future".to_owned() };
        let traceparent = format!("{version:02x}-{trace_id:032x}-{span_id:016x}-{flags:02x}{suffix}");
        let headers = header_map(&[
            ("traceparent", &[traceparent.into_bytes()]),
            ("tracestate", &[junk_state]),
            ("baggage", &[junk]),
        ]);
        let propagator = composite(&ALL);
        let cx = extract(&propagator, &headers);
        let span = cx.span();
        let span_context = span.span_context();
        prop_assert!(span_context.is_remote());
        prop_assert_eq!(span_context.trace_id(), TraceId::from(trace_id));
        prop_assert_eq!(span_context.span_id(), SpanId::from(span_id));
        prop_assert_eq!(span_context.is_sampled(), flags & 1 == 1);
        prop_assert!(span_context.trace_state().header().len() <= MAX_TRACESTATE_BYTES);

        let mut out = HeaderMap::new();
        inject(&propagator, &cx, &mut out);
        // `sampled` and level 2's `random` go on; reserved flags are written as zero.
        let expected = format!("00-{trace_id:032x}-{span_id:016x}-{:02x}", flags & 3);
        prop_assert_eq!(&out["traceparent"], expected.as_str());
        let expected = format!("{trace_id:032x}:{span_id:016x}:0:{}", flags & 1);
        prop_assert_eq!(&out["uber-trace-id"], expected.as_str());
    }

    #[test]
    fn valid_uber_trace_id_round_trips(
        trace_id in 1..=u128::MAX,
        span_id in 1..=u64::MAX,
        parent in any::<u64>(),
        flags in 0u8..16,
        encode in any::<bool>(),
        upper in any::<bool>(),
    ) {
        let value = format!("{trace_id:x}:{span_id:x}:{parent:x}:{flags:x}");
        let value = if upper { value.to_uppercase() } else { value };
        let value = if encode { value.replace(':', "%3A") } else { value };
        let headers = header_map(&[("uber-trace-id", &[value.into_bytes()])]);
        let cx = extract(&composite(&ALL), &headers);
        let span = cx.span();
        let span_context = span.span_context();
        prop_assert!(span_context.is_remote());
        prop_assert_eq!(span_context.trace_id(), TraceId::from(trace_id));
        prop_assert_eq!(span_context.span_id(), SpanId::from(span_id));
        prop_assert_eq!(span_context.is_sampled(), flags & 0b11 != 0);
    }

    #[test]
    fn request_id_validation_matches_the_oracle_and_the_layer(
        id in request_id_bytes(),
        duplicate in any::<bool>(),
    ) {
        let valid = is_valid_request_id(&id);
        prop_assert_eq!(valid, oracle_request_id(&id));

        let Ok(value) = HeaderValue::from_bytes(&id) else {
            return Ok(());
        };
        let mut req = Request::get("/").body(()).unwrap();
        req.headers_mut().append("x-request-id", value.clone());
        if duplicate {
            req.headers_mut().append("x-request-id", value.clone());
        }
        let svc = ServiceBuilder::new()
            .layer(RequestIdLayer::new())
            .service(service_fn(|_: Request<()>| async {
                Ok::<_, Infallible>(Response::new(()))
            }));
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let res = runtime.block_on(svc.oneshot(req)).unwrap();
        let got = &res.headers()["x-request-id"];
        if valid && !duplicate {
            prop_assert_eq!(got, &value);
        } else {
            prop_assert!(is_uuid(got), "{:?} replaced by a uuid, got {:?}", value, got);
        }
    }
}
