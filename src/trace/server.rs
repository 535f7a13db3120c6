//! [`ServerSpan`]: the span of one request (or gRPC call) as a server layer opened it, however
//! it is exported; the HTTP and gRPC layers record on it and end it the same way.
//!
//! Two ways to export ([`SpanExport`]):
//!
//! - **through `tracing`** (a layer built on its own): the layer opens a `tracing` span, and an
//!   OpenTelemetry layer in the subscriber turns it into the server span and samples it;
//! - **directly** (behind [`Telemetry`](crate::Telemetry)): the layer decides sampling, builds
//!   the OpenTelemetry span itself (see `direct`) and makes it current as a context while the
//!   request is polled; a `tracing` span with the same fields is opened only when
//!   `trace.log_span` asks for it and a log layer wants it (targets [`LOG_SPAN_TARGET`] and
//!   [`GRPC_LOG_SPAN_TARGET`], which `Telemetry::tracing_layer` leaves out), so log lines
//!   inside the request carry its fields. Without it, log lines get the request's id and
//!   operation from [`log::RequestFields`](crate::log::RequestFields).

use std::{fmt, time::SystemTime};

use http::HeaderValue;
use opentelemetry::{
    trace::{Status, TraceContextExt},
    Context, KeyValue,
};

use super::{
    attributes::SpanAttributes,
    direct::{DirectTracer, SpanStart},
    sampling::{self, Decision},
};
use crate::{
    head::ResponseHead,
    metrics::{
        toolkit::{Outcome, Settle},
        SpanIds,
    },
};

/// Target of the `tracing` span of each request behind [`Telemetry::layer`](crate::Telemetry::layer):
/// a span for log layers only, with the server span's fields (the layer exports the
/// OpenTelemetry span itself). An OpenTelemetry layer must leave it out, as
/// [`Telemetry::tracing_layer`](crate::Telemetry::tracing_layer) does; a log filter written for
/// `towerscope::http` covers it (targets match by prefix).
pub const LOG_SPAN_TARGET: &str = "towerscope::http::log";

/// The same for the calls behind `GrpcLayer::from_telemetry`.
pub const GRPC_LOG_SPAN_TARGET: &str = "towerscope::grpc::log";

/// Whether spans of `target` are the log-only spans of the server layers.
pub(crate) fn is_log_only(target: &str) -> bool {
    target == LOG_SPAN_TARGET || target == GRPC_LOG_SPAN_TARGET
}

/// How a server layer's spans reach the exporter.
#[derive(Clone, Debug, Default)]
pub(crate) enum SpanExport {
    /// Through `tracing`: an OpenTelemetry layer in the subscriber exports (and samples) the
    /// `tracing` span the layer opens.
    #[default]
    Tracing,
    /// By the layer, into `tracer`'s pipeline, sampling new traces at `rate`.
    Direct {
        /// The pipeline's tracer.
        tracer: DirectTracer,
        /// The ratio of new traces sampled.
        rate: f64,
        /// Whether a log-only `tracing` span is opened too, when a log layer wants it
        /// (`trace.log_span`).
        log_span: bool,
    },
}

/// The event that marks a server span's response head (its time to first byte), with
/// `metric.time_to_first_byte` ([`TraceLayer::with_response_head_event`](super::TraceLayer::with_response_head_event)).
pub const RESPONSE_HEAD_EVENT: &str = "http.response.head";

/// The server span of one request, from the layer's call until the request settles.
///
/// Opaque: it is only named as the state of a [`ResponseBody`](super::ResponseBody).
pub struct ServerSpan {
    /// The `tracing` span entered while the request is polled: the exported span itself
    /// (through `tracing`), or a log-only one beside a direct span or a sampled-out context.
    tracing: Option<tracing::Span>,
    /// The context current while the request is polled: the direct span's, or a non-sampled
    /// one naming the request's trace (sampled out).
    context: Option<Context>,
    /// Whether `context` holds a direct span, ended when the request settles (or, failing
    /// that, when this is dropped).
    direct: bool,
    /// Whether the direct span was ended.
    ended: bool,
    /// The hooks that add attributes when the response arrives (set only when some are
    /// configured and the span is exported).
    response_attributes: Option<SpanAttributes>,
    /// Whether the response head is marked by an event (`metric.time_to_first_byte`).
    head_event: bool,
}

impl fmt::Debug for ServerSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSpan")
            .field("tracing", &self.tracing)
            .field("direct", &self.direct)
            .finish_non_exhaustive()
    }
}

impl ServerSpan {
    /// A `tracing` span that an OpenTelemetry layer exports, as a child of `parent` when
    /// there is one; `None` when no subscriber wants the span.
    pub(crate) fn traced(span: tracing::Span, parent: Option<Context>) -> Option<Self> {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        if span.is_disabled() {
            return None;
        }
        if let Some(parent) = parent {
            let _ = span.set_parent(parent);
        }
        Some(Self {
            tracing: Some(span),
            context: None,
            direct: false,
            ended: false,
            response_attributes: None,
            head_event: false,
        })
    }

    /// Decides sampling at `rate` for a request whose extracted context is `parent`: a sampled
    /// request gets a direct span started from `start`; a sampled-out one a non-sampled
    /// context. `log` is the log-only `tracing` span (disabled when no log layer wants it).
    pub(crate) fn direct(
        tracer: &DirectTracer,
        rate: f64,
        parent: Context,
        start: impl FnOnce() -> SpanStart,
        log: tracing::Span,
    ) -> Self {
        let tracing = (!log.is_disabled()).then_some(log);
        match sampling::decide(rate, &parent) {
            Decision::Sampled(ids) => Self {
                tracing,
                context: Some(tracer.start(parent, ids, start())),
                direct: true,
                ended: false,
                response_attributes: None,
                head_event: false,
            },
            Decision::SampledOut(cx) => Self {
                tracing,
                context: Some(cx),
                direct: false,
                ended: false,
                response_attributes: None,
                head_event: false,
            },
        }
    }

    /// Adds the request attributes of `attributes` to a span exported through `tracing`
    /// (a direct span gets them when it starts), and keeps its response hooks for the
    /// response; nothing for a span that is not exported.
    pub(crate) fn with_attributes(
        mut self,
        attributes: &SpanAttributes,
        request: impl FnOnce() -> Vec<KeyValue>,
    ) -> Self {
        if !self.direct {
            let Some(span) = self.tracing.as_ref().filter(|_| self.context.is_none()) else {
                return self;
            };
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            for kv in request() {
                span.set_attribute(kv.key, kv.value);
            }
        }
        if attributes.has_response_attributes() {
            self.response_attributes = Some(attributes.clone());
        }
        self
    }

    /// Marks the response head with an event, [`RESPONSE_HEAD_EVENT`] (the time to first
    /// byte on the span), when `on`.
    pub(crate) fn with_head_event(mut self, on: bool) -> Self {
        self.head_event = on;
        self
    }

    /// Adds the attributes of the response hooks, when there are some, and the response
    /// head's event, when asked for.
    pub(crate) fn on_response_head(&self, head: &ResponseHead<'_>) {
        self.mark_head(RESPONSE_HEAD_EVENT, || {
            let status = head.status().as_u16();
            vec![KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            )]
        });
        let Some(attributes) = &self.response_attributes else {
            return;
        };
        let attributes = attributes.response(head);
        if let Some(cx) = self.direct_context() {
            cx.span().set_attributes(attributes);
        } else if let Some(span) = &self.tracing {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            for kv in attributes {
                span.set_attribute(kv.key, kv.value);
            }
        }
    }

    /// Marks the response head with the event `name` and its `attributes`, when the span
    /// marks it ([`with_head_event`](Self::with_head_event)) and is exported; the attributes
    /// are built only then.
    pub(crate) fn mark_head(&self, name: &'static str, attributes: impl FnOnce() -> Vec<KeyValue>) {
        if !self.head_event {
            return;
        }
        if let Some(cx) = self.direct_context() {
            cx.span().add_event(name, attributes());
        } else if let Some(span) = self.tracing.as_ref().filter(|_| self.context.is_none()) {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            span.add_event(name, attributes());
        }
    }

    /// The `tracing` span to enter while the request is polled.
    pub(crate) fn tracing_span(&self) -> Option<&tracing::Span> {
        self.tracing.as_ref()
    }

    /// The context to make current while the request is polled.
    pub(crate) fn context(&self) -> Option<&Context> {
        self.context.as_ref()
    }

    /// The ids of the span when it is sampled, for exemplars. A span exported through
    /// `tracing` is looked up in the subscriber (once per call: call it once per request).
    pub(crate) fn sampled_ids(&self) -> Option<SpanIds> {
        match (&self.context, &self.tracing) {
            (Some(cx), _) if self.direct => SpanIds::of_context(cx),
            (None, Some(span)) => SpanIds::of(span),
            _ => None,
        }
    }

    /// Whether anything is recorded on the span: it is exported through `tracing` or sampled.
    #[cfg(feature = "tonic")]
    pub(crate) fn records(&self) -> bool {
        self.tracing.is_some() || self.direct
    }

    /// Records an integer attribute (a declared field of the `tracing` span).
    pub(crate) fn record_i64(&self, key: &'static str, value: i64) {
        if let Some(span) = &self.tracing {
            span.record(key, value);
        }
        if let Some(cx) = self.direct_context() {
            cx.span().set_attribute(KeyValue::new(key, value));
        }
    }

    /// Records a string attribute (a declared field of the `tracing` span).
    pub(crate) fn record_str(&self, key: &'static str, value: &str) {
        if let Some(span) = &self.tracing {
            span.record(key, value);
        }
        if let Some(cx) = self.direct_context() {
            cx.span()
                .set_attribute(KeyValue::new(key, value.to_owned()));
        }
    }

    /// Marks the span `ERROR`, with `description` when there is one (the `tracing` span then
    /// needs an `otel.status_description` field, else `otel.status_code`).
    pub(crate) fn set_error(&self, description: Option<&str>) {
        if let Some(span) = &self.tracing {
            match description {
                Some(description) => span.record("otel.status_description", description),
                None => span.record("otel.status_code", "ERROR"),
            };
        }
        if let Some(cx) = self.direct_context() {
            let description = description.unwrap_or_default().to_owned();
            cx.span().set_status(Status::error(description));
        }
    }

    /// A `traceparent` header naming the span, when it has valid ids.
    pub(crate) fn traceparent(&self) -> Option<HeaderValue> {
        let cx = match (&self.context, &self.tracing) {
            (Some(cx), _) => cx.clone(),
            (None, Some(span)) => {
                use tracing_opentelemetry::OpenTelemetrySpanExt;
                span.context()
            }
            (None, None) => return None,
        };
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return None;
        }
        HeaderValue::try_from(format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            super::propagation::propagated_flags(&cx, sc).to_u8()
        ))
        .ok()
    }

    fn direct_context(&self) -> Option<&Context> {
        self.context.as_ref().filter(|_| self.direct)
    }
}

impl ServerSpan {
    /// Whether the layer exports this span itself (it then reads the clock when it ends).
    pub(crate) fn is_direct(&self) -> bool {
        self.direct
    }

    /// Settles the span: `ERROR` for a failed or panicked request, and a direct span ends at
    /// `now` (read from the clock when `None`).
    pub(crate) fn settle_at(&mut self, outcome: Outcome, now: Option<SystemTime>) {
        match outcome {
            Outcome::Error | Outcome::Panicked => self.set_error(None),
            Outcome::Complete | Outcome::Cancelled => {}
        }
        if let Some(cx) = self.direct_context().filter(|_| !self.ended) {
            cx.span()
                .end_with_timestamp(now.unwrap_or_else(opentelemetry::time::now));
            self.ended = true;
        }
    }
}

impl Drop for ServerSpan {
    fn drop(&mut self) {
        // The span ends with the request, not when the last clone of its context goes (a
        // span already ended by `settle_at` ignores this).
        if let Some(cx) = self.direct_context().filter(|_| !self.ended) {
            cx.span().end();
        }
    }
}

/// A server span carried alone by a response body (a [`TraceLayer`](super::TraceLayer) used
/// on its own): a body that fails mid-stream, or a panic, marks it `ERROR`; it ends when the
/// request settles.
impl Settle for ServerSpan {
    fn settle(&mut self, outcome: Outcome) {
        self.settle_at(outcome, None);
    }
}
