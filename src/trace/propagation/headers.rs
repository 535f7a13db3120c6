//! [`HeaderExtractor`] and [`HeaderInjector`]: OpenTelemetry carriers over an [`HeaderMap`],
//! with `traceparent` validated and `tracestate`/`baggage` capped on the way in.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};

use super::{
    cap_members, CappedList, BAGGAGE, MAX_BAGGAGE_BYTES, MAX_BAGGAGE_MEMBERS, MAX_TRACESTATE_BYTES,
    MAX_TRACESTATE_MEMBERS, TRACEPARENT, TRACESTATE,
};

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

/// The header names, parsed once: a lookup by `&str` parses the name on every request.
static TRACEPARENT_HEADER: HeaderName = HeaderName::from_static(TRACEPARENT);
static TRACESTATE_HEADER: HeaderName = HeaderName::from_static(TRACESTATE);
static BAGGAGE_HEADER: HeaderName = HeaderName::from_static(BAGGAGE);

impl<'a> HeaderExtractor<'a> {
    /// Reads `headers`, validating `traceparent` and capping `tracestate` and `baggage` once.
    pub fn new(headers: &'a HeaderMap) -> Self {
        Self {
            headers,
            traceparent: single_traceparent(headers),
            tracestate: joined_list(
                headers,
                &TRACESTATE_HEADER,
                MAX_TRACESTATE_BYTES,
                MAX_TRACESTATE_MEMBERS,
            ),
            baggage: joined_list(
                headers,
                &BAGGAGE_HEADER,
                MAX_BAGGAGE_BYTES,
                MAX_BAGGAGE_MEMBERS,
            ),
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
    let mut lines = headers.get_all(&TRACEPARENT_HEADER).iter();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return None;
    };
    let value = line.to_str().ok()?.trim_matches([' ', '\t']);
    is_valid_traceparent(value.as_bytes()).then_some(value)
}

/// W3C Trace Context `traceparent`, stricter than `TraceContextPropagator`, which accepts
/// ids of any length and a trailing `-`.
pub(super) fn is_valid_traceparent(value: &[u8]) -> bool {
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
    name: &HeaderName,
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
