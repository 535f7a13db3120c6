//! The application's own span attributes: captured request and response headers
//! (`trace.capture_*_headers`, the conventions' `http.*.header.<name>`) and hooks over the
//! request and response heads, on spans the layer exports itself and on spans exported
//! through `tracing`.

mod support;

use axum::{body::Body, http::HeaderValue, routing::get, Router};
use http::{Request, Response};
use http_body_util::BodyExt;
use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use tower::ServiceExt;
use towerscope::{
    trace::{SpanAttributes, TraceLayer},
    Config, Telemetry,
};
use tracing_subscriber::layer::SubscriberExt;

const CONFIG: &str = "
trace:
  enabled: true
  service_name: attributes-test
  otel: { endpoint: '127.0.0.1:1' }
  capture_request_headers: [x-tenant, x-absent]
  capture_response_headers: [x-cache]
";

fn router() -> Router {
    Router::new().route(
        "/users/{id}",
        get(|| async {
            let mut res = Response::new(Body::from("user"));
            res.headers_mut()
                .insert("x-cache", HeaderValue::from_static("hit"));
            res
        }),
    )
}

fn request(sampled: bool) -> Request<Body> {
    let flags = if sampled { "01" } else { "00" };
    Request::get("/users/7")
        .header("x-tenant", "acme")
        .header("x-tenant", "beta")
        .header("x-user", "u-42")
        .header(
            "traceparent",
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}"),
        )
        .body(Body::empty())
        .unwrap()
}

fn hooks() -> SpanAttributes {
    SpanAttributes::new()
        .capture_request_headers(["x-tenant".parse().unwrap()])
        .capture_response_headers(["x-cache".parse().unwrap()])
        .on_request(|head, out| {
            if let Some(user) = head.headers().get("x-user").and_then(|v| v.to_str().ok()) {
                out.push(KeyValue::new("enduser.id", user.to_owned()));
            }
        })
        .on_response(|head, out| {
            out.push(KeyValue::new(
                "app.status_class",
                i64::from(head.status().as_u16() / 100),
            ));
        })
}

fn attr(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

fn strings(values: &[&str]) -> Value {
    Value::Array(Array::String(
        values.iter().map(|v| v.to_string().into()).collect(),
    ))
}

async fn send(app: Router, req: Request<Body>) {
    let res = app.oneshot(req).await.unwrap();
    res.into_body().collect().await.unwrap();
}

fn finished(t: &Telemetry, exporter: &InMemorySpanExporter) -> Vec<SpanData> {
    t.trace_pipeline().unwrap().force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    exporter.reset();
    spans
}

#[tokio::test]
async fn configured_headers_on_the_span_the_layer_exports() {
    let (t, exporter) = support::in_memory_telemetry(CONFIG);
    send(router().layer(t.layer()), request(true)).await;
    let spans = finished(&t, &exporter);
    assert_eq!(spans.len(), 1);
    let span = &spans[0];
    assert_eq!(
        attr(span, "http.request.header.x-tenant"),
        Some(strings(&["acme", "beta"]))
    );
    assert_eq!(
        attr(span, "http.response.header.x-cache"),
        Some(strings(&["hit"]))
    );
    // Absent headers are left out; headers not named are not captured.
    assert_eq!(attr(span, "http.request.header.x-absent"), None);
    assert_eq!(attr(span, "http.request.header.x-user"), None);

    // Hooks in code replace the configured headers; a sampled-out request runs nothing.
    let layer = t.layer().with_span_attributes(hooks());
    send(router().layer(layer.clone()), request(true)).await;
    send(router().layer(layer), request(false)).await;
    let spans = finished(&t, &exporter);
    assert_eq!(spans.len(), 1, "the sampled-out request exports no span");
    assert_eq!(attr(&spans[0], "enduser.id"), Some(Value::from("u-42")));
    assert_eq!(attr(&spans[0], "app.status_class"), Some(Value::I64(2)));
    assert_eq!(
        attr(&spans[0], "http.response.header.x-cache"),
        Some(strings(&["hit"]))
    );
}

#[tokio::test]
async fn hooks_on_a_span_exported_through_tracing() {
    let (t, exporter) = support::in_memory_telemetry(CONFIG);
    let subscriber = tracing_subscriber::registry().with(t.tracing_layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    let layer = TraceLayer::new().with_attributes(hooks());
    send(router().layer(layer), request(true)).await;
    let spans = finished(&t, &exporter);
    let server = spans
        .iter()
        .find(|s| s.name.starts_with("GET"))
        .expect("the server span");
    assert_eq!(attr(server, "enduser.id"), Some(Value::from("u-42")));
    assert_eq!(
        attr(server, "http.request.header.x-tenant"),
        Some(strings(&["acme", "beta"]))
    );
    assert_eq!(attr(server, "app.status_class"), Some(Value::I64(2)));
}

#[test]
fn credentials_and_malformed_names_are_refused() {
    let err = Config::from_yaml_str(
        "trace: { capture_request_headers: [Authorization, 'x y'], capture_response_headers: [set-cookie] }",
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "trace.capture_request_headers[0]: authorization carries credentials",
        "trace.capture_request_headers[1]: not a header name: \"x y\"",
        "trace.capture_response_headers[0]: set-cookie carries credentials",
    ] {
        assert!(err.contains(expected), "{expected}\n{err}");
    }
}
