//! `Telemetry::init_subscriber` with `RUST_LOG=warn`: log lines are filtered, spans are not.
//! (Its own test binary: the subscriber is global.)

mod support;

use http::{Request, Response};
use http_body_util::BodyExt;
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[tokio::test]
async fn rust_log_warn_filters_log_lines_not_span_export() {
    // Set before the subscriber reads it; this binary has no other test.
    std::env::set_var("RUST_LOG", "warn");
    let (telemetry, exporter) = support::in_memory_telemetry(
        "trace: { enabled: true, service_name: log-filter, otel: { endpoint: '127.0.0.1:1' } }",
    );
    telemetry.init_subscriber().unwrap();
    let svc = ServiceBuilder::new()
        .layer(telemetry.layer())
        .service(service_fn(|_req: Request<String>| async {
            tracing::info!("handled"); // filtered out of the log, not out of the span
            Ok::<_, std::convert::Infallible>(Response::new(String::from("ok")))
        }));
    for _ in 0..3 {
        let res = svc
            .clone()
            .oneshot(Request::get("/ping").body(String::new()).unwrap())
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    telemetry.trace_pipeline().unwrap().force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(
        spans.len(),
        3,
        "one server span per request at RUST_LOG=warn: {spans:#?}"
    );
    assert!(spans.iter().all(|s| s.name == "GET"), "{spans:#?}");
    assert!(
        spans
            .iter()
            .all(|s| s.events.iter().any(|e| e.name == "handled")),
        "the handler's info event stays on its span: {spans:#?}"
    );
}
