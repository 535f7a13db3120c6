//! What towerscope sends over OTLP, decoded by the official protobuf definitions
//! (Python `opentelemetry-proto` + `grpcio`, see `interop/otlp_sink.py`): http/protobuf with
//! gzip and custom headers, and gRPC.

mod support;

use std::time::Duration;

use axum::{body::Body, routing::get, Router};
use http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use support::otlp_sink::{python_ready, start_sink};
use tower::ServiceExt;
use towerscope::{Config, Telemetry};
use tracing_subscriber::layer::SubscriberExt;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// Sends one request with a remote parent through a router under `telemetry`, then flushes.
async fn one_traced_request(telemetry: &Telemetry) {
    let subscriber = tracing_subscriber::registry().with(telemetry.tracing_layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .layer(telemetry.layer());
    let req = Request::get("/users/7?x=1")
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .header("x-request-id", "wire-test-1")
        .header("user-agent", "wire-test")
        .body(Body::empty())
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap();
}

fn server_span(export: &Value) -> &Value {
    export["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "GET /users/{id}")
        .unwrap_or_else(|| panic!("no server span in {export}"))
}

fn check_server_span(export: &Value) {
    let span = server_span(export);
    assert_eq!(span["trace_id"], TRACE_ID);
    assert_eq!(span["parent_span_id"], PARENT_ID);
    assert_eq!(span["kind"], 2, "SPAN_KIND_SERVER");
    let a = &span["attributes"];
    assert_eq!(a["http.request.method"], "GET");
    assert_eq!(a["http.route"], "/users/{id}");
    assert_eq!(a["url.path"], "/users/7");
    assert_eq!(a["url.query"], "x=1");
    assert_eq!(a["user_agent.original"], "wire-test");
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(a["request_id"], "wire-test-1");
    assert_eq!(a["operation"], "/users/{id}");
    assert_eq!(export["resource"]["service.name"], "wire-svc");
    assert_eq!(export["resource"]["service.namespace"], "prod");
    assert_eq!(export["resource"]["application"], "harbor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_with_gzip_and_headers_decodes() {
    if !python_ready() {
        return;
    }
    let sink = start_sink(&[]);
    let config = Config::from_yaml_str(&format!(
        r#"
trace:
  enabled: true
  service_name: wire-svc
  namespace: prod
  attributes: {{ application: harbor }}
  otel:
    endpoint: 127.0.0.1:{}
    url_path: /v1/traces
    compression: true
    insecure: true
    timeout: 5
    headers: {{ x-api-key: secret-1 }}
"#,
        sink.http_port
    ))
    .unwrap();
    let telemetry = Telemetry::init_local(&config).unwrap();
    one_traced_request(&telemetry).await;
    let report = tokio::task::spawn_blocking(move || telemetry.shutdown().unwrap())
        .await
        .unwrap();
    assert!(
        report.completed && report.exported >= 1 && report.lost() == 0,
        "{report:?}"
    );

    let line = sink
        .lines
        .recv_timeout(Duration::from_secs(20))
        .expect("an export arrives");
    let export: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(export["transport"], "http");
    assert_eq!(export["path"], "/v1/traces");
    assert_eq!(export["headers"]["content-type"], "application/x-protobuf");
    assert_eq!(export["headers"]["content-encoding"], "gzip");
    assert_eq!(export["headers"]["x-api-key"], "secret-1");
    check_server_span(&export);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_with_compression_decodes() {
    if !python_ready() {
        return;
    }
    let sink = start_sink(&[]);
    let config = Config::from_yaml_str(&format!(
        r#"
trace:
  enabled: true
  service_name: wire-svc
  namespace: prod
  attributes: {{ application: harbor }}
  otel: {{ endpoint: "127.0.0.1:{}", protocol: grpc, insecure: true, compression: true, timeout: 5, headers: {{ x-api-key: secret-2 }} }}
"#,
        sink.grpc_port
    ))
    .unwrap();
    let telemetry = Telemetry::init_local(&config).unwrap();
    one_traced_request(&telemetry).await;
    let report = tokio::task::spawn_blocking(move || telemetry.shutdown().unwrap())
        .await
        .unwrap();
    assert!(report.completed && report.exported >= 1, "{report:?}");
    let line = sink
        .lines
        .recv_timeout(Duration::from_secs(20))
        .expect("an export arrives");
    let export: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(export["transport"], "grpc");
    assert_eq!(export["headers"]["x-api-key"], "secret-2");
    // grpcio inflates gzip before the servicer and exposes no trace of the message
    // encoding, so this test shows a compressed export decodes, not that it was compressed.
    check_server_span(&export);
}
