//! The `metric.otlp` push, decoded by the official protobuf definitions (Python
//! `opentelemetry-proto` + `grpcio`, `interop/otlp_sink.py`): http/protobuf with gzip and
//! headers (cumulative, Harbor's summaries), gRPC (delta, histograms), and a collector that is
//! down.

mod support;

use std::time::{Duration, Instant};

use axum::{body::Body, routing::get, Router};
use http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use support::otlp_sink::{python_ready, start_sink, Sink};
use tower::ServiceExt;
use towerscope::{Config, Telemetry};

async fn requests(telemetry: &Telemetry, n: usize) {
    let app = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .layer(telemetry.layer());
    for _ in 0..n {
        let res = app
            .clone()
            .oneshot(Request::get("/users/7").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.into_body().collect().await.unwrap();
    }
}

/// One committed SQLite transaction `createProject`, counted in the telemetry's registry.
#[cfg(feature = "sqlx")]
async fn transaction(telemetry: &Telemetry) {
    let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
    let transactions =
        towerscope::db::Transactions::from_telemetry(telemetry).with_namespace("main");
    let mut tx = transactions.begin(&pool, "createProject").await.unwrap();
    sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
}

/// The next metrics export the sink decodes.
fn next_export(sink: &Sink) -> Value {
    loop {
        let line = sink
            .lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a metrics export arrives");
        let export: Value = serde_json::from_str(&line).unwrap();
        if export.get("metrics").is_some() {
            return export;
        }
    }
}

fn metric<'a>(export: &'a Value, name: &str) -> Option<&'a Value> {
    export["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
}

/// The point of `metric` whose attributes are exactly `attributes`.
fn point<'a>(metric: &'a Value, attributes: &Value) -> &'a Value {
    metric["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| &p["attributes"] == attributes)
        .unwrap_or_else(|| panic!("no point {attributes} in {metric}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_push_is_cumulative_with_summaries_gzip_and_headers() {
    if !python_ready() {
        return;
    }
    let sink = start_sink(&[]);
    let config = Config::from_yaml_str(&format!(
        r#"
metric:
  namespace: harbor
  subsystem: core
  otlp:
    endpoint: 127.0.0.1:{}
    insecure: true
    interval_secs: 1
    compression: true
    headers: {{ x-api-key: secret-2 }}
trace:
  service_name: metrics-svc
"#,
        sink.http_port
    ))
    .unwrap();
    let telemetry = Telemetry::init_local(&config).unwrap();
    requests(&telemetry, 2).await;
    let export = loop {
        let export = next_export(&sink);
        if metric(&export, "harbor_core_http_request_total").is_some() {
            break export;
        }
    };
    assert_eq!(export["transport"], "http");
    assert_eq!(export["path"], "/v1/metrics");
    assert_eq!(export["headers"]["content-encoding"], "gzip");
    assert_eq!(export["headers"]["x-api-key"], "secret-2");
    assert_eq!(export["resource"]["service.name"], "metrics-svc");
    assert_eq!(export["scope"]["name"], "towerscope");

    let total = metric(&export, "harbor_core_http_request_total").unwrap();
    assert_eq!(total["kind"], "sum");
    assert_eq!(total["temporality"], "cumulative");
    assert_eq!(total["monotonic"], true);
    let labels = serde_json::json!({"method": "GET", "code": "200", "operation": "/users/{id}"});
    let p = point(total, &labels);
    assert_eq!(p["value"], 2);
    assert!(p["start"].as_u64().unwrap() < p["time"].as_u64().unwrap());

    let duration = metric(&export, "harbor_core_http_request_duration_seconds").unwrap();
    assert_eq!(
        (&duration["kind"], &duration["unit"]),
        (&"summary".into(), &"s".into())
    );
    let p = point(
        duration,
        &serde_json::json!({"method": "GET", "operation": "/users/{id}"}),
    );
    assert_eq!(p["count"], 2);
    let quantiles: Vec<f64> = p["quantiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q[0].as_f64().unwrap())
        .collect();
    assert_eq!(quantiles, [0.5, 0.9, 0.99]);

    let inflight = metric(&export, "harbor_core_http_inflight_requests").unwrap();
    assert_eq!(inflight["kind"], "gauge");
    assert_eq!(
        point(
            inflight,
            &serde_json::json!({"method": "GET", "operation": "/users/{id}"})
        )["value"],
        0.0
    );
    assert!(!total["description"].as_str().unwrap().is_empty());

    let t = telemetry.clone();
    tokio::task::spawn_blocking(move || t.shutdown())
        .await
        .unwrap();
    let push = telemetry.metrics_push().unwrap();
    assert!(push.exported() > 0 && push.failed() == 0);
    let text = telemetry.registry().render_components(&["otlp"]).unwrap();
    assert!(
        text.contains(r#"harbor_core_metric_points_failed_total{exporter="otlp"} 0"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_naming_pushes_the_conventions_names_units_and_attributes() {
    if !python_ready() {
        return;
    }
    let sink = start_sink(&[]);
    let config = Config::from_yaml_str(&format!(
        "metric: {{ naming: otel, namespace: app, otlp: {{ endpoint: '127.0.0.1:{}', insecure: true, interval_secs: 1 }} }}",
        sink.http_port
    ))
    .unwrap();
    let telemetry = Telemetry::init_local(&config).unwrap();
    requests(&telemetry, 3).await;
    #[cfg(feature = "sqlx")]
    transaction(&telemetry).await;
    let export = loop {
        let export = next_export(&sink);
        if metric(&export, "http.server.request.duration").is_some()
            && (cfg!(not(feature = "sqlx"))
                || metric(&export, "db.client.operation.duration").is_some())
        {
            break export;
        }
    };
    #[cfg(feature = "sqlx")]
    {
        let db = metric(&export, "db.client.operation.duration").unwrap();
        assert_eq!(
            (&db["kind"], &db["unit"]),
            (&"histogram".into(), &"s".into())
        );
        let attributes = serde_json::json!({
            "db.system.name": "sqlite",
            "db.operation.name": "createProject",
            "db.namespace": "main",
        });
        assert_eq!(point(db, &attributes)["count"], 1);
    }
    let duration = metric(&export, "http.server.request.duration").unwrap();
    assert_eq!(
        (&duration["kind"], &duration["unit"]),
        (&"histogram".into(), &"s".into())
    );
    let attributes = serde_json::json!({
        "http.request.method": "GET",
        "http.response.status_code": 200,
        "http.route": "/users/{id}",
        "network.protocol.version": "1.1",
        "url.scheme": "http",
    });
    let p = point(duration, &attributes);
    assert_eq!(p["count"], 3);
    let active = metric(&export, "http.server.active_requests").unwrap();
    // An UpDownCounter, as an SDK sends it: a non-monotonic cumulative sum.
    assert_eq!(
        (&active["kind"], &active["unit"], &active["monotonic"]),
        (&"sum".into(), &"{request}".into(), &false.into())
    );
    assert_eq!(active["temporality"], "cumulative");
    let p = point(
        active,
        &serde_json::json!({"http.request.method": "GET", "url.scheme": "http"}),
    );
    assert_eq!(p["value"], 0.0);
    // towerscope's own families keep their names.
    assert!(metric(&export, "app_http_operation_overflow_total").is_some());
    assert!(metric(&export, "http_server_request_duration_seconds").is_none());
    let t = telemetry.clone();
    tokio::task::spawn_blocking(move || t.shutdown())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_push_with_delta_temporality_adds_up_to_the_totals() {
    if !python_ready() {
        return;
    }
    let sink = start_sink(&[]);
    let config = Config::from_yaml_str(&format!(
        r#"
metric:
  buckets: [0.1, 1]
  otlp:
    endpoint: 127.0.0.1:{}
    protocol: grpc
    insecure: true
    interval_secs: 1
    temporality: delta
    compression: true
    headers: {{ x-api-key: secret-3 }}
"#,
        sink.grpc_port
    ))
    .unwrap();
    let telemetry = Telemetry::init_local(&config).unwrap();
    let labels = serde_json::json!({"method": "GET", "code": "200", "operation": "/users/{id}"});
    let hist_labels = serde_json::json!({"method": "GET", "operation": "/users/{id}"});
    let (mut total, mut observed, mut last_time) = (0, 0, None::<u64>);
    let mut wait_for = |sink: &Sink, want: u64, total: &mut u64, observed: &mut u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while *total < want && Instant::now() < deadline {
            let export = next_export(sink);
            assert_eq!(export["transport"], "grpc");
            assert_eq!(export["headers"]["x-api-key"], "secret-3");
            let Some(m) = metric(&export, "http_request_total") else {
                continue;
            };
            assert_eq!(m["temporality"], "delta");
            let p = point(m, &labels);
            // Each delta starts where the previous delivered one ended.
            if let Some(last) = last_time {
                assert_eq!(p["start"].as_u64().unwrap(), last);
            }
            last_time = p["time"].as_u64();
            *total += p["value"].as_u64().unwrap();
            let h = metric(&export, "http_request_duration_seconds").unwrap();
            assert_eq!(
                (&h["kind"], &h["temporality"]),
                (&"histogram".into(), &"delta".into())
            );
            let hp = point(h, &hist_labels);
            assert_eq!(hp["explicit_bounds"], serde_json::json!([0.1, 1.0]));
            let buckets: u64 = hp["bucket_counts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_u64().unwrap())
                .sum();
            assert_eq!(buckets, hp["count"].as_u64().unwrap());
            *observed += buckets;
        }
    };
    requests(&telemetry, 2).await;
    wait_for(&sink, 2, &mut total, &mut observed);
    assert_eq!((total, observed), (2, 2));
    requests(&telemetry, 3).await;
    wait_for(&sink, 5, &mut total, &mut observed);
    assert_eq!((total, observed), (5, 5), "deltas add up to the totals");
    let t = telemetry.clone();
    tokio::task::spawn_blocking(move || t.shutdown())
        .await
        .unwrap();
    assert_eq!(telemetry.metrics_push().unwrap().failed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_is_counted_and_holds_up_nothing() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = Config::from_yaml_str(&format!(
        "metric: {{ otlp: {{ endpoint: '127.0.0.1:{port}', insecure: true, interval_secs: 1, timeout: 1 }} }}"
    ))
    .unwrap();
    let telemetry = Telemetry::init_local(&config).unwrap();
    requests(&telemetry, 3).await;
    let push = telemetry.metrics_push().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while push.failed() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(push.failed() > 0 && push.exported() == 0);
    let text = telemetry.registry().render();
    assert!(
        support::sample(&text, r#"metric_points_failed_total{exporter="otlp"}"#).unwrap() > 0.0,
        "{text}"
    );
    let t = telemetry.clone();
    let started = Instant::now();
    tokio::task::spawn_blocking(move || t.shutdown())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown keeps its timeout"
    );
}

#[test]
fn metric_otlp_is_validated() {
    let e = Config::from_yaml_str("metric: { otlp: { endpoint: '', interval_secs: 0 } }")
        .and_then(|c| c.validate().map(|()| c))
        .unwrap_err()
        .to_string();
    assert!(e.contains("metric.otlp.endpoint"), "{e}");
    assert!(
        e.contains("metric.otlp.interval_secs: must be at least 1"),
        "{e}"
    );
}

#[tokio::test]
async fn metric_enabled_false_with_otlp_still_records() {
    let config = Config::from_yaml_str(
        "metric: { enabled: false, otlp: { endpoint: '127.0.0.1:9', insecure: true, interval_secs: 3600 } }",
    )
    .unwrap();
    let telemetry = Telemetry::init_local(&config).unwrap();
    assert!(
        telemetry.serve_metrics().await.unwrap().is_none(),
        "no Prometheus server"
    );
    requests(&telemetry, 1).await;
    assert!(telemetry
        .registry()
        .render()
        .contains(r#"http_request_total{method="GET",code="200",operation="/users/{id}"} 1"#));
}
