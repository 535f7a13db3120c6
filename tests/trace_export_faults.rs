//! A collector that is down, unresolvable, or accepts and never answers: requests are not held
//! up, the queue stays bounded, the failed/dropped counters rise, shutdown keeps its timeout.
//! (Bounds here are liveness bounds, far above any normal duration: not speed measurements.)

mod support;

use std::{
    net::TcpListener,
    time::{Duration, Instant},
};

use axum::{body::Body, routing::get, Router};
use http::Request;
use http_body_util::BodyExt;
use support::sample;
use tower::{Service, ServiceExt};
use towerscope::{Config, Telemetry};
use tracing_subscriber::layer::SubscriberExt;

fn traced(endpoint: &str, extra: &str) -> Telemetry {
    let yaml = format!(
        "trace: {{ enabled: true, max_queue_size: 64, shutdown_timeout_secs: 1, {extra} otel: {{ endpoint: '{endpoint}', insecure: true, timeout: 1 }} }}"
    );
    Telemetry::init_local(&Config::from_yaml_str(&yaml).unwrap()).unwrap()
}

/// Sends `n` requests through the layer with the telemetry's subscriber active.
async fn send(telemetry: &Telemetry, n: usize) {
    let subscriber = tracing_subscriber::registry().with(telemetry.tracing_layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut app = Router::new()
        .route("/x", get(|| async { "x" }))
        .layer(telemetry.layer());
    for _ in 0..n {
        let req = Request::get("/x").body(Body::empty()).unwrap();
        let res = <Router as ServiceExt<Request<Body>>>::ready(&mut app)
            .await
            .unwrap()
            .call(req)
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
}

fn counter(telemetry: &Telemetry, what: &str) -> f64 {
    let text = telemetry.registry().render();
    sample(
        &text,
        &format!(r#"trace_spans_{what}_total{{exporter="otlp"}}"#),
    )
    .unwrap_or(0.0)
}

async fn wait_until(mut cond: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not reached within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_collector_holds_up_nothing_and_bounds_the_queue() {
    // Accepts connections (the kernel completes the handshake) and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = listener.local_addr().unwrap().to_string();
    let t = traced(&endpoint, "");

    send(&t, 3000).await;
    // All 3000 requests completed while the exporter is stuck on its first export: nothing
    // on the request path waits for export.
    let stats = t.trace_pipeline().unwrap().stats();
    assert!(stats.exported() == 0, "nothing can have been delivered");
    assert!(
        stats.pending() <= 64,
        "queue bounded: {} pending",
        stats.pending()
    );
    assert!(
        stats.dropped() >= 3000 - 64 - 512,
        "dropped: {}",
        stats.dropped()
    );
    assert!(counter(&t, "dropped") >= 1.0);

    let t2 = t.clone();
    let started = Instant::now();
    let report = tokio::task::spawn_blocking(move || t2.shutdown().unwrap())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "shutdown keeps its timeout"
    );
    assert!(report.lost() > 0, "{report:?}");
    assert_eq!(report.exported, 0);
    // Every span is in one count: one server span per request.
    assert_eq!(report.ended, 3000, "{report:?}");
    assert_eq!(
        report.ended,
        report.failed + report.dropped + report.unexported,
        "{report:?}"
    );
    assert_eq!(counter(&t, "ended"), 3000.0);
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_counts_failures() {
    // A port nothing listens on: connections are refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = traced(&format!("127.0.0.1:{port}"), "");
    send(&t, 20).await;
    t.trace_pipeline().unwrap().force_flush().ok();
    wait_until(|| counter(&t, "failed") >= 20.0).await;
    assert_eq!(counter(&t, "exported"), 0.0);
    let report = tokio::task::spawn_blocking(move || t.shutdown().unwrap())
        .await
        .unwrap();
    assert!(report.failed >= 20 && report.exported == 0, "{report:?}");
    assert_eq!((report.ended, report.unexported), (20, 0), "{report:?}");
    assert_eq!(report.ended, report.failed + report.dropped, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_collector_counts_failures_over_grpc() {
    let t = traced("collector.invalid:4317", "");
    let grpc = Telemetry::init_local(
        &Config::from_yaml_str(
            "trace: { enabled: true, shutdown_timeout_secs: 2, otel: { endpoint: 'collector.invalid:4317', protocol: grpc, insecure: true, timeout: 1 } }",
        )
        .unwrap(),
    )
    .unwrap();
    send(&t, 5).await;
    send(&grpc, 5).await;
    t.trace_pipeline().unwrap().force_flush().ok();
    let g = grpc.clone();
    tokio::task::spawn_blocking(move || g.trace_pipeline().unwrap().force_flush().ok())
        .await
        .unwrap();
    wait_until(|| counter(&t, "failed") >= 5.0 && counter(&grpc, "failed") >= 5.0).await;
    let started = Instant::now();
    let report = tokio::task::spawn_blocking(move || grpc.shutdown().unwrap())
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(report.exported, 0, "{report:?}");
}
