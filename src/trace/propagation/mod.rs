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
//! # W3C Trace Context, levels 1 and 2
//!
//! [`W3cPropagator`] (`tracecontext`) replaces opentelemetry_sdk's `TraceContextPropagator`:
//!
//! - `tracestate` is read by the specification's grammar (level 2): a key of 1–256
//!   characters, the first `a`–`z` or a digit, the others also `_ - * / @` (level 1's
//!   `tenant@system` keys are among them); a value of 1–256 characters from `%x20-7E` but `,`
//!   and `=`, not ending in a space. Spaces and tabs around a member and empty members are
//!   skipped; a key repeated later in the list is dropped there (the first member kept).
//!   **The rule followed when something is invalid: the whole `tracestate` is discarded** (a
//!   bad key or value, a member without `=`), and `traceparent` is kept. The specification
//!   defines `tracestate` as one list: a header that does not match the list grammar has no
//!   valid list members to take, its test suite expects such a header to be discarded, and
//!   forwarding the members around a broken one would send on a list its sender never wrote.
//!   The 32-member / 512-byte cap runs before: a list longer than that keeps its first whole
//!   members (the spec allows truncating whole entries), and what is cut is not judged.
//! - The `random` flag ([`RANDOM`], `0x02`) is kept on the remote span context and written
//!   back; reserved flags are zeroed. Traces the server layers start set it (their ids come
//!   from the SDK's `RandomIdGenerator`, random in all 128 bits), and a span the SDK drops
//!   (given empty flags) still propagates it, from a note the context carries.
//!
//! opentelemetry 0.33's `TraceState` still checks level 1's `tenant@system` form, and
//! refuses even some of those (it stops at 13 characters after the `@`): a received list
//! holding a key it refuses (`t@` and 14 characters, `foo@@bar`, `foo@bar@baz`) is kept
//! beside the span context and written back as received, as long as the span's `TraceState`
//! is the one extraction built.
//!
//! # Example
//!
//! ```
//! use http::HeaderMap;
//! use opentelemetry::trace::TraceContextExt;
//! use towerscope::trace::propagation::{composite, extract, inject, Propagator};
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

mod headers;
mod jaeger;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_w3c;
mod tracestate;
mod w3c;

use std::{borrow::Cow, sync::Arc};

use http::{HeaderMap, HeaderName};
use opentelemetry::{
    propagation::{TextMapCompositePropagator, TextMapPropagator},
    Context,
};
use opentelemetry_sdk::propagation::BaggagePropagator;
use serde::Deserialize;

pub use headers::{HeaderExtractor, HeaderInjector};
pub use jaeger::JaegerPropagator;
pub(crate) use w3c::{note_random, propagated_flags};
pub use w3c::{W3cPropagator, RANDOM};

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

/// A context propagation format, as named in `trace.propagators` (lowercase).
///
/// Also reachable as `towerscope::config::Propagator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Propagator {
    /// W3C `traceparent` / `tracestate`, levels 1 and 2 ([`W3cPropagator`]).
    TraceContext,
    /// W3C `baggage`.
    Baggage,
    /// Jaeger's `uber-trace-id`.
    Jaeger,
}

/// Builds the propagators named in `propagators`, in that order: extraction reads them in
/// order (a later format that finds a valid span context replaces an earlier one's), and
/// injection writes all of them.
pub fn composite(propagators: &[Propagator]) -> TextMapCompositePropagator {
    let propagators = propagators
        .iter()
        .map(|propagator| -> Box<dyn TextMapPropagator + Send + Sync> {
            match propagator {
                Propagator::TraceContext => Box::new(W3cPropagator::new()),
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

/// How a server layer reads the caller's context: a propagator and, for the formats of
/// [`composite`], every header they read, so that a request carrying none of them (most
/// requests to an edge service) is not handed to the propagators at all.
#[derive(Clone)]
pub(crate) struct IncomingContext {
    propagator: Arc<dyn TextMapPropagator + Send + Sync>,
    /// Every header the propagator reads, when that is known (a propagator of the user's may
    /// read keys it does not list, by prefix).
    headers: Option<Arc<[HeaderName]>>,
}

impl IncomingContext {
    /// The formats of `propagators`, as [`composite`] builds them.
    pub(crate) fn configured(propagators: &[Propagator]) -> Self {
        let propagator = composite(propagators);
        let headers = propagator
            .fields()
            .filter_map(|field| HeaderName::from_bytes(field.as_bytes()).ok())
            .collect();
        Self {
            propagator: Arc::new(propagator),
            headers: Some(headers),
        }
    }

    /// Any propagator; it is asked for every request.
    pub(crate) fn custom(propagator: impl TextMapPropagator + Send + Sync + 'static) -> Self {
        Self {
            propagator: Arc::new(propagator),
            headers: None,
        }
    }

    /// The context carried by `headers` (see [`extract`]); an empty one without any of the
    /// propagators' headers.
    pub(crate) fn extract(&self, headers: &HeaderMap) -> Context {
        if let Some(names) = &self.headers {
            if !names.iter().any(|name| headers.contains_key(name)) {
                return Context::new();
            }
        }
        extract(&*self.propagator, headers)
    }
}

/// Injects `cx` into `headers` through a [`HeaderInjector`].
pub fn inject(propagator: &dyn TextMapPropagator, cx: &Context, headers: &mut HeaderMap) {
    propagator.inject_context(cx, &mut HeaderInjector(headers));
}
