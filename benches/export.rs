//! Span export: time and bytes per span of a 512-span batch (the batch processor's default
//! batch size), as each exporter sends it.
//!
//! Run with:
//!
//! ```text
//! cargo bench --bench export
//! ```
//!
//! The spans are server spans as towerscope's layer produces them (name `GET <route>`, thirteen
//! attributes: method, route, path, status, request id, operation, user agent, peer address, ...),
//! under a resource with a service name, host and SDK attributes.
//!
//! | case | what it does |
//! |---|---|
//! | `otlp/encode` | opentelemetry-proto's own conversion of the batch to an `ExportTraceServiceRequest` and `prost` encoding (what opentelemetry-otlp sends, before compression and transport) |
//! | `jaeger/agent` | towerscope's `JaegerExporter` in agent mode: conversion, compact Thrift `emitBatch` split into datagrams of at most 65,000 bytes, sent over loopback UDP to a socket a thread only drains |
//! | `jaeger/collector` | the same in collector mode: binary Thrift `Batch` POSTed over loopback HTTP/1.1 (keep-alive) to a server thread that reads it and answers 202 |
//! | `udp/floor` | the agent case's datagrams, pre-encoded, sent alone: what the socket costs |
//!
//! Bytes per span are printed once per case before it is timed (`bytes/span`); the time per
//! span is criterion's time divided by 512 (the throughput line, in elements).

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented `pub fn benches`"
)]

use std::{
    borrow::Cow,
    future::Future,
    hint::black_box,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, UdpSocket},
    pin::pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll, Waker},
    thread,
    time::{Duration, SystemTime},
};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opentelemetry::{
    trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
    InstrumentationScope, KeyValue,
};
use opentelemetry_proto::{
    tonic::collector::trace::v1::ExportTraceServiceRequest,
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
use towerscope::trace::jaeger::{AgentOptions, CollectorOptions, JaegerExporter};

const BATCH: usize = 512;

fn resource() -> Resource {
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "registry"),
            KeyValue::new("host.name", "registry-7d9f8c6b5-x2k4p"),
            KeyValue::new("telemetry.sdk.name", "opentelemetry"),
            KeyValue::new("telemetry.sdk.language", "rust"),
            KeyValue::new("telemetry.sdk.version", "0.33.0"),
        ])
        .build()
}

fn server_span(i: u64) -> SpanData {
    let start = SystemTime::UNIX_EPOCH + Duration::from_micros(1_733_070_000_000_000 + i * 977);
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128 + u128::from(i)),
            SpanId::from(0x00f0_67aa_0ba9_02b7 + i),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::from(0x5fb3_97be_34d2_6b51 + i),
        parent_span_is_remote: true,
        span_kind: SpanKind::Server,
        name: Cow::Borrowed("GET /v2/{name}/manifests/{reference}"),
        start_time: start,
        end_time: start + Duration::from_micros(2_345),
        attributes: vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", "/v2/{name}/manifests/{reference}"),
            KeyValue::new("url.path", format!("/v2/library/busybox/manifests/{i}")),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new("http.response.status_code", 200_i64),
            KeyValue::new("network.protocol.version", "1.1"),
            KeyValue::new("server.address", "registry.example"),
            KeyValue::new("client.address", "10.1.2.3"),
            KeyValue::new("user_agent.original", "skopeo/1.13.3"),
            KeyValue::new("request_id", format!("0f9c2a6e-5b1d-4c3e-9a7f-{i:012x}")),
            KeyValue::new("operation", "GetManifest"),
            KeyValue::new("otel.kind", "server"),
            KeyValue::new("busy_ns", 123_456_i64),
        ],
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: InstrumentationScope::builder("towerscope")
            .with_version("0.1.0")
            .build(),
    }
}

fn batch() -> Vec<SpanData> {
    (0..BATCH as u64).map(server_span).collect()
}

/// Polls an exporter's future once: towerscope's exporters send before they return.
fn now<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the exporter's future is already complete"),
    }
}

/// A UDP socket on loopback and a thread that drains it, counting bytes (no decoding).
fn udp_drain() -> (u16, Arc<AtomicU64>) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let port = socket.local_addr().expect("addr").port();
    let bytes = Arc::new(AtomicU64::new(0));
    let counted = bytes.clone();
    thread::spawn(move || {
        let mut buf = vec![0; 65_536];
        while let Ok(n) = socket.recv(&mut buf) {
            counted.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    (port, bytes)
}

/// An HTTP/1.1 server on loopback answering every request with 202 after reading its body,
/// counting body bytes; keep-alive, one connection at a time.
fn http_sink() -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("tcp");
    let port = listener.local_addr().expect("addr").port();
    let bytes = Arc::new(AtomicU64::new(0));
    let counted = bytes.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut writer = stream.try_clone().expect("clone");
            let mut reader = BufReader::new(stream);
            'requests: loop {
                let mut length = 0_usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break 'requests;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("content-length") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    break;
                }
                counted.fetch_add(length as u64, Ordering::Relaxed);
                if writer
                    .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    (port, bytes)
}

/// Bytes one export of a batch sends, read from the sink's counter.
fn bytes_of_one_export(exporter: &JaegerExporter, sink: &AtomicU64) -> u64 {
    let before = sink.load(Ordering::Relaxed);
    now(exporter.export(batch())).expect("export");
    // The drain thread counts after the datagrams arrive.
    for _ in 0..100 {
        thread::sleep(Duration::from_millis(5));
        let after = sink.load(Ordering::Relaxed);
        if after > before {
            thread::sleep(Duration::from_millis(20));
            return sink.load(Ordering::Relaxed) - before;
        }
    }
    panic!("the sink received nothing");
}

fn export(c: &mut Criterion) {
    let resource = resource();
    let mut group = c.benchmark_group("export");
    group
        .throughput(Throughput::Elements(BATCH as u64))
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30);

    let attributes = ResourceAttributesWithSchema::from(&resource);
    let encode = |spans: Vec<SpanData>| {
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(spans, &attributes),
        }
        .encode_to_vec()
    };
    let otlp_bytes = encode(batch()).len();
    eprintln!("otlp/encode: {} bytes/span", otlp_bytes / BATCH);
    group.bench_function("otlp/encode", |b| {
        b.iter_batched(
            batch,
            |spans| black_box(encode(spans)),
            criterion::BatchSize::LargeInput,
        )
    });

    let (udp_port, udp_bytes) = udp_drain();
    let mut agent = JaegerExporter::agent(AgentOptions {
        host: "127.0.0.1".into(),
        port: udp_port,
        ..AgentOptions::default()
    })
    .expect("agent exporter");
    agent.set_resource(&resource);
    let agent_bytes = bytes_of_one_export(&agent, &udp_bytes);
    eprintln!("jaeger/agent: {} bytes/span", agent_bytes / BATCH as u64);
    group.bench_function("jaeger/agent", |b| {
        b.iter_batched(
            batch,
            |spans| now(agent.export(spans)).expect("export"),
            criterion::BatchSize::LargeInput,
        )
    });

    // The floor: the same number of datagrams of the same size, already encoded.
    let datagrams = (agent_bytes as usize).div_ceil(65_000);
    let datagram = vec![0x82_u8; agent_bytes as usize / datagrams];
    let sender = UdpSocket::bind("127.0.0.1:0").expect("udp");
    sender.connect(("127.0.0.1", udp_port)).expect("connect");
    group.bench_function("udp/floor", |b| {
        b.iter(|| {
            for _ in 0..datagrams {
                sender.send(&datagram).expect("send");
            }
        })
    });

    let (http_port, http_bytes) = http_sink();
    let mut collector = JaegerExporter::collector(CollectorOptions {
        endpoint: format!("http://127.0.0.1:{http_port}/api/traces"),
        ..CollectorOptions::default()
    })
    .expect("collector exporter");
    collector.set_resource(&resource);
    let collector_bytes = bytes_of_one_export(&collector, &http_bytes);
    eprintln!(
        "jaeger/collector: {} bytes/span (HTTP body)",
        collector_bytes / BATCH as u64
    );
    group.bench_function("jaeger/collector", |b| {
        b.iter_batched(
            batch,
            |spans| now(collector.export(spans)).expect("export"),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
    collector.shutdown().ok();
    agent.shutdown().ok();
}

criterion_group!(benches, export);
criterion_main!(benches);
