//! A server span's attributes beyond the conventions' own: captured headers and the
//! application's hooks ([`SpanAttributes`]).

use std::{fmt, sync::Arc};

use http::{HeaderMap, HeaderName};
use opentelemetry::{Array, KeyValue, StringValue, Value};

use crate::head::{RequestHead, ResponseHead};

type RequestHook = dyn Fn(&RequestHead<'_>, &mut Vec<KeyValue>) + Send + Sync;
type ResponseHook = dyn Fn(&ResponseHead<'_>, &mut Vec<KeyValue>) + Send + Sync;

/// What the server layer adds to a sampled request's span: the values of named request and
/// response headers, as the OpenTelemetry conventions' opt-in `http.request.header.<name>` /
/// `http.response.header.<name>` attributes (a string array: every value of the header, in
/// order), and the attributes of the application's own hooks, called with the request head
/// when the span starts and with the response head when it arrives.
///
/// Nothing runs for a request that is not sampled, and nothing at all when none is set. Set
/// from `trace.capture_request_headers` / `trace.capture_response_headers`, or in code:
///
/// ```
/// use opentelemetry::KeyValue;
/// use towerscope::trace::SpanAttributes;
///
/// let attributes = SpanAttributes::new()
///     .capture_request_headers(["x-tenant-id".parse().unwrap()])
///     .on_request(|head, attributes| {
///         if let Some(user) = head.headers().get("x-user-id").and_then(|v| v.to_str().ok()) {
///             attributes.push(KeyValue::new("enduser.id", user.to_owned()));
///         }
///     })
///     .on_response(|head, attributes| {
///         attributes.push(KeyValue::new("app.cache_hit", head.headers().contains_key("x-cache-hit")));
///     });
/// assert!(!attributes.is_empty());
/// ```
#[derive(Clone, Default)]
pub struct SpanAttributes {
    request_headers: Arc<[(HeaderName, String)]>,
    response_headers: Arc<[(HeaderName, String)]>,
    on_request: Option<Arc<RequestHook>>,
    on_response: Option<Arc<ResponseHook>>,
}

impl fmt::Debug for SpanAttributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |headers: &[(HeaderName, String)]| {
            headers.iter().map(|(h, _)| h.clone()).collect::<Vec<_>>()
        };
        f.debug_struct("SpanAttributes")
            .field("request_headers", &names(&self.request_headers))
            .field("response_headers", &names(&self.response_headers))
            .field("on_request", &self.on_request.is_some())
            .field("on_response", &self.on_response.is_some())
            .finish()
    }
}

/// `headers` with the attribute key of each (`http.request.header.x-tenant-id`).
fn keyed(
    prefix: &str,
    headers: impl IntoIterator<Item = HeaderName>,
) -> Arc<[(HeaderName, String)]> {
    headers
        .into_iter()
        .map(|name| {
            let key = format!("{prefix}{name}");
            (name, key)
        })
        .collect()
}

impl SpanAttributes {
    /// Nothing added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the values of these request headers as `http.request.header.<name>` (header
    /// names are lowercase). A header the request does not carry is left out.
    pub fn capture_request_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.request_headers = keyed("http.request.header.", names);
        self
    }

    /// Records the values of these response headers as `http.response.header.<name>`.
    pub fn capture_response_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.response_headers = keyed("http.response.header.", names);
        self
    }

    /// Calls `hook` with the request head when a sampled span starts; what it pushes is added
    /// to the span's attributes.
    pub fn on_request(
        mut self,
        hook: impl Fn(&RequestHead<'_>, &mut Vec<KeyValue>) + Send + Sync + 'static,
    ) -> Self {
        self.on_request = Some(Arc::new(hook));
        self
    }

    /// Calls `hook` with the response head when a sampled span's response arrives.
    pub fn on_response(
        mut self,
        hook: impl Fn(&ResponseHead<'_>, &mut Vec<KeyValue>) + Send + Sync + 'static,
    ) -> Self {
        self.on_response = Some(Arc::new(hook));
        self
    }

    /// Whether nothing is added.
    pub fn is_empty(&self) -> bool {
        self.request_headers.is_empty()
            && self.on_request.is_none()
            && !self.has_response_attributes()
    }

    /// Whether anything is added when the response arrives.
    pub(crate) fn has_response_attributes(&self) -> bool {
        !self.response_headers.is_empty() || self.on_response.is_some()
    }

    /// Appends the request's attributes to `out`.
    pub(crate) fn request_into(&self, head: &RequestHead<'_>, out: &mut Vec<KeyValue>) {
        headers_into(&self.request_headers, head.headers(), out);
        if let Some(hook) = &self.on_request {
            hook(head, out);
        }
    }

    /// The response's attributes.
    pub(crate) fn response(&self, head: &ResponseHead<'_>) -> Vec<KeyValue> {
        let mut out = Vec::new();
        headers_into(&self.response_headers, head.headers(), &mut out);
        if let Some(hook) = &self.on_response {
            hook(head, &mut out);
        }
        out
    }
}

/// The captured headers of `headers` as string-array attributes (a value that is not UTF-8
/// is recorded with replacement characters).
fn headers_into(captured: &[(HeaderName, String)], headers: &HeaderMap, out: &mut Vec<KeyValue>) {
    for (name, key) in captured {
        let values: Vec<StringValue> = headers
            .get_all(name)
            .iter()
            .map(|v| StringValue::from(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        if !values.is_empty() {
            out.push(KeyValue::new(
                key.clone(),
                Value::Array(Array::String(values)),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{Request, Response};

    use super::*;

    #[test]
    fn headers_become_string_arrays_and_hooks_add_theirs() {
        let attributes = SpanAttributes::new()
            .capture_request_headers(["x-tenant".parse().unwrap(), "x-absent".parse().unwrap()])
            .capture_response_headers(["content-type".parse().unwrap()])
            .on_request(|head, out| {
                out.push(KeyValue::new("app.path_len", head.path().len() as i64));
            })
            .on_response(|head, out| {
                out.push(KeyValue::new(
                    "app.status",
                    i64::from(head.status().as_u16()),
                ));
            });
        let req = Request::get("/a/b")
            .header("x-tenant", "t1")
            .header("x-tenant", b"t\xff".as_slice())
            .body(())
            .unwrap();
        let mut out = Vec::new();
        attributes.request_into(&RequestHead::of(&req), &mut out);
        assert_eq!(
            out,
            [
                KeyValue::new(
                    "http.request.header.x-tenant",
                    Value::Array(Array::String(vec!["t1".into(), "t\u{fffd}".into()]))
                ),
                KeyValue::new("app.path_len", 4_i64),
            ]
        );
        let res = Response::builder()
            .status(201)
            .header("content-type", "text/plain")
            .body(())
            .unwrap();
        assert_eq!(
            attributes.response(&ResponseHead::of(&res)),
            [
                KeyValue::new(
                    "http.response.header.content-type",
                    Value::Array(Array::String(vec!["text/plain".into()]))
                ),
                KeyValue::new("app.status", 201_i64),
            ]
        );
        assert!(SpanAttributes::new().is_empty());
    }
}
