//! Time to first byte (`metric.time_to_first_byte`): a response whose head is sent at once and
//! whose body ends later is recorded twice, to the head and to the end of the body, in
//! Harbor's naming and in the conventions' style; the sampled server span marks the head with
//! an event.

mod support;

use std::time::Duration;

use axum::{body::Body, routing::get, Router};
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;
use towerscope::trace::RESPONSE_HEAD_EVENT;

/// The body's end comes this long after the head.
const BODY_DELAY: Duration = Duration::from_millis(200);

fn router(layer: towerscope::ObservabilityLayer) -> Router {
    Router::new()
        .route(
            "/download",
            get(|| async {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                tokio::spawn(async move {
                    tokio::time::sleep(BODY_DELAY).await;
                    let _ = tx.send(Bytes::from_static(b"layer")).await;
                });
                Body::new(support::ChannelBody(rx))
            }),
        )
        .layer(layer)
        .with_state(())
}

async fn download(layer: towerscope::ObservabilityLayer) {
    let res = router(layer)
        .oneshot(Request::get("/download").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "layer");
}

#[tokio::test]
async fn the_head_and_the_end_of_the_body_in_harbor_naming_with_the_span_event() {
    let (t, exporter) = support::in_memory_telemetry(
        "metric: { namespace: app, time_to_first_byte: true }
trace: { enabled: true, service_name: ttfb, otel: { endpoint: '127.0.0.1:1' } }",
    );
    download(t.layer()).await;
    let text = t.registry().render();
    let labels = r#"{method="GET",operation="/download"}"#;
    let sum = |family: &str| {
        support::sample(&text, &format!("app_{family}_sum{labels}"))
            .unwrap_or_else(|| panic!("{family}:\n{text}"))
    };
    let count = |family: &str| support::sample(&text, &format!("app_{family}_count{labels}"));
    assert_eq!(count("http_request_time_to_first_byte_seconds"), Some(1.0));
    assert_eq!(count("http_request_duration_seconds"), Some(1.0));
    let (first_byte, duration) = (
        sum("http_request_time_to_first_byte_seconds"),
        sum("http_request_duration_seconds"),
    );
    assert!(
        duration >= BODY_DELAY.as_secs_f64() && first_byte < duration - 0.1,
        "first byte {first_byte} s, duration {duration} s"
    );

    t.trace_pipeline().unwrap().force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let events: Vec<_> = spans[0].events.iter().map(|e| e.name.as_ref()).collect();
    assert_eq!(events, [RESPONSE_HEAD_EVENT]);
    let head = &spans[0].events[0];
    assert!(head.timestamp < spans[0].end_time);
    assert!(
        spans[0].end_time.duration_since(head.timestamp).unwrap()
            >= BODY_DELAY - Duration::from_millis(20)
    );
}

#[tokio::test]
async fn the_conventions_style_family_and_nothing_when_off() {
    let (t, _) = support::in_memory_telemetry(
        "metric: { naming: otel, time_to_first_byte: true, buckets: [0.1, 1] }",
    );
    download(t.layer()).await;
    let text = t.registry().render();
    let series = r#"http_server_time_to_first_byte_seconds_bucket{http_request_method="GET",http_response_status_code="200",http_route="/download",network_protocol_version="1.1",url_scheme="http",le="0.1"}"#;
    assert_eq!(support::sample(&text, series), Some(1.0), "{text}");
    let duration = r#"http_server_request_duration_seconds_bucket{http_request_method="GET",http_response_status_code="200",http_route="/download",network_protocol_version="1.1",url_scheme="http",le="0.1"}"#;
    assert_eq!(support::sample(&text, duration), Some(0.0), "{text}");

    let (off, exporter) = support::in_memory_telemetry(
        "metric: { namespace: app }
trace: { enabled: true, service_name: ttfb, otel: { endpoint: '127.0.0.1:1' } }",
    );
    download(off.layer()).await;
    assert!(!off.registry().render().contains("first_byte"));
    off.trace_pipeline().unwrap().force_flush().unwrap();
    assert!(exporter.get_finished_spans().unwrap()[0].events.is_empty());
}
