use std::borrow::Cow;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use opentelemetry_sdk::Resource;

use super::agent::{fixed_overhead, pack, AgentTransport};
use super::convert::{process_from_resource, render_array, span_from_data};
use super::model::{
    encode_agent_emit_batch, encode_batch_binary, encode_compact_span, Batch, BatchRef, Process,
    Span, SpanRefType, Tag, TagType,
};
use super::*;

// Encoders, datagram splitting and the exporter's own behaviour.
mod wire;

const TRACE_ID: u128 = 0x0102_0304_0506_0708_f0e0_d0c0_b0a0_9080;

fn at(micros: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(micros)
}

fn cx(trace: u128, span: u64, sampled: bool) -> SpanContext {
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    SpanContext::new(
        TraceId::from(trace),
        SpanId::from(span),
        flags,
        false,
        TraceState::default(),
    )
}

fn span_data(name: &'static str) -> SpanData {
    SpanData {
        span_context: cx(TRACE_ID, 0xffff_ffff_ffff_fffe, true),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: Cow::Borrowed(name),
        start_time: at(1_700_000_000_123_456),
        end_time: at(1_700_000_000_124_956),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: InstrumentationScope::default(),
    }
}

fn tags<'s>(span: &'s Span<'_>) -> &'s [Tag<'s>] {
    span.tags.as_deref().unwrap_or(&[])
}

fn tag<'s>(span: &'s Span<'_>, key: &str) -> Option<&'s Tag<'s>> {
    tags(span).iter().find(|t| t.key == key)
}

fn small_span(i: i64, attribute_len: usize) -> Span<'static> {
    Span {
        trace_id_low: i,
        trace_id_high: 0,
        span_id: i,
        parent_span_id: 0,
        operation_name: format!("op-{i}").into(),
        references: None,
        flags: 1,
        start_time: 1,
        duration: 2,
        tags: Some(vec![Tag::string("payload", "x".repeat(attribute_len))]),
        logs: None,
    }
}

fn process() -> Process {
    Process {
        service_name: "svc".into(),
        tags: Some(vec![Tag::string("host.name", "h")]),
    }
}

fn agent_exporter(port: u16, max_packet_size: usize) -> JaegerExporter {
    JaegerExporter::agent(AgentOptions {
        host: "127.0.0.1".into(),
        port,
        max_packet_size,
    })
    .expect("valid options")
}

fn export(exporter: &JaegerExporter, batch: Vec<SpanData>) -> OTelSdkResult {
    // The future is complete when `export` returns; a current-thread runtime polls it once.
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(exporter.export(batch))
}

// ---- mapping ----

#[test]
fn trace_and_span_ids_split_into_signed_halves() {
    let span = span_from_data(&span_data("op")).into_owned();
    assert_eq!(span.trace_id_high, 0x0102_0304_0506_0708);
    assert_eq!(span.trace_id_low, 0xf0e0_d0c0_b0a0_9080_u64 as i64);
    assert!(span.trace_id_low < 0);
    assert_eq!(span.span_id, -2);
    assert_eq!(span.parent_span_id, 0);
    assert_eq!(span.references, None, "a root span has no references");
    assert_eq!(span.operation_name, "op");
    assert_eq!(span.flags, 1);
}

#[test]
fn unsampled_span_has_flags_zero() {
    let mut data = span_data("op");
    data.span_context = cx(1, 2, false);
    assert_eq!(span_from_data(&data).flags, 0);
}

#[test]
fn times_are_microseconds_and_negative_durations_are_zero() {
    let span = span_from_data(&span_data("op")).into_owned();
    assert_eq!(span.start_time, 1_700_000_000_123_456);
    assert_eq!(span.duration, 1_500);

    let mut data = span_data("op");
    data.end_time = at(1_700_000_000_000_000);
    assert_eq!(span_from_data(&data).duration, 0);

    let mut data = span_data("op");
    data.start_time = UNIX_EPOCH - Duration::from_secs(10);
    data.end_time = UNIX_EPOCH - Duration::from_secs(5);
    let span = span_from_data(&data);
    assert_eq!(span.start_time, 0);
    assert_eq!(span.duration, 5_000_000);
}

#[test]
fn attributes_keep_their_types_and_arrays_render_as_json() {
    let mut data = span_data("op");
    data.attributes = vec![
        KeyValue::new("s", "text"),
        KeyValue::new("b", true),
        KeyValue::new("i", -7_i64),
        KeyValue::new("f", 2.5_f64),
        KeyValue::new("nan", f64::NAN),
        KeyValue::new(
            "strings",
            Value::Array(Array::String(vec![
                StringValue::from("a\"b"),
                StringValue::from("c\\\n"),
            ])),
        ),
        KeyValue::new("ints", Value::Array(Array::I64(vec![1, -2]))),
        KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
        KeyValue::new(
            "floats",
            Value::Array(Array::F64(vec![1.5, f64::NAN, f64::NEG_INFINITY])),
        ),
    ];
    let span = span_from_data(&data);
    assert_eq!(tag(&span, "s"), Some(&Tag::string("s", "text")));
    assert_eq!(tag(&span, "b"), Some(&Tag::bool("b", true)));
    assert_eq!(tag(&span, "i"), Some(&Tag::long("i", -7)));
    assert_eq!(tag(&span, "f"), Some(&Tag::double("f", 2.5)));
    let nan = tag(&span, "nan").expect("nan tag");
    assert_eq!(nan.v_type, TagType::Double);
    assert!(nan.v_double.is_some_and(f64::is_nan));
    let str_of = |key| tag(&span, key).and_then(|t| t.v_str.clone());
    assert_eq!(str_of("strings").as_deref(), Some(r#"["a\"b","c\\\n"]"#));
    assert_eq!(str_of("ints").as_deref(), Some("[1,-2]"));
    assert_eq!(str_of("bools").as_deref(), Some("[true,false]"));
    assert_eq!(
        str_of("floats").as_deref(),
        Some(r#"[1.5,"NaN","-Infinity"]"#)
    );
    // No kind, status or scope tags for an internal, unset, unnamed-scope span.
    assert_eq!(tags(&span).len(), 9);
}

#[test]
fn string_arrays_render_as_valid_json() {
    let rendered = render_array(&Array::String(vec![StringValue::from("\u{1}é\"")]));
    let parsed: Vec<String> = serde_json::from_str(&rendered).expect("valid JSON");
    assert_eq!(parsed, vec!["\u{1}é\"".to_owned()]);
    assert_eq!(render_array(&Array::I64(Vec::new())), "[]");
}

#[test]
fn span_kind_tag_is_lowercase_and_omitted_for_internal() {
    for (kind, expected) in [
        (SpanKind::Client, Some("client")),
        (SpanKind::Server, Some("server")),
        (SpanKind::Producer, Some("producer")),
        (SpanKind::Consumer, Some("consumer")),
        (SpanKind::Internal, None),
    ] {
        let mut data = span_data("op");
        data.span_kind = kind;
        let span = span_from_data(&data);
        assert_eq!(
            tag(&span, "span.kind").and_then(|t| t.v_str.as_deref()),
            expected
        );
    }
}

#[test]
fn error_status_sets_error_tag_code_and_description() {
    let mut data = span_data("op");
    data.status = Status::error("boom");
    data.attributes = vec![KeyValue::new("error", "user value")];
    let span = span_from_data(&data);
    assert_eq!(tag(&span, "error"), Some(&Tag::bool("error", true)));
    assert_eq!(
        tags(&span).iter().filter(|t| t.key == "error").count(),
        1,
        "the status wins over an attribute of the same key"
    );
    assert_eq!(
        tag(&span, "otel.status_code"),
        Some(&Tag::string("otel.status_code", "ERROR"))
    );
    assert_eq!(
        tag(&span, "otel.status_description"),
        Some(&Tag::string("otel.status_description", "boom"))
    );
}

#[test]
fn ok_status_sets_code_only_and_unset_sets_nothing() {
    let mut data = span_data("op");
    data.status = Status::Ok;
    let span = span_from_data(&data);
    assert_eq!(
        tag(&span, "otel.status_code"),
        Some(&Tag::string("otel.status_code", "OK"))
    );
    assert_eq!(tag(&span, "error"), None);
    assert_eq!(tag(&span, "otel.status_description"), None);

    let span = span_from_data(&span_data("op")).into_owned();
    assert_eq!(span.tags, None);
}

#[test]
fn scope_and_dropped_counts_become_tags() {
    let mut data = span_data("op");
    data.instrumentation_scope = InstrumentationScope::builder("towerscope")
        .with_version("0.1.0")
        .build();
    data.dropped_attributes_count = 3;
    data.events.dropped_count = 4;
    let span = span_from_data(&data);
    assert_eq!(
        tag(&span, "otel.scope.name"),
        Some(&Tag::string("otel.scope.name", "towerscope"))
    );
    assert_eq!(
        tag(&span, "otel.scope.version"),
        Some(&Tag::string("otel.scope.version", "0.1.0"))
    );
    assert_eq!(
        tag(&span, "otel.dropped_attributes_count"),
        Some(&Tag::long("otel.dropped_attributes_count", 3))
    );
    assert_eq!(
        tag(&span, "otel.dropped_events_count"),
        Some(&Tag::long("otel.dropped_events_count", 4))
    );
    assert_eq!(tag(&span, "otel.dropped_links_count"), None);
}

#[test]
fn events_become_logs_with_an_event_field() {
    let mut data = span_data("op");
    data.events.events.push(Event::new(
        "cache miss",
        at(1_700_000_000_123_999),
        vec![KeyValue::new("key", "blob"), KeyValue::new("size", 42_i64)],
        0,
    ));
    let span = span_from_data(&data);
    let logs = span.logs.expect("logs");
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].timestamp, 1_700_000_000_123_999);
    assert_eq!(
        logs[0].fields,
        vec![
            Tag::string("event", "cache miss"),
            Tag::string("key", "blob"),
            Tag::long("size", 42),
        ]
    );
}

#[test]
fn parent_is_child_of_and_links_are_follows_from() {
    let mut data = span_data("op");
    data.parent_span_id = SpanId::from(0x10);
    data.links
        .links
        .push(Link::with_context(cx(0xaa_0000_0000_0000_00bb, 0x20, true)));
    let span = span_from_data(&data);
    assert_eq!(span.parent_span_id, 0x10);
    let refs = span.references.expect("references");
    assert_eq!(refs.len(), 2);
    assert_eq!(refs[0].ref_type, SpanRefType::ChildOf);
    assert_eq!(refs[0].span_id, 0x10);
    assert_eq!(refs[0].trace_id_high, span.trace_id_high);
    assert_eq!(refs[0].trace_id_low, span.trace_id_low);
    assert_eq!(refs[1].ref_type, SpanRefType::FollowsFrom);
    assert_eq!(refs[1].span_id, 0x20);
    assert_eq!(refs[1].trace_id_high, 0xaa);
    assert_eq!(refs[1].trace_id_low, 0xbb);
}

#[test]
fn process_takes_service_name_and_sorted_resource_tags() {
    let resource = Resource::builder_empty()
        .with_service_name("registry")
        .with_attribute(KeyValue::new("z.last", 1_i64))
        .with_attribute(KeyValue::new("a.first", "x"))
        .build();
    let process = process_from_resource(&resource);
    assert_eq!(process.service_name, "registry");
    assert_eq!(
        process.tags,
        Some(vec![Tag::string("a.first", "x"), Tag::long("z.last", 1)])
    );

    let process = process_from_resource(&Resource::builder_empty().build());
    assert_eq!(process.service_name, "unknown_service");
    assert_eq!(process.tags, None);
}
