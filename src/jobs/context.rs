//! [`JobContext`]: what a job carries from the request that enqueued it, stored as a W3C
//! `traceparent` or through serde.

use http::HeaderValue;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

use crate::{
    request_id::{self, RequestId},
    trace::propagation::{self, RANDOM},
};

/// What a job carries from the request that enqueued it: that request's span context (for
/// the span link) and its request id.
///
/// Capture it where the job is enqueued, with [`capture`](Self::capture). To store it with a
/// job in a database, keep [`to_traceparent`](Self::to_traceparent) and the request id as two
/// strings, or serialize the context with serde (`{"traceparent": ..., "request_id": ...}`,
/// both optional; deserializing ignores an invalid `traceparent` or request id rather than
/// losing the job).
///
/// `tracestate` and baggage are not carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobContext {
    pub(super) span_context: SpanContext,
    request_id: Option<RequestId>,
}

impl Default for JobContext {
    /// An empty context: no link, no request id (e.g. a periodic job started by a scheduler).
    fn default() -> Self {
        Self {
            span_context: SpanContext::NONE,
            request_id: None,
        }
    }
}

impl JobContext {
    /// The context of the code running now: the current `tracing` span's OpenTelemetry span
    /// context and [`request_id::current`]. Inside a handler behind `Telemetry::layer` (an
    /// [`ObservabilityLayer`](crate::ObservabilityLayer)), that is the request's server span
    /// (or a span inside it) and its `X-Request-ID`. Outside a traced span, the span context is
    /// invalid and the job's span gets no link.
    pub fn capture() -> Self {
        let cx = crate::trace::current_context();
        let span = cx.span();
        let sc = span.span_context();
        // The flags as they would be sent: an SDK span that is not sampled has empty flags,
        // but its trace's `random` flag is noted in the context.
        let span_context = SpanContext::new(
            sc.trace_id(),
            sc.span_id(),
            propagation::propagated_flags(&cx, sc),
            sc.is_remote(),
            sc.trace_state().clone(),
        );
        Self {
            span_context,
            request_id: request_id::current(),
        }
    }

    /// A context from its parts.
    pub fn new(span_context: SpanContext, request_id: Option<RequestId>) -> Self {
        Self {
            span_context,
            request_id,
        }
    }

    /// Replaces the request id (e.g. one read back from the job's database row).
    pub fn with_request_id(mut self, request_id: RequestId) -> Self {
        self.request_id = Some(request_id);
        self
    }

    /// The span context the job's span links to; invalid when there is none.
    pub fn span_context(&self) -> &SpanContext {
        &self.span_context
    }

    /// The enqueuing request's id, when there was one.
    pub fn request_id(&self) -> Option<&RequestId> {
        self.request_id.as_ref()
    }

    /// The span context as a W3C `traceparent` (`00-{trace id}-{span id}-{flags}`); `None`
    /// when there is no valid span context. The `sampled` and `random` (W3C level 2) flags are
    /// kept, the others are written as zero.
    pub fn to_traceparent(&self) -> Option<String> {
        let sc = &self.span_context;
        if !sc.is_valid() {
            return None;
        }
        let flags = sc.trace_flags() & (TraceFlags::SAMPLED | RANDOM);
        Some(format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            flags.to_u8()
        ))
    }

    /// A context (without request id) from a W3C `traceparent`, as written by
    /// [`to_traceparent`](Self::to_traceparent) or received in a header. Follows the W3C
    /// Trace Context rules: lowercase hex, non-zero ids, version `ff` invalid, version `00`
    /// with exactly four fields, later versions with at least four.
    pub fn from_traceparent(traceparent: &str) -> Result<Self, InvalidTraceparent> {
        parse_traceparent(traceparent.trim()).map(|span_context| Self {
            span_context,
            request_id: None,
        })
    }
}

/// A `traceparent` that [`JobContext::from_traceparent`] cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent: {reason}")]
pub struct InvalidTraceparent {
    reason: &'static str,
}

impl InvalidTraceparent {
    /// What is wrong with it.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

fn invalid(reason: &'static str) -> InvalidTraceparent {
    InvalidTraceparent { reason }
}

/// Parses exactly `N` lowercase hex digits into bytes.
fn lower_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

fn parse_traceparent(s: &str) -> Result<SpanContext, InvalidTraceparent> {
    let mut fields = s.split('-');
    let version = fields.next().unwrap_or_default();
    let [version] =
        lower_hex::<1>(version).ok_or(invalid("version is not two lowercase hex digits"))?;
    if version == 0xff {
        return Err(invalid("version ff is forbidden"));
    }
    let (Some(trace_id), Some(span_id), Some(flags)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err(invalid("expected version-traceid-parentid-flags"));
    };
    if version == 0 && fields.next().is_some() {
        return Err(invalid("version 00 has exactly four fields"));
    }
    let trace_id = lower_hex::<16>(trace_id)
        .map(TraceId::from_bytes)
        .ok_or(invalid("trace id is not 32 lowercase hex digits"))?;
    let span_id = lower_hex::<8>(span_id)
        .map(SpanId::from_bytes)
        .ok_or(invalid("parent id is not 16 lowercase hex digits"))?;
    let [flags] = lower_hex::<1>(flags).ok_or(invalid("flags are not two lowercase hex digits"))?;
    if trace_id == TraceId::INVALID {
        return Err(invalid("trace id is all zeros"));
    }
    if span_id == SpanId::INVALID {
        return Err(invalid("parent id is all zeros"));
    }
    Ok(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & (TraceFlags::SAMPLED | RANDOM),
        true,
        TraceState::NONE,
    ))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

impl serde::Serialize for JobContext {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StoredContext {
            traceparent: self.to_traceparent(),
            request_id: self.request_id.as_ref().map(|id| id.as_str().to_owned()),
        }
        .serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for JobContext {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = StoredContext::deserialize(deserializer)?;
        // Telemetry must never cost a job: a damaged traceparent or id is dropped, not fatal.
        let mut context = stored
            .traceparent
            .and_then(|tp| Self::from_traceparent(&tp).ok())
            .unwrap_or_default();
        context.request_id = stored
            .request_id
            .filter(|id| request_id::is_valid_request_id(id.as_bytes()))
            .and_then(|id| HeaderValue::try_from(id).ok())
            .map(RequestId::new);
        Ok(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parsing_follows_w3c() {
        let ok = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let cx = JobContext::from_traceparent(ok).unwrap();
        assert!(cx.span_context().is_sampled());
        assert!(cx.span_context().is_remote());
        assert_eq!(cx.to_traceparent().as_deref(), Some(ok));
        // Future versions may carry more fields.
        assert!(JobContext::from_traceparent(
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-extra"
        )
        .is_ok());
        for bad in [
            "",
            "00",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333g-01",
            "0-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(JobContext::from_traceparent(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sampled_and_random_flags_are_kept_reserved_ones_zeroed() {
        let ids = "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331";
        for (stored, written) in [
            ("03", "03"),
            ("02", "02"),
            ("0b", "03"),
            ("fc", "00"),
            ("01", "01"),
        ] {
            let cx = JobContext::from_traceparent(&format!("00-{ids}-{stored}")).unwrap();
            assert_eq!(
                cx.to_traceparent(),
                Some(format!("00-{ids}-{written}")),
                "{stored}"
            );
        }
    }

    #[test]
    fn empty_context_has_no_traceparent() {
        assert_eq!(JobContext::default().to_traceparent(), None);
        assert_eq!(JobContext::capture().to_traceparent(), None);
    }
}
