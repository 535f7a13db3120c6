//! The metrics layer through a real axum router: exposition, in-flight accounting, cardinality.

mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    routing::{get, post},
    Router,
};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use rand::{distr::Alphanumeric, Rng};
use support::{sample, sample_lines, ChannelBody};
use tokio::sync::mpsc;
use tower::{Service, ServiceExt};
use towerscope::{
    metrics::{MetricsLayer, MetricsRegistry},
    operation::{OperationId, RequestRef},
    Config, ObservabilityLayer,
};

fn setup(yaml: &str) -> (Config, MetricsRegistry) {
    let config = Config::from_yaml_str(yaml).unwrap();
    let registry = MetricsRegistry::new(&config.metric).unwrap();
    (config, registry)
}

type Streams = Arc<Mutex<Vec<mpsc::Receiver<Bytes>>>>;

fn app(config: &Config, registry: &MetricsRegistry, streams: Streams) -> Router {
    Router::new()
        .route(
            "/users/{id}",
            get(|| async { "user" }).delete(|| async { StatusCode::NO_CONTENT }),
        )
        .route("/users", post(|| async { (StatusCode::CREATED, "made") }))
        .route(
            "/override",
            get(|| async {
                let mut res = Response::new(Body::from("x"));
                res.extensions_mut().insert(OperationId::from("overridden"));
                res
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "never"
            }),
        )
        .route(
            "/panic",
            get(|| async { panic!("handler panicked on purpose") as &str }),
        )
        .route(
            "/stream",
            get(move || {
                let rx = streams
                    .lock()
                    .unwrap()
                    .pop()
                    .expect("a stream was prepared");
                async move { Response::new(Body::new(ChannelBody(rx))) }
            }),
        )
        .layer(ObservabilityLayer::from_config(config, registry))
}

async fn send(app: &mut Router, method: Method, path: &str) -> Response<Body> {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let res = <Router as ServiceExt<Request<Body>>>::ready(app)
        .await
        .unwrap()
        .call(req)
        .await
        .unwrap();
    res
}

async fn send_and_read(app: &mut Router, method: Method, path: &str) -> StatusCode {
    let res = send(app, method, path).await;
    let status = res.status();
    res.into_body().collect().await.unwrap();
    status
}

/// Replaces the values of duration samples (they depend on the clock) by `X`.
fn mask_durations(text: &str) -> String {
    text.lines()
        .map(|l| match l.rsplit_once(' ') {
            Some((head, _))
                if head.contains("duration_seconds")
                    && !l.starts_with('#')
                    && !head.contains("_count") =>
            {
                format!("{head} X\n")
            }
            _ => format!("{l}\n"),
        })
        .collect()
}

#[tokio::test]
async fn exposition_of_a_known_sequence_is_exact() {
    let (config, registry) = setup("metric: { namespace: harbor, subsystem: core }");
    let mut app = app(&config, &registry, Streams::default());
    assert_eq!(send_and_read(&mut app, Method::GET, "/users/1").await, 200);
    assert_eq!(send_and_read(&mut app, Method::GET, "/users/2").await, 200);
    assert_eq!(
        send_and_read(&mut app, Method::DELETE, "/users/2").await,
        204
    );
    assert_eq!(send_and_read(&mut app, Method::POST, "/users").await, 201);
    assert_eq!(send_and_read(&mut app, Method::GET, "/nowhere").await, 404);
    assert_eq!(
        send_and_read(&mut app, Method::from_bytes(b"BREW").unwrap(), "/users/1").await,
        405
    );
    assert_eq!(send_and_read(&mut app, Method::GET, "/override").await, 200);

    let expected = r#"# HELP harbor_core_http_inflight_requests Requests in flight, by method and operation.
# TYPE harbor_core_http_inflight_requests gauge
harbor_core_http_inflight_requests{method="DELETE",operation="/users/{id}"} 0
harbor_core_http_inflight_requests{method="GET",operation="/override"} 0
harbor_core_http_inflight_requests{method="GET",operation="/users/{id}"} 0
harbor_core_http_inflight_requests{method="GET",operation="unknown"} 0
harbor_core_http_inflight_requests{method="POST",operation="/users"} 0
harbor_core_http_inflight_requests{method="_OTHER",operation="/users/{id}"} 0

# HELP harbor_core_http_operation_overflow_total Requests labelled operation="_overflow" because the cap on distinct operations was reached.
# TYPE harbor_core_http_operation_overflow_total counter
harbor_core_http_operation_overflow_total 0

# HELP harbor_core_http_request_duration_seconds Request durations in seconds until the response body ended, by method and operation.
# TYPE harbor_core_http_request_duration_seconds summary
harbor_core_http_request_duration_seconds{method="DELETE",operation="/users/{id}",quantile="0.5"} X
harbor_core_http_request_duration_seconds{method="DELETE",operation="/users/{id}",quantile="0.9"} X
harbor_core_http_request_duration_seconds{method="DELETE",operation="/users/{id}",quantile="0.99"} X
harbor_core_http_request_duration_seconds_sum{method="DELETE",operation="/users/{id}"} X
harbor_core_http_request_duration_seconds_count{method="DELETE",operation="/users/{id}"} 1
harbor_core_http_request_duration_seconds{method="GET",operation="/users/{id}",quantile="0.5"} X
harbor_core_http_request_duration_seconds{method="GET",operation="/users/{id}",quantile="0.9"} X
harbor_core_http_request_duration_seconds{method="GET",operation="/users/{id}",quantile="0.99"} X
harbor_core_http_request_duration_seconds_sum{method="GET",operation="/users/{id}"} X
harbor_core_http_request_duration_seconds_count{method="GET",operation="/users/{id}"} 2
harbor_core_http_request_duration_seconds{method="GET",operation="overridden",quantile="0.5"} X
harbor_core_http_request_duration_seconds{method="GET",operation="overridden",quantile="0.9"} X
harbor_core_http_request_duration_seconds{method="GET",operation="overridden",quantile="0.99"} X
harbor_core_http_request_duration_seconds_sum{method="GET",operation="overridden"} X
harbor_core_http_request_duration_seconds_count{method="GET",operation="overridden"} 1
harbor_core_http_request_duration_seconds{method="GET",operation="unknown",quantile="0.5"} X
harbor_core_http_request_duration_seconds{method="GET",operation="unknown",quantile="0.9"} X
harbor_core_http_request_duration_seconds{method="GET",operation="unknown",quantile="0.99"} X
harbor_core_http_request_duration_seconds_sum{method="GET",operation="unknown"} X
harbor_core_http_request_duration_seconds_count{method="GET",operation="unknown"} 1
harbor_core_http_request_duration_seconds{method="POST",operation="/users",quantile="0.5"} X
harbor_core_http_request_duration_seconds{method="POST",operation="/users",quantile="0.9"} X
harbor_core_http_request_duration_seconds{method="POST",operation="/users",quantile="0.99"} X
harbor_core_http_request_duration_seconds_sum{method="POST",operation="/users"} X
harbor_core_http_request_duration_seconds_count{method="POST",operation="/users"} 1
harbor_core_http_request_duration_seconds{method="_OTHER",operation="/users/{id}",quantile="0.5"} X
harbor_core_http_request_duration_seconds{method="_OTHER",operation="/users/{id}",quantile="0.9"} X
harbor_core_http_request_duration_seconds{method="_OTHER",operation="/users/{id}",quantile="0.99"} X
harbor_core_http_request_duration_seconds_sum{method="_OTHER",operation="/users/{id}"} X
harbor_core_http_request_duration_seconds_count{method="_OTHER",operation="/users/{id}"} 1

# HELP harbor_core_http_request_total Finished requests, by method, status code and operation (499: client went away).
# TYPE harbor_core_http_request_total counter
harbor_core_http_request_total{method="DELETE",code="204",operation="/users/{id}"} 1
harbor_core_http_request_total{method="GET",code="200",operation="/users/{id}"} 2
harbor_core_http_request_total{method="GET",code="200",operation="overridden"} 1
harbor_core_http_request_total{method="GET",code="404",operation="unknown"} 1
harbor_core_http_request_total{method="POST",code="201",operation="/users"} 1
harbor_core_http_request_total{method="_OTHER",code="405",operation="/users/{id}"} 1

"#;
    assert_eq!(mask_durations(&registry.render()), expected);
}

#[tokio::test]
async fn histogram_buckets_are_one_setting_away() {
    let (config, registry) = setup("metric: { buckets: [0.5, 100] }");
    let mut app = app(&config, &registry, Streams::default());
    for _ in 0..3 {
        send_and_read(&mut app, Method::GET, "/users/9").await;
    }
    let text = registry.render();
    assert!(
        text.contains("# TYPE http_request_duration_seconds histogram"),
        "{text}"
    );
    let series = |le: &str| {
        format!(
            r#"http_request_duration_seconds_bucket{{method="GET",operation="/users/{{id}}",le="{le}"}}"#
        )
    };
    assert_eq!(sample(&text, &series("100")), Some(3.0));
    assert_eq!(sample(&text, &series("+Inf")), Some(3.0));
}

const SLOW_INFLIGHT: &str = r#"http_inflight_requests{method="GET",operation="/slow"}"#;

#[tokio::test]
async fn cancelled_request_is_counted_499_and_leaves_flight() {
    let (config, registry) = setup("{}");
    let mut app = app(&config, &registry, Streams::default());
    let req = Request::get("/slow").body(Body::empty()).unwrap();
    let fut = <Router as ServiceExt<Request<Body>>>::ready(&mut app)
        .await
        .unwrap()
        .call(req);
    let mut fut = Box::pin(fut);
    // Poll once so the handler is running, then give up like a client that went away.
    assert!(tokio::time::timeout(Duration::from_millis(20), &mut fut)
        .await
        .is_err());
    assert_eq!(sample(&registry.render(), SLOW_INFLIGHT), Some(1.0));
    drop(fut);
    let text = registry.render();
    assert_eq!(sample(&text, SLOW_INFLIGHT), Some(0.0));
    assert_eq!(
        sample(
            &text,
            r#"http_request_total{method="GET",code="499",operation="/slow"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn panicking_handler_is_counted_500_and_leaves_flight() {
    let (config, registry) = setup("{}");
    let app = app(&config, &registry, Streams::default())
        .layer(tower_http::catch_panic::CatchPanicLayer::new());
    let res = app
        .oneshot(Request::get("/panic").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    drop(res);
    let text = registry.render();
    let inflight = r#"http_inflight_requests{method="GET",operation="/panic"}"#;
    assert_eq!(sample(&text, inflight), Some(0.0));
    assert_eq!(
        sample(
            &text,
            r#"http_request_total{method="GET",code="500",operation="/panic"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"http_request_total{method="GET",code="499",operation="/panic"}"#
        ),
        None
    );
}

const STREAM_INFLIGHT: &str = r#"http_inflight_requests{method="GET",operation="/stream"}"#;

#[tokio::test]
async fn streaming_body_stays_in_flight_until_it_ends() {
    let (config, registry) = setup("{}");
    let streams = Streams::default();
    let (tx, rx) = mpsc::channel(1);
    streams.lock().unwrap().push(rx);
    let mut app = app(&config, &registry, streams);
    let res = send(&mut app, Method::GET, "/stream").await;
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();

    tx.send(Bytes::from_static(b"chunk")).await.unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "chunk");
    // Headers and a first chunk are out: the request is still in flight.
    assert_eq!(sample(&registry.render(), STREAM_INFLIGHT), Some(1.0));

    drop(tx);
    assert!(body.frame().await.is_none());
    let text = registry.render();
    assert_eq!(sample(&text, STREAM_INFLIGHT), Some(0.0));
    assert_eq!(
        sample(
            &text,
            r#"http_request_total{method="GET",code="200",operation="/stream"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn streaming_body_dropped_midway_is_counted_499() {
    let (config, registry) = setup("{}");
    let streams = Streams::default();
    let (tx, rx) = mpsc::channel(1);
    streams.lock().unwrap().push(rx);
    let mut app = app(&config, &registry, streams);
    let res = send(&mut app, Method::GET, "/stream").await;
    let mut body = res.into_body();
    tx.send(Bytes::from_static(b"part")).await.unwrap();
    body.frame().await.unwrap().unwrap();
    assert_eq!(sample(&registry.render(), STREAM_INFLIGHT), Some(1.0));
    drop(body);
    let text = registry.render();
    assert_eq!(sample(&text, STREAM_INFLIGHT), Some(0.0));
    assert_eq!(
        sample(
            &text,
            r#"http_request_total{method="GET",code="499",operation="/stream"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn empty_body_dropped_unpolled_is_complete_not_499() {
    let (config, registry) = setup("{}");
    let mut app = app(&config, &registry, Streams::default());
    // hyper drops an empty body without polling it; so do we here.
    let res = send(&mut app, Method::DELETE, "/users/1").await;
    assert_eq!(res.status(), 204);
    drop(res);
    let text = registry.render();
    assert_eq!(
        sample(
            &text,
            r#"http_request_total{method="DELETE",code="204",operation="/users/{id}"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

fn random_token(rng: &mut impl Rng, len: usize) -> String {
    rng.sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

#[tokio::test]
async fn hostile_traffic_leaves_the_series_bounded() {
    let (config, registry) = setup("{}");
    let mut app = app(&config, &registry, Streams::default());
    let mut rng = rand::rng();
    let mut after_warmup = 0;
    for i in 0..100_000 {
        let method = match rng.random_range(0..4) {
            0 => Method::GET,
            1 => Method::from_bytes(random_token(&mut rng, 8).to_uppercase().as_bytes()).unwrap(),
            // Lowercase: a random token may spell `PUT`, a real method with its own series
            // (methods are case-sensitive, so `put` is `_OTHER`).
            2 => Method::from_bytes(random_token(&mut rng, 3).to_lowercase().as_bytes()).unwrap(),
            _ => Method::POST,
        };
        let path = format!("/{}/{}", random_token(&mut rng, 12), rng.random::<u32>());
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let res = <Router as ServiceExt<Request<Body>>>::ready(&mut app)
            .await
            .unwrap()
            .call(req)
            .await
            .unwrap();
        drop(res);
        if i == 999 {
            after_warmup = sample_lines(&registry.render());
        }
    }
    let text = registry.render();
    // GET, POST and _OTHER, each with operation="unknown": inflight + 5 summary lines + total
    // per (method, code) — the same set after 1k requests as after 100k.
    assert_eq!(sample_lines(&text), after_warmup);
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(
            line.contains(r#"operation="unknown""#)
                || line.starts_with("http_operation_overflow_total"),
            "unexpected series: {line}"
        );
        assert!(
            line.contains(r#"method="GET""#)
                || line.contains(r#"method="POST""#)
                || line.contains(r#"method="_OTHER""#)
                || !line.contains("method="),
            "unexpected method: {line}"
        );
    }
    assert_eq!(
        sample(
            &text,
            r#"http_inflight_requests{method="_OTHER",operation="unknown"}"#
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn operation_cap_sends_the_rest_to_overflow() {
    let config = Config::from_yaml_str("metric: { max_operations: 5 }").unwrap();
    let registry = MetricsRegistry::new(&config.metric).unwrap();
    // A careless resolver that turns the raw path into the label: the cap must hold.
    let careless = |req: &RequestRef<'_>| Some(OperationId::from(req.uri.path()));
    let svc = tower::ServiceBuilder::new()
        .layer(MetricsLayer::from_config(&config.metric, &registry).with_resolver(careless))
        .service(tower::service_fn(|_req: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::new()))
        }));
    for i in 0..1000 {
        let res = svc
            .clone()
            .oneshot(Request::get(format!("/p{i}")).body(()).unwrap())
            .await
            .unwrap();
        drop(res);
    }
    // `unknown` never counts against the cap.
    let unknown = MetricsLayer::from_config(&config.metric, &registry);
    let svc2 = tower::ServiceBuilder::new()
        .layer(unknown)
        .service(tower::service_fn(|_req: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::new()))
        }));
    drop(
        svc2.oneshot(Request::get("/").body(()).unwrap())
            .await
            .unwrap(),
    );

    let text = registry.render();
    let totals: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("http_request_total{"))
        .collect();
    assert_eq!(totals.len(), 6 + 1, "{totals:#?}");
    assert_eq!(
        sample(
            &text,
            r#"http_request_total{method="GET",code="200",operation="_overflow"}"#
        ),
        Some(995.0)
    );
    assert_eq!(sample(&text, "http_operation_overflow_total"), Some(995.0));
}

#[tokio::test]
async fn label_values_are_escaped() {
    let (config, registry) = setup("{}");
    let weird = |_: &RequestRef<'_>| Some(OperationId::from("a\\b\"c\nd"));
    let svc = tower::ServiceBuilder::new()
        .layer(MetricsLayer::from_config(&config.metric, &registry).with_resolver(weird))
        .service(tower::service_fn(|_req: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::new()))
        }));
    drop(
        svc.oneshot(Request::get("/").body(()).unwrap())
            .await
            .unwrap(),
    );
    let text = registry.render();
    assert!(
        text.contains(r#"http_request_total{method="GET",code="200",operation="a\\b\"c\nd"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn service_errors_are_counted_500() {
    let (config, registry) = setup("{}");
    let svc = tower::ServiceBuilder::new()
        .layer(MetricsLayer::from_config(&config.metric, &registry))
        .service(tower::service_fn(|_req: Request<()>| async {
            Err::<Response<String>, _>(std::io::Error::other("backend down"))
        }));
    assert!(svc
        .oneshot(Request::get("/").body(()).unwrap())
        .await
        .is_err());
    let text = registry.render();
    assert_eq!(
        sample(
            &text,
            r#"http_request_total{method="GET",code="500",operation="unknown"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"http_inflight_requests{method="GET",operation="unknown"}"#
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn disabled_metrics_record_nothing_but_keep_request_ids() {
    let (config, registry) = setup("metric: { enabled: false }");
    let mut app = app(&config, &registry, Streams::default());
    let res = send(&mut app, Method::GET, "/users/1").await;
    assert!(res.headers().contains_key("x-request-id"));
    drop(res);
    assert_eq!(
        sample(
            &registry.render(),
            r#"http_request_total{method="GET",code="200",operation="/users/{id}"}"#
        ),
        None
    );
}

#[tokio::test]
async fn explicit_operation_in_request_extensions_wins() {
    let (config, registry) = setup("{}");
    let app = Router::new()
        .route("/x", get(|| async { "x" }))
        .layer(ObservabilityLayer::from_config(&config, &registry))
        .layer(axum::middleware::map_request(
            |mut req: Request<Body>| async move {
                req.extensions_mut().insert(OperationId::from("explicitOp"));
                req
            },
        ));
    let res = app
        .oneshot(Request::get("/x").body(Body::empty()).unwrap())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let text = registry.render();
    assert_eq!(
        sample(
            &text,
            r#"http_request_total{method="GET",code="200",operation="explicitOp"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn family_buckets_make_one_family_a_histogram_beside_summaries() {
    let (config, registry) =
        setup("metric: { family_buckets: { registry_http_request_duration_seconds: [0.1, 1] } }");
    metrics::with_local_recorder(&*registry.recorder(), || {
        metrics::histogram!("registry_http_request_duration_seconds").record(0.5);
    });
    let mut app = app(&config, &registry, Streams::default());
    send_and_read(&mut app, Method::GET, "/users/1").await;
    let text = registry.render();
    assert!(
        text.contains("# TYPE registry_http_request_duration_seconds histogram"),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"registry_http_request_duration_seconds_bucket{le="1"}"#
        ),
        Some(1.0)
    );
    assert!(
        text.contains("# TYPE http_request_duration_seconds summary"),
        "{text}"
    );
}
