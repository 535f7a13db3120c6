//! `metric.naming: otel`: the OpenTelemetry HTTP semantic conventions' server families, in the
//! Prometheus form, through `Telemetry::layer` on an axum router and with the OpenAPI resolver.

mod support;

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use axum::{body::Body, routing::get, Router};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use support::sample;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use towerscope::{
    metrics::{MetricNaming, MetricsLayer, MetricsRegistry},
    openapi::OpenApiResolver,
    Config, Telemetry,
};

const OTEL: &str = "metric: { naming: otel }";

async fn send(app: &Router, req: Request<Body>) -> StatusCode {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    res.into_body().collect().await.unwrap();
    status
}

fn app(t: &Telemetry) -> Router {
    Router::new()
        .route(
            "/users/{id}",
            get(|| async { "user" }).delete(|| async { StatusCode::BAD_GATEWAY }),
        )
        .layer(t.layer())
}

#[tokio::test]
async fn server_requests_are_recorded_with_the_conventions_names_and_labels() {
    let t = Telemetry::init_local(&Config::from_yaml_str(OTEL).unwrap()).unwrap();
    let app = app(&t);
    for i in 0..3 {
        let req = Request::get(format!("/users/{i}"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&app, req).await, StatusCode::OK);
    }
    let req = Request::delete("/users/1").body(Body::empty()).unwrap();
    assert_eq!(send(&app, req).await, StatusCode::BAD_GATEWAY);
    let mut h2 = Request::get("https://registry.example/users/9")
        .body(Body::empty())
        .unwrap();
    *h2.version_mut() = Version::HTTP_2;
    send(&app, h2).await;
    // An unmatched path has no route: the raw path never becomes a label.
    send(
        &app,
        Request::get("/no/such/path").body(Body::empty()).unwrap(),
    )
    .await;
    // A hostile method is `_OTHER`.
    send(
        &app,
        Request::builder()
            .method("BREW")
            .uri("/users/1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;

    let text = t.registry().render();
    assert!(
        text.contains("# TYPE http_server_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE http_server_active_requests gauge"),
        "{text}"
    );
    let ok = r#"http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="200",http_route="/users/{id}",network_protocol_version="1.1",url_scheme="http"}"#;
    assert_eq!(sample(&text, ok), Some(3.0), "{text}");
    // The advised buckets.
    for le in ["0.005", "0.075", "7.5", "10", "+Inf"] {
        let bucket = format!(
            r#"http_server_request_duration_seconds_bucket{{http_request_method="GET",http_response_status_code="200",http_route="/users/{{id}}",network_protocol_version="1.1",url_scheme="http",le="{le}"}}"#
        );
        assert!(sample(&text, &bucket).is_some(), "{bucket} in {text}");
    }
    let failed = r#"http_server_request_duration_seconds_count{error_type="502",http_request_method="DELETE",http_response_status_code="502",http_route="/users/{id}",network_protocol_version="1.1",url_scheme="http"}"#;
    assert_eq!(sample(&text, failed), Some(1.0), "{text}");
    let h2 = r#"http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="200",http_route="/users/{id}",network_protocol_version="2",url_scheme="https"}"#;
    assert_eq!(sample(&text, h2), Some(1.0), "{text}");
    let unrouted = r#"http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="404",network_protocol_version="1.1",url_scheme="http"}"#;
    assert_eq!(sample(&text, unrouted), Some(1.0), "{text}");
    assert!(!text.contains("/no/such/path"), "{text}");
    assert!(text.contains(r#"http_request_method="_OTHER""#), "{text}");
    assert!(!text.contains("BREW"), "{text}");
    let active = r#"http_server_active_requests{http_request_method="GET",url_scheme="http"}"#;
    assert_eq!(sample(&text, active), Some(0.0), "{text}");
    // No Harbor family is recorded beside them.
    assert!(!text.contains("http_request_total"), "{text}");
    assert!(!text.contains("operation="), "{text}");
}

#[tokio::test]
async fn active_requests_count_a_request_until_its_body_ends() {
    let t = Telemetry::init_local(&Config::from_yaml_str(OTEL).unwrap()).unwrap();
    let app = app(&t);
    let res = app
        .clone()
        .oneshot(Request::get("/users/1").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let active = r#"http_server_active_requests{http_request_method="GET",url_scheme="http"}"#;
    assert_eq!(sample(&t.registry().render(), active), Some(1.0));
    // The client goes away before the body ended: `cancelled`, with the status that was sent.
    drop(res);
    let text = t.registry().render();
    assert_eq!(sample(&text, active), Some(0.0));
    let cancelled = r#"http_server_request_duration_seconds_count{error_type="cancelled",http_request_method="GET",http_response_status_code="200",http_route="/users/{id}",network_protocol_version="1.1",url_scheme="http"}"#;
    assert_eq!(sample(&text, cancelled), Some(1.0), "{text}");
}

/// A future that panics when polled.
struct Panics;

impl Future for Panics {
    type Output = Result<Response<Body>, Infallible>;
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        panic!("handler panicked (deliberately, in a test)")
    }
}

#[tokio::test]
async fn failures_without_a_response_have_an_error_type_and_no_status() {
    let registry = MetricsRegistry::new(&Default::default()).unwrap();
    let layer = MetricsLayer::new(&registry).with_naming(MetricNaming::Otel);
    let failing = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(|_: Request<Body>| async {
            Err::<Response<Body>, _>(std::io::Error::other("backend down"))
        }));
    assert!(failing
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .is_err());
    let panicking = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(|_: Request<Body>| Panics));
    let caught = tokio::spawn(panicking.oneshot(Request::get("/").body(Body::empty()).unwrap()));
    assert!(caught.await.is_err());
    // Dropped before the response head: `cancelled`, no status.
    let pending = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: Request<Body>| {
            std::future::pending::<Result<Response<Body>, Infallible>>()
        }));
    let fut = pending.oneshot(Request::get("/").body(Body::empty()).unwrap());
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(10), fut)
            .await
            .is_err()
    );

    let text = registry.render();
    // Without a registry configured for buckets, the advised ones make it a histogram.
    assert!(
        text.contains("# TYPE http_server_request_duration_seconds histogram"),
        "{text}"
    );
    for error in ["service_error", "panic", "cancelled"] {
        let series = format!(
            r#"http_server_request_duration_seconds_count{{error_type="{error}",http_request_method="GET",network_protocol_version="1.1",url_scheme="http"}}"#
        );
        assert_eq!(sample(&text, &series), Some(1.0), "{series} in {text}");
    }
    assert!(!text.contains("http_response_status_code"), "{text}");
}

#[tokio::test]
async fn configured_buckets_win_over_the_advised_ones() {
    let config = Config::from_yaml_str("metric: { naming: otel, buckets: [0.5, 5] }").unwrap();
    let t = Telemetry::init_local(&config).unwrap();
    send(
        &app(&t),
        Request::get("/users/1").body(Body::empty()).unwrap(),
    )
    .await;
    let text = t.registry().render();
    assert!(
        text.contains(r#"le="0.5""#) && text.contains(r#"le="5""#),
        "{text}"
    );
    assert!(!text.contains(r#"le="0.005""#), "{text}");
}

#[tokio::test]
async fn the_route_of_an_openapi_operation_is_its_path_template() {
    let spec = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/harbor-swagger.yaml"
    );
    let resolver = OpenApiResolver::from_path(spec).unwrap();
    let t = Telemetry::init_local(&Config::from_yaml_str(OTEL).unwrap()).unwrap();
    // A catch-all router, as the example registry's API is: the route comes from the
    // document, not from axum's `/{*rest}`.
    let app = Router::new()
        .route("/{*rest}", get(|| async { "ok" }))
        .layer(t.layer().with_resolver(resolver));
    let req = Request::get("/api/v2.0/projects/library/repositories/nginx/artifacts/latest")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, req).await, StatusCode::OK);
    send(
        &app,
        Request::get("/not/in/the/document")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let text = t.registry().render();
    let artifact = r#"http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="200",http_route="/projects/{project_name}/repositories/{repository_name}/artifacts/{reference}",network_protocol_version="1.1",url_scheme="http"}"#;
    assert_eq!(sample(&text, artifact), Some(1.0), "{text}");
    // Not an operation of the document: axum's route template.
    let fallback = r#"http_server_request_duration_seconds_count{http_request_method="GET",http_response_status_code="200",http_route="/{*rest}",network_protocol_version="1.1",url_scheme="http"}"#;
    assert_eq!(sample(&text, fallback), Some(1.0), "{text}");
}

/// A streamed body of `n` chunks of 25,000 bytes, with no size known in advance.
struct Chunks(usize);

impl http_body::Body for Chunks {
    type Data = axum::body::Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Infallible>>> {
        if self.0 == 0 {
            return Poll::Ready(None);
        }
        self.0 -= 1;
        let chunk = axum::body::Bytes::from(vec![7u8; 25_000]);
        Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }
}

#[tokio::test]
async fn body_sizes_are_the_content_length_and_the_bytes_sent() {
    let config = Config::from_yaml_str("metric: { naming: otel, body_sizes: true }").unwrap();
    let t = Telemetry::init_local(&config).unwrap();
    let app = Router::new()
        .route(
            "/upload",
            axum::routing::post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        )
        .route("/blob", get(|| async { Body::new(Chunks(4)) }))
        .layer(t.layer());
    let upload = Request::post("/upload")
        .header("content-length", "3000")
        .body(Body::from(vec![1u8; 3000]))
        .unwrap();
    assert_eq!(send(&app, upload).await, StatusCode::OK);
    assert_eq!(
        send(&app, Request::get("/blob").body(Body::empty()).unwrap()).await,
        StatusCode::OK
    );
    // Cut short after the first chunk: the bytes sent until then.
    let res = app
        .clone()
        .oneshot(Request::get("/blob").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let mut body = res.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);

    let text = t.registry().render();
    assert!(
        text.contains("# TYPE http_server_request_body_size_bytes histogram"),
        "{text}"
    );
    let labels = |method: &str, route: &str, extra: &str| {
        format!(
            r#"{extra}http_request_method="{method}",http_response_status_code="200",http_route="{route}",network_protocol_version="1.1",url_scheme="http""#
        )
    };
    let request = format!(
        "http_server_request_body_size_bytes_sum{{{}}}",
        labels("POST", "/upload", "")
    );
    assert_eq!(sample(&text, &request), Some(3000.0), "{request} in {text}");
    // GETs without a Content-Length are not observed.
    assert!(
        !text.contains(&format!(
            "http_server_request_body_size_bytes_count{{{}}}",
            labels("GET", "/blob", "")
        )),
        "{text}"
    );
    let response = format!(
        "http_server_response_body_size_bytes_sum{{{}}}",
        labels("GET", "/blob", "")
    );
    assert_eq!(
        sample(&text, &response),
        Some(100_000.0),
        "{response} in {text}"
    );
    let cut = format!(
        "http_server_response_body_size_bytes_sum{{{}}}",
        labels("GET", "/blob", r#"error_type="cancelled","#)
    );
    assert_eq!(sample(&text, &cut), Some(25_000.0), "{cut} in {text}");
    let bucket = format!(
        r#"http_server_response_body_size_bytes_bucket{{{},le="1048576"}}"#,
        labels("GET", "/blob", "")
    );
    assert_eq!(sample(&text, &bucket), Some(1.0), "{bucket} in {text}");
    let upload_response = format!(
        "http_server_response_body_size_bytes_sum{{{}}}",
        labels("POST", "/upload", "")
    );
    assert_eq!(
        sample(&text, &upload_response),
        Some(4.0),
        "\"3000\" is 4 bytes: {text}"
    );
}

#[test]
fn body_sizes_need_the_otel_naming() {
    let err = Config::from_yaml_str("metric: { body_sizes: true }").unwrap_err();
    assert!(
        err.to_string()
            .contains("metric.body_sizes: needs `naming: otel`"),
        "{err}"
    );
}
