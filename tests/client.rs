//! Calls through `towerscope::client` between real services on loopback sockets: one trace and
//! one request id across two services, context kept to allowed hosts, failures on spans and in
//! totals, `url.full` redaction, operation labels and the peer cap, and exporters that are not
//! traced themselves.
#![cfg(feature = "reqwest")]

mod support;

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    time::{Duration, Instant},
};

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::get,
    Router,
};
use opentelemetry::trace::{SpanKind, Status, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use reqwest_middleware::ClientWithMiddleware;
use support::sample;
use towerscope::{
    client::{ClientMiddleware, ClientOperation},
    Config, Telemetry,
};
use tracing_subscriber::layer::SubscriberExt;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// A telemetry exporting to a new in-memory exporter, metric names prefixed `{service}_`.
fn telemetry(service: &str) -> (Telemetry, InMemorySpanExporter) {
    support::in_memory_telemetry(&format!(
        "metric: {{ namespace: {service}, port: 0 }}\n\
         trace: {{ enabled: true, service_name: {service}, otel: {{ endpoint: '127.0.0.1:1' }} }}"
    ))
}

/// A plain (uninstrumented) client for the test's own calls.
fn plain_client() -> reqwest::Client {
    #[cfg(feature = "tls")]
    // ring, as towerscope installs it (src/tls.rs says why despite rustls' deprecation).
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// The propagation headers a request arrived with, one `name: value` line each.
async fn echo(headers: HeaderMap) -> String {
    ["traceparent", "tracestate", "baggage", "x-request-id"]
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some(format!("{name}: {value}\n"))
        })
        .collect()
}

fn parse_echo(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Service B, on a thread and runtime of its own with its own subscriber, as another process
/// would be: whatever it learns about the trace comes over the wire.
fn spawn_back_service(telemetry: Telemetry) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let subscriber = tracing_subscriber::registry().with(telemetry.tracing_layer());
        let _guard = tracing::subscriber::set_default(subscriber);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = Router::new()
                .route("/back", get(echo))
                .layer(telemetry.layer());
            axum::serve(listener, app).await.unwrap();
        });
    });
    addr
}

#[derive(Clone)]
struct Front {
    client: ClientWithMiddleware,
    back: String,
}

/// Service A: `/front` calls B through the instrumented client and returns what B saw.
async fn front(State(front): State<Front>) -> Result<String, StatusCode> {
    let res = front
        .client
        .get(&front.back)
        .send()
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?;
    res.text().await.map_err(|_| StatusCode::BAD_GATEWAY)
}

/// Like `front`, but the call carries its own request id.
async fn front_own_id(State(front): State<Front>) -> Result<String, StatusCode> {
    let res = front
        .client
        .get(&front.back)
        .header("x-request-id", "own-1")
        .send()
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?;
    res.text().await.map_err(|_| StatusCode::BAD_GATEWAY)
}

async fn serve_front(
    telemetry: &Telemetry,
    client: ClientWithMiddleware,
    back: SocketAddr,
) -> SocketAddr {
    let state = Front {
        client,
        back: format!("http://{back}/back"),
    };
    let app = Router::new()
        .route("/front", get(front))
        .route("/front-own-id", get(front_own_id))
        .with_state(state)
        .layer(telemetry.layer());
    serve(app).await
}

/// Calls A's `/front` as a traced caller would, with context and a request id.
async fn call_front(addr: SocketAddr, path: &str) -> HashMap<String, String> {
    let res = plain_client()
        .get(format!("http://{addr}{path}"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .header("tracestate", "vendor=abc")
        .header("baggage", "tenant=t1")
        .header("x-request-id", "req-front-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    parse_echo(&res.text().await.unwrap())
}

/// Flushes `telemetry` until `exporter` holds a span named `name` (spans end on other tasks and
/// threads, a moment after the response arrived), then returns every span.
async fn spans_with(
    telemetry: &Telemetry,
    exporter: &InMemorySpanExporter,
    name: &str,
) -> Vec<SpanData> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        telemetry.trace_pipeline().unwrap().force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        if spans.iter().any(|s| s.name == name) {
            return spans;
        }
        assert!(Instant::now() < deadline, "no span {name} in {spans:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let mut found = spans.iter().filter(|s| s.name == name);
    let span = found
        .next()
        .unwrap_or_else(|| panic!("no span {name} in {spans:#?}"));
    assert!(found.next().is_none(), "one span {name} in {spans:#?}");
    span
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn client_span<'a>(spans: &'a [SpanData], url_full: &str) -> &'a SpanData {
    spans
        .iter()
        .find(|s| {
            s.span_kind == SpanKind::Client && attr(s, "url.full").as_deref() == Some(url_full)
        })
        .unwrap_or_else(|| panic!("no client span for {url_full} in {spans:#?}"))
}

async fn scrape(metrics: SocketAddr, query: &str) -> String {
    let res = plain_client()
        .get(format!("http://{metrics}/metrics{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

#[tokio::test]
async fn one_trace_and_request_id_span_both_services_and_client_metrics_are_served() {
    let (a, a_spans) = telemetry("svc_a");
    let (b, b_spans) = telemetry("svc_b");
    let back = spawn_back_service(b.clone());
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(a.tracing_layer()));
    let client = ClientMiddleware::from_telemetry(&a)
        .with_context_hosts(["127.0.0.1"])
        .build_client(reqwest::Client::builder())
        .unwrap();
    let front = serve_front(&a, client, back).await;
    let metrics = a.serve_metrics().await.unwrap().unwrap();

    let seen = call_front(front, "/front").await;

    // B saw A's request id and, being an allowed host, the whole context.
    assert_eq!(seen["x-request-id"], "req-front-1");
    assert_eq!(seen["tracestate"], "vendor=abc");
    assert_eq!(seen["baggage"], "tenant=t1");

    let a_spans = spans_with(&a, &a_spans, "GET /front").await;
    let b_spans = spans_with(&b, &b_spans, "GET /back").await;
    let server_a = named(&a_spans, "GET /front");
    let client = named(&a_spans, "GET");
    let server_b = named(&b_spans, "GET /back");
    let trace_id = TraceId::from_hex(TRACE_ID).unwrap();
    for span in [server_a, client, server_b] {
        assert_eq!(span.span_context.trace_id(), trace_id, "{}", span.name);
    }
    assert_eq!(client.span_kind, SpanKind::Client);
    assert_eq!(client.parent_span_id, server_a.span_context.span_id());
    assert_eq!(server_b.parent_span_id, client.span_context.span_id());
    assert!(server_b.parent_span_is_remote);
    assert_eq!(
        seen["traceparent"],
        format!("00-{TRACE_ID}-{}-01", client.span_context.span_id())
    );
    assert_eq!(attr(server_b, "request_id").as_deref(), Some("req-front-1"));
    for (key, value) in [
        ("http.request.method", "GET".to_owned()),
        ("url.full", format!("http://{back}/back")),
        ("server.address", "127.0.0.1".to_owned()),
        ("server.port", back.port().to_string()),
        ("http.response.status_code", "200".to_owned()),
        ("network.protocol.version", "1.1".to_owned()),
    ] {
        assert_eq!(attr(client, key), Some(value), "{key}");
    }
    assert_eq!(attr(client, "error.type"), None);
    assert_eq!(client.status, Status::Unset);

    // The client families are on A's /metrics, also as ?comp=client.
    let peer = format!("127.0.0.1:{}", back.port());
    for text in [
        scrape(metrics.local_addr(), "").await,
        scrape(metrics.local_addr(), "?comp=client").await,
    ] {
        let series = |family: &str, labels: &str| format!("svc_a_{family}{{{labels}}}");
        let total = series(
            "http_client_request_total",
            &format!(r#"method="GET",code="200",peer="{peer}""#),
        );
        assert_eq!(sample(&text, &total), Some(1.0), "{total} in\n{text}");
        let labels = format!(r#"method="GET",peer="{peer}""#);
        let inflight = series("http_client_inflight_requests", &labels);
        assert_eq!(sample(&text, &inflight), Some(0.0), "{inflight} in\n{text}");
        let count = series("http_client_request_duration_seconds_count", &labels);
        assert_eq!(sample(&text, &count), Some(1.0), "{count} in\n{text}");
        assert!(
            text.contains("# HELP svc_a_http_client_request_total "),
            "{text}"
        );
    }
    let client_only = scrape(metrics.local_addr(), "?comp=client").await;
    assert!(
        !client_only.contains("svc_a_http_request_total"),
        "{client_only}"
    );
    metrics.shutdown().await;
}

#[tokio::test]
async fn tracestate_and_baggage_go_only_to_allowed_hosts() {
    let (a, _a_spans) = telemetry("svc_a");
    let (b, _b_spans) = telemetry("svc_b");
    let back = spawn_back_service(b);
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(a.tracing_layer()));
    let client = ClientMiddleware::from_telemetry(&a)
        .with_context_hosts(["registry.internal", "*.example.com"])
        .build_client(reqwest::Client::builder())
        .unwrap();
    let front = serve_front(&a, client, back).await;

    let seen = call_front(front, "/front").await;
    assert!(
        seen["traceparent"].starts_with(&format!("00-{TRACE_ID}-")),
        "{seen:?}"
    );
    assert_eq!(seen.get("tracestate"), None, "{seen:?}");
    assert_eq!(seen.get("baggage"), None, "{seen:?}");
    assert_eq!(seen["x-request-id"], "req-front-1");

    // A call that brings its own request id keeps it.
    let seen = call_front(front, "/front-own-id").await;
    assert_eq!(seen["x-request-id"], "own-1");
}

/// W3C Trace Context levels 1 and 2 from a caller through A's server layer and instrumented
/// client to B: the `random` flag goes on sampled or not, `tracestate` arrives as the
/// grammar reads it (a 241@14 key whole, an invalid list not at all).
#[tokio::test]
async fn w3c_trace_context_crosses_both_services() {
    let (a, _a_spans) = telemetry("svc_a");
    let (b, _b_spans) = telemetry("svc_b");
    let back = spawn_back_service(b);
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(a.tracing_layer()));
    let client = ClientMiddleware::from_telemetry(&a)
        .with_context_hosts(["127.0.0.1"])
        .build_client(reqwest::Client::builder())
        .unwrap();
    let front = serve_front(&a, client, back).await;

    let long_key = format!("{}@{}", "t".repeat(241), "v".repeat(14));
    let valid = format!("{long_key}=1 , rojo=00f067aa0ba902b7");
    let forwarded = format!("{long_key}=1,rojo=00f067aa0ba902b7");
    for (flags, state, seen_flags, seen_state) in [
        ("03", valid.as_str(), "03", Some(forwarded.as_str())),
        ("02", valid.as_str(), "02", Some(forwarded.as_str())),
        ("01", "foo=,bar=3", "01", None),
        ("00", "congo=t61rcWkgMzE", "00", Some("congo=t61rcWkgMzE")),
        ("0b", "", "03", None),
    ] {
        let res = plain_client()
            .get(format!("http://{front}/front"))
            .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-{flags}"))
            .header("tracestate", state)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let seen = parse_echo(&res.text().await.unwrap());
        let traceparent = &seen["traceparent"];
        assert!(
            traceparent.starts_with(&format!("00-{TRACE_ID}-"))
                && traceparent.ends_with(&format!("-{seen_flags}"))
                && !traceparent.contains(PARENT_ID),
            "{flags}: {traceparent}"
        );
        assert_eq!(
            seen.get("tracestate").map(String::as_str),
            seen_state,
            "{flags}"
        );
    }

    // A new trace A starts is random, sampled (rate 1 here) or not.
    let res = plain_client()
        .get(format!("http://{front}/front"))
        .send()
        .await
        .unwrap();
    let seen = parse_echo(&res.text().await.unwrap());
    assert!(seen["traceparent"].ends_with("-03"), "{seen:?}");
}

#[tokio::test]
async fn connect_errors_timeouts_and_error_statuses_are_recorded() {
    let (t, exporter) = telemetry("errs");
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(t.tracing_layer()));
    let slow = serve(
        Router::new()
            .route(
                "/slow",
                axum::routing::any(|| async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    "late"
                }),
            )
            .route("/boom", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .route("/missing", get(|| async { StatusCode::NOT_FOUND })),
    )
    .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = ClientMiddleware::from_telemetry(&t)
        .build_client(reqwest::Client::builder().timeout(Duration::from_millis(200)))
        .unwrap();

    let refused = format!("http://{closed}/x");
    let err = client.get(&refused).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let timed_out = format!("http://{slow}/slow");
    let err = client.get(&timed_out).send().await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let boom = format!("http://{slow}/boom");
    assert_eq!(client.get(&boom).send().await.unwrap().status(), 503);
    let missing = format!("http://{slow}/missing");
    assert_eq!(client.get(&missing).send().await.unwrap().status(), 404);
    // A call the caller gives up on before any response.
    let cancelled = format!("http://{slow}/slow?cancel=1");
    let gave_up =
        tokio::time::timeout(Duration::from_millis(50), client.delete(&cancelled).send()).await;
    assert!(gave_up.is_err());

    t.trace_pipeline().unwrap().force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let span = client_span(&spans, &refused);
    assert_eq!(attr(span, "error.type").as_deref(), Some("connect"));
    assert!(
        matches!(&span.status, Status::Error { description } if !description.is_empty()),
        "{:?}",
        span.status
    );
    let span = client_span(&spans, &timed_out);
    assert_eq!(attr(span, "error.type").as_deref(), Some("timeout"));
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
    let span = client_span(&spans, &boom);
    assert_eq!(attr(span, "error.type").as_deref(), Some("503"));
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
    let span = client_span(&spans, &missing);
    assert_eq!(attr(span, "error.type").as_deref(), Some("404"));
    assert_eq!(span.status, Status::Unset);

    let text = t.registry().render();
    let total = |method: &str, code: &str, addr: SocketAddr| {
        let series = format!(
            r#"errs_http_client_request_total{{method="{method}",code="{code}",peer="127.0.0.1:{}"}}"#,
            addr.port()
        );
        sample(&text, &series)
    };
    assert_eq!(total("GET", "connect", closed), Some(1.0), "{text}");
    assert_eq!(total("GET", "timeout", slow), Some(1.0), "{text}");
    assert_eq!(total("GET", "503", slow), Some(1.0), "{text}");
    assert_eq!(total("GET", "404", slow), Some(1.0), "{text}");
    assert_eq!(total("DELETE", "cancelled", slow), Some(1.0), "{text}");
    let inflight = text
        .lines()
        .filter(|l| l.starts_with("errs_http_client_inflight_requests{"))
        .collect::<Vec<_>>();
    assert_eq!(inflight.len(), 3, "{text}");
    assert!(inflight.iter().all(|l| l.ends_with(" 0")), "{text}");
}

#[tokio::test]
async fn urls_are_redacted_and_operations_and_the_peer_cap_label_calls() {
    let (t, exporter) = telemetry("red");
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(t.tracing_layer()));
    let addr = serve(Router::new().route("/blob", get(|| async { "blob" }))).await;
    let client = ClientMiddleware::from_telemetry(&t)
        .with_max_peers(2)
        .build_client(reqwest::Client::builder())
        .unwrap();

    // Built by hand: reqwest's request builder would turn the userinfo into a header first.
    let url = format!(
        "http://user:s3cret@{addr}/blob?X-Amz-Signature=f00d&x-amz-credential=AKIA%2F1&keep=1&Token=t0k"
    );
    let req = reqwest::Request::new(reqwest::Method::GET, url.parse().unwrap());
    assert_eq!(client.execute(req).await.unwrap().status(), 200);
    let blob = format!("http://{addr}/blob");
    for op in ["getManifest", "putBlob"] {
        let res = client
            .get(&blob)
            .with_extension(ClientOperation::new(op))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }

    t.trace_pipeline().unwrap().force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let redacted = format!(
        "http://REDACTED:REDACTED@{addr}/blob?X-Amz-Signature=REDACTED&x-amz-credential=REDACTED&keep=1&Token=REDACTED"
    );
    let span = client_span(&spans, &redacted);
    for secret in ["s3cret", "f00d", "AKIA", "t0k", "user"] {
        assert!(
            span.attributes
                .iter()
                .all(|kv| !kv.value.to_string().contains(secret)),
            "{secret} in {:?}",
            span.attributes
        );
    }
    let ops: Vec<_> = spans.iter().filter_map(|s| attr(s, "operation")).collect();
    assert_eq!(ops, ["getManifest", "putBlob"]);

    let text = t.registry().render_components(&["client"]).unwrap();
    for (peer, value) in [
        (format!("127.0.0.1:{}", addr.port()), 1.0),
        ("getManifest".to_owned(), 1.0),
        ("_overflow".to_owned(), 1.0),
    ] {
        let series =
            format!(r#"red_http_client_request_total{{method="GET",code="200",peer="{peer}"}}"#);
        assert_eq!(sample(&text, &series), Some(value), "{series} in\n{text}");
    }
    assert!(!text.contains("putBlob"), "{text}");
    assert_eq!(
        sample(&text, "red_http_client_peer_overflow_total"),
        Some(1.0),
        "{text}"
    );
}

/// A middleware that panics in its future, below the instrumentation.
fn panics<'a>(
    _req: reqwest::Request,
    _extensions: &'a mut http::Extensions,
    _next: reqwest_middleware::Next<'a>,
) -> Pin<Box<dyn Future<Output = reqwest_middleware::Result<reqwest::Response>> + Send + 'a>> {
    Box::pin(async { panic!("a middleware panicked on purpose") })
}

#[tokio::test]
async fn a_panic_below_the_middleware_is_an_error_not_a_cancelled_call() {
    let (t, exporter) = telemetry("pan");
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(t.tracing_layer()));
    // Added by hand, not with `build_client`: the table is built at the first call.
    let client = reqwest_middleware::ClientBuilder::new(plain_client())
        .with(ClientMiddleware::new(t.registry()).with_prefix("p_"))
        .with(panics)
        .build();
    let url = "http://127.0.0.1:9/x";
    let call = tokio::spawn(async move { client.get(url).send().await });
    assert!(call.await.unwrap_err().is_panic());

    let text = t.registry().render_components(&["client"]).unwrap();
    let series = r#"p_http_client_request_total{method="GET",code="error",peer="127.0.0.1:9"}"#;
    assert_eq!(sample(&text, series), Some(1.0), "{text}");
    let inflight = r#"p_http_client_inflight_requests{method="GET",peer="127.0.0.1:9"}"#;
    assert_eq!(sample(&text, inflight), Some(0.0), "{text}");
    assert!(!text.contains(r#"code="cancelled""#), "{text}");

    t.trace_pipeline().unwrap().force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let span = client_span(&spans, url);
    assert_eq!(attr(span, "error.type").as_deref(), Some("_OTHER"));
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
}

/// The OTLP exporter posts spans with its own plain client: with the pipeline's layer as the
/// global subscriber (as `Telemetry::init_subscriber` installs it), exporting the spans of a
/// traced call makes no client span and no client metric for the collector.
#[cfg(feature = "otlp")]
#[tokio::test]
async fn exporting_spans_makes_no_client_spans() {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };
    use tracing::Instrument;

    let posts = Arc::new(AtomicUsize::new(0));
    let counted = posts.clone();
    let collector = serve(
        Router::new()
            .route(
                "/v1/traces",
                axum::routing::post(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async { ([("content-type", "application/x-protobuf")], "") }
                }),
            )
            .route("/ping", get(|| async { "pong" })),
    )
    .await;
    let config = Config::from_yaml_str(&format!(
        "metric: {{ namespace: exp, port: 0 }}\n\
         trace: {{ enabled: true, service_name: exp, otel: {{ endpoint: 'http://{collector}/v1/traces', timeout: 5 }} }}"
    ))
    .unwrap();
    let t = Telemetry::init_local(&config).unwrap();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(t.tracing_layer()))
        .unwrap();
    let client = towerscope::client::instrumented_client(&t);

    let res = client
        .get(format!("http://{collector}/ping"))
        .send()
        .instrument(tracing::info_span!("job"))
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "pong");

    // The export blocks on the collector, which runs on this runtime: flush off it.
    let flush = |t: Telemetry| async move {
        tokio::task::spawn_blocking(move || t.trace_pipeline().unwrap().force_flush())
            .await
            .unwrap()
            .unwrap()
    };
    flush(t.clone()).await;
    let stats = t.trace_pipeline().unwrap().stats();
    assert_eq!((stats.exported(), posts.load(Ordering::SeqCst)), (2, 1));
    // Had the export been traced, its span would go out with the next flush.
    tokio::time::sleep(Duration::from_millis(200)).await;
    flush(t.clone()).await;
    assert_eq!(
        (
            stats.exported(),
            stats.failed(),
            posts.load(Ordering::SeqCst)
        ),
        (2, 0, 1)
    );

    let text = t.registry().render_components(&["client"]).unwrap();
    let totals: Vec<_> = text
        .lines()
        .filter(|l| l.starts_with("exp_http_client_request_total{"))
        .collect();
    assert_eq!(
        totals,
        [format!(
            r#"exp_http_client_request_total{{method="GET",code="200",peer="{collector}"}} 1"#
        )],
        "{text}"
    );
    let report = tokio::task::spawn_blocking(move || t.shutdown().unwrap())
        .await
        .unwrap();
    assert_eq!(report.lost(), 0, "{report:?}");
}

#[tokio::test]
async fn a_sampled_client_calls_span_ids_are_the_exemplars_of_its_series() {
    let (t, exporter) = support::in_memory_telemetry(
        "metric: { namespace: svc, buckets: [0.5, 5] }\n\
         trace: { enabled: true, service_name: svc, otel: { endpoint: '127.0.0.1:1' } }",
    );
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(t.tracing_layer()));
    let addr = serve(Router::new().route("/blob", get(|| async { "blob" }))).await;
    let client = ClientMiddleware::from_telemetry(&t)
        .build_client(reqwest::Client::builder())
        .unwrap();
    let url = format!("http://{addr}/blob");
    client.get(&url).send().await.unwrap().text().await.unwrap();
    let spans = spans_with(&t, &exporter, "GET").await;
    let span = client_span(&spans, &url);
    let ids = format!(
        "# {{trace_id=\"{}\",span_id=\"{}\"}}",
        span.span_context.trace_id(),
        span.span_context.span_id()
    );
    let text = t.registry().render_openmetrics(&[]).unwrap();
    for family in [
        "svc_http_client_request_total{",
        "svc_http_client_request_duration_seconds_bucket{",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(family) && l.contains(" # {"))
            .unwrap_or_else(|| panic!("no exemplar on {family}: {text}"));
        assert!(line.contains(&ids), "{line} should carry {ids}");
    }
}

#[tokio::test]
async fn otel_naming_records_the_conventions_client_duration() {
    // A subscriber of this test's own: another test of this binary installs a global one,
    // which must not receive (and export) this test's client spans.
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry());
    let t = Telemetry::init_local(
        &towerscope::Config::from_yaml_str("metric: { naming: otel, namespace: app, port: 0 }")
            .unwrap(),
    )
    .unwrap();
    let server = serve(
        Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route("/boom", get(|| async { StatusCode::SERVICE_UNAVAILABLE })),
    )
    .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = ClientMiddleware::from_telemetry(&t)
        .build_client(reqwest::Client::builder())
        .unwrap();
    for path in ["ok", "ok", "boom"] {
        let url = format!("http://{server}/{path}");
        client.get(url).send().await.unwrap();
    }
    client
        .get(format!("http://{closed}/x"))
        .send()
        .await
        .unwrap_err();

    let text = t.registry().render_components(&["client"]).unwrap();
    assert!(
        text.contains("# TYPE http_client_request_duration_seconds histogram"),
        "{text}"
    );
    let port = server.port();
    let ok = format!(
        r#"http_client_request_duration_seconds_count{{http_request_method="GET",http_response_status_code="200",network_protocol_version="1.1",server_address="127.0.0.1",server_port="{port}",url_scheme="http"}}"#
    );
    assert_eq!(support::sample(&text, &ok), Some(2.0), "{ok} in {text}");
    let boom = format!(
        r#"http_client_request_duration_seconds_count{{error_type="503",http_request_method="GET",http_response_status_code="503",network_protocol_version="1.1",server_address="127.0.0.1",server_port="{port}",url_scheme="http"}}"#
    );
    assert_eq!(support::sample(&text, &boom), Some(1.0), "{boom} in {text}");
    let refused = format!(
        r#"http_client_request_duration_seconds_count{{error_type="connect",http_request_method="GET",server_address="127.0.0.1",server_port="{}",url_scheme="http"}}"#,
        closed.port()
    );
    assert_eq!(
        support::sample(&text, &refused),
        Some(1.0),
        "{refused} in {text}"
    );
    // The URL path never becomes a label; the overflow counter keeps the configured prefix.
    assert!(!text.contains("/ok"), "{text}");
    assert!(
        text.contains("app_http_client_peer_overflow_total 0"),
        "{text}"
    );
}
