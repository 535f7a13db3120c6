//! `trace.batch`: the export thread sends a batch `schedule_delay_ms` after the previous one,
//! without a flush.

mod support;

use std::time::{Duration, Instant};

use axum::{body::Body, routing::get, Router};
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

#[tokio::test]
async fn a_short_schedule_exports_without_a_flush() {
    let (t, exporter) = support::in_memory_telemetry(
        "trace: { enabled: true, service_name: batch, otel: { endpoint: '127.0.0.1:1' }, \
         batch: { schedule_delay_ms: 20, max_export_batch_size: 8 } }",
    );
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(t.layer())
        .with_state(());
    for _ in 0..3 {
        let res = app
            .clone()
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    // The default schedule (5 s) would not export within this bound; 20 ms does, many times
    // over, however busy the machine.
    let deadline = Instant::now() + Duration::from_secs(3);
    while exporter.get_finished_spans().unwrap().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "no export within 3 s at a 20 ms schedule"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(exporter.get_finished_spans().unwrap().len(), 3);
}
