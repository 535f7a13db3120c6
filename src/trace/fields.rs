//! The fields of a server span known when the request arrives, and its name.

use http::Request;
use opentelemetry::{trace::SpanKind, KeyValue, Value};

use super::{direct::SpanStart, MAX_PATH_ATTRIBUTE, MAX_USER_AGENT_ATTRIBUTE};
use crate::{
    labels::OTHER_METHOD,
    operation::{matched_path, OperationId},
    request_id::RequestId,
    text::capped,
};

/// The fields of a server span known when the request arrives.
pub(super) struct SpanFields<'a> {
    pub(super) name: SpanName<'a>,
    pub(super) path: &'a str,
    pub(super) query: Option<&'a str>,
    pub(super) user_agent: Option<&'a str>,
    pub(super) request_id: Option<&'a str>,
}

impl<'a> SpanFields<'a> {
    pub(super) fn of<B>(
        req: &'a Request<B>,
        method: Option<&'static str>,
        operation: &'a OperationId,
    ) -> Self {
        Self {
            name: SpanName {
                verb: method.unwrap_or("HTTP"),
                route: matched_path(req.extensions()),
                operation,
            },
            path: capped(req.uri().path(), MAX_PATH_ATTRIBUTE),
            query: req.uri().query().map(|q| capped(q, MAX_PATH_ATTRIBUTE)),
            user_agent: req
                .headers()
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|ua| capped(ua, MAX_USER_AGENT_ATTRIBUTE)),
            request_id: req.extensions().get::<RequestId>().map(RequestId::as_str),
        }
    }

    /// The direct span's start: the same attributes as the `tracing` span's fields.
    pub(super) fn start(&self, method: Option<&'static str>) -> SpanStart {
        let operation = self.name.operation;
        // method, path, operation, then the optional ones.
        let capacity = 3
            + usize::from(self.query.is_some())
            + usize::from(self.name.route.is_some())
            + usize::from(self.user_agent.is_some())
            + usize::from(self.request_id.is_some())
            // Room for the status the response adds.
            + 1;
        let mut attributes = Vec::with_capacity(capacity);
        attributes.push(KeyValue::new(
            "http.request.method",
            method.unwrap_or(OTHER_METHOD),
        ));
        attributes.push(KeyValue::new("url.path", self.path.to_owned()));
        if let Some(query) = self.query {
            attributes.push(KeyValue::new("url.query", query.to_owned()));
        }
        let operation_value = Value::from(operation.shared());
        if let Some(route) = self.name.route {
            // The route is the operation when axum's MatchedPath resolved it: share it.
            let route = if route == operation.as_str() {
                operation_value.clone()
            } else {
                Value::from(route.to_owned())
            };
            attributes.push(KeyValue::new("http.route", route));
        }
        if let Some(user_agent) = self.user_agent {
            attributes.push(KeyValue::new("user_agent.original", user_agent.to_owned()));
        }
        attributes.push(KeyValue::new("operation", operation_value));
        if let Some(id) = self.request_id {
            attributes.push(KeyValue::new("request_id", id.to_owned()));
        }
        SpanStart {
            name: self.name.to_owned_string().into(),
            kind: SpanKind::Server,
            attributes,
        }
    }
}

/// A server span's name: `{verb} {route}` with a route template, else `{verb} {operation}`
/// for a known operation, else `{verb}`.
pub(super) struct SpanName<'a> {
    pub(super) verb: &'a str,
    pub(super) route: Option<&'a str>,
    pub(super) operation: &'a OperationId,
}

impl SpanName<'_> {
    /// What follows the verb: the route template, else a known operation.
    pub(super) fn object(&self) -> Option<&str> {
        match (self.route, self.operation.as_str()) {
            (Some(route), _) => Some(route),
            (None, op) if op != OperationId::UNKNOWN => Some(op),
            _ => None,
        }
    }

    /// Appends the name to `out` (no formatting machinery: this runs per request).
    pub(super) fn write_to(&self, out: &mut String) {
        out.push_str(self.verb);
        if let Some(object) = self.object() {
            out.push(' ');
            out.push_str(object);
        }
    }

    /// The name, in a string of its own.
    pub(super) fn to_owned_string(&self) -> String {
        let len = self.verb.len() + self.object().map_or(0, |object| object.len() + 1);
        let mut out = String::with_capacity(len);
        self.write_to(&mut out);
        out
    }

    /// Calls `f` with the name written into a per-thread buffer (subscribers copy what they
    /// keep), so building it allocates nothing once the buffer has grown.
    pub(super) fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        use std::cell::RefCell;
        thread_local! {
            static BUFFER: RefCell<String> = const { RefCell::new(String::new()) };
        }
        BUFFER.with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut buffer) => {
                buffer.clear();
                self.write_to(&mut buffer);
                f(&buffer)
            }
            // Re-entered from inside `f` (a subscriber handling the span opened another
            // request's): a buffer of its own.
            Err(_) => f(&self.to_owned_string()),
        })
    }
}
