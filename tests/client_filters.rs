//! Filters on the reqwest client middleware: a skipped call is neither traced nor counted but
//! still carries the caller's trace context and request id; a metrics-only call is counted
//! without a span.
#![cfg(feature = "reqwest")]

mod support;

use std::net::SocketAddr;

use axum::{http::HeaderMap, routing::get, Router};
use opentelemetry::trace::TraceContextExt;
use towerscope::{
    client::{ClientMiddleware, ClientOperation},
    filter::{FilterRule, PathPattern, RequestFilter, Treatment},
};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

/// Answers with the `traceparent` the call arrived with.
async fn traceparent(headers: HeaderMap) -> String {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn serve() -> SocketAddr {
    let router = Router::new()
        .route("/healthz", get(traceparent))
        .route("/v2/{name}", get(traceparent));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

#[tokio::test]
async fn skipped_and_metrics_only_calls_keep_the_callers_context() {
    let (t, exporter) = support::in_memory_telemetry(
        "metric: { namespace: cf, port: 0 }\n\
         trace: { enabled: true, service_name: cf, otel: { endpoint: '127.0.0.1:1' } }",
    );
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(t.tracing_layer()));
    let addr = serve().await;
    let filter = RequestFilter::new()
        .rule(FilterRule::path(PathPattern::new("/healthz").unwrap()).skip())
        .rule(FilterRule::operation("pollJob").metrics_only())
        .predicate(|head| (head.uri().query() == Some("probe=1")).then_some(Treatment::Skip));
    let client = ClientMiddleware::from_telemetry(&t)
        .with_filter(filter)
        .build_client(reqwest::Client::builder())
        .unwrap();

    let parent = tracing::info_span!("parent");
    let trace_id = parent.context().span().span_context().trace_id();
    let calls = async {
        let get = |path: String, op: Option<&'static str>| {
            let mut req = client.get(format!("http://{addr}{path}"));
            if let Some(op) = op {
                req = req.with_extension(ClientOperation::new(op));
            }
            async move { req.send().await.unwrap().text().await.unwrap() }
        };
        [
            get("/healthz".into(), None).await,
            get("/v2/job".into(), Some("pollJob")).await,
            get("/v2/probe?probe=1".into(), None).await,
            get("/v2/blob".into(), None).await,
        ]
    };
    let received = calls.instrument(parent.clone()).await;
    drop(parent);
    for (i, traceparent) in received.iter().enumerate() {
        assert!(
            traceparent.contains(&trace_id.to_string()),
            "call {i} carries the caller's trace: {traceparent:?}"
        );
    }
    // Only the observed call has a span of its own: the others carry the parent's span id.
    let parent_ids = received
        .iter()
        .filter(|tp| received.iter().filter(|other| other == tp).count() == 3)
        .count();
    assert_eq!(parent_ids, 3, "{received:?}");

    t.trace_pipeline().unwrap().force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let mut names: Vec<_> = spans.iter().map(|s| s.name.to_string()).collect();
    names.sort();
    assert_eq!(names, ["GET", "parent"], "one client span: /v2/blob");

    let text = t.registry().render_components(&["client"]).unwrap();
    let total = |peer: &str| {
        support::sample(
            &text,
            &format!(r#"cf_http_client_request_total{{method="GET",code="200",peer="{peer}"}}"#),
        )
    };
    assert_eq!(
        total(&format!("127.0.0.1:{}", addr.port())),
        Some(1.0),
        "{text}"
    );
    assert_eq!(total("pollJob"), Some(1.0), "{text}");
}
