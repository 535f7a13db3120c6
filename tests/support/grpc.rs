//! gRPC helpers: a tonic server on loopback behind `RequestIdLayer` and a `GrpcLayer`, a
//! tonic-health client through a `GrpcClientLayer`, telemetry with in-memory spans.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use http::{Request, Response};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use tonic::{
    server::NamedService,
    transport::{server::TcpIncoming, Channel, Endpoint, Server},
};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
use tower::{Service, ServiceBuilder};
use towerscope::{
    config::MetricConfig,
    grpc::{GrpcClientLayer, GrpcClientService, GrpcLayer},
    metrics::MetricsRegistry,
    request_id::RequestIdLayer,
    Telemetry,
};

use super::{no_stale_span_interest, sample};

pub const CHECK: &str = "grpc.health.v1.Health/Check";
pub const WATCH: &str = "grpc.health.v1.Health/Watch";

pub type Client = HealthClient<GrpcClientService<Channel>>;

/// Serves `svc` on a free loopback port behind `RequestIdLayer` and `layer`; the server stops
/// when the returned sender is dropped.
pub async fn serve<S>(layer: GrpcLayer, svc: S) -> (SocketAddr, tokio::sync::oneshot::Sender<()>)
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

/// A tonic-health client of `addr` through `layer`.
pub async fn client(addr: SocketAddr, layer: GrpcClientLayer) -> Client {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(ServiceBuilder::new().layer(layer).service(channel))
}

pub fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

pub fn registry() -> MetricsRegistry {
    no_stale_span_interest();
    MetricsRegistry::new(&MetricConfig::default()).unwrap()
}

/// Waits (up to 5 s) until `series` has `value` in the registry's `component`, which the
/// server may update just after the client has its answer; returns the component's text.
pub async fn eventually(
    registry: &MetricsRegistry,
    component: &str,
    series: &str,
    value: f64,
) -> String {
    for _ in 0..500 {
        let text = registry.render_components(&[component]).unwrap();
        if sample(&text, series) == Some(value) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{series} never reached {value}:\n{}",
        registry.render_components(&[component]).unwrap()
    );
}

/// Telemetry from `yaml` whose spans go to an in-memory exporter.
pub fn telemetry(yaml: &str) -> (Telemetry, InMemorySpanExporter) {
    no_stale_span_interest();
    super::in_memory_telemetry(yaml)
}

/// Flushes until a span named `name` has been exported (the server ends its span just after
/// the client has the answer); every span exported so far.
pub async fn exported(t: &Telemetry, exporter: &InMemorySpanExporter, name: &str) -> Vec<SpanData> {
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
