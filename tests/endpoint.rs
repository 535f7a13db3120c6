//! The /metrics endpoint and the standalone server, over real sockets.

mod support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{routing::get, Router};
use http_body_util::BodyExt;
use support::{sample, Captured};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use towerscope::{
    metrics::{MetricsEndpoint, MetricsLayer, MetricsRegistry, MetricsServer, Refresh},
    Config, ObservabilityLayer, Telemetry,
};

/// Sends a raw HTTP/1.1 request and returns (status line, headers, body).
async fn raw(addr: SocketAddr, request: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_lowercase(), body.to_owned())
}

async fn fetch(addr: SocketAddr, target: &str, extra: &str) -> (String, String, String) {
    raw(
        addr,
        &format!("GET {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{extra}\r\n"),
    )
    .await
}

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn telemetry(yaml: &str) -> Telemetry {
    Telemetry::init_local(&Config::from_yaml_str(yaml).unwrap()).unwrap()
}

#[tokio::test]
async fn standalone_server_serves_get_and_head_only() {
    let t = telemetry("metric: { port: 0, path: /metrics }");
    metrics::with_local_recorder(&*t.registry().recorder(), || {
        metrics::counter!("demo_total").increment(3)
    });
    let server = t.serve_metrics().await.unwrap().unwrap();
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback());

    let (status, headers, body) = fetch(addr, "/metrics", "").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{headers}"
    );
    assert_eq!(sample(&body, "demo_total"), Some(3.0));

    let (status, headers, body) = raw(
        addr,
        "HEAD /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.contains("content-length: "), "{headers}");
    assert_eq!(body, "");

    let (status, headers, _) = raw(
        addr,
        "POST /metrics HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(headers.contains("allow: get, head"), "{headers}");

    let (status, _, _) = fetch(addr, "/other", "").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    server.shutdown().await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test]
async fn disabled_metrics_start_no_server() {
    let t = telemetry("metric: { enabled: false, port: 0 }");
    assert!(t.serve_metrics().await.unwrap().is_none());
}

#[tokio::test]
async fn comp_selects_registered_families() {
    let t = telemetry("metric: { namespace: harbor, subsystem: core, port: 0 }");
    let registry = t.registry().clone();
    registry.register_component("jobservice", ["harbor_jobservice_task_total"]);
    metrics::with_local_recorder(&*registry.recorder(), || {
        metrics::counter!("harbor_jobservice_task_total").increment(1);
        metrics::counter!("unregistered_total").increment(1);
    });
    let app = Router::new()
        .route("/ping", get(|| async { "pong" }))
        .layer(t.layer());
    let app_addr = serve(app).await;
    fetch(app_addr, "/ping", "").await;
    let server = t.serve_metrics().await.unwrap().unwrap();
    let addr = server.local_addr();

    let (_, _, all) = fetch(addr, "/metrics", "").await;
    for family in [
        "harbor_core_http_request_total",
        "harbor_jobservice_task_total",
        "unregistered_total",
    ] {
        assert!(
            all.contains(&format!("# TYPE {family} ")),
            "{family} missing from {all}"
        );
    }

    let (status, _, core) = fetch(addr, "/metrics?comp=core", "").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        core.contains(
            r#"harbor_core_http_request_total{method="GET",code="200",operation="/ping"} 1"#
        ),
        "{core}"
    );
    assert!(
        !core.contains("jobservice") && !core.contains("unregistered"),
        "{core}"
    );

    let (_, _, jobs) = fetch(addr, "/metrics?comp=jobservice", "").await;
    assert_eq!(
        jobs,
        "# TYPE harbor_jobservice_task_total counter\nharbor_jobservice_task_total 1\n\n"
    );

    let (_, _, both) = fetch(addr, "/metrics?comp=core&comp=jobservice", "").await;
    assert!(
        both.contains("harbor_core_http_inflight_requests")
            && both.contains("harbor_jobservice_task_total")
    );
    assert!(!both.contains("unregistered"));

    let (status, _, body) = fetch(addr, "/metrics?comp=registryctl", "").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert_eq!(body, "unknown component \"registryctl\"\n");
    server.shutdown().await;
}

#[tokio::test]
async fn bearer_token_protects_the_endpoint() {
    let t = telemetry("metric: { port: 0, bearer_token: s3cret }");
    let server = t.serve_metrics().await.unwrap().unwrap();
    let addr = server.local_addr();
    let (status, headers, _) = fetch(addr, "/metrics", "").await;
    assert_eq!(status, "HTTP/1.1 401 Unauthorized");
    assert!(headers.contains("www-authenticate: bearer"), "{headers}");
    let (status, _, _) = fetch(addr, "/metrics", "authorization: Bearer wrong\r\n").await;
    assert_eq!(status, "HTTP/1.1 401 Unauthorized");
    let (status, _, _) = fetch(addr, "/metrics", "authorization: Bearer s3cret\r\n").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    server.shutdown().await;
}

#[tokio::test]
async fn endpoint_mounts_on_an_axum_router() {
    let t = telemetry("{}");
    let app = Router::new()
        .route("/hello", get(|| async { "hi" }))
        .layer(t.layer())
        .route_service("/metrics", t.metrics_endpoint());
    let addr = serve(app).await;
    let (status, headers, body) = fetch(addr, "/hello", "x-request-id: from-client-1\r\n").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, "hi");
    assert!(headers.contains("x-request-id: from-client-1"), "{headers}");

    let (_, headers, _) = fetch(addr, "/hello", "x-request-id: bad\tvalue\r\n").await;
    let id = headers
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("response has an id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

    let (_, _, metrics) = fetch(addr, "/metrics", "").await;
    assert_eq!(
        sample(
            &metrics,
            r#"http_request_total{method="GET",code="200",operation="/hello"}"#
        ),
        Some(2.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn client_disconnect_over_a_real_socket_counts_499() {
    let t = telemetry("{}");
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "never"
            }),
        )
        .layer(t.layer());
    let addr = serve(app).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let inflight = r#"http_inflight_requests{method="GET",operation="/slow"}"#;
    let registry = t.registry().clone();
    wait_for(|| sample(&registry.render(), inflight) == Some(1.0)).await;
    drop(stream);
    wait_for(|| sample(&registry.render(), inflight) == Some(0.0)).await;
    assert_eq!(
        sample(
            &registry.render(),
            r#"http_request_total{method="GET",code="499",operation="/slow"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_head_answered_with_an_error_body_is_counted_with_its_status_not_499() {
    // hyper never sends (nor polls) the body of a HEAD response: it drops it. A HEAD of a
    // missing blob answered 404 with a JSON error (what buildah does before every push) is a
    // 404, and so is the span's end, not a client that went away.
    let t = telemetry("{}");
    let app = Router::new()
        .route(
            "/blob",
            get(|| async {
                (
                    http::StatusCode::NOT_FOUND,
                    r#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#,
                )
            }),
        )
        .layer(t.layer());
    let addr = serve(app).await;
    for _ in 0..3 {
        let (status, headers, body) = raw(
            addr,
            "HEAD /blob HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        assert!(headers.contains("content-length: 36"), "{headers}");
        assert_eq!(body, "", "no body for a HEAD");
    }
    let registry = t.registry().clone();
    let total = |code: &str| {
        sample(
            &registry.render(),
            &format!(r#"http_request_total{{method="HEAD",code="{code}",operation="/blob"}}"#),
        )
    };
    wait_for(|| total("404") == Some(3.0)).await;
    assert_eq!(total("499"), None);
    assert_eq!(
        sample(
            &registry.render(),
            r#"http_inflight_requests{method="HEAD",operation="/blob"}"#
        ),
        Some(0.0)
    );
}

/// Polls `cond` every 10 ms for up to 10 s; the server side reacts asynchronously.
async fn wait_for(cond: impl Fn() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 10 s");
}

#[tokio::test]
async fn streaming_over_a_real_socket_counts_the_body() {
    let t = telemetry("{}");
    let app = Router::new()
        .route("/big", get(|| async { vec![b'x'; 4 * 1024 * 1024] }))
        .layer(t.layer());
    let addr = serve(app).await;
    let (status, _, body) = fetch(addr, "/big", "").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body.len(), 4 * 1024 * 1024);
    let registry = t.registry().clone();
    wait_for(|| {
        sample(
            &registry.render(),
            r#"http_request_total{method="GET",code="200",operation="/big"}"#,
        ) == Some(1.0)
    })
    .await;
    assert_eq!(
        sample(
            &registry.render(),
            r#"http_inflight_requests{method="GET",operation="/big"}"#
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn registries_in_one_process_are_independent() {
    // Two registries in one process do not interfere: layers record into the one they were given.
    let a = MetricsRegistry::new(&Default::default()).unwrap();
    let b = MetricsRegistry::new(&Default::default()).unwrap();
    let app = Router::new()
        .route("/a", get(|| async { "a" }))
        .layer(ObservabilityLayer::new(
            Default::default(),
            MetricsLayer::new(&a),
        ));
    let addr = serve(app).await;
    fetch(addr, "/a", "").await;
    let server = MetricsServer::bind_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        "/m",
        MetricsEndpoint::new(b.clone()),
    )
    .await
    .unwrap();
    let (_, _, body) = fetch(server.local_addr(), "/m", "").await;
    assert!(!body.contains("operation=\"/a\""), "{body}");
    wait_for(|| a.render().contains(r#"operation="/a""#)).await;
    server.shutdown().await;
}

/// GETs `target` from `endpoint` without a socket; returns status and body.
async fn scrape<R: Refresh>(endpoint: &MetricsEndpoint<R>, target: &str) -> (u16, String) {
    let res = endpoint
        .respond(&http::Request::get(target).body(()).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Sets the gauge `computed` to the number of refreshes so far, after yielding once so the
/// refresh is really awaited.
fn counting_refresh(
    registry: &MetricsRegistry,
) -> impl Refresh<Future: Send> + Clone + Send + 'static {
    let recorder = registry.recorder();
    let calls = Arc::new(AtomicUsize::new(0));
    move |_: &[&str]| {
        let recorder = recorder.clone();
        let calls = calls.clone();
        async move {
            tokio::task::yield_now().await;
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            metrics::with_local_recorder(&*recorder, || metrics::gauge!("computed").set(n as f64));
            Ok::<_, Infallible>(())
        }
    }
}

#[tokio::test]
async fn refresh_runs_before_the_render_and_its_gauge_is_in_the_same_scrape() {
    let registry = MetricsRegistry::new(&Default::default()).unwrap();
    let endpoint = MetricsEndpoint::new(registry.clone()).with_refresh(counting_refresh(&registry));
    for n in 1..=3 {
        let (status, body) = scrape(&endpoint, "/metrics").await;
        assert_eq!(status, 200);
        assert_eq!(sample(&body, "computed"), Some(f64::from(n)), "{body}");
    }

    // The standalone server runs the hook too, once per scrape.
    let server = MetricsServer::bind_endpoint("127.0.0.1:0".parse().unwrap(), "/m", endpoint)
        .await
        .unwrap();
    let (status, _, body) = fetch(server.local_addr(), "/m", "").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(sample(&body, "computed"), Some(4.0), "{body}");
    let (status, _, _) = fetch(server.local_addr(), "/other", "").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (_, _, body) = fetch(server.local_addr(), "/m", "").await;
    assert_eq!(
        sample(&body, "computed"),
        Some(5.0),
        "not run for other paths: {body}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn refresh_receives_the_requested_components_and_not_refused_requests() {
    let registry = MetricsRegistry::new(&Default::default()).unwrap();
    registry.register_component("core", ["core_total"]);
    registry.register_component("job service", ["jobs_total"]);
    let seen: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let log = seen.clone();
    let endpoint = MetricsEndpoint::new(registry)
        .with_bearer_token("t")
        .with_refresh(move |components: &[&str]| {
            log.lock()
                .unwrap()
                .push(components.iter().map(|c| c.to_string()).collect());
            std::future::ready(Ok::<_, Infallible>(()))
        });
    let get = |target: &str, token: bool| {
        let mut req = http::Request::get(target);
        if token {
            req = req.header("authorization", "Bearer t");
        }
        endpoint.respond(&req.body(()).unwrap())
    };
    let status = |res: http::Response<_>| res.status().as_u16();

    assert_eq!(status(get("/metrics", true).await.unwrap()), 200);
    assert_eq!(
        status(
            get("/metrics?comp=core&comp=job%20service", true)
                .await
                .unwrap()
        ),
        200
    );
    // Refused requests do not run the hook: no token, an unknown component, a POST.
    assert_eq!(status(get("/metrics", false).await.unwrap()), 401);
    assert_eq!(
        status(get("/metrics?comp=core&comp=nope", true).await.unwrap()),
        404
    );
    let post = http::Request::post("/metrics")
        .header("authorization", "Bearer t")
        .body(())
        .unwrap();
    assert_eq!(status(endpoint.respond(&post).await.unwrap()), 405);

    assert_eq!(
        *seen.lock().unwrap(),
        [vec![], vec!["core".to_owned(), "job service".to_owned()]]
    );
}

/// Captures `tracing` output (plain text, no colours, `WARN` and above) of the current thread.
fn install(logs: &Captured) -> tracing::subscriber::DefaultGuard {
    let writer = logs.clone();
    tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || writer.clone())
            .finish(),
    )
}

#[tokio::test(flavor = "current_thread")]
async fn a_failing_or_panicking_refresh_still_renders_what_exists_and_warns() {
    let registry = MetricsRegistry::new(&Default::default()).unwrap();
    metrics::with_local_recorder(&*registry.recorder(), || {
        metrics::counter!("kept_total").increment(2)
    });
    let logs = Captured::default();
    let _guard = install(&logs);

    // The future fails.
    let failing = MetricsEndpoint::new(registry.clone()).with_refresh(|_: &[&str]| async {
        Err::<(), _>(std::io::Error::other("database is locked"))
    });
    let (status, body) = scrape(&failing, "/metrics").await;
    assert_eq!(
        (status, sample(&body, "kept_total")),
        (200, Some(2.0)),
        "{body}"
    );
    let log = logs.take();
    assert!(
        log.contains("WARN")
            && log.contains("towerscope::metrics")
            && log.contains("database is locked"),
        "{log}"
    );

    // The future panics while polled.
    let panics_in_future =
        MetricsEndpoint::new(registry.clone()).with_refresh(|_: &[&str]| async {
            tokio::task::yield_now().await;
            panic!("refresh future exploded");
            #[allow(unreachable_code)]
            Ok::<_, Infallible>(())
        });
    let (status, body) = scrape(&panics_in_future, "/metrics").await;
    assert_eq!(
        (status, sample(&body, "kept_total")),
        (200, Some(2.0)),
        "{body}"
    );
    let log = logs.take();
    assert!(
        log.contains("WARN") && log.contains("refresh future exploded"),
        "{log}"
    );

    // The hook itself panics before returning a future.
    let panics_in_call = MetricsEndpoint::new(registry).with_refresh(|_: &[&str]| {
        panic!("refresh hook exploded");
        #[allow(unreachable_code)]
        std::future::ready(Ok::<_, Infallible>(()))
    });
    let (status, body) = scrape(&panics_in_call, "/metrics?").await;
    assert_eq!(
        (status, sample(&body, "kept_total")),
        (200, Some(2.0)),
        "{body}"
    );
    let log = logs.take();
    assert!(
        log.contains("WARN") && log.contains("refresh hook exploded"),
        "{log}"
    );
}

#[tokio::test]
async fn concurrent_scrapes_are_refreshed_and_rendered_two_at_a_time() {
    // Each scrape's refresh hook counts the scrapes in progress and waits a little: twelve at
    // once never have more than two refreshing (and rendering) together, and all are answered.
    let registry = MetricsRegistry::new(&Default::default()).unwrap();
    let active = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (a, m) = (active.clone(), most.clone());
    let endpoint = MetricsEndpoint::new(registry).with_refresh(move |_: &[&str]| {
        let (active, most) = (a.clone(), m.clone());
        async move {
            let now = active.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            active.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, Infallible>(())
        }
    });
    let scrapes = (0..12).map(|_| {
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let req = http::Request::get("/metrics").body(()).unwrap();
            endpoint.respond(&req).await.unwrap().status()
        })
    });
    for scrape in scrapes.collect::<Vec<_>>() {
        assert_eq!(scrape.await.unwrap(), 200);
    }
    assert_eq!(most.load(Ordering::SeqCst), 2, "the default cap");
    assert_eq!(active.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn slowloris_on_the_metrics_port_is_capped_and_the_service_is_not_held_up() {
    use towerscope::metrics::DEFAULT_MAX_CONNECTIONS;
    let t = telemetry("metric: { port: 0 }");
    let server = t.serve_metrics().await.unwrap().unwrap();
    let metrics = server.local_addr();
    let app = serve(
        Router::new()
            .route("/hello", get(|| async { "hi" }))
            .layer(t.layer()),
    )
    .await;
    // Three times the cap of clients that send half a request line and stall.
    let mut stalled = Vec::new();
    for _ in 0..3 * DEFAULT_MAX_CONNECTIONS {
        let mut stream = TcpStream::connect(metrics).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nhost:")
            .await
            .unwrap();
        stalled.push(stream);
    }
    wait_for(|| server.open_connections() == DEFAULT_MAX_CONNECTIONS).await;
    // The connections past the cap (accepted in order, after the first ones) were closed by
    // the server: reading them ends, with EOF or a reset.
    for stream in &mut stalled[DEFAULT_MAX_CONNECTIONS..] {
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "closed by the server: {read:?}"
        );
    }
    assert_eq!(server.open_connections(), DEFAULT_MAX_CONNECTIONS);
    // The service answers meanwhile.
    for _ in 0..5 {
        let (status, _, body) = fetch(app, "/hello", "").await;
        assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "hi"));
    }
    // Once the stalled clients are gone, scrapes are served again.
    drop(stalled);
    wait_for(|| server.open_connections() == 0).await;
    let (status, _, body) = fetch(metrics, "/metrics", "").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("http_request_total"), "{body}");
}
