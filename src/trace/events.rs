//! [`DirectSpanEvents`]: `tracing` events inside a request, added to the server span the layer
//! exports itself.
//!
//! `tracing-opentelemetry` adds an event to the span it sees as current; the server span
//! behind [`Telemetry::layer`](crate::Telemetry::layer) is not a span it sees (see `direct`),
//! so an event logged in a handler, outside any span of its own, would be lost from the trace.
//! This layer, which [`Telemetry::tracing_layer`](crate::Telemetry::tracing_layer) puts beside
//! the OpenTelemetry layer under the same filter, adds such an event to the span of the current
//! OpenTelemetry context, when it records, the way `tracing-opentelemetry` would: the message
//! is the event's name, `level` and `target` and every field are attributes, an `error` field
//! makes it an `exception` event, and an `ERROR` event (or an `error` field) marks the span's
//! status `ERROR`.

use std::fmt::{self, Write};

use opentelemetry::{
    trace::{Status, TraceContextExt},
    Key, KeyValue, Value,
};
use tracing::{field::Field, Event, Level, Subscriber};
use tracing_subscriber::{layer::Context, registry::LookupSpan, Layer};

/// Adds the events that happen outside any span the OpenTelemetry layer sees to the span of
/// the current OpenTelemetry context; see the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DirectSpanEvents;

impl<S> Layer<S> for DirectSpanEvents
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // An event with a parent the OpenTelemetry layer sees is that layer's to record.
        let seen = match event.parent() {
            Some(parent) => ctx.span(parent).is_some(),
            None => event.is_contextual() && ctx.lookup_current().is_some(),
        };
        if seen || !event.is_contextual() {
            return;
        }
        opentelemetry::Context::map_current(|cx| {
            if !cx.has_active_span() {
                return;
            }
            let span = cx.span();
            if !span.is_recording() {
                return;
            }
            let meta = event.metadata();
            let mut fields = EventFields {
                name: None,
                attributes: vec![
                    KeyValue::new("level", meta.level().as_str()),
                    KeyValue::new("target", meta.target()),
                ],
                error: None,
            };
            event.record(&mut fields);
            if let Some(description) = fields.error.take() {
                span.set_status(Status::error(description));
            } else if *meta.level() == Level::ERROR {
                span.set_status(Status::error(""));
            }
            let name = fields.name.unwrap_or_else(|| meta.name().to_owned());
            span.add_event(name, fields.attributes);
        });
    }
}

/// An event's name and attributes, as its fields are visited.
struct EventFields {
    name: Option<String>,
    attributes: Vec<KeyValue>,
    /// The `error` field of an event without a message: the span's status description.
    error: Option<String>,
}

impl EventFields {
    fn push(&mut self, field: &Field, value: impl Into<Value>) {
        self.attributes
            .push(KeyValue::new(Key::from_static_str(field.name()), value));
    }

    /// An `error` field in an event without a message: an `exception` event.
    fn error(&mut self, description: String) {
        self.name = Some("exception".to_owned());
        self.attributes
            .push(KeyValue::new("exception.message", description.clone()));
        self.error = Some(description);
    }
}

impl tracing::field::Visit for EventFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(value) => self.push(field, value),
            Err(_) => self.push(field, value.to_string()),
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.name = Some(value.to_owned()),
            "error" if self.name.is_none() => self.error(format!("{value:?}")),
            _ => self.push(field, value.to_owned()),
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let message = value.to_string();
        self.attributes
            .push(KeyValue::new("exception.message", message.clone()));
        self.push(field, message);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        match field.name() {
            "message" => self.name = Some(text),
            "error" if self.name.is_none() => self.error(text),
            _ => self.push(field, text),
        }
    }
}
