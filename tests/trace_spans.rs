//! Server spans of real requests through an axum router, exported to an in-memory exporter:
//! names, attributes, parents, status, propagation formats and their caps.

mod support;

use axum::{body::Body, http::StatusCode, routing::get, Router};
use http::{Request, Response};
use http_body_util::BodyExt;
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use tower::ServiceExt;
use towerscope::Telemetry;
use tracing_subscriber::layer::SubscriberExt;

fn telemetry(yaml: &str) -> (Telemetry, InMemorySpanExporter) {
    support::in_memory_telemetry(yaml)
}

const TRACED: &str =
    "trace: { enabled: true, service_name: spans-test, otel: { endpoint: '127.0.0.1:1' } }";

fn app(telemetry: &Telemetry) -> Router {
    Router::new()
        .route(
            "/users/{id}",
            get(|| async {
                let db = tracing::info_span!("db.query", otel.kind = "client");
                let _e = db.enter();
                "user"
            }),
        )
        .route("/boom", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .layer(telemetry.layer())
}

/// Sends `req` with the telemetry's subscriber active, reads the body, flushes, returns the
/// response and every finished span.
async fn run(
    telemetry: &Telemetry,
    exporter: &InMemorySpanExporter,
    req: Request<Body>,
) -> (Response<Body>, Vec<SpanData>) {
    let subscriber = tracing_subscriber::registry().with(telemetry.tracing_layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    let res = app(telemetry).oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    telemetry.trace_pipeline().unwrap().force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    (Response::from_parts(parts, Body::from(bytes)), spans)
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no span {name} in {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

#[tokio::test]
async fn server_span_tree_names_and_attributes() {
    let (t, exporter) = telemetry(TRACED);
    let req = Request::get("/users/42?verbose=1")
        .header("x-request-id", "req-abc")
        .header("user-agent", "skopeo/1.13")
        .body(Body::empty())
        .unwrap();
    let (res, spans) = run(&t, &exporter, req).await;
    assert_eq!(res.status(), 200);
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = named(&spans, "GET /users/{id}");
    let db = named(&spans, "db.query");
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(db.span_kind, SpanKind::Client);
    assert_eq!(db.parent_span_id, server.span_context.span_id());
    assert_eq!(db.span_context.trace_id(), server.span_context.trace_id());
    assert!(!server.parent_span_is_remote);
    for (key, value) in [
        ("http.request.method", "GET"),
        ("url.path", "/users/42"),
        ("url.query", "verbose=1"),
        ("http.route", "/users/{id}"),
        ("user_agent.original", "skopeo/1.13"),
        ("http.response.status_code", "200"),
        ("operation", "/users/{id}"),
        ("request_id", "req-abc"),
    ] {
        assert_eq!(attr(server, key).as_deref(), Some(value), "{key}");
    }
    assert_eq!(server.status, Status::Unset);
    assert!(server.end_time >= db.end_time);
}

#[tokio::test]
async fn server_errors_mark_the_span_client_errors_do_not() {
    let (t, exporter) = telemetry(TRACED);
    let (_, spans) = run(
        &t,
        &exporter,
        Request::get("/boom").body(Body::empty()).unwrap(),
    )
    .await;
    let boom = named(&spans, "GET /boom");
    assert!(
        matches!(boom.status, Status::Error { .. }),
        "{:?}",
        boom.status
    );
    assert_eq!(
        attr(boom, "http.response.status_code").as_deref(),
        Some("503")
    );

    exporter.reset();
    let (_, spans) = run(
        &t,
        &exporter,
        Request::get("/missing").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(named(&spans, "GET /missing").status, Status::Unset);
}

#[tokio::test]
async fn unrouted_and_hostile_methods_get_generic_names() {
    let (t, exporter) = telemetry(TRACED);
    let (_, spans) = run(
        &t,
        &exporter,
        Request::get("/nowhere").body(Body::empty()).unwrap(),
    )
    .await;
    let span = named(&spans, "GET");
    assert_eq!(attr(span, "operation").as_deref(), Some("unknown"));
    exporter.reset();
    let req = Request::builder()
        .method("BREW")
        .uri("/users/1")
        .body(Body::empty())
        .unwrap();
    let (_, spans) = run(&t, &exporter, req).await;
    let span = named(&spans, "HTTP /users/{id}");
    assert_eq!(attr(span, "http.request.method").as_deref(), Some("_OTHER"));
}

#[tokio::test]
async fn remote_parent_is_continued_and_echoed() {
    let (t, exporter) = telemetry(
        "trace: { enabled: true, echo_traceparent: true, otel: { endpoint: '127.0.0.1:1' } }",
    );
    let req = Request::get("/users/1")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("tracestate", "vendor=value")
        .body(Body::empty())
        .unwrap();
    let (res, spans) = run(&t, &exporter, req).await;
    let server = named(&spans, "GET /users/{id}");
    assert_eq!(
        server.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(server.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert!(server.parent_span_is_remote);
    assert_eq!(server.span_context.trace_state().header(), "vendor=value");
    let echoed = res.headers()["traceparent"].to_str().unwrap();
    assert_eq!(
        echoed,
        format!(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
            server.span_context.span_id()
        )
    );
}

#[tokio::test]
async fn malformed_traceparent_starts_a_new_trace_and_drops_tracestate() {
    let (t, exporter) = telemetry(TRACED);
    let req = Request::get("/users/1")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        )
        .header("tracestate", "vendor=value")
        .body(Body::empty())
        .unwrap();
    let (_, spans) = run(&t, &exporter, req).await;
    let server = named(&spans, "GET /users/{id}");
    assert_ne!(
        server.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert!(!server.parent_span_is_remote);
    assert_eq!(server.span_context.trace_state().header(), "");
}

#[tokio::test]
async fn oversized_tracestate_is_cut_at_whole_members() {
    let (t, exporter) = telemetry(TRACED);
    let members: Vec<String> = (0..40)
        .map(|i| format!("k{i:02}=v{}", "x".repeat(20)))
        .collect();
    let req = Request::get("/users/1")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("tracestate", members.join(","))
        .body(Body::empty())
        .unwrap();
    let (_, spans) = run(&t, &exporter, req).await;
    let state = named(&spans, "GET /users/{id}")
        .span_context
        .trace_state()
        .header();
    assert!(state.len() <= 512, "{}", state.len());
    let kept: Vec<&str> = state.split(',').collect();
    assert!(!kept.is_empty() && kept.len() < 40);
    for (i, member) in kept.iter().enumerate() {
        assert_eq!(*member, members[i], "members are kept whole and in order");
    }
}

#[tokio::test]
async fn jaeger_uber_trace_id_is_read_when_configured() {
    let (t, exporter) = telemetry(
        "trace: { enabled: true, propagators: [tracecontext, jaeger], otel: { endpoint: '127.0.0.1:1' } }",
    );
    let req = Request::get("/users/1")
        .header(
            "uber-trace-id",
            "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
        )
        .body(Body::empty())
        .unwrap();
    let (_, spans) = run(&t, &exporter, req).await;
    let server = named(&spans, "GET /users/{id}");
    assert_eq!(
        server.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(server.parent_span_id.to_string(), "00f067aa0ba902b7");
}

#[tokio::test]
async fn sampling_follows_the_ratio_and_the_parent() {
    let (t, exporter) =
        telemetry("trace: { enabled: true, sample_rate: 0, otel: { endpoint: '127.0.0.1:1' } }");
    let (_, spans) = run(
        &t,
        &exporter,
        Request::get("/users/1").body(Body::empty()).unwrap(),
    )
    .await;
    assert!(spans.is_empty(), "ratio 0 samples no new trace");
    let req = Request::get("/users/1")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Body::empty())
        .unwrap();
    let (_, spans) = run(&t, &exporter, req).await;
    assert_eq!(spans.len(), 2, "a sampled parent is followed");
}

#[tokio::test]
async fn exporter_health_is_on_the_metrics_endpoint() {
    let (t, exporter) = telemetry(TRACED);
    run(
        &t,
        &exporter,
        Request::get("/users/1").body(Body::empty()).unwrap(),
    )
    .await;
    let text = t.registry().render_components(&["trace"]).unwrap();
    assert!(
        text.contains(r#"trace_spans_exported_total{exporter="memory"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"trace_spans_dropped_total{exporter="memory"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"trace_spans_failed_total{exporter="memory"} 0"#),
        "{text}"
    );
}
