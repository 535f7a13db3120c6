//! Request filters behind `Telemetry::layer`, configured in `filters:`: skipped requests are
//! neither counted nor traced (but keep their request id), metrics-only ones are counted and
//! not traced, a route's own sampling rate replaces `trace.sample_rate` for its new traces.

mod support;

use axum::{body::Body, routing::get, Router};
use http::Request;
use http_body_util::BodyExt;
use opentelemetry_sdk::trace::InMemorySpanExporter;
use tower::ServiceExt;
use towerscope::{
    filter::{RequestFilter, Treatment},
    Telemetry,
};

const CONFIG: &str = "
metric: { namespace: app }
trace: { enabled: true, sample_rate: 1, service_name: filters-test, otel: { endpoint: '127.0.0.1:1' } }
filters:
  - { path: /healthz, action: skip }
  - { path: '/internal/**', action: metrics_only }
  - { operation: '/noisy/{id}', sample_rate: 0 }
";

fn app(layer: towerscope::ObservabilityLayer) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/internal/stats", get(|| async { "stats" }))
        .route("/noisy/{id}", get(|| async { "noisy" }))
        .route("/users/{id}", get(|| async { "user" }))
        .layer(layer)
        .with_state(())
}

/// Sends `GET path` through a router behind `layer`; returns the response's request id.
async fn get_path(layer: towerscope::ObservabilityLayer, path: &str) -> String {
    let res = app(layer)
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    res.into_body().collect().await.unwrap();
    id
}

fn exported(t: &Telemetry, exporter: &InMemorySpanExporter) -> Vec<String> {
    t.trace_pipeline().unwrap().force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    exporter.reset();
    spans.into_iter().map(|s| s.name.into_owned()).collect()
}

fn total(t: &Telemetry, operation: &str) -> Option<f64> {
    support::sample(
        &t.registry().render(),
        &format!(r#"app_http_request_total{{method="GET",code="200",operation="{operation}"}}"#),
    )
}

#[tokio::test]
async fn skipped_metrics_only_and_sampled_routes_as_configured() {
    let (t, exporter) = support::in_memory_telemetry(CONFIG);
    for path in ["/healthz", "/internal/stats", "/noisy/1", "/users/1"] {
        let id = get_path(t.layer(), path).await;
        assert!(
            !id.is_empty(),
            "{path}: every response keeps its request id"
        );
    }
    // Skipped: no series at all, no span.
    assert_eq!(total(&t, "/healthz"), None);
    assert!(!t.registry().render().contains("/healthz"));
    // Metrics only: counted, not traced.
    assert_eq!(total(&t, "/internal/stats"), Some(1.0));
    // A rate of its own (0) for the noisy route, counted as usual.
    assert_eq!(total(&t, "/noisy/{id}"), Some(1.0));
    // Everything else observed as before.
    assert_eq!(total(&t, "/users/{id}"), Some(1.0));
    assert_eq!(exported(&t, &exporter), ["GET /users/{id}"]);

    // A sampled parent is followed on the noisy route: its rate applies to new traces only.
    let res = app(t.layer())
        .oneshot(
            Request::get("/noisy/2")
                .header(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    assert_eq!(exported(&t, &exporter), ["GET /noisy/{id}"]);
}

#[tokio::test]
async fn a_predicate_in_code_replaces_the_configured_filters() {
    let (t, exporter) = support::in_memory_telemetry(CONFIG);
    let filter = RequestFilter::new().predicate(|head| {
        (head.path() == "/users/1" && head.operation() == Some("/users/{id}"))
            .then_some(Treatment::Skip)
    });
    for path in ["/users/1", "/users/2", "/healthz"] {
        get_path(t.layer().with_filter(filter.clone()), path).await;
    }
    assert_eq!(total(&t, "/users/{id}"), Some(1.0));
    // The configured `/healthz` rule was replaced: it is observed.
    assert_eq!(total(&t, "/healthz"), Some(1.0));
    let mut spans = exported(&t, &exporter);
    spans.sort();
    assert_eq!(spans, ["GET /healthz", "GET /users/{id}"]);
}
