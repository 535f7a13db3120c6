//! Labels of the user's own (`metric.labels`, `MetricsLayer::with_label`): values from the
//! request head, capped per label with the `_overflow` rule, absent when the request has none.

mod support;

use std::borrow::Cow;

use axum::{body::Body, routing::get, Router};
use http::{Request, Response};
use http_body_util::BodyExt;
use tower::ServiceExt;
use towerscope::{
    config::MetricConfig,
    metrics::{MetricLabel, MetricNaming, MetricsLayer, MetricsRegistry},
    operation::OperationId,
    Config,
};

fn app(layer: MetricsLayer) -> Router {
    Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route(
            "/renamed",
            get(|| async {
                let mut res = Response::new(Body::from("renamed"));
                res.extensions_mut()
                    .insert(OperationId::new("RenamedInHandler"));
                res
            }),
        )
        .layer(layer)
        .with_state(())
}

async fn send(layer: &MetricsLayer, path: &str, tenant: Option<&[u8]>) {
    let mut req = Request::get(path);
    if let Some(tenant) = tenant {
        req = req.header(
            "x-tenant-id",
            http::HeaderValue::from_bytes(tenant).unwrap(),
        );
    }
    let res = app(layer.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
}

fn registry() -> MetricsRegistry {
    MetricsRegistry::new(&MetricConfig::default()).unwrap()
}

fn total(text: &str, operation: &str, tenant: Option<&str>) -> Option<f64> {
    let tenant = tenant
        .map(|t| format!(r#",tenant="{t}""#))
        .unwrap_or_default();
    support::sample(
        text,
        &format!(
            r#"app_http_request_total{{method="GET",code="200",operation="{operation}"{tenant}}}"#
        ),
    )
}

#[tokio::test]
async fn a_header_label_from_config_is_capped_and_absent_without_a_value() {
    let config = Config::from_yaml_str(
        "metric: { namespace: app, labels: [{ name: tenant, header: x-tenant-id, max_values: 2 }] }",
    )
    .unwrap();
    let registry = registry();
    let layer = MetricsLayer::from_config(&config.metric, &registry);
    let long = "t".repeat(towerscope::metrics::MAX_LABEL_VALUE_LEN + 1);
    for tenant in [
        Some(&b"acme"[..]),
        Some(b"acme"),
        Some(b"globex"),
        Some(b"initech"),      // past the cap
        Some(b"umbrella"),     // past the cap
        Some(long.as_bytes()), // too long: `_overflow` whatever the cap
        None,
        Some(b""),
        Some(b"caf\xc3\xa9"), // not visible ASCII: no value
    ] {
        send(&layer, "/users/1", tenant).await;
    }
    let text = registry.render();
    let op = "/users/{id}";
    assert_eq!(total(&text, op, Some("acme")), Some(2.0), "{text}");
    assert_eq!(total(&text, op, Some("globex")), Some(1.0), "{text}");
    assert_eq!(total(&text, op, Some("_overflow")), Some(3.0), "{text}");
    assert_eq!(total(&text, op, None), Some(3.0), "{text}");
    assert!(!text.contains("initech") && !text.contains(&long), "{text}");
    assert_eq!(
        support::sample(
            &text,
            r#"app_http_request_label_overflow_total{label="tenant"}"#
        ),
        Some(3.0),
        "{text}"
    );
    // Every family of the request carries the label.
    for series in [
        r#"app_http_inflight_requests{method="GET",operation="/users/{id}",tenant="acme"}"#,
        r#"app_http_request_duration_seconds_count{method="GET",operation="/users/{id}",tenant="acme"}"#,
    ] {
        assert!(text.contains(series), "{series} in\n{text}");
    }
}

#[tokio::test]
async fn a_handler_renaming_the_operation_keeps_the_label() {
    let registry = registry();
    let layer = MetricsLayer::new(&registry)
        .with_names(towerscope::metrics::MetricNames::with_prefix("app_"))
        .with_label(MetricLabel::from_header("tenant", "x-tenant-id").unwrap());
    send(&layer, "/renamed", Some(b"acme")).await;
    let text = registry.render();
    assert_eq!(
        total(&text, "RenamedInHandler", Some("acme")),
        Some(1.0),
        "{text}"
    );
}

/// A hook written as a function (a closure kept in a variable loses the lifetime link).
fn area<'a>(head: &towerscope::head::RequestHead<'a>) -> Option<Cow<'a, str>> {
    head.path().split('/').nth(1).map(Cow::Borrowed)
}

#[tokio::test]
async fn a_hook_label_under_the_conventions_names_and_a_replaced_label() {
    let registry = registry();
    let layer = MetricsLayer::new(&registry)
        .with_naming(MetricNaming::Otel)
        .with_label(MetricLabel::new("area", |_| Some(Cow::Borrowed("replaced"))).unwrap())
        .with_label(MetricLabel::new("area", area).unwrap());
    send(&layer, "/users/7", None).await;
    let text = registry.render();
    let line = text
        .lines()
        .find(|l| l.starts_with("http_server_request_duration_seconds_count{"))
        .unwrap_or_else(|| panic!("no duration in\n{text}"));
    assert!(line.contains(r#"area="users""#), "{line}");
    assert!(!text.contains(r#"area="replaced""#), "{text}");
    let active = text
        .lines()
        .find(|l| l.starts_with("http_server_active_requests{"))
        .unwrap();
    assert!(active.contains(r#"area="users""#), "{active}");
}

#[test]
fn invalid_labels_are_refused_with_the_field_named() {
    for (labels, expected) in [
        ("[{ name: operation, header: x-op }]", "metric.labels[0].name"),
        ("[{ name: 1tenant, header: x-t }]", "metric.labels[0].name"),
        ("[{ name: __x, header: x-t }]", "metric.labels[0].name"),
        ("[{ name: tenant, header: 'x tenant' }]", "metric.labels[0].header"),
        ("[{ name: tenant, header: x-t, max_values: 0 }]", "metric.labels[0].max_values"),
        ("[{ name: a, header: x-a }, { name: a, header: x-b }]", "metric.labels[1].name"),
        (
            "[{ name: a, header: x-a }, { name: b, header: x-b }, { name: c, header: x-c }, { name: d, header: x-d }, { name: e, header: x-e }]",
            "metric.labels",
        ),
        ("[{ name: tenant }]", "header"),
    ] {
        let err = Config::from_yaml_str(&format!("metric: {{ labels: {labels} }}"))
            .expect_err(labels)
            .to_string();
        assert!(err.contains(expected), "{labels}: {err}");
    }
    assert!(MetricLabel::from_header("le", "x-le").is_err());
    assert!(MetricLabel::from_header("tenant", "bad header").is_err());
    let err = MetricLabel::new("a-b", |_| None).unwrap_err().to_string();
    assert!(err.contains("a-b"), "{err}");
}

#[tokio::test]
async fn the_observability_layer_resolves_the_operation_before_the_hook() {
    let registry = registry();
    let layer = towerscope::ObservabilityLayer::new(
        towerscope::RequestIdLayer::new(),
        MetricsLayer::new(&registry)
            .with_names(towerscope::metrics::MetricNames::with_prefix("app_")),
    )
    .with_metric_label(
        MetricLabel::new("kind", |head| {
            let op = head.operation()?;
            Some(Cow::Borrowed(if op.starts_with("/users") {
                "users"
            } else {
                "other"
            }))
        })
        .unwrap(),
    );
    let app = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .layer(layer)
        .with_state(());
    let res = app
        .oneshot(Request::get("/users/3").body(Body::empty()).unwrap())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let text = registry.render();
    assert_eq!(
        support::sample(
            &text,
            r#"app_http_request_total{method="GET",code="200",operation="/users/{id}",kind="users"}"#
        ),
        Some(1.0),
        "{text}"
    );
}
