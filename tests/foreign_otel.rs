//! Beside an application's own OpenTelemetry layer (`tracing_opentelemetry::layer()` over its
//! own provider, as users of axum-tracing-opentelemetry keep): towerscope's server span is
//! exported once, by towerscope, at towerscope's sampling rate; the application's spans
//! inside the request are still exported by its provider, as children of that server span.
//! And `trace.log_span: true`, the opt-in log span with the server span's fields.

mod support;

use axum::{body::Body, routing::get, Router};
use http::Request;
use http_body_util::BodyExt;
use opentelemetry::trace::{SpanId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

/// The application's own OpenTelemetry pipeline: a provider with its own exporter, AlwaysOn
/// inside ParentBased (the SDK's default sampler).
fn app_pipeline() -> (SdkTracerProvider, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    (provider, exporter)
}

/// `n` requests through `Telemetry::layer` with a subscriber holding a log layer and the
/// application's OpenTelemetry layer; the handler opens a span of the application's own.
/// Returns towerscope's spans, the application's spans, and the captured log text.
///
/// Not `Telemetry::tracing_layer` beside it: tracing-opentelemetry keeps one OpenTelemetry
/// span per `tracing` span in the span's extensions, and two of its layers in one registry
/// panic on the first span both see. The application's layer exports the `tracing` spans;
/// towerscope's layer exports its server spans without any subscriber.
async fn serve(config: &str, n: usize) -> (Vec<SpanData>, Vec<SpanData>, String) {
    let (t, ours) = support::in_memory_telemetry(config);
    let (provider, theirs) = app_pipeline();
    let logs = support::Captured::default();
    let writer = logs.clone();
    let format = towerscope::log::RequestFields::new(tracing_subscriber::fmt::format());
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .event_format(format)
                .with_writer(move || writer.clone()),
        )
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("app")));
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = Router::new()
        .route(
            "/users/{id}",
            get(|| async {
                let span = tracing::info_span!("load user");
                let _entered = span.enter();
                tracing::info!("loading");
                "user"
            }),
        )
        .layer(t.layer());
    for i in 0..n {
        let req = Request::get(format!("/users/{i}"))
            .header("x-request-id", format!("req-{i}"))
            .body(Body::empty())
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    t.trace_pipeline().unwrap().force_flush().unwrap();
    provider.force_flush().unwrap();
    (
        ours.get_finished_spans().unwrap(),
        theirs.get_finished_spans().unwrap(),
        logs.take(),
    )
}

const SAMPLED: &str = "trace: { enabled: true, sample_rate: 1, otel: { endpoint: '127.0.0.1:1' } }";
const SAMPLED_OUT: &str =
    "trace: { enabled: true, sample_rate: 0, otel: { endpoint: '127.0.0.1:1' } }";

#[tokio::test]
async fn the_server_span_is_exported_once_and_the_apps_spans_are_its_children() {
    let (ours, theirs, _) = serve(SAMPLED, 10).await;
    let servers: Vec<_> = ours
        .iter()
        .filter(|s| s.name == "GET /users/{id}")
        .collect();
    assert_eq!(servers.len(), 10, "towerscope's server spans: {ours:#?}");
    assert_eq!(ours.len(), 10, "{ours:#?}");
    // The application's provider exports its own spans, and nothing of towerscope's.
    let names: Vec<_> = theirs.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(names, ["load user"; 10]);
    for span in &theirs {
        let parent = servers
            .iter()
            .find(|s| s.span_context.span_id() == span.parent_span_id)
            .unwrap_or_else(|| panic!("{} has no towerscope parent", span.name));
        assert_eq!(span.span_context.trace_id(), parent.span_context.trace_id());
    }
}

#[tokio::test]
async fn towerscope_s_sampler_decides_for_the_request_and_its_children() {
    let (ours, theirs, logs) = serve(SAMPLED_OUT, 100).await;
    assert!(ours.is_empty(), "{ours:#?}");
    // The children follow their sampled-out parent (the SDK's default ParentBased sampler).
    assert!(
        theirs.is_empty(),
        "{} of the application's spans exported",
        theirs.len()
    );
    // The log lines still say which request they belong to.
    let line = logs
        .lines()
        .find(|l| l.contains("req-42"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(line.contains("loading"), "{line}");
}

#[tokio::test]
async fn log_span_true_opens_the_log_span_for_log_layers() {
    let config = "trace: { enabled: true, log_span: true, otel: { endpoint: '127.0.0.1:1' } }";
    let (t, ours) = support::in_memory_telemetry(config);
    let logs = support::Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone()),
        )
        .with(t.tracing_layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = Router::new()
        .route(
            "/users/{id}",
            get(|| async {
                tracing::info!("inside");
                "user"
            }),
        )
        .layer(t.layer());
    let req = Request::get("/users/1")
        .header("x-request-id", "with-span")
        .body(Body::empty())
        .unwrap();
    app.oneshot(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    t.trace_pipeline().unwrap().force_flush().unwrap();
    let text = logs.take();
    let line = text
        .lines()
        .find(|l| l.contains("inside"))
        .unwrap_or_else(|| panic!("{text}"));
    // The span's fields, as fmt prints a span: every field of the server span.
    for field in [
        "request_id=\"with-span\"",
        "operation=\"/users/{id}\"",
        "url.path=\"/users/1\"",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    // Still exported once, by towerscope (its tracing layer leaves the log span out).
    let spans = ours.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0].parent_span_id, SpanId::INVALID);
}
