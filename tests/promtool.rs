//! `promtool check metrics` (from the Debian package `prometheus`) accepts what we serve.
//!
//! `.ci/run` installs promtool, and with `CI` set a missing promtool fails the test. On a
//! developer machine without it the test says so and passes.

mod support;

use axum::{body::Body, routing::get, Router};
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;
use towerscope::{operation::OperationId, Config, Telemetry};

async fn scrape(yaml: &str) -> String {
    let telemetry = Telemetry::init_local(&Config::from_yaml_str(yaml).unwrap()).unwrap();
    let app = Router::new()
        .route("/users/{id}", get(|| async { "u" }))
        .route(
            "/odd",
            get(|| async {
                let mut res = http::Response::new(Body::from("odd"));
                res.extensions_mut()
                    .insert(OperationId::from("we\"ird\\op\nname"));
                res
            }),
        )
        .layer(telemetry.layer())
        .route_service("/metrics", telemetry.metrics_endpoint());
    for path in ["/users/1", "/users/2", "/nope", "/odd"] {
        for method in ["GET", "DELETE", "BREW"] {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap();
            let res = app.clone().oneshot(req).await.unwrap();
            res.into_body().collect().await.unwrap();
        }
    }
    let res = app
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn promtool_accepts_the_summary_exposition() {
    let Some(promtool) = support::promtool() else {
        return;
    };
    let text = scrape("metric: { namespace: harbor, subsystem: core }").await;
    assert!(text.contains("# TYPE harbor_core_http_request_duration_seconds summary"));
    assert!(text.contains(r#"operation="we\"ird\\op\nname""#), "{text}");
    support::promtool_check_metrics(&promtool, &text);
}

#[tokio::test]
async fn promtool_accepts_the_histogram_exposition() {
    let Some(promtool) = support::promtool() else {
        return;
    };
    let text = scrape("metric: { buckets: [0.005, 0.05, 0.5, 5] }").await;
    assert!(text.contains("# TYPE http_request_duration_seconds histogram"));
    support::promtool_check_metrics(&promtool, &text);
}

#[tokio::test]
async fn promtool_accepts_the_otel_exposition() {
    let Some(promtool) = support::promtool() else {
        return;
    };
    let text = scrape("metric: { naming: otel }").await;
    assert!(text.contains("# TYPE http_server_request_duration_seconds histogram"));
    assert!(text.contains(r#"http_route="/users/{id}""#), "{text}");
    support::promtool_check_metrics(&promtool, &text);
}
