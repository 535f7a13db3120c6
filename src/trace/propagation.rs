//! Context propagation over HTTP headers: W3C `traceparent`/`tracestate`/`baggage` and
//! Jaeger's `uber-trace-id`, with the incoming lists capped before anything parses them.
//!
//! [`extract`] reads a request's headers through a [`HeaderExtractor`], which rejects a
//! duplicated or malformed `traceparent` (so a new trace starts) and cuts `tracestate` and
//! `baggage` to whole list members within the W3C limits ([`MAX_TRACESTATE_BYTES`],
//! [`MAX_BAGGAGE_MEMBERS`], ...). [`inject`] writes a context onto outgoing headers through a
//! [`HeaderInjector`]. [`composite`] builds the propagators named in the configuration, and
//! [`JaegerPropagator`] reads and writes `uber-trace-id`.
//!
//! # Example
//!
//! ```
//! use http::HeaderMap;
//! use opentelemetry::trace::TraceContextExt;
//! use towerscope::config::Propagator;
//! use towerscope::trace::propagation::{composite, extract, inject};
//!
//! let propagator = composite(&[Propagator::TraceContext, Propagator::Jaeger]);
//!
//! let mut incoming = HeaderMap::new();
//! incoming.insert(
//!     "traceparent",
//!     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap(),
//! );
//! let cx = extract(&propagator, &incoming);
//! assert!(cx.span().span_context().is_remote());
//!
//! // Outgoing calls carry every configured format.
//! let mut outgoing = HeaderMap::new();
//! inject(&propagator, &cx, &mut outgoing);
//! assert_eq!(
//!     outgoing["uber-trace-id"],
//!     "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1"
//! );
//! ```

use std::{borrow::Cow, sync::LazyLock};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    propagation::{
        text_map_propagator::FieldIter, Extractor, Injector, TextMapCompositePropagator,
        TextMapPropagator,
    },
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
    Context,
};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use percent_encoding::percent_decode_str;

use crate::config::Propagator;

/// The longest `tracestate` that is read, in bytes (W3C: at least 512 must be propagated).
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// The most `tracestate` list members that are read (the W3C limit).
pub const MAX_TRACESTATE_MEMBERS: usize = 32;

/// The longest `baggage` that is read, in bytes (the W3C limit).
pub const MAX_BAGGAGE_BYTES: usize = 8192;

/// The most `baggage` list members that are read (the W3C limit).
pub const MAX_BAGGAGE_MEMBERS: usize = 64;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
const BAGGAGE: &str = "baggage";
const UBER_TRACE_ID: &str = "uber-trace-id";

/// Cuts a comma-separated list (`tracestate`, `baggage`) to its longest prefix of whole
/// members that fits in `max_bytes` bytes and `max_members` members.
///
/// Members are trimmed of optional whitespace (spaces and tabs) and empty members are skipped,
/// as W3C lists allow. A member is never cut: the first member that does not fit ends the list,
/// even if a shorter one follows. The value is returned unchanged ([`Cow::Borrowed`]) when it
/// already fits, counting empty members too (the OpenTelemetry parsers do); otherwise the kept
/// members are joined with `,` into a new string.
///
/// ```
/// use towerscope::trace::propagation::cap_members;
///
/// assert_eq!(cap_members("a=1, b=2,,c=3", 64, 2), "a=1,b=2");
/// assert_eq!(cap_members("a=1,b=2,c=3", 6, 64), "a=1");
/// ```
pub fn cap_members(value: &str, max_bytes: usize, max_members: usize) -> Cow<'_, str> {
    if value.len() <= max_bytes && value.split(',').count() <= max_members {
        return Cow::Borrowed(value);
    }
    let mut capped = CappedList::new(max_bytes, max_members, value.len());
    capped.push_list(value);
    Cow::Owned(capped.out)
}

/// A list being capped, possibly across several header lines.
struct CappedList {
    out: String,
    members: usize,
    max_bytes: usize,
    max_members: usize,
    full: bool,
}

impl CappedList {
    fn new(max_bytes: usize, max_members: usize, size_hint: usize) -> Self {
        Self {
            out: String::with_capacity(size_hint.min(max_bytes)),
            members: 0,
            max_bytes,
            max_members,
            full: false,
        }
    }

    fn push_list(&mut self, list: &str) {
        for member in list.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            let separator = usize::from(!self.out.is_empty());
            // Once a member does not fit, later ones are dropped too: the result is a prefix.
            if self.full
                || self.members == self.max_members
                || self.out.len() + separator + member.len() > self.max_bytes
            {
                self.full = true;
                return;
            }
            if separator == 1 {
                self.out.push(',');
            }
            self.out.push_str(member);
            self.members += 1;
        }
    }
}

/// Reads OpenTelemetry propagation fields from an [`HeaderMap`], defensively.
///
/// - `traceparent` is returned only when the request has exactly one, well-formed per W3C
///   Trace Context (lowercase hex, non-zero ids, version `00` exactly 55 characters, no `ff`
///   version); otherwise it reads as missing, so a new trace starts and `tracestate` is
///   ignored.
/// - `tracestate` and `baggage` lines are joined with `,`, then capped with [`cap_members`] to
///   [`MAX_TRACESTATE_BYTES`]/[`MAX_TRACESTATE_MEMBERS`] and
///   [`MAX_BAGGAGE_BYTES`]/[`MAX_BAGGAGE_MEMBERS`]. If any line is not visible ASCII, the
///   whole field reads as missing.
/// - Any other key reads as its first value, if that is visible ASCII.
///
/// Keys are case-insensitive.
#[derive(Debug)]
pub struct HeaderExtractor<'a> {
    headers: &'a HeaderMap,
    traceparent: Option<&'a str>,
    tracestate: Option<Cow<'a, str>>,
    baggage: Option<Cow<'a, str>>,
}

impl<'a> HeaderExtractor<'a> {
    /// Reads `headers`, validating `traceparent` and capping `tracestate` and `baggage` once.
    pub fn new(headers: &'a HeaderMap) -> Self {
        Self {
            headers,
            traceparent: single_traceparent(headers),
            tracestate: joined_list(
                headers,
                TRACESTATE,
                MAX_TRACESTATE_BYTES,
                MAX_TRACESTATE_MEMBERS,
            ),
            baggage: joined_list(headers, BAGGAGE, MAX_BAGGAGE_BYTES, MAX_BAGGAGE_MEMBERS),
        }
    }
}

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key.eq_ignore_ascii_case(TRACEPARENT) {
            self.traceparent
        } else if key.eq_ignore_ascii_case(TRACESTATE) {
            self.tracestate.as_deref()
        } else if key.eq_ignore_ascii_case(BAGGAGE) {
            self.baggage.as_deref()
        } else {
            // An invalid header name finds nothing; it does not panic.
            self.headers.get(key)?.to_str().ok()
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.headers.keys().map(HeaderName::as_str).collect()
    }
}

fn single_traceparent(headers: &HeaderMap) -> Option<&str> {
    let mut lines = headers.get_all(TRACEPARENT).iter();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return None;
    };
    let value = line.to_str().ok()?.trim_matches([' ', '\t']);
    is_valid_traceparent(value.as_bytes()).then_some(value)
}

/// W3C Trace Context `traceparent`, stricter than `TraceContextPropagator`, which accepts
/// ids of any length and a trailing `-`.
fn is_valid_traceparent(value: &[u8]) -> bool {
    fn lower_hex(field: &[u8]) -> bool {
        field.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }
    fn zero(field: &[u8]) -> bool {
        field.iter().all(|&b| b == b'0')
    }
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return false;
    }
    let (version, trace_id, span_id, flags) =
        (&value[..2], &value[3..35], &value[36..52], &value[53..55]);
    let well_formed = [version, trace_id, span_id, flags]
        .into_iter()
        .all(lower_hex)
        && version != b"ff"
        && !zero(trace_id)
        && !zero(span_id);
    // Version 00 has exactly four fields; later versions may append `-`-separated ones.
    well_formed
        && if version == b"00" {
            value.len() == 55
        } else {
            value.len() == 55 || value[55] == b'-'
        }
}

fn joined_list<'a>(
    headers: &'a HeaderMap,
    name: &str,
    max_bytes: usize,
    max_members: usize,
) -> Option<Cow<'a, str>> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?.to_str().ok()?;
    if lines.next().is_none() {
        return Some(cap_members(first, max_bytes, max_members));
    }
    // Several lines: check them all before building anything.
    if headers.get_all(name).iter().any(|v| v.to_str().is_err()) {
        return None;
    }
    let mut capped = CappedList::new(max_bytes, max_members, max_bytes);
    for line in headers.get_all(name) {
        capped.push_list(line.to_str().ok()?);
    }
    Some(Cow::Owned(capped.out))
}

/// Writes OpenTelemetry propagation fields into an [`HeaderMap`], replacing earlier values.
///
/// A key that is not a valid header name, or a value that is not a valid header value, is
/// skipped silently: injection never panics.
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::try_from(value),
        ) else {
            return;
        };
        self.0.insert(name, value);
    }
}

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

fn parse_uber_trace_id(value: &str) -> Option<SpanContext> {
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

/// Builds the propagators named in `propagators`, in that order: extraction reads them in
/// order (a later format that finds a valid span context replaces an earlier one's), and
/// injection writes all of them.
pub fn composite(propagators: &[Propagator]) -> TextMapCompositePropagator {
    let propagators = propagators
        .iter()
        .map(|propagator| -> Box<dyn TextMapPropagator + Send + Sync> {
            match propagator {
                Propagator::TraceContext => Box::new(TraceContextPropagator::new()),
                Propagator::Baggage => Box::new(BaggagePropagator::new()),
                Propagator::Jaeger => Box::new(JaegerPropagator::new()),
            }
        })
        .collect();
    TextMapCompositePropagator::new(propagators)
}

/// Extracts the context carried by `headers` through a [`HeaderExtractor`], starting from an
/// empty context (the current context plays no part).
pub fn extract(propagator: &dyn TextMapPropagator, headers: &HeaderMap) -> Context {
    propagator.extract_with_context(&Context::new(), &HeaderExtractor::new(headers))
}

/// Injects `cx` into `headers` through a [`HeaderInjector`].
pub fn inject(propagator: &dyn TextMapPropagator, cx: &Context, headers: &mut HeaderMap) {
    propagator.inject_context(cx, &mut HeaderInjector(headers));
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use opentelemetry::baggage::BaggageExt;

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
}
