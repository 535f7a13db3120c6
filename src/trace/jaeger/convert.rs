//! OpenTelemetry `SpanData` and `Resource` to the Jaeger model, following the OpenTelemetry
//! specification's "Jaeger" translation (ids, `span.kind`, `otel.status_code`, `error`,
//! events as logs, links as `FOLLOWS_FROM` references).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;
use opentelemetry_sdk::Resource;

use super::model::{Log, Process, Span, SpanRef, SpanRefType, Tag};
use crate::trace::UNKNOWN_SERVICE;

const SERVICE_NAME: &str = "service.name";

/// The Jaeger process of a resource: `service.name` becomes the service name, every other
/// attribute a process tag (sorted by key, so that the output is stable).
pub(crate) fn process_from_resource(resource: &Resource) -> Process {
    let mut service_name = None;
    let mut tags = Vec::new();
    for (key, value) in resource.iter() {
        if key.as_str() == SERVICE_NAME {
            let name = value.as_str();
            if !name.is_empty() {
                service_name = Some(name.into_owned());
            }
        } else {
            tags.push(tag_from_value(key.as_str(), value).into_owned());
        }
    }
    tags.sort_by(|a, b| a.key.cmp(&b.key));
    Process {
        service_name: service_name.unwrap_or_else(|| UNKNOWN_SERVICE.to_owned()),
        tags: non_empty(tags),
    }
}

/// The process used until `set_resource` is called.
pub(crate) fn default_process() -> Process {
    Process {
        service_name: UNKNOWN_SERVICE.to_owned(),
        tags: None,
    }
}

/// One OpenTelemetry span as a Jaeger span, borrowing its strings (names, attribute keys
/// and string values): the conversion allocates only the lists and rendered arrays.
pub(crate) fn span_from_data(data: &SpanData) -> Span<'_> {
    let (trace_id_high, trace_id_low) = trace_id_halves(&data.span_context);
    let parent_span_id = span_id_i64(data.parent_span_id);

    let mut references = Vec::with_capacity(data.links.len() + 1);
    if parent_span_id != 0 {
        // Jaeger clients send the parent as a CHILD_OF reference as well as parentSpanId.
        references.push(SpanRef {
            ref_type: SpanRefType::ChildOf,
            trace_id_low,
            trace_id_high,
            span_id: parent_span_id,
        });
    }
    for link in data.links.iter() {
        let (high, low) = trace_id_halves(&link.span_context);
        references.push(SpanRef {
            ref_type: SpanRefType::FollowsFrom,
            trace_id_low: low,
            trace_id_high: high,
            span_id: span_id_i64(link.span_context.span_id()),
        });
    }

    let start_time = micros_since_epoch(data.start_time);
    let duration = data
        .end_time
        .duration_since(data.start_time)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);

    let logs = data
        .events
        .iter()
        .map(|event| {
            let mut fields = Vec::with_capacity(event.attributes.len() + 2);
            fields.push(Tag::string("event", event.name.as_ref()));
            fields.extend(event.attributes.iter().map(tag_from_key_value));
            if event.dropped_attributes_count > 0 {
                fields.push(Tag::long(
                    "otel.dropped_attributes_count",
                    i64::from(event.dropped_attributes_count),
                ));
            }
            Log {
                timestamp: micros_since_epoch(event.timestamp),
                fields,
            }
        })
        .collect();

    let tags = non_empty(span_tags(data));
    Span {
        trace_id_low,
        trace_id_high,
        span_id: span_id_i64(data.span_context.span_id()),
        parent_span_id,
        operation_name: Cow::Borrowed(data.name.as_ref()),
        references: non_empty(references),
        flags: i32::from(data.span_context.is_sampled()),
        start_time,
        duration,
        tags,
        logs: non_empty(logs),
    }
}

/// The span's attributes, then the tags the translation adds. An attribute whose key the
/// translation also sets (`error`, `span.kind`, `otel.*`) gives way, so that no key appears
/// twice.
fn span_tags(data: &SpanData) -> Vec<Tag<'_>> {
    let mut added = Vec::new();
    let kind = match data.span_kind {
        SpanKind::Client => Some("client"),
        SpanKind::Server => Some("server"),
        SpanKind::Producer => Some("producer"),
        SpanKind::Consumer => Some("consumer"),
        SpanKind::Internal => None,
    };
    if let Some(kind) = kind {
        added.push(Tag::string("span.kind", kind));
    }
    match &data.status {
        Status::Unset => {}
        Status::Ok => added.push(Tag::string("otel.status_code", "OK")),
        Status::Error { description } => {
            added.push(Tag::string("otel.status_code", "ERROR"));
            if !description.is_empty() {
                added.push(Tag::string("otel.status_description", description.as_ref()));
            }
            added.push(Tag::bool("error", true));
        }
    }
    let scope = &data.instrumentation_scope;
    if !scope.name().is_empty() {
        added.push(Tag::string("otel.scope.name", scope.name()));
        if let Some(version) = scope.version() {
            added.push(Tag::string("otel.scope.version", version));
        }
    }
    let dropped = [
        (
            "otel.dropped_attributes_count",
            data.dropped_attributes_count,
        ),
        ("otel.dropped_events_count", data.events.dropped_count),
        ("otel.dropped_links_count", data.links.dropped_count),
    ];
    for (key, count) in dropped {
        if count > 0 {
            added.push(Tag::long(key, i64::from(count)));
        }
    }

    let mut tags = Vec::with_capacity(data.attributes.len() + added.len());
    tags.extend(
        data.attributes
            .iter()
            .filter(|kv| !added.iter().any(|t| t.key == kv.key.as_str()))
            .map(tag_from_key_value),
    );
    tags.extend(added);
    tags
}

fn tag_from_key_value(kv: &KeyValue) -> Tag<'_> {
    tag_from_value(kv.key.as_str(), &kv.value)
}

/// A typed tag: strings, booleans, integers and floats keep their type; arrays become a
/// JSON rendering in a `STRING` tag.
pub(crate) fn tag_from_value<'a>(key: &'a str, value: &'a Value) -> Tag<'a> {
    match value {
        Value::Bool(b) => Tag::bool(key, *b),
        Value::I64(i) => Tag::long(key, *i),
        Value::F64(f) => Tag::double(key, *f),
        Value::String(s) => Tag::string(key, s.as_str()),
        Value::Array(array) => Tag::string(key, render_array(array)),
        // `Value` is non-exhaustive: a future kind is sent as its string form.
        other => Tag::string(key, other.as_str()),
    }
}

/// A JSON rendering of an attribute array. Non-finite floats, which JSON cannot express, are
/// written as the strings `"NaN"`, `"Infinity"` and `"-Infinity"`.
pub(crate) fn render_array(array: &Array) -> String {
    let mut out = String::from("[");
    fn sep(out: &mut String, i: usize) {
        if i > 0 {
            out.push(',');
        }
    }
    match array {
        Array::Bool(values) => {
            for (i, v) in values.iter().enumerate() {
                sep(&mut out, i);
                out.push_str(if *v { "true" } else { "false" });
            }
        }
        Array::I64(values) => {
            for (i, v) in values.iter().enumerate() {
                sep(&mut out, i);
                let _ = write!(out, "{v}");
            }
        }
        Array::F64(values) => {
            for (i, v) in values.iter().enumerate() {
                sep(&mut out, i);
                if v.is_nan() {
                    out.push_str("\"NaN\"");
                } else if v.is_infinite() {
                    out.push_str(if *v > 0.0 {
                        "\"Infinity\""
                    } else {
                        "\"-Infinity\""
                    });
                } else {
                    let _ = write!(out, "{v}");
                }
            }
        }
        Array::String(values) => {
            for (i, v) in values.iter().enumerate() {
                sep(&mut out, i);
                push_json_string(&mut out, v.as_str());
            }
        }
        // `Array` is non-exhaustive: a future kind is sent as a JSON string of its text form.
        other => {
            out.clear();
            push_json_string(&mut out, &other.to_string());
            return out;
        }
    }
    out.push(']');
    out
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The trace id as (high, low) 64-bit halves, as Jaeger's signed i64 fields carry them.
pub(crate) fn trace_id_halves(cx: &SpanContext) -> (i64, i64) {
    let bytes = cx.trace_id().to_bytes();
    let mut high = [0u8; 8];
    let mut low = [0u8; 8];
    high.copy_from_slice(&bytes[..8]);
    low.copy_from_slice(&bytes[8..]);
    (i64::from_be_bytes(high), i64::from_be_bytes(low))
}

pub(crate) fn span_id_i64(id: SpanId) -> i64 {
    i64::from_be_bytes(id.to_bytes())
}

/// Microseconds since the Unix epoch; a time before the epoch is 0 and one too far ahead
/// saturates.
pub(crate) fn micros_since_epoch(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    if v.is_empty() {
        None
    } else {
        Some(v)
    }
}
