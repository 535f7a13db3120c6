//! gRPC through real tonic servers and clients on loopback (tonic-health, and a hand-built
//! service that fails in its trailers), plus the layer driven directly with `service_fn`.
#![cfg(feature = "tonic")]

mod support;

use std::{
    collections::VecDeque,
    convert::Infallible,
    future::{ready, Ready},
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceContextExt};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use support::{no_stale_span_interest, sample};
use tonic::{
    server::NamedService,
    transport::{server::TcpIncoming, Channel, Endpoint, Server},
    Code,
};
use tonic_health::{
    pb::{health_client::HealthClient, HealthCheckRequest},
    server::HealthReporter,
    ServingStatus,
};
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use towerscope::{
    config::MetricConfig,
    grpc::{GrpcClientLayer, GrpcClientService, GrpcLayer, GrpcMetricNames, GrpcType, RequestBody},
    metrics::MetricsRegistry,
    request_id::RequestIdLayer,
    trace::TracePipeline,
    Config, Telemetry,
};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

const CHECK: &str = "grpc.health.v1.Health/Check";
const WATCH: &str = "grpc.health.v1.Health/Watch";

type Client = HealthClient<GrpcClientService<Channel>>;

/// Serves `svc` on a free loopback port behind `RequestIdLayer` and `layer`; the server stops
/// when the returned sender is dropped.
async fn serve<S>(layer: GrpcLayer, svc: S) -> (SocketAddr, tokio::sync::oneshot::Sender<()>)
where
    S: Service<
            Request<tonic::body::Body>,
            Response = Response<tonic::body::Body>,
            Error = Infallible,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    no_stale_span_interest();
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .layer(RequestIdLayer::new())
        .layer(layer)
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        });
    tokio::spawn(server);
    (addr, stop)
}

/// A tonic-health server behind `layer`, its reporter, and a client through
/// `GrpcClientLayer`.
async fn health(layer: GrpcLayer) -> (Client, HealthReporter, tokio::sync::oneshot::Sender<()>) {
    let (reporter, service) = tonic_health::server::health_reporter();
    let (addr, stop) = serve(layer, service).await;
    (client(addr, GrpcClientLayer::new()).await, reporter, stop)
}

async fn client(addr: SocketAddr, layer: GrpcClientLayer) -> Client {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(ServiceBuilder::new().layer(layer).service(channel))
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

fn registry() -> MetricsRegistry {
    no_stale_span_interest();
    MetricsRegistry::new(&MetricConfig::default()).unwrap()
}

/// Waits (up to 5 s) until `series` has `value` in the registry's `grpc` component, which the
/// server may update just after the client has its answer; returns the text.
async fn eventually(registry: &MetricsRegistry, series: &str, value: f64) -> String {
    for _ in 0..500 {
        let text = registry.render_components(&["grpc"]).unwrap();
        if sample(&text, series) == Some(value) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{series} never reached {value}:\n{}",
        registry.render_components(&["grpc"]).unwrap()
    );
}

fn total(code: u16, grpc_code: &str, operation: &str) -> String {
    format!(
        r#"grpc_request_total{{code="{code}",grpc_code="{grpc_code}",operation="{operation}"}}"#
    )
}

fn inflight(operation: &str) -> String {
    format!(r#"grpc_inflight_requests{{operation="{operation}"}}"#)
}

/// A response body of the given frames.
struct Frames(VecDeque<Frame<Bytes>>);

impl Frames {
    fn new(frames: impl IntoIterator<Item = Frame<Bytes>>) -> Self {
        Self(frames.into_iter().collect())
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

fn trailers(pairs: &[(&'static str, &'static str)]) -> Frame<Bytes> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, value.parse().unwrap());
    }
    Frame::trailers(map)
}

/// One length-prefixed `HealthCheckResponse { status: SERVING }` message.
fn serving_message() -> Frame<Bytes> {
    Frame::data(Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 0x01]))
}

/// A `grpc.health.v1.Health` that answers every call with one message and then
/// `INTERNAL` in its trailers.
#[derive(Clone)]
struct FailingHealth;

impl NamedService for FailingHealth {
    const NAME: &'static str = "grpc.health.v1.Health";
}

impl Service<Request<tonic::body::Body>> for FailingHealth {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<tonic::body::Body>) -> Self::Future {
        let body = Frames::new([
            serving_message(),
            trailers(&[("grpc-status", "13"), ("grpc-message", "disk%20on%20fire")]),
        ]);
        let res = Response::builder()
            .header("content-type", "application/grpc")
            .body(tonic::body::Body::new(body))
            .unwrap();
        ready(Ok(res))
    }
}

#[tokio::test]
async fn unary_calls_are_counted_by_operation_and_grpc_code() {
    let registry = registry();
    let (mut client, _reporter, _stop) = health(GrpcLayer::new(&registry)).await;
    for _ in 0..2 {
        let res = client.check(check("")).await.unwrap();
        assert_eq!(res.into_inner().status, 1); // SERVING
    }
    let err = client.check(check("no.such.Service")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    eventually(&registry, &total(200, "NOT_FOUND", CHECK), 1.0).await;
    let text = eventually(&registry, &total(200, "OK", CHECK), 2.0).await;
    assert_eq!(sample(&text, &inflight(CHECK)), Some(0.0));
    assert_eq!(
        sample(
            &text,
            &format!(r#"grpc_request_duration_seconds_count{{operation="{CHECK}"}}"#)
        ),
        Some(3.0)
    );
    // Only the gRPC families are in the `grpc` component, each described.
    assert!(text.contains("# HELP grpc_request_total"));
    assert!(!text.contains("http_request_total"));
}

#[tokio::test]
async fn unimplemented_paths_are_counted_from_the_response_headers() {
    let registry = registry();
    let (addr, _stop) = serve(GrpcLayer::new(&registry), FailingHealth).await;
    // tonic's router answers a path it does not serve with UNIMPLEMENTED in the headers.
    let mut client = tonic::client::Grpc::new(
        Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    client.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/other.v1.Missing/Call");
    let err = client
        .unary::<(), (), _>(tonic::Request::new(()), path, UnitCodec)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    eventually(
        &registry,
        &total(200, "UNIMPLEMENTED", "other.v1.Missing/Call"),
        1.0,
    )
    .await;
}

/// A codec of empty messages, enough to call a method by path.
#[derive(Debug, Clone, Copy)]
struct UnitCodec;

impl tonic::codec::Codec for UnitCodec {
    type Encode = ();
    type Decode = ();
    type Encoder = UnitCodec;
    type Decoder = UnitCodec;

    fn encoder(&mut self) -> Self::Encoder {
        UnitCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        UnitCodec
    }
}

impl tonic::codec::Encoder for UnitCodec {
    type Item = ();
    type Error = tonic::Status;

    fn encode(
        &mut self,
        _item: (),
        _dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl tonic::codec::Decoder for UnitCodec {
    type Item = ();
    type Error = tonic::Status;

    fn decode(
        &mut self,
        _src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<()>, Self::Error> {
        Ok(Some(()))
    }
}

#[tokio::test]
async fn status_in_trailers_after_a_message_is_counted() {
    let registry = registry();
    let (addr, _stop) = serve(GrpcLayer::new(&registry), FailingHealth).await;
    let mut client = client(addr, GrpcClientLayer::new()).await;
    let mut stream = client.watch(check("")).await.unwrap().into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().status, 1);
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(err.message(), "disk on fire");

    let text = eventually(&registry, &total(200, "INTERNAL", WATCH), 1.0).await;
    assert_eq!(sample(&text, &inflight(WATCH)), Some(0.0));
    assert_eq!(sample(&text, &total(200, "OK", WATCH)), None);
}

#[tokio::test]
async fn a_stream_is_in_flight_until_it_ends() {
    let registry = registry();
    let (mut client, mut reporter, _stop) = health(GrpcLayer::new(&registry)).await;
    reporter
        .set_service_status("svc.A", ServingStatus::Serving)
        .await;
    let mut stream = client.watch(check("svc.A")).await.unwrap().into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().status, 1);
    eventually(&registry, &inflight(WATCH), 1.0).await;

    // Clearing the service ends the watch stream: OK in the trailers.
    reporter.clear_service_status("svc.A").await;
    assert!(stream.message().await.unwrap().is_none());
    let text = eventually(&registry, &total(200, "OK", WATCH), 1.0).await;
    assert_eq!(sample(&text, &inflight(WATCH)), Some(0.0));
}

#[tokio::test]
async fn a_dropped_stream_is_cancelled_and_leaves_flight() {
    let registry = registry();
    let (mut client, _reporter, _stop) = health(GrpcLayer::new(&registry)).await;
    // "" is SERVING and never ends: the client hangs up.
    let mut stream = client.watch(check("")).await.unwrap().into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().status, 1);
    eventually(&registry, &inflight(WATCH), 1.0).await;
    drop(stream);

    let text = eventually(&registry, &total(499, "CANCELLED", WATCH), 1.0).await;
    assert_eq!(sample(&text, &inflight(WATCH)), Some(0.0));
    // The connection still works.
    client.check(check("")).await.unwrap();
}

#[tokio::test]
async fn go_grpc_prometheus_preset_names_and_labels() {
    let registry = registry();
    let layer = GrpcLayer::new(&registry)
        .with_names(GrpcMetricNames::go_grpc_prometheus())
        .with_grpc_type(WATCH, GrpcType::ServerStream);
    let (mut client, _reporter, _stop) = health(layer).await;
    client.check(check("")).await.unwrap();
    client.check(check("nope")).await.unwrap_err();
    let err = client.watch(check("nope")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let labels = |t: &str, m: &str| {
        format!(r#"grpc_type="{t}",grpc_service="grpc.health.v1.Health",grpc_method="{m}""#)
    };
    let check_labels = labels("unary", "Check");
    let watch_labels = labels("server_stream", "Watch");
    eventually(
        &registry,
        &format!(r#"grpc_server_handled_total{{{watch_labels},grpc_code="NotFound"}}"#),
        1.0,
    )
    .await;
    let text = eventually(
        &registry,
        &format!(r#"grpc_server_handled_total{{{check_labels},grpc_code="NotFound"}}"#),
        1.0,
    )
    .await;
    for (series, value) in [
        (format!("grpc_server_started_total{{{check_labels}}}"), 2.0),
        (
            format!(r#"grpc_server_handled_total{{{check_labels},grpc_code="OK"}}"#),
            1.0,
        ),
        (
            format!("grpc_server_handling_seconds_count{{{check_labels}}}"),
            2.0,
        ),
        (format!("grpc_server_started_total{{{watch_labels}}}"), 1.0),
    ] {
        assert_eq!(sample(&text, &series), Some(value), "{series}\n{text}");
    }
    assert!(!text.contains("grpc_request_total"), "{text}");
    assert!(!text.contains("grpc_inflight_requests"), "{text}");
}

#[tokio::test]
async fn otel_names_record_the_rpc_conventions_duration_by_status_code() {
    let registry = registry();
    let layer = GrpcLayer::new(&registry).with_names(GrpcMetricNames::otel("harbor_core_"));
    let (mut client, _reporter, _stop) = health(layer).await;
    client.check(check("")).await.unwrap();
    client.check(check("")).await.unwrap();
    client.check(check("nope")).await.unwrap_err();

    let labels = |code: &str| {
        format!(
            r#"rpc_method="grpc.health.v1.Health/Check",rpc_response_status_code="{code}",rpc_system_name="grpc""#
        )
    };
    // NOT_FOUND is no server error: no error_type.
    let not_found = format!(
        "rpc_server_call_duration_seconds_count{{{}}}",
        labels("NOT_FOUND")
    );
    let text = eventually(&registry, &not_found, 1.0).await;
    let ok = format!("rpc_server_call_duration_seconds_count{{{}}}", labels("OK"));
    assert_eq!(sample(&text, &ok), Some(2.0), "{text}");
    // A histogram with the advised buckets, though the registry's durations are summaries.
    assert!(
        text.contains("# TYPE rpc_server_call_duration_seconds histogram"),
        "{text}"
    );
    let bucket = format!(
        r#"rpc_server_call_duration_seconds_bucket{{{},le="0.005"}}"#,
        labels("OK")
    );
    assert!(sample(&text, &bucket).is_some(), "{bucket} in {text}");
    assert!(
        text.contains("harbor_core_grpc_operation_overflow_total 0"),
        "{text}"
    );
    assert!(!text.contains("grpc_request_total"), "{text}");
    assert!(!text.contains("grpc_inflight_requests"), "{text}");
    // The whole registry, not only `?comp=grpc`: no family of another scheme (nor one
    // without a name) is registered.
    let all = registry.render();
    assert!(!all.contains("\n_") && !all.starts_with('_'), "{all}");
    assert!(!all.contains("grpc_server_started_total"), "{all}");
}

#[tokio::test]
async fn client_calls_are_measured_in_both_namings_until_the_stream_ends() {
    let server_registry = registry();
    let (reporter, service) = tonic_health::server::health_reporter();
    let (addr, _stop) = serve(GrpcLayer::new(&server_registry), service).await;
    drop(reporter);
    for (names, ok, not_found) in [
        (
            GrpcMetricNames::client_with_prefix("app_"),
            r#"app_grpc_client_request_total{code="200",grpc_code="OK",operation="grpc.health.v1.Health/Check"}"#,
            r#"app_grpc_client_request_total{code="200",grpc_code="NOT_FOUND",operation="grpc.health.v1.Health/Check"}"#,
        ),
        (
            GrpcMetricNames::otel_client("app_"),
            r#"rpc_client_call_duration_seconds_count{rpc_method="grpc.health.v1.Health/Check",rpc_response_status_code="OK",rpc_system_name="grpc"}"#,
            // On the client every code but OK is an error.
            r#"rpc_client_call_duration_seconds_count{error_type="NOT_FOUND",rpc_method="grpc.health.v1.Health/Check",rpc_response_status_code="NOT_FOUND",rpc_system_name="grpc"}"#,
        ),
    ] {
        let registry = registry();
        let otel = names.is_otel();
        let layer = GrpcClientLayer::new().with_metrics(&registry, names, 100);
        let mut client = client(addr, layer.clone()).await;
        client.check(check("")).await.unwrap();
        client.check(check("")).await.unwrap();
        client.check(check("nope")).await.unwrap_err();
        let text = registry.render_components(&["client"]).unwrap();
        assert_eq!(sample(&text, ok), Some(2.0), "{ok} in {text}");
        assert_eq!(sample(&text, not_found), Some(1.0), "{not_found} in {text}");
        if otel {
            assert!(
                text.contains("# TYPE rpc_client_call_duration_seconds histogram"),
                "{text}"
            );
            assert!(
                text.contains("app_grpc_client_operation_overflow_total 0"),
                "{text}"
            );
        } else {
            let inflight =
                r#"app_grpc_client_inflight_requests{operation="grpc.health.v1.Health/Check"}"#;
            assert_eq!(sample(&text, inflight), Some(0.0), "{text}");
        }

        // A channel to a closed port: no response, UNAVAILABLE (HTTP 500 in towerscope's names).
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let channel = Endpoint::from_shared(format!("http://{closed}"))
            .unwrap()
            .connect_lazy();
        let mut down = HealthClient::new(ServiceBuilder::new().layer(layer).service(channel));
        let err = down.check(check("")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        let text = registry.render_components(&["client"]).unwrap();
        let unavailable = if otel {
            r#"rpc_client_call_duration_seconds_count{error_type="UNAVAILABLE",rpc_method="grpc.health.v1.Health/Check",rpc_response_status_code="UNAVAILABLE",rpc_system_name="grpc"}"#
        } else {
            r#"app_grpc_client_request_total{code="500",grpc_code="UNAVAILABLE",operation="grpc.health.v1.Health/Check"}"#
        };
        assert_eq!(
            sample(&text, unavailable),
            Some(1.0),
            "{unavailable} in {text}"
        );
    }
}

// ---- spans ----

const TRACED: &str =
    "trace: { enabled: true, service_name: grpc-test, otel: { endpoint: '127.0.0.1:1', insecure: true } }";

fn telemetry() -> (Telemetry, InMemorySpanExporter) {
    telemetry_from(TRACED)
}

fn telemetry_from(yaml: &str) -> (Telemetry, InMemorySpanExporter) {
    no_stale_span_interest();
    let config = Config::from_yaml_str(yaml).unwrap();
    let registry = MetricsRegistry::new(&config.metric).unwrap();
    let exporter = InMemorySpanExporter::default();
    let pipeline = TracePipeline::with_exporter(
        &config.trace,
        exporter.clone(),
        "memory",
        &registry,
        &config.metric.prefix(),
    );
    (
        Telemetry::with_pipeline(&config, registry, pipeline).unwrap(),
        exporter,
    )
}

/// Flushes until a span named `name` has been exported (the server ends its span just after
/// the client has the answer).
async fn exported(t: &Telemetry, exporter: &InMemorySpanExporter, name: &str) -> Vec<SpanData> {
    for _ in 0..500 {
        t.trace_pipeline().unwrap().force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        if spans.iter().any(|s| s.name == name) {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no span {name}: {:?}", exporter.get_finished_spans());
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name}"))
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

// Single-threaded: the server's tasks run on this thread, under the test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn server_span_is_a_child_of_the_callers_span_and_carries_the_request_id() {
    let (t, exporter) = telemetry();
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(t.tracing_layer()));
    let (_reporter, service) = tonic_health::server::health_reporter();
    let (addr, _stop) = serve(GrpcLayer::from_telemetry(&t), service).await;
    let client = client(addr, GrpcClientLayer::from_telemetry(&t)).await;

    // The caller is a handler behind RequestIdLayer: its id goes along with the call.
    let handler = ServiceBuilder::new()
        .layer(RequestIdLayer::new())
        .service(service_fn(move |_req: Request<()>| {
            let mut client = client.clone();
            async move {
                let res = client.check(check("")).await.unwrap();
                Ok::<_, Infallible>(Response::new(res.metadata().clone()))
            }
        }));
    let caller = tracing::info_span!("caller");
    let trace_id = caller.context().span().span_context().trace_id();
    let req = Request::get("/")
        .header("x-request-id", "req-grpc-7")
        .body(())
        .unwrap();
    let res = handler.oneshot(req).instrument(caller).await.unwrap();
    // The server's RequestIdLayer kept the forwarded id and echoed it.
    assert_eq!(res.body().get("x-request-id").unwrap(), "req-grpc-7");

    let spans = exported(&t, &exporter, CHECK).await;
    let caller = named(&spans, "caller");
    let server = named(&spans, CHECK);
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(server.span_context.trace_id(), trace_id);
    assert_eq!(caller.span_context.trace_id(), trace_id);
    assert_eq!(server.parent_span_id, caller.span_context.span_id());
    assert!(server.parent_span_is_remote);
    for (key, value) in [
        ("rpc.system", "grpc"),
        ("rpc.service", "grpc.health.v1.Health"),
        ("rpc.method", "Check"),
        ("rpc.grpc.status_code", "0"),
        ("request_id", "req-grpc-7"),
    ] {
        assert_eq!(attr(server, key).as_deref(), Some(value), "{key}");
    }
    assert_eq!(server.status, Status::Unset);
}

#[tokio::test(flavor = "current_thread")]
async fn span_status_follows_the_grpc_code() {
    let (t, exporter) = telemetry();
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(t.tracing_layer()));
    let (addr, _stop) = serve(GrpcLayer::from_telemetry(&t), FailingHealth).await;
    let mut failing = client(addr, GrpcClientLayer::from_telemetry(&t)).await;
    let mut stream = failing.watch(check("")).await.unwrap().into_inner();
    while stream.message().await.is_ok_and(|m| m.is_some()) {}
    let spans = exported(&t, &exporter, WATCH).await;
    let watch = named(&spans, WATCH);
    assert_eq!(attr(watch, "rpc.grpc.status_code").as_deref(), Some("13"));
    assert_eq!(watch.status, Status::error("disk on fire"));
    // A client without a span of its own sends no context: the server span is a root.
    assert_eq!(watch.parent_span_id, SpanId::INVALID);

    // NOT_FOUND is the caller's problem: no error on the server span.
    exporter.reset();
    let (mut client, _reporter, _stop) = health(GrpcLayer::from_telemetry(&t)).await;
    client.check(check("nope")).await.unwrap_err();
    let spans = exported(&t, &exporter, CHECK).await;
    let check_span = named(&spans, CHECK);
    assert_eq!(
        attr(check_span, "rpc.grpc.status_code").as_deref(),
        Some("5")
    );
    assert_eq!(check_span.status, Status::Unset);
}

/// `GrpcLayer::from_telemetry` decides sampling before it builds the span, like
/// `Telemetry::layer`: the ratio is drawn once, and sampled-out calls export nothing.
#[tokio::test(flavor = "current_thread")]
async fn the_sample_rate_is_drawn_once_per_call() {
    let (t, exporter) = telemetry_from(
        "trace: { enabled: true, sample_rate: 0.5, service_name: grpc-test, otel: { endpoint: '127.0.0.1:1', insecure: true } }",
    );
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(t.tracing_layer()));
    let (mut client, _reporter, _stop) = health(GrpcLayer::from_telemetry(&t)).await;
    const CALLS: usize = 200;
    for _ in 0..CALLS {
        client.check(check("")).await.unwrap();
    }
    // The server ends its span just after the client has the answer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    t.trace_pipeline().unwrap().force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let servers = spans.iter().filter(|s| s.name == CHECK).count();
    // Expected 100 (σ ≈ 7); drawing twice would give ~50.
    assert!(
        (60..=140).contains(&servers),
        "{servers} of {CALLS} calls sampled at 0.5"
    );
}

// ---- the layer alone, driven with service_fn ----

async fn drive(
    layer: GrpcLayer,
    path: &str,
    res: impl Fn() -> Response<Frames> + Clone + Send + 'static,
) {
    let svc = ServiceBuilder::new().layer(layer).service(service_fn(
        move |_req: Request<RequestBody<()>>| {
            let res = res.clone();
            async move { Ok::<_, Infallible>(res()) }
        },
    ));
    let res = svc
        .oneshot(Request::post(path).body(()).unwrap())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
}

fn grpc_response(frames: impl IntoIterator<Item = Frame<Bytes>>) -> Response<Frames> {
    Response::builder()
        .header("content-type", "application/grpc")
        .body(Frames::new(frames))
        .unwrap()
}

#[tokio::test]
async fn trailers_after_a_data_frame_give_the_code() {
    let registry = registry();
    drive(GrpcLayer::new(&registry), "/pkg.Svc/Do", || {
        grpc_response([serving_message(), trailers(&[("grpc-status", "13")])])
    })
    .await;
    let text = registry.render_components(&["grpc"]).unwrap();
    assert_eq!(
        sample(&text, &total(200, "INTERNAL", "pkg.Svc/Do")),
        Some(1.0)
    );
    assert_eq!(sample(&text, &inflight("pkg.Svc/Do")), Some(0.0));
}

#[tokio::test]
async fn missing_or_garbled_status_is_derived_or_unknown() {
    let registry = registry();
    let layer = GrpcLayer::new(&registry);
    // Unparsable grpc-status.
    drive(layer.clone(), "/pkg.Svc/Do", || {
        grpc_response([trailers(&[("grpc-status", "thirteen")])])
    })
    .await;
    // A 200 stream that ends without any status.
    drive(layer.clone(), "/pkg.Svc/Do", || {
        grpc_response([serving_message()])
    })
    .await;
    // A proxy's 503 without grpc-status.
    drive(layer.clone(), "/pkg.Svc/Do", || {
        let mut res = grpc_response([]);
        *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        res
    })
    .await;
    // Trailers-only: the status is in the headers.
    drive(layer, "/pkg.Svc/Do", || {
        let mut res = grpc_response([]);
        res.headers_mut()
            .insert("grpc-status", "7".parse().unwrap());
        res
    })
    .await;
    let text = registry.render_components(&["grpc"]).unwrap();
    assert_eq!(
        sample(&text, &total(200, "UNKNOWN", "pkg.Svc/Do")),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, &total(503, "UNAVAILABLE", "pkg.Svc/Do")),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, &total(200, "PERMISSION_DENIED", "pkg.Svc/Do")),
        Some(1.0)
    );
}

/// A body that sends one message and then waits forever, like a watch stream.
struct Endless(bool);

impl Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if std::mem::replace(&mut self.0, true) {
            Poll::Pending
        } else {
            Poll::Ready(Some(Ok(serving_message())))
        }
    }
}

#[tokio::test]
async fn a_body_dropped_mid_stream_is_cancelled() {
    let registry = registry();
    let svc = ServiceBuilder::new()
        .layer(GrpcLayer::new(&registry))
        .service(service_fn(|_req: Request<RequestBody<()>>| async {
            Ok::<_, Infallible>(Response::new(Endless(false)))
        }));
    let res = svc
        .oneshot(Request::post("/pkg.Svc/Stream").body(()).unwrap())
        .await
        .unwrap();
    let mut body = res.into_body();
    body.frame().await.unwrap().unwrap();
    let text = registry.render_components(&["grpc"]).unwrap();
    assert_eq!(sample(&text, &inflight("pkg.Svc/Stream")), Some(1.0));
    drop(body);
    let text = registry.render_components(&["grpc"]).unwrap();
    assert_eq!(sample(&text, &inflight("pkg.Svc/Stream")), Some(0.0));
    assert_eq!(
        sample(&text, &total(499, "CANCELLED", "pkg.Svc/Stream")),
        Some(1.0)
    );
}

async fn panics(_req: Request<RequestBody<()>>) -> Result<Response<Frames>, Infallible> {
    panic!("the service panicked on purpose")
}

#[tokio::test]
async fn a_service_panicking_through_the_layer_is_500_unknown() {
    let registry = registry();
    let svc = ServiceBuilder::new()
        .layer(GrpcLayer::new(&registry))
        .service(service_fn(panics));
    let req = Request::post("/pkg.Svc/Panic").body(()).unwrap();
    let call = tokio::spawn(svc.oneshot(req));
    assert!(matches!(call.await, Err(e) if e.is_panic()));
    let text = registry.render_components(&["grpc"]).unwrap();
    assert_eq!(
        sample(&text, &total(500, "UNKNOWN", "pkg.Svc/Panic")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, &inflight("pkg.Svc/Panic")), Some(0.0));
    assert!(!text.contains(r#"grpc_code="CANCELLED""#), "{text}");
}

#[tokio::test]
async fn non_grpc_paths_are_unknown_and_operations_are_capped() {
    let registry = registry();
    let layer = GrpcLayer::new(&registry).with_max_operations(1);
    let ok = || grpc_response([trailers(&[("grpc-status", "0")])]);
    for path in [
        "/a.A/One",
        "/b.B/Two",
        "/c.C/Three",
        "/not/a/grpc/path",
        "/",
    ] {
        drive(layer.clone(), path, ok).await;
    }
    let text = registry.render_components(&["grpc"]).unwrap();
    assert_eq!(sample(&text, &total(200, "OK", "a.A/One")), Some(1.0));
    assert_eq!(sample(&text, &total(200, "OK", "_overflow")), Some(2.0));
    assert_eq!(sample(&text, &total(200, "OK", "unknown")), Some(2.0));
    assert_eq!(sample(&text, "grpc_operation_overflow_total"), Some(2.0));
    assert!(!text.contains("b.B/Two"), "{text}");
}

#[tokio::test]
async fn from_telemetry_uses_the_configured_prefix() {
    let config = Config::from_yaml_str("metric: { namespace: harbor, subsystem: core }").unwrap();
    let t = Telemetry::init_local(&config).unwrap();
    drive(GrpcLayer::from_telemetry(&t), "/pkg.Svc/Do", || {
        grpc_response([trailers(&[("grpc-status", "0")])])
    })
    .await;
    let text = t.registry().render_components(&["grpc"]).unwrap();
    assert_eq!(
        sample(
            &text,
            r#"harbor_core_grpc_request_total{code="200",grpc_code="OK",operation="pkg.Svc/Do"}"#
        ),
        Some(1.0)
    );
    assert!(!text.contains("\ngrpc_"), "{text}");
}

#[tokio::test]
async fn client_layer_writes_context_and_request_id_but_keeps_a_given_id() {
    // Answers with the request's headers in the response extensions.
    let seen = |req: Request<tonic::body::Body>| async move {
        let mut res = Response::new(http_body_util::Empty::<Bytes>::new());
        res.extensions_mut().insert(req.headers().clone());
        Ok::<_, Infallible>(res)
    };
    let headers_of = |res: Response<_>| res.extensions().get::<http::HeaderMap>().unwrap().clone();
    let (t, _exporter) = telemetry();
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(t.tracing_layer()));
    let client = ServiceBuilder::new()
        .layer(GrpcClientLayer::new())
        .service(service_fn(seen));

    let span = tracing::info_span!("caller");
    let sc = span.context().span().span_context().clone();
    let headers = headers_of(
        client
            .clone()
            .oneshot(Request::new(tonic::body::Body::empty()))
            .instrument(span)
            .await
            .unwrap(),
    );
    assert_eq!(
        headers["traceparent"],
        format!("00-{}-{}-01", sc.trace_id(), sc.span_id())
    );
    assert!(headers.get("x-request-id").is_none());

    // Inside a request: its id is forwarded, unless the call sets its own.
    let handler = ServiceBuilder::new()
        .layer(RequestIdLayer::new())
        .service(service_fn(move |_req: Request<()>| {
            let client = client.clone();
            async move {
                let call = Request::new(tonic::body::Body::empty());
                let forwarded = headers_of(client.clone().oneshot(call).await?);
                let own = Request::builder()
                    .header("x-request-id", "own-id")
                    .body(tonic::body::Body::empty())
                    .unwrap();
                let kept = headers_of(client.oneshot(own).await?);
                Ok::<_, Infallible>(Response::new((forwarded, kept)))
            }
        }));
    let req = Request::get("/")
        .header("x-request-id", "outer-id")
        .body(())
        .unwrap();
    let (forwarded, kept) = handler.oneshot(req).await.unwrap().into_body();
    assert_eq!(forwarded["x-request-id"], "outer-id");
    assert_eq!(kept["x-request-id"], "own-id");
}

#[tokio::test(flavor = "current_thread")]
async fn a_sampled_calls_server_span_is_the_exemplar_of_its_series() {
    let (t, exporter) = telemetry_from(
        "metric: { buckets: [0.5, 5] }\n\
         trace: { enabled: true, service_name: grpc-test, otel: { endpoint: '127.0.0.1:1', insecure: true } }",
    );
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(t.tracing_layer()));
    let (_reporter, service) = tonic_health::server::health_reporter();
    let (addr, _stop) = serve(GrpcLayer::from_telemetry(&t), service).await;
    let mut client = client(addr, GrpcClientLayer::from_telemetry(&t)).await;
    client.check(check("")).await.unwrap();
    let spans = exported(&t, &exporter, CHECK).await;
    let server = named(&spans, CHECK);
    let ids = format!(
        "# {{trace_id=\"{}\",span_id=\"{}\"}}",
        server.span_context.trace_id(),
        server.span_context.span_id()
    );
    let text = t.registry().render_openmetrics(&["grpc"]).unwrap();
    for family in [
        "grpc_request_total{",
        "grpc_request_duration_seconds_bucket{",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(family) && l.contains(" # {"))
            .unwrap_or_else(|| panic!("no exemplar on {family}: {text}"));
        assert!(line.contains(&ids), "{line} should carry {ids}");
    }
}

// ---- messages ----

const BIDI: &str = "test.Echo/Bidi";

/// Messages as raw bytes: a streaming service without codegen.
#[derive(Clone, Copy, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(bytes::Buf::copy_to_bytes(
            src,
            bytes::Buf::remaining(src),
        )))
    }
}

/// `test.Echo/Bidi`: answers each message with itself, then one `done` message.
#[derive(Clone)]
struct Echo;

impl NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

type Answer = Pin<
    Box<dyn std::future::Future<Output = Result<Response<tonic::body::Body>, Infallible>> + Send>,
>;

impl Service<Request<tonic::body::Body>> for Echo {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        let echo = tower::service_fn(|req: tonic::Request<tonic::Streaming<Bytes>>| {
            use tonic::codegen::tokio_stream::{self, StreamExt};
            let done = tokio_stream::once(Ok(Bytes::from_static(b"done")));
            ready(Ok::<_, tonic::Status>(tonic::Response::new(
                req.into_inner().chain(done),
            )))
        });
        Box::pin(async move { Ok(tonic::server::Grpc::new(Raw).streaming(echo, req).await) })
    }
}

/// `messages` sent on one `test.Echo/Bidi` call through `channel`; the answers.
async fn bidi(channel: GrpcClientService<Channel>, messages: Vec<Bytes>) -> Vec<Bytes> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/test.Echo/Bidi");
    let stream = tonic::codegen::tokio_stream::iter(messages);
    let mut answers = grpc
        .streaming(tonic::Request::new(stream), path, Raw)
        .await
        .unwrap()
        .into_inner();
    let mut all = Vec::new();
    while let Some(message) = answers.message().await.unwrap() {
        all.push(message);
    }
    all
}

async fn echo_channel(addr: SocketAddr, layer: GrpcClientLayer) -> GrpcClientService<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    ServiceBuilder::new().layer(layer).service(channel)
}

/// N messages of mixed sizes: empty, small, and one that spans several HTTP/2 frames.
fn messages(n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| match i % 3 {
            0 => Bytes::new(),
            1 => Bytes::from(vec![b'x'; 100_000]),
            _ => Bytes::from(format!("message {i}")),
        })
        .collect()
}

#[tokio::test]
async fn streamed_and_unary_messages_are_counted_exactly_on_server_and_client() {
    const N: usize = 25;
    let server = registry();
    let (addr, _stop) = serve(GrpcLayer::new(&server), Echo).await;
    let client_registry = registry();
    let layer = GrpcClientLayer::new().with_registry(&client_registry);
    let answers = bidi(echo_channel(addr, layer.clone()).await, messages(N)).await;
    assert_eq!(answers.len(), N + 1);

    let op = format!(r#"{{operation="{BIDI}"}}"#);
    let text = eventually(&server, &format!("grpc_messages_sent_total{op}"), 26.0).await;
    assert_eq!(
        sample(&text, &format!("grpc_messages_received_total{op}")),
        Some(25.0),
        "{text}"
    );
    let text = client_registry.render_components(&["client"]).unwrap();
    for (series, value) in [
        (format!("grpc_client_messages_sent_total{op}"), 25.0),
        (format!("grpc_client_messages_received_total{op}"), 26.0),
    ] {
        assert_eq!(sample(&text, &series), Some(value), "{series}\n{text}");
    }

    // A unary call: one message each way.
    let (reporter, health) = tonic_health::server::health_reporter();
    let (addr, _stop) = serve(GrpcLayer::new(&server), health).await;
    drop(reporter);
    let mut client = client(addr, layer).await;
    client.check(check("")).await.unwrap();
    let op = format!(r#"{{operation="{CHECK}"}}"#);
    let text = eventually(&server, &format!("grpc_messages_sent_total{op}"), 1.0).await;
    assert_eq!(
        sample(&text, &format!("grpc_messages_received_total{op}")),
        Some(1.0)
    );
    let text = client_registry.render_components(&["client"]).unwrap();
    assert_eq!(
        sample(&text, &format!("grpc_client_messages_sent_total{op}")),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, &format!("grpc_client_messages_received_total{op}")),
        Some(1.0)
    );
}

#[tokio::test]
async fn go_grpc_prometheus_message_counters_on_server_and_client() {
    const N: usize = 10;
    let server = registry();
    let layer = GrpcLayer::new(&server)
        .with_names(GrpcMetricNames::go_grpc_prometheus())
        .with_grpc_type(BIDI, GrpcType::BidiStream);
    let (addr, _stop) = serve(layer, Echo).await;
    let client_registry = registry();
    let layer = GrpcClientLayer::new()
        .with_metrics(
            &client_registry,
            GrpcMetricNames::go_grpc_prometheus_client(),
            100,
        )
        .with_grpc_type(BIDI, GrpcType::BidiStream);
    bidi(echo_channel(addr, layer).await, messages(N)).await;

    let labels = r#"{grpc_type="bidi_stream",grpc_service="test.Echo",grpc_method="Bidi"}"#;
    let text = eventually(
        &server,
        &format!("grpc_server_msg_sent_total{labels}"),
        11.0,
    )
    .await;
    assert_eq!(
        sample(&text, &format!("grpc_server_msg_received_total{labels}")),
        Some(10.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE grpc_server_msg_received_total counter"),
        "{text}"
    );
    assert!(!text.contains("grpc_messages_"), "{text}");
    let text = client_registry.render_components(&["client"]).unwrap();
    for (series, value) in [
        (format!("grpc_client_msg_sent_total{labels}"), 10.0),
        (format!("grpc_client_msg_received_total{labels}"), 11.0),
        (format!("grpc_client_started_total{labels}"), 1.0),
        (
            r#"grpc_client_handled_total{grpc_type="bidi_stream",grpc_service="test.Echo",grpc_method="Bidi",grpc_code="OK"}"#.to_owned(),
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, &series), Some(value), "{series}\n{text}");
    }
    assert!(
        text.contains("# TYPE grpc_client_msg_sent_total counter"),
        "{text}"
    );
}

#[tokio::test]
async fn a_long_stream_shows_its_progress_before_it_ends() {
    let server = registry();
    let (addr, _stop) = serve(GrpcLayer::new(&server), Echo).await;
    let mut grpc = tonic::client::Grpc::new(echo_channel(addr, GrpcClientLayer::new()).await);
    grpc.ready().await.unwrap();
    let (send, receive) = tokio::sync::mpsc::channel::<Bytes>(8);
    let stream = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(receive);
    let path = http::uri::PathAndQuery::from_static("/test.Echo/Bidi");
    let mut answers = grpc
        .streaming(tonic::Request::new(stream), path, Raw)
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        send.send(Bytes::from_static(b"tick")).await.unwrap();
        answers.message().await.unwrap().unwrap();
    }
    let op = format!(r#"{{operation="{BIDI}"}}"#);
    let text = eventually(&server, &format!("grpc_messages_sent_total{op}"), 3.0).await;
    assert_eq!(
        sample(&text, &format!("grpc_messages_received_total{op}")),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, &inflight(BIDI)),
        Some(1.0),
        "still open: {text}"
    );
    drop(send);
    while answers.message().await.unwrap().is_some() {}
    eventually(&server, &format!("grpc_messages_sent_total{op}"), 4.0).await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_server_span_carries_the_message_counts() {
    let (t, exporter) = telemetry();
    let (addr, _stop) = serve(GrpcLayer::from_telemetry(&t), Echo).await;
    bidi(
        echo_channel(addr, GrpcClientLayer::new()).await,
        messages(7),
    )
    .await;
    let spans = exported(&t, &exporter, BIDI).await;
    let span = named(&spans, BIDI);
    assert_eq!(
        attr(span, "rpc.message.received.count").as_deref(),
        Some("7")
    );
    assert_eq!(attr(span, "rpc.message.sent.count").as_deref(), Some("8"));
}

#[tokio::test]
async fn hostile_bodies_never_over_count() {
    let registry = registry();
    let layer = GrpcLayer::new(&registry);
    // The response: one whole message, then a prefix announcing 4 GiB - 1 bytes and a few
    // of them; the request: one message split over two frames, then one cut in its payload.
    let hostile = || {
        grpc_response([
            serving_message(),
            Frame::data(Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3])),
        ])
    };
    let svc = ServiceBuilder::new().layer(layer).service(service_fn(
        move |req: Request<RequestBody<Frames>>| {
            async move {
                // The service reads the request to its end, as tonic does.
                let _ = req.into_body().collect().await;
                Ok::<_, Infallible>(hostile())
            }
        },
    ));
    let request = Frames::new([
        Frame::data(Bytes::from_static(&[0, 0, 0, 0, 2, 8])),
        Frame::data(Bytes::from_static(&[1, 0, 0, 0, 0, 9, 1])),
    ]);
    let res = svc
        .oneshot(Request::post("/pkg.Svc/Hostile").body(request).unwrap())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let text = registry.render_components(&["grpc"]).unwrap();
    let op = r#"{operation="pkg.Svc/Hostile"}"#;
    assert_eq!(
        sample(&text, &format!("grpc_messages_received_total{op}")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!("grpc_messages_sent_total{op}")),
        Some(1.0),
        "{text}"
    );
}

/// The client layer writes W3C Trace Context level 2: a caller's `random` flag and a
/// `tracestate` key opentelemetry's own `TraceState` refuses (a 14-character system id) go on.
#[tokio::test]
async fn client_layer_forwards_the_random_flag_and_the_whole_tracestate() {
    use towerscope::trace::propagation::{composite, extract, Propagator};
    let seen = |req: Request<tonic::body::Body>| async move {
        let mut res = Response::new(http_body_util::Empty::<Bytes>::new());
        res.extensions_mut().insert(req.headers().clone());
        Ok::<_, Infallible>(res)
    };
    let key = format!("{}@{}", "t".repeat(241), "v".repeat(14));
    for flags in ["02", "03"] {
        let traceparent = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}");
        let mut incoming = HeaderMap::new();
        incoming.insert("traceparent", traceparent.parse().unwrap());
        incoming.insert("tracestate", format!("{key}=1,b=2").parse().unwrap());
        let cx = extract(&composite(&[Propagator::TraceContext]), &incoming);
        let _attached = cx.attach();
        let res = ServiceBuilder::new()
            .layer(GrpcClientLayer::new())
            .service(service_fn(seen))
            .oneshot(Request::new(tonic::body::Body::empty()))
            .await
            .unwrap();
        let headers = res.extensions().get::<HeaderMap>().unwrap();
        assert_eq!(headers["traceparent"], traceparent.as_str());
        assert_eq!(headers["tracestate"], format!("{key}=1,b=2").as_str());
    }
}
