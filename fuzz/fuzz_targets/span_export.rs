//! Span conversion with hostile attribute values: the Jaeger agent exporter (towerscope's own
//! compact Thrift encoder, over loopback UDP) and OTLP (opentelemetry-proto's conversion and
//! prost encoding, what opentelemetry-otlp sends).
//!
//! The input is read as a batch of spans: names, attributes of every value type (strings of
//! any Unicode up to 64 KiB, arrays, NaN and infinite floats, extreme integers), events,
//! links, an error status with a description, and the agent's packet size. Checked:
//! - Jaeger: the export succeeds; every datagram fits the packet size and decodes with the
//!   Apache `thrift` crate's compact protocol as `Agent.emitBatch`; the spans it carries plus
//!   the spans the exporter counted as too large are the batch, and their operation names are
//!   the spans' names, byte for byte;
//! - OTLP: the encoded request decodes back with the same span count, names and string
//!   attribute values.
#![no_main]

use std::{
    borrow::Cow,
    future::Future,
    net::UdpSocket,
    pin::pin,
    sync::OnceLock,
    task::{Context, Poll, Waker},
    time::{Duration, SystemTime},
};

use libfuzzer_sys::fuzz_target;
use opentelemetry::{
    trace::{Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
    Array, InstrumentationScope, KeyValue, StringValue, Value,
};
use opentelemetry_proto::{
    tonic::{collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value},
    transform::{
        common::tonic::ResourceAttributesWithSchema,
        trace::tonic::group_spans_by_resource_and_scope,
    },
};
use opentelemetry_sdk::{
    trace::{SpanData, SpanEvents, SpanExporter, SpanLinks},
    Resource,
};
use prost::Message;
use thrift::protocol::{TCompactInputProtocol, TInputProtocol, TType};
use towerscope::trace::jaeger::{AgentOptions, JaegerExporter};

/// Reads the fuzz input as a stream of choices; past its end every read is 0 or empty.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, _| acc << 8 | u64::from(self.byte()))
    }

    /// A string of up to 255 input bytes (lossy UTF-8), or, when the length byte is 0xff, one
    /// byte repeated up to 64 KiB times: hostile sizes from a short input.
    fn string(&mut self) -> String {
        let len = self.byte();
        if len == 0xff {
            let repeat = usize::from(self.byte()) << 8 | usize::from(self.byte());
            let unit = char::from_u32(u32::from(self.byte()) << 8 | u32::from(self.byte()))
                .unwrap_or('\u{fffd}');
            return std::iter::repeat_n(unit, repeat).collect();
        }
        let n = usize::from(len).min(self.0.len());
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8_lossy(s).into_owned()
    }

    fn value(&mut self) -> Value {
        match self.byte() % 7 {
            0 => Value::String(self.string().into()),
            1 => Value::I64(self.u64() as i64),
            2 => Value::F64(f64::from_bits(self.u64())),
            3 => Value::Bool(self.byte() & 1 == 1),
            4 => Value::Array(Array::String(
                (0..self.byte() % 8)
                    .map(|_| StringValue::from(self.string()))
                    .collect(),
            )),
            5 => Value::Array(Array::I64(
                (0..self.byte() % 8).map(|_| self.u64() as i64).collect(),
            )),
            _ => Value::Array(Array::F64(
                (0..self.byte() % 8)
                    .map(|_| f64::from_bits(self.u64()))
                    .collect(),
            )),
        }
    }

    fn attributes(&mut self) -> Vec<KeyValue> {
        (0..self.byte() % 16)
            .map(|_| KeyValue::new(self.string(), self.value()))
            .collect()
    }

    fn span(&mut self, i: u64) -> SpanData {
        let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(self.u64() >> 2);
        let end = start + Duration::from_nanos(self.u64() >> 20);
        let kind = [
            SpanKind::Server,
            SpanKind::Client,
            SpanKind::Internal,
            SpanKind::Producer,
            SpanKind::Consumer,
        ][usize::from(self.byte()) % 5]
            .clone();
        let status = match self.byte() % 3 {
            0 => Status::Unset,
            1 => Status::Ok,
            _ => Status::error(self.string()),
        };
        let name = self.string();
        let attributes = self.attributes();
        let events = (0..self.byte() % 4)
            .map(|_| Event::new(self.string(), start, self.attributes(), 0))
            .collect();
        let links = (0..self.byte() % 3)
            .map(|_| {
                let cx = SpanContext::new(
                    TraceId::from(u128::from(self.u64()) << 64 | u128::from(self.u64())),
                    SpanId::from(self.u64()),
                    TraceFlags::SAMPLED,
                    true,
                    TraceState::default(),
                );
                Link::new(cx, self.attributes(), 0)
            })
            .collect();
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736 + u128::from(i)),
                SpanId::from(1 + i),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::from(self.u64()),
            parent_span_is_remote: self.byte() & 1 == 1,
            span_kind: kind,
            name: Cow::Owned(name),
            start_time: start,
            end_time: end,
            attributes,
            dropped_attributes_count: 0,
            events: {
                let mut e = SpanEvents::default();
                e.events = events;
                e
            },
            links: {
                let mut l = SpanLinks::default();
                l.links = links;
                l
            },
            status,
            instrumentation_scope: InstrumentationScope::builder("towerscope").build(),
        }
    }
}

/// Polls an exporter's future once: the agent exporter sends before it returns.
fn now<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the agent exporter's future completes at once"),
    }
}

fn agent_socket() -> &'static UdpSocket {
    static SOCKET: OnceLock<UdpSocket> = OnceLock::new();
    SOCKET.get_or_init(|| {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        socket
    })
}

/// The operation names of the spans in one `Agent.emitBatch` datagram.
fn emit_batch_names(datagram: &[u8]) -> Vec<String> {
    let mut p = TCompactInputProtocol::new(datagram);
    let message = p.read_message_begin().expect("message");
    assert_eq!(message.name, "emitBatch");
    let mut names = Vec::new();
    p.read_struct_begin().expect("args");
    loop {
        let field = p.read_field_begin().expect("args field");
        if field.field_type == TType::Stop {
            break;
        }
        if field.id != Some(1) {
            p.skip(field.field_type).expect("skip");
            continue;
        }
        // Batch { 1: Process process, 2: list<Span> spans, ... }
        p.read_struct_begin().expect("batch");
        loop {
            let field = p.read_field_begin().expect("batch field");
            if field.field_type == TType::Stop {
                break;
            }
            if field.id != Some(2) {
                p.skip(field.field_type).expect("skip");
                continue;
            }
            let list = p.read_list_begin().expect("spans");
            for _ in 0..list.size {
                // Span { ..., 5: string operationName, ... }
                p.read_struct_begin().expect("span");
                loop {
                    let field = p.read_field_begin().expect("span field");
                    if field.field_type == TType::Stop {
                        break;
                    }
                    if field.id == Some(5) {
                        names.push(p.read_string().expect("operationName"));
                    } else {
                        p.skip(field.field_type).expect("skip");
                    }
                    p.read_field_end().expect("field end");
                }
                p.read_struct_end().expect("span end");
            }
            p.read_list_end().expect("list end");
            p.read_field_end().expect("field end");
        }
        p.read_struct_end().expect("batch end");
        p.read_field_end().expect("field end");
    }
    names
}

fn check_jaeger(spans: Vec<SpanData>, max_packet_size: usize) {
    let socket = agent_socket();
    let port = socket.local_addr().expect("addr").port();
    let exporter = JaegerExporter::agent(AgentOptions {
        host: "127.0.0.1".into(),
        port,
        max_packet_size,
    })
    .expect("agent exporter");
    let mut expected: Vec<String> = spans.iter().map(|s| s.name.to_string()).collect();
    let n = spans.len();
    now(exporter.export(spans)).expect("the agent export succeeds");
    let dropped = exporter.dropped_spans() as usize;
    let mut got = Vec::new();
    let mut buf = vec![0; 65_536];
    while got.len() + dropped < n {
        let len = socket
            .recv(&mut buf)
            .expect("a datagram for every span not dropped");
        assert!(
            len <= max_packet_size,
            "datagram of {len} bytes over {max_packet_size}"
        );
        got.extend(emit_batch_names(&buf[..len]));
    }
    assert_eq!(
        got.len() + dropped,
        n,
        "spans sent plus dropped are the batch"
    );
    for name in &got {
        let at = expected
            .iter()
            .position(|e| e == name)
            .expect("a name that was sent");
        expected.swap_remove(at);
    }
}

fn check_otlp(spans: Vec<SpanData>) {
    let resource = Resource::builder_empty()
        .with_attributes([KeyValue::new("service.name", "fuzz")])
        .build();
    let names: Vec<String> = spans.iter().map(|s| s.name.to_string()).collect();
    let strings: Vec<Vec<(String, String)>> = spans
        .iter()
        .map(|s| {
            s.attributes
                .iter()
                .filter_map(|kv| match &kv.value {
                    Value::String(v) => Some((kv.key.to_string(), v.to_string())),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let request = ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(
            spans,
            &ResourceAttributesWithSchema::from(&resource),
        ),
    };
    let decoded =
        ExportTraceServiceRequest::decode(request.encode_to_vec().as_slice()).expect("decode");
    let got: Vec<_> = decoded
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();
    assert_eq!(got.len(), names.len());
    for span in got {
        let i = usize::from(span.span_id[7]) - 1;
        assert_eq!(span.name, names[i]);
        let values: Vec<(String, String)> = span
            .attributes
            .iter()
            .filter_map(
                |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => Some((kv.key.clone(), s.clone())),
                    _ => None,
                },
            )
            .collect();
        assert_eq!(values, strings[i]);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    // 256 to 65,000 bytes per datagram.
    let max_packet_size =
        256 + (usize::from(input.byte()) << 8 | usize::from(input.byte())) % 64_745;
    let count = 1 + u64::from(input.byte() % 8);
    let spans: Vec<SpanData> = (0..count).map(|i| input.span(i)).collect();
    check_otlp(spans.clone());
    check_jaeger(spans, max_packet_size);
});
