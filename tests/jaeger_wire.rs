//! The Jaeger exporter's bytes, decoded by a decoder we did not write: Python's `thriftpy2`
//! reading the Jaeger IDL (`interop/jaeger_decode.py`).
//!
//! Needs `python3` with `thriftpy2` (`pip install thriftpy2`) and the IDL in
//! `../shared/data/jaeger-idl` (or `$JAEGER_IDL_DIR`). Without them the tests print a skip
//! message and pass, except under CI (`CI` set), where they fail.
#![cfg(feature = "jaeger")]

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanEvents, SpanExporter, SpanLinks};
use opentelemetry_sdk::Resource;
use serde_json::{json, Value as Json};
use towerscope::trace::jaeger::{AgentOptions, CollectorOptions, JaegerExporter};

// ---- the independent decoder ----

fn idl_dir() -> PathBuf {
    std::env::var_os("JAEGER_IDL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/jaeger-idl"))
}

/// Whether the decoder can run; under CI a missing decoder is a failure, not a skip.
fn decoder_ready() -> bool {
    let python = Command::new("python3")
        .args(["-c", "import thriftpy2"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    let idl = idl_dir().join("agent.thrift").is_file();
    if python && idl {
        return true;
    }
    let missing = if python {
        format!("the Jaeger IDL at {}", idl_dir().display())
    } else {
        "python3 with thriftpy2 (pip install thriftpy2)".to_owned()
    };
    if std::env::var_os("CI").is_some() {
        panic!("jaeger_wire needs {missing}");
    }
    eprintln!("skipping: jaeger_wire needs {missing}");
    false
}

/// Runs `interop/jaeger_decode.py MODE FILE` on `bytes` and parses its JSON.
fn decode(mode: &str, bytes: &[u8]) -> Json {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let file = std::env::temp_dir().join(format!(
        "towerscope-jaeger-{}-{}-{mode}.bin",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&file, bytes).expect("write temp file");
    let output = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/jaeger_decode.py"))
        .arg(mode)
        .arg(&file)
        .env("JAEGER_IDL_DIR", idl_dir())
        .output()
        .expect("run python3");
    let _ = std::fs::remove_file(&file);
    assert!(
        output.status.success(),
        "decoder failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("decoder prints JSON")
}

/// Datagrams as the decoder's agent input: each prefixed by its 4-byte big-endian length.
fn length_prefixed(datagrams: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in datagrams {
        out.extend_from_slice(&u32::try_from(d.len()).expect("fits").to_be_bytes());
        out.extend_from_slice(d);
    }
    out
}

// ---- spans ----

/// Top bit set in the high half, so the signed reinterpretation shows.
const TRACE_ID: u128 = 0x8000_0000_0000_0001_0000_0000_0000_0002;
const TRACE_HIGH: i64 = i64::MIN + 1;
const TRACE_LOW: i64 = 2;
const ROOT_ID: u64 = 0x1111;
const CHILD_ID: u64 = 0xffff_ffff_ffff_fffe; // -2 as i64
const LINKED_TRACE: u128 = 0xaa_0000_0000_0000_00bb;
const LINKED_SPAN: u64 = 0x3333;
const T0: u64 = 1_700_000_000_000_000; // µs since the epoch

fn at(micros: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(micros)
}

fn cx(trace: u128, span: u64) -> SpanContext {
    SpanContext::new(
        TraceId::from(trace),
        SpanId::from(span),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    )
}

fn span(name: &'static str, id: u64, parent: u64, kind: SpanKind) -> SpanData {
    SpanData {
        span_context: cx(TRACE_ID, id),
        parent_span_id: SpanId::from(parent),
        parent_span_is_remote: false,
        span_kind: kind,
        name: Cow::Borrowed(name),
        start_time: at(T0),
        end_time: at(T0),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: InstrumentationScope::default(),
    }
}

/// A server span with an error, typed attributes and an event; its client child with an OK
/// status and a link to another trace.
fn sample_batch() -> Vec<SpanData> {
    let mut root = span(
        "GET /v2/{name}/manifests/{reference}",
        ROOT_ID,
        0,
        SpanKind::Server,
    );
    root.end_time = at(T0 + 2_500);
    root.status = Status::error("upstream failed");
    root.attributes = vec![
        KeyValue::new("http.request.method", "GET"),
        KeyValue::new("http.response.status_code", 500_i64),
        KeyValue::new("cache.hit", false),
        KeyValue::new("load", 0.25_f64),
        KeyValue::new(
            "names",
            Value::Array(Array::String(vec![
                StringValue::from("a"),
                StringValue::from("b"),
            ])),
        ),
    ];
    root.events.events.push(Event::new(
        "retry",
        at(T0 + 200),
        vec![KeyValue::new("attempt", 2_i64)],
        0,
    ));
    root.instrumentation_scope = InstrumentationScope::builder("towerscope")
        .with_version("0.1.0")
        .build();

    let mut child = span("SELECT blobs", CHILD_ID, ROOT_ID, SpanKind::Client);
    child.start_time = at(T0 + 100);
    child.end_time = at(T0 + 1_100);
    child.status = Status::Ok;
    child
        .links
        .links
        .push(Link::with_context(cx(LINKED_TRACE, LINKED_SPAN)));
    vec![root, child]
}

fn resource() -> Resource {
    Resource::builder_empty()
        .with_service_name("registry")
        .with_attribute(KeyValue::new("deployment.environment", "test"))
        .build()
}

fn export(exporter: &JaegerExporter, batch: Vec<SpanData>) -> OTelSdkResult {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(exporter.export(batch))
}

// ---- expected JSON ----

fn tag(key: &str, v_type: &str, field: &str, value: Json) -> Json {
    let mut t = json!({
        "key": key, "vType": v_type,
        "vStr": null, "vDouble": null, "vBool": null, "vLong": null, "vBinary": null,
    });
    t[field] = value;
    t
}
fn s(key: &str, v: &str) -> Json {
    tag(key, "STRING", "vStr", json!(v))
}
fn b(key: &str, v: bool) -> Json {
    tag(key, "BOOL", "vBool", json!(v))
}
fn l(key: &str, v: i64) -> Json {
    tag(key, "LONG", "vLong", json!(v))
}
fn d(key: &str, v: f64) -> Json {
    tag(key, "DOUBLE", "vDouble", json!(v))
}

fn expected_spans() -> Json {
    json!([
        {
            "traceIdLow": TRACE_LOW, "traceIdHigh": TRACE_HIGH,
            "spanId": ROOT_ID as i64, "parentSpanId": 0,
            "operationName": "GET /v2/{name}/manifests/{reference}",
            "references": null, "flags": 1,
            "startTime": T0 as i64, "duration": 2_500,
            "tags": [
                s("http.request.method", "GET"),
                l("http.response.status_code", 500),
                b("cache.hit", false),
                d("load", 0.25),
                s("names", r#"["a","b"]"#),
                s("span.kind", "server"),
                s("otel.status_code", "ERROR"),
                s("otel.status_description", "upstream failed"),
                b("error", true),
                s("otel.scope.name", "towerscope"),
                s("otel.scope.version", "0.1.0"),
            ],
            "logs": [
                {"timestamp": (T0 + 200) as i64, "fields": [s("event", "retry"), l("attempt", 2)]}
            ],
        },
        {
            "traceIdLow": TRACE_LOW, "traceIdHigh": TRACE_HIGH,
            "spanId": -2, "parentSpanId": ROOT_ID as i64,
            "operationName": "SELECT blobs",
            "references": [
                {"refType": "CHILD_OF", "traceIdLow": TRACE_LOW, "traceIdHigh": TRACE_HIGH,
                 "spanId": ROOT_ID as i64},
                {"refType": "FOLLOWS_FROM", "traceIdLow": 0xbb, "traceIdHigh": 0xaa,
                 "spanId": LINKED_SPAN as i64},
            ],
            "flags": 1,
            "startTime": (T0 + 100) as i64, "duration": 1_000,
            "tags": [s("span.kind", "client"), s("otel.status_code", "OK")],
            "logs": null,
        },
    ])
}

fn expected_process() -> Json {
    json!({
        "serviceName": "registry",
        "tags": [s("deployment.environment", "test")],
    })
}

// ---- agent ----

/// Receives datagrams on a thread of its own (so the socket buffer keeps draining) until none
/// has come for `quiet`.
fn receive_all(socket: UdpSocket, quiet: Duration) -> thread::JoinHandle<Vec<Vec<u8>>> {
    thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0; 65_536];
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        while let Ok(n) = socket.recv(&mut buf) {
            got.push(buf[..n].to_vec());
            socket.set_read_timeout(Some(quiet)).expect("timeout");
        }
        got
    })
}

fn agent_for(socket: &UdpSocket) -> JaegerExporter {
    JaegerExporter::agent(AgentOptions {
        host: "127.0.0.1".into(),
        port: socket.local_addr().expect("addr").port(),
        ..AgentOptions::default()
    })
    .expect("valid options")
}

#[test]
fn agent_datagram_decodes_to_the_exact_spans() {
    if !decoder_ready() {
        return;
    }
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut exporter = agent_for(&socket);
    exporter.set_resource(&resource());
    let received = receive_all(socket, Duration::from_millis(300));
    export(&exporter, sample_batch()).expect("export");
    let datagrams = received.join().expect("receiver");
    assert_eq!(datagrams.len(), 1);

    let decoded = decode("agent", &length_prefixed(&datagrams));
    let datagram = &decoded["datagrams"][0];
    assert_eq!(datagram["message"]["name"], "emitBatch");
    assert_eq!(datagram["message"]["type"], 4, "ONEWAY");
    assert_eq!(datagram["message"]["seqid"], 1);
    assert_eq!(datagram["batch"]["process"], expected_process());
    assert_eq!(datagram["batch"]["spans"], expected_spans());
    assert_eq!(datagram["batch"]["seqNo"], 1);
    assert_eq!(
        datagram["batch"]["stats"],
        json!({"fullQueueDroppedSpans": 0, "tooLargeDroppedSpans": 0, "failedToEmitSpans": 0})
    );
}

#[test]
fn agent_splits_large_batches_and_drops_a_span_too_large_for_any_datagram() {
    if !decoder_ready() {
        return;
    }
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let exporter = agent_for(&socket);
    // ~160 KB in three datagrams: that also fits a default 208 KB socket buffer, so nothing is
    // lost on loopback even if the receiving thread is slow to run.
    const SPANS: u64 = 150;
    let mut batch: Vec<SpanData> = (1..=SPANS)
        .map(|i| {
            let mut s = span("work", i, 0, SpanKind::Internal);
            s.attributes = vec![KeyValue::new("payload", "p".repeat(1_024))];
            s
        })
        .collect();
    let mut oversized = span("oversized", 0xbad, 0, SpanKind::Internal);
    oversized.attributes = vec![KeyValue::new("blob", "x".repeat(70 * 1_024))];
    batch.insert(70, oversized);

    let received = receive_all(socket, Duration::from_millis(500));
    export(&exporter, batch).expect("export");
    let datagrams = received.join().expect("receiver");

    assert_eq!(exporter.dropped_spans(), 1);
    assert!(datagrams.len() >= 3, "{} datagrams", datagrams.len());
    assert!(datagrams.iter().all(|d| d.len() <= 65_000));
    let decoded = decode("agent", &length_prefixed(&datagrams));
    let mut ids = Vec::new();
    for (i, datagram) in decoded["datagrams"]
        .as_array()
        .expect("list")
        .iter()
        .enumerate()
    {
        assert_eq!(datagram["batch"]["seqNo"], i as u64 + 1);
        assert_eq!(datagram["batch"]["stats"]["tooLargeDroppedSpans"], 1);
        for span in datagram["batch"]["spans"].as_array().expect("spans") {
            assert_eq!(span["operationName"], "work");
            ids.push(span["spanId"].as_i64().expect("id"));
        }
    }
    assert_eq!(ids, (1..=SPANS as i64).collect::<Vec<_>>());
}

#[test]
fn agent_through_the_sdk_carries_resource_and_parentage() {
    if !decoder_ready() {
        return;
    }
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let exporter = agent_for(&socket);
    let received = receive_all(socket, Duration::from_millis(300));
    let provider = SdkTracerProvider::builder()
        .with_resource(resource())
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer("wire-test");
    tracer.in_span("parent", |_| tracer.in_span("child", |_| {}));
    provider.shutdown().expect("shutdown flushes");
    let datagrams = received.join().expect("receiver");

    let decoded = decode("agent", &length_prefixed(&datagrams));
    let mut by_name: HashMap<&str, &Json> = HashMap::new();
    for datagram in decoded["datagrams"].as_array().expect("datagrams") {
        assert_eq!(datagram["batch"]["process"]["serviceName"], "registry");
        for span in datagram["batch"]["spans"].as_array().expect("spans") {
            by_name.insert(span["operationName"].as_str().expect("name"), span);
        }
    }
    assert_eq!(by_name.len(), 2);
    let (parent, child) = (by_name["parent"], by_name["child"]);
    assert_eq!(child["parentSpanId"], parent["spanId"]);
    assert_eq!(child["traceIdLow"], parent["traceIdLow"]);
    assert_eq!(parent["parentSpanId"], 0);
    assert_eq!(child["references"][0]["refType"], "CHILD_OF");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after epoch")
        .as_micros() as i64;
    let start = parent["startTime"].as_i64().expect("start");
    assert!(
        start > now - 60_000_000 && start <= now,
        "start {start}, now {now}"
    );
    let tags = parent["tags"].as_array().expect("tags");
    assert!(tags.contains(&s("otel.scope.name", "wire-test")));
}

// ---- collector ----

struct Captured {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn read_request(stream: &mut TcpStream) -> Option<Captured> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Captured {
        method,
        path,
        headers,
        body,
    })
}

/// A one-request HTTP server: answers with `response` (or never, when `None`, holding the
/// connection for 10 s) and hands the request it read to the test.
fn serve_once(response: Option<&'static str>) -> (String, mpsc::Receiver<Captured>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/api/traces", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let Some(request) = read_request(&mut stream) else {
            return;
        };
        let _ = tx.send(request);
        match response {
            Some(response) => {
                let _ = stream.write_all(response.as_bytes());
            }
            None => thread::sleep(Duration::from_secs(10)),
        }
    });
    (url, rx)
}

fn collector(endpoint: String, timeout: Duration) -> JaegerExporter {
    JaegerExporter::collector(CollectorOptions {
        endpoint,
        username: Some("jaeger-user".into()),
        password: Some("p@ss:word".into()),
        timeout,
    })
    .expect("valid options")
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &byte)| n | u32::from(byte) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

const ACCEPTED: &str = "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Built, used and dropped inside a tokio runtime, as in an application's `#[tokio::main]`.
#[tokio::test]
async fn collector_posts_a_binary_batch_with_basic_auth() {
    if !decoder_ready() {
        return;
    }
    assert_eq!(base64(b"Man"), "TWFu");
    assert_eq!(base64(b"Ma"), "TWE=");
    let (url, requests) = serve_once(Some(ACCEPTED));
    let mut exporter = collector(url, Duration::from_secs(10));
    exporter.set_resource(&resource());
    exporter
        .export(sample_batch())
        .await
        .expect("202 is success");
    drop(exporter);

    let request = requests
        .recv_timeout(Duration::from_secs(5))
        .expect("request");
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/api/traces");
    assert_eq!(
        request.headers.get("content-type").map(String::as_str),
        Some("application/vnd.apache.thrift.binary")
    );
    assert_eq!(
        request.headers.get("authorization"),
        Some(&format!("Basic {}", base64(b"jaeger-user:p@ss:word")))
    );
    let decoded = decode("collector", &request.body);
    assert_eq!(decoded["batch"]["process"], expected_process());
    assert_eq!(decoded["batch"]["spans"], expected_spans());
    assert_eq!(decoded["batch"]["seqNo"], Json::Null);
}

#[test]
fn collector_without_password_sends_no_authorization() {
    let (url, requests) = serve_once(Some(ACCEPTED));
    let exporter = JaegerExporter::collector(CollectorOptions {
        endpoint: url,
        username: Some("only-user".into()),
        ..CollectorOptions::default()
    })
    .expect("valid options");
    export(&exporter, sample_batch()).expect("202 is success");
    let request = requests
        .recv_timeout(Duration::from_secs(5))
        .expect("request");
    assert_eq!(request.headers.get("authorization"), None);
}

#[test]
fn collector_error_status_is_an_export_error() {
    let (url, _requests) = serve_once(Some(
        "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\nConnection: close\r\n\r\noops!",
    ));
    let exporter = collector(url, Duration::from_secs(10));
    let err = export(&exporter, sample_batch()).expect_err("500 fails");
    let message = err.to_string();
    assert!(message.contains("500"), "{message}");
    assert!(!message.contains("p@ss"), "{message}");
}

#[test]
fn collector_that_never_answers_times_out() {
    let (url, _requests) = serve_once(None);
    let exporter = collector(url, Duration::from_millis(500));
    let started = Instant::now();
    let result = export(&exporter, sample_batch());
    // A liveness bound, not a speed measurement: the 500 ms timeout must end the export.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(result.is_err());
}

#[test]
fn collector_on_a_closed_port_is_an_export_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let exporter = collector(
        format!("http://127.0.0.1:{port}/api/traces"),
        Duration::from_secs(5),
    );
    assert!(export(&exporter, sample_batch()).is_err());
}
