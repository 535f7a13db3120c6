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
    compact_span_size, encode_agent_emit_batch, encode_batch_binary, Batch, Process, Span,
    SpanRefType, Tag, TagType,
};
use super::*;

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

fn tags(span: &Span) -> &[Tag] {
    span.tags.as_deref().unwrap_or(&[])
}

fn tag<'a>(span: &'a Span, key: &str) -> Option<&'a Tag> {
    tags(span).iter().find(|t| t.key == key)
}

fn small_span(i: i64, attribute_len: usize) -> Span {
    Span {
        trace_id_low: i,
        trace_id_high: 0,
        span_id: i,
        parent_span_id: 0,
        operation_name: format!("op-{i}"),
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
    let span = span_from_data(span_data("op"));
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
    assert_eq!(span_from_data(data).flags, 0);
}

#[test]
fn times_are_microseconds_and_negative_durations_are_zero() {
    let span = span_from_data(span_data("op"));
    assert_eq!(span.start_time, 1_700_000_000_123_456);
    assert_eq!(span.duration, 1_500);

    let mut data = span_data("op");
    data.end_time = at(1_700_000_000_000_000);
    assert_eq!(span_from_data(data).duration, 0);

    let mut data = span_data("op");
    data.start_time = UNIX_EPOCH - Duration::from_secs(10);
    data.end_time = UNIX_EPOCH - Duration::from_secs(5);
    let span = span_from_data(data);
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
    let span = span_from_data(data);
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
        let span = span_from_data(data);
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
    let span = span_from_data(data);
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
    let span = span_from_data(data);
    assert_eq!(
        tag(&span, "otel.status_code"),
        Some(&Tag::string("otel.status_code", "OK"))
    );
    assert_eq!(tag(&span, "error"), None);
    assert_eq!(tag(&span, "otel.status_description"), None);

    let span = span_from_data(span_data("op"));
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
    let span = span_from_data(data);
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
    let span = span_from_data(data);
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
    let span = span_from_data(data);
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

// ---- encoders ----

#[test]
fn compact_tag_matches_hand_encoding() {
    let batch = Batch {
        process: Process {
            service_name: String::new(),
            tags: Some(vec![Tag::bool("k", true)]),
        },
        spans: Vec::new(),
        seq_no: None,
        stats: None,
    };
    let bytes = encode_agent_emit_batch(&batch, 1);
    // message: protocol id, ONEWAY<<5 | version 1, seq id 1, name.
    let mut expected = vec![0x82, 0x81, 0x01, 0x09];
    expected.extend_from_slice(b"emitBatch");
    // args field 1 struct, Batch field 1 struct (Process), serviceName "" (field 1 binary),
    expected.extend_from_slice(&[0x1c, 0x1c, 0x18, 0x00]);
    // tags: field 2 list of 1 struct; Tag {key "k", vType 2 (zigzag 4), vBool true}, stop
    expected.extend_from_slice(&[0x19, 0x1c, 0x18, 0x01, b'k', 0x15, 0x04, 0x31, 0x00]);
    // end Process; Batch field 2 list of 0 structs; end Batch; end args.
    expected.extend_from_slice(&[0x00, 0x19, 0x0c, 0x00, 0x00]);
    assert_eq!(bytes, expected);
}

#[test]
fn binary_tag_matches_hand_encoding() {
    let batch = Batch {
        process: Process {
            service_name: "s".into(),
            tags: Some(vec![Tag::long("k", 7)]),
        },
        spans: Vec::new(),
        seq_no: Some(9),
        stats: None,
    };
    let bytes = encode_batch_binary(&batch);
    let mut expected = vec![0x0c, 0, 1]; // Batch.process: struct, id 1
    expected.extend_from_slice(&[0x0b, 0, 1, 0, 0, 0, 1, b's']); // serviceName
    expected.extend_from_slice(&[0x0f, 0, 2, 0x0c, 0, 0, 0, 1]); // tags: list<struct> of 1
    expected.extend_from_slice(&[0x0b, 0, 1, 0, 0, 0, 1, b'k']); // key
    expected.extend_from_slice(&[0x08, 0, 2, 0, 0, 0, 3]); // vType LONG
    expected.extend_from_slice(&[0x0a, 0, 6, 0, 0, 0, 0, 0, 0, 0, 7]); // vLong
    expected.extend_from_slice(&[0x00, 0x00]); // end Tag, end Process
    expected.extend_from_slice(&[0x0f, 0, 2, 0x0c, 0, 0, 0, 0]); // spans: empty list
    expected.extend_from_slice(&[0x0a, 0, 3, 0, 0, 0, 0, 0, 0, 0, 9]); // seqNo
    expected.push(0x00); // end Batch
    assert_eq!(bytes, expected);
}

#[test]
fn encoders_handle_empty_and_hostile_batches() {
    let empty = Batch {
        process: Process {
            service_name: String::new(),
            tags: None,
        },
        spans: Vec::new(),
        seq_no: None,
        stats: None,
    };
    assert!(!encode_agent_emit_batch(&empty, i32::MIN).is_empty());
    assert!(!encode_batch_binary(&empty).is_empty());

    let mut hostile = span_from_data(span_data(""));
    hostile.tags = Some(vec![
        Tag::double("", f64::NAN),
        Tag::double("inf", f64::INFINITY),
        Tag::string("big", "\u{10ffff}".repeat(1 << 20)),
        Tag::binary("bin", vec![0xff; 1 << 16]),
        Tag {
            v_str: None,
            ..Tag::string("no value", "")
        },
    ]);
    hostile.logs = Some(vec![super::model::Log {
        timestamp: i64::MIN,
        fields: Vec::new(),
    }]);
    let batch = Batch {
        process: process(),
        spans: vec![hostile; 3],
        seq_no: Some(i64::MIN),
        stats: Some(Default::default()),
    };
    assert!(encode_agent_emit_batch(&batch, -1).len() > 3 * (4 << 20));
    assert!(encode_batch_binary(&batch).len() > 3 * (4 << 20));
}

// ---- splitting ----

#[test]
fn packing_keeps_every_span_in_order_and_every_datagram_fits() {
    let process = process();
    let spans: Vec<Span> = (0..300)
        .map(|i| small_span(i, (i as usize * 37) % 900))
        .collect();
    for max in [2_000, 9_216, 65_000] {
        let packing = pack(&process, spans.clone(), max);
        assert_eq!(packing.too_large, 0);
        assert_eq!(packing.kept, spans);
        let mut next = 0;
        for chunk in &packing.chunks {
            assert_eq!(chunk.start, next, "chunks are contiguous");
            assert!(!chunk.is_empty());
            next = chunk.end;
            let batch = Batch {
                process: process.clone(),
                spans: packing.kept[chunk.clone()].to_vec(),
                seq_no: Some(i64::MAX),
                stats: Some(super::model::ClientStats {
                    full_queue_dropped_spans: i64::MIN,
                    too_large_dropped_spans: i64::MAX,
                    failed_to_emit_spans: i64::MAX,
                }),
            };
            assert!(encode_agent_emit_batch(&batch, i32::MIN).len() <= max);
        }
        assert_eq!(next, spans.len());
    }
}

#[test]
fn packing_is_exact_at_the_boundary() {
    let process = process();
    let spans = vec![small_span(1, 100); 20];
    let size = compact_span_size(&spans[0]);
    assert!(spans.iter().all(|s| compact_span_size(s) == size));
    // Room for exactly five spans, then for five minus one byte.
    let max = fixed_overhead(&process) + 5 * size;
    assert_eq!(pack(&process, spans.clone(), max).chunks.len(), 4);
    assert_eq!(pack(&process, spans, max - 1).chunks.len(), 5);
}

#[test]
fn a_span_too_large_alone_is_dropped_and_counted() {
    let process = process();
    let spans = vec![small_span(1, 10), small_span(2, 70_000), small_span(3, 10)];
    let packing = pack(&process, spans, 65_000);
    assert_eq!(packing.too_large, 1);
    assert_eq!(
        packing.kept.iter().map(|s| s.span_id).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!(packing.chunks, vec![0..2]);
}

#[test]
fn exporter_drops_oversized_span_counts_it_and_sends_the_rest() {
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind");
    receiver
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let counted = Arc::new(AtomicU64::new(0));
    let exporter = agent_exporter(receiver.local_addr().expect("addr").port(), 65_000)
        .with_dropped_counter(metrics::Counter::from_arc(counted.clone()));

    let mut big = span_data("big");
    big.attributes = vec![KeyValue::new("blob", "x".repeat(70_000))];
    export(&exporter, vec![span_data("small"), big, span_data("small")]).expect("export");

    assert_eq!(exporter.dropped_spans(), 1);
    assert_eq!(counted.load(Ordering::Relaxed), 1);
    let mut buf = vec![0; 65_535];
    let n = receiver.recv(&mut buf).expect("one datagram");
    assert!(n <= 65_000);
    assert!(!buf[..n].windows(3).any(|w| w == b"big"));
}

#[test]
fn process_too_large_for_any_datagram_is_an_error() {
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut exporter = agent_exporter(receiver.local_addr().expect("addr").port(), 1_000);
    exporter.set_resource(
        &Resource::builder_empty()
            .with_attribute(KeyValue::new("huge", "x".repeat(2_000)))
            .build(),
    );
    let err = export(&exporter, vec![span_data("op")]).expect_err("cannot fit");
    assert!(matches!(err, OTelSdkError::InternalFailure(ref m) if m.contains("max_packet_size")));
    assert_eq!(exporter.dropped_spans(), 1);
}

#[test]
#[cfg(target_os = "linux")]
fn send_errors_are_reported_after_every_datagram_was_tried() {
    // Linux refuses a UDP send to port 0 locally (EINVAL): a send error with no traffic.
    let agent = AgentTransport::new("127.0.0.1".into(), 0, 1_000);
    let spans: Vec<Span> = (0..6).map(|i| small_span(i, 300)).collect();
    let chunks = pack(&process(), spans.clone(), 1_000).chunks.len();
    assert!(chunks > 1);
    let report = agent.send(&process(), spans);
    let error = report.error.expect("send fails").to_string();
    assert!(
        error.contains(&format!("{chunks} of {chunks} datagrams not sent")),
        "{error}"
    );
    assert_eq!(report.too_large, 0);
}

#[test]
fn unresolvable_agent_host_is_an_export_error_not_a_build_error() {
    let exporter = JaegerExporter::agent(AgentOptions {
        host: "no-such-host.invalid".into(),
        ..AgentOptions::default()
    })
    .expect("builds");
    let err = export(&exporter, vec![span_data("op")]).expect_err("cannot resolve");
    assert!(matches!(err, OTelSdkError::InternalFailure(_)));
}

// ---- exporter ----

#[test]
fn options_are_validated() {
    let agent = |host: &str, port, size| {
        JaegerExporter::agent(AgentOptions {
            host: host.into(),
            port,
            max_packet_size: size,
        })
    };
    assert!(matches!(
        agent("", 6831, 65_000),
        Err(JaegerError::EmptyHost)
    ));
    assert!(matches!(agent("h", 0, 65_000), Err(JaegerError::ZeroPort)));
    assert!(matches!(
        agent("h", 6831, 0),
        Err(JaegerError::InvalidPacketSize { size: 0 })
    ));
    assert!(matches!(
        agent("h", 6831, 65_508),
        Err(JaegerError::InvalidPacketSize { .. })
    ));
    assert!(agent("[::1]", 6831, 65_507).is_ok());

    let collector = |endpoint: &str, timeout| {
        JaegerExporter::collector(CollectorOptions {
            endpoint: endpoint.into(),
            timeout,
            ..CollectorOptions::default()
        })
    };
    let secs = Duration::from_secs(1);
    assert!(matches!(
        collector("not a url", secs),
        Err(JaegerError::InvalidEndpoint { .. })
    ));
    assert!(matches!(
        collector("ftp://h/api/traces", secs),
        Err(JaegerError::UnsupportedScheme { .. })
    ));
    assert!(matches!(
        collector("http://h/api/traces", Duration::ZERO),
        Err(JaegerError::ZeroTimeout)
    ));
    assert!(collector("https://h:14268/api/traces", secs).is_ok());
}

#[test]
fn debug_output_never_shows_the_password() {
    let options = CollectorOptions {
        username: Some("user".into()),
        password: Some("s3cret".into()),
        endpoint: "http://u:s3cret@127.0.0.1:1/api/traces".into(),
        ..CollectorOptions::default()
    };
    assert!(!format!("{options:?}").contains("s3cret"));
    let exporter = JaegerExporter::collector(options).expect("valid");
    assert!(!format!("{exporter:?}").contains("s3cret"));
}

#[test]
fn export_after_shutdown_fails() {
    let exporter = agent_exporter(6831, 65_000);
    exporter.shutdown().expect("first shutdown");
    assert!(matches!(
        export(&exporter, vec![span_data("op")]),
        Err(OTelSdkError::AlreadyShutdown)
    ));
}

#[test]
fn empty_export_sends_nothing_and_succeeds() {
    let exporter = agent_exporter(6831, 65_000);
    assert!(export(&exporter, Vec::new()).is_ok());
}
