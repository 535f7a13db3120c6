//! Failures that speak: each exporter (spans, the OTLP metrics push, the Pushgateway) logs
//! where it sends at start-up; the first failure of a streak once at WARN with its cause, the
//! endpoint and what to change; the rest of the streak at DEBUG; the recovery at INFO.
//!
//! Exports run on threads of their own, so this binary installs one global subscriber
//! capturing every line; each test reads the lines naming its own port.

mod support;

use std::{
    net::{SocketAddr, TcpListener},
    sync::OnceLock,
    time::Duration,
};

use axum::{http::StatusCode, routing::any, Router};
use opentelemetry::trace::{Span as _, Tracer as _};
use support::Captured;
use towerscope::{
    metrics::{push::Pushgateway, MetricsRegistry},
    Config, Telemetry,
};

fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(tracing::Level::DEBUG)
                .with_writer(move || writer.clone())
                .finish(),
        )
        .unwrap();
        logs
    })
}

/// The captured lines that mention `needle` so far (the buffer is shared by the tests).
fn lines_with(needle: &str) -> Vec<String> {
    logs()
        .text()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP server on `port` answering every request with `status`.
async fn serve(port: u16, status: StatusCode, body: &'static str) -> tokio::task::JoinHandle<()> {
    let app = Router::new().fallback(any(move || async move { (status, body) }));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    })
}

fn telemetry(yaml: &str) -> Telemetry {
    Telemetry::init_local(&Config::from_yaml_str(yaml).unwrap()).unwrap()
}

/// Ends one span into the pipeline and waits for its export.
async fn export_one(telemetry: &Telemetry) {
    let pipeline = telemetry.trace_pipeline().unwrap();
    pipeline.tracer().start("probe").end();
    tokio::task::block_in_place(|| pipeline.force_flush().ok());
}

async fn eventually(mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not met in 5 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn https_to_a_plain_collector_warns_once_with_the_tls_cause_and_the_fix() {
    logs();
    let port = free_port();
    let _server = serve(port, StatusCode::OK, "").await;
    // Harbor's form without a scheme: https unless `insecure: true`.
    let t = telemetry(&format!(
        "trace: {{ enabled: true, otel: {{ endpoint: '127.0.0.1:{port}', timeout: 2 }} }}"
    ));
    let url = format!("https://127.0.0.1:{port}/v1/traces");
    let started = lines_with(&format!("span export to {url} over OTLP http/protobuf"));
    assert_eq!(started.len(), 1, "{started:?}");
    assert!(started[0].contains(" INFO "), "{started:?}");

    export_one(&t).await;
    export_one(&t).await;
    let warned: Vec<_> = lines_with(&url)
        .into_iter()
        .filter(|l| l.contains(" WARN "))
        .collect();
    assert_eq!(warned.len(), 1, "one WARN for the streak: {warned:?}");
    let line = &warned[0];
    assert!(
        line.contains(&format!("span export to {url} failed: ")),
        "{line}"
    );
    // The cause from the TLS layer, not opentelemetry-otlp's "network error".
    assert!(
        line.contains("InvalidContentType") || line.contains("corrupt message"),
        "{line}"
    );
    assert!(
        line.contains("insecure: true") && line.contains("http://HOST:PORT"),
        "{line}"
    );
    let again: Vec<_> = lines_with(&url)
        .into_iter()
        .filter(|l| l.contains(" DEBUG ") && l.contains("failed again"))
        .collect();
    assert_eq!(again.len(), 1, "the second failure at DEBUG: {again:?}");
    tokio::task::spawn_blocking(move || t.shutdown())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_then_recovered_collector_is_logged_as_such() {
    logs();
    let port = free_port();
    let t = telemetry(&format!(
        "trace: {{ enabled: true, otel: {{ endpoint: 'http://127.0.0.1:{port}/v1/traces', timeout: 2 }} }}"
    ));
    let url = format!("http://127.0.0.1:{port}/v1/traces");
    export_one(&t).await;
    export_one(&t).await;
    let warned: Vec<_> = lines_with(&url)
        .into_iter()
        .filter(|l| l.contains(" WARN "))
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("Connection refused"), "{}", warned[0]);
    assert!(warned[0].contains("is it running"), "{}", warned[0]);

    let _server = serve(port, StatusCode::OK, "").await;
    export_one(&t).await;
    let recovered = lines_with(&format!(
        "span export to {url} works again after 2 failed attempts"
    ));
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert!(recovered[0].contains(" INFO "), "{recovered:?}");
    tokio::task::spawn_blocking(move || t.shutdown())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collector_answering_404_names_the_status_the_body_and_url_path() {
    logs();
    let port = free_port();
    let _server = serve(port, StatusCode::NOT_FOUND, "404 page not found").await;
    let t = telemetry(&format!(
        "trace: {{ enabled: true, otel: {{ endpoint: '127.0.0.1:{port}', url_path: /v1/trace, insecure: true }} }}"
    ));
    export_one(&t).await;
    let warned: Vec<_> = lines_with(&format!("127.0.0.1:{port}/v1/trace failed"))
        .into_iter()
        .filter(|l| l.contains(" WARN "))
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("the collector answered status 404 Not Found: 404 page not found"),
        "{}",
        warned[0]
    );
    assert!(warned[0].contains("`url_path`"), "{}", warned[0]);
    tokio::task::spawn_blocking(move || t.shutdown())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_otlp_metrics_push_speaks_too() {
    logs();
    let port = free_port();
    let _server = serve(port, StatusCode::METHOD_NOT_ALLOWED, "").await;
    // A full URL is used as given: without /v1/metrics the collector refuses the POST.
    let t = telemetry(&format!(
        "metric: {{ otlp: {{ endpoint: 'http://127.0.0.1:{port}', interval_secs: 1 }} }}"
    ));
    let url = format!("http://127.0.0.1:{port}");
    let started = lines_with(&format!(
        "OTLP metrics push to {url} over OTLP http/protobuf"
    ));
    assert_eq!(started.len(), 1, "{started:?}");
    eventually(|| {
        lines_with(&format!("OTLP metrics push to {url} failed"))
            .iter()
            .any(|l| l.contains(" WARN "))
    })
    .await;
    let warned = lines_with(&format!("OTLP metrics push to {url} failed"));
    assert!(
        warned[0].contains("405 Method Not Allowed") && warned[0].contains("/v1/metrics"),
        "{warned:?}"
    );
    drop(t);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pushgateway_task_warns_once_and_recovers() {
    logs();
    let port = free_port();
    let registry = MetricsRegistry::new(&Default::default()).unwrap();
    let pusher = Pushgateway::new(&format!("http://127.0.0.1:{port}/"), "backup").unwrap();
    // The group's URL: where the pushes go.
    let url = pusher.url().to_owned();
    assert_eq!(url, format!("http://127.0.0.1:{port}/metrics/job/backup"));
    let task = pusher.spawn_interval(registry, Duration::from_millis(50));
    eventually(|| task.failures() >= 2).await;
    let warned: Vec<_> = lines_with(&format!("Pushgateway push to {url} failed"))
        .into_iter()
        .filter(|l| l.contains(" WARN "))
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("is it running"), "{}", warned[0]);
    let _server = serve(port, StatusCode::OK, "").await;
    eventually(|| task.pushes() >= 1).await;
    eventually(|| !lines_with(&format!("Pushgateway push to {url} works again")).is_empty()).await;
    task.stop().await.unwrap();
}
