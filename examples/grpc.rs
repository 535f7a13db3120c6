//! Run with: cargo run --example grpc
//!
//! A tonic-health service (`grpc.health.v1.Health`) behind `GrpcLayer`, called once by a tonic
//! client through `GrpcClientLayer`, then the `grpc_*` families, as `/metrics?comp=grpc` would
//! serve them. Look at `grpc_request_total{code="200",grpc_code="OK",
//! operation="grpc.health.v1.Health/Check"}`: the operation is `package.Service/Method`, `code`
//! the HTTP status and `grpc_code` the status from the trailers.

use tonic::transport::{server::TcpIncoming, Endpoint, Server};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
use tower::ServiceBuilder;
use towerscope::{
    grpc::{GrpcClientLayer, GrpcLayer},
    Config, RequestIdLayer, Telemetry,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_yaml_str("metric: { namespace: demo, subsystem: api }")?;
    let telemetry = Telemetry::init_local(&config)?;

    // The server: tonic-health (every service reported SERVING) behind towerscope's layers.
    let (_reporter, health) = tonic_health::server::health_reporter();
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse()?)?;
    let addr = incoming.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .layer(RequestIdLayer::from_telemetry(&telemetry))
            .layer(GrpcLayer::from_telemetry(&telemetry))
            .add_service(health)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );

    // The client: a channel with `GrpcClientLayer`, which passes on the trace context and the
    // current request id.
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = HealthClient::new(
        ServiceBuilder::new()
            .layer(GrpcClientLayer::from_telemetry(&telemetry))
            .service(channel),
    );
    let request = HealthCheckRequest {
        service: String::new(), // the server as a whole
    };
    let status = client.check(request).await?.into_inner().status();
    println!("Health/Check on {addr}: {status:?}\n");

    // Closing the client's connection lets the server stop gracefully; by then the call is
    // settled and counted.
    drop(client);
    let _ = stop.send(());
    server.await??;

    println!("{}", telemetry.registry().render_components(&["grpc"])?);
    Ok(())
}
