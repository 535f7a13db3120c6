//! Run with: cargo run --example grpc_stream [-- --port PORT --metrics-port PORT]
//!
//! A streaming gRPC server behind `GrpcLayer` with go-grpc-prometheus' names, for a real gRPC
//! client to call (interop/grpc_stream_e2e.py drives it with Python's grpcio). Messages are raw
//! bytes (no protobuf, no codegen); the service is `interop.Echo`:
//!
//! | method | type | answers |
//! |---|---|---|
//! | `interop.Echo/Bidi` | bidirectional streaming | each message with itself, as it comes |
//! | `interop.Echo/Collect` | client streaming | one message when the client's stream ends: `<messages> <bytes>` in ASCII |
//! | `interop.Echo/Unary` | unary | the message itself |
//!
//! Any other method of the service is `UNIMPLEMENTED`. Both servers bind 127.0.0.1, on the
//! given ports or on ports chosen by the system (the default, `0`); the example prints one line,
//! `grpc_stream: grpc 127.0.0.1:<port> metrics http://127.0.0.1:<port>/metrics`, then serves
//! until SIGTERM or Ctrl-C. The families are `grpc_server_started_total`,
//! `grpc_server_handled_total`, `grpc_server_handling_seconds`, `grpc_server_msg_received_total`
//! and `grpc_server_msg_sent_total`, labelled `grpc_type`, `grpc_service`, `grpc_method` (and
//! `grpc_code` on the handled counter).

use std::{
    convert::Infallible,
    future::{ready, Future},
    io::Write,
    net::SocketAddr,
    pin::Pin,
    process::ExitCode,
    task::{Context, Poll},
};

use bytes::{Buf, BufMut, Bytes};
use http::{Request, Response};
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::tokio_stream::StreamExt,
    server::NamedService,
    transport::{server::TcpIncoming, Server},
    Status, Streaming,
};
use towerscope::{
    grpc::{GrpcLayer, GrpcMetricNames, GrpcType},
    metrics::MetricsServer,
    Config, Telemetry,
};

const USAGE: &str = "usage: grpc_stream [--port PORT] [--metrics-port PORT]";

/// Messages as raw bytes: what the client sends is what the service sees.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
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

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// `interop.Echo`: the three methods of the table above.
#[derive(Clone)]
struct Echo;

impl NamedService for Echo {
    const NAME: &'static str = "interop.Echo";
}

type Answer = Pin<Box<dyn Future<Output = Result<Response<tonic::body::Body>, Infallible>> + Send>>;

impl tower::Service<Request<tonic::body::Body>> for Echo {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        match req.uri().path() {
            "/interop.Echo/Bidi" => {
                let echo = tower::service_fn(|req: tonic::Request<Streaming<Bytes>>| {
                    ready(Ok::<_, Status>(tonic::Response::new(req.into_inner())))
                });
                Box::pin(
                    async move { Ok(tonic::server::Grpc::new(Raw).streaming(echo, req).await) },
                )
            }
            "/interop.Echo/Collect" => {
                let collect = tower::service_fn(|req: tonic::Request<Streaming<Bytes>>| async {
                    let mut stream = req.into_inner();
                    let (mut messages, mut bytes) = (0_u64, 0_u64);
                    while let Some(message) = stream.next().await {
                        messages += 1;
                        bytes += message?.len() as u64;
                    }
                    Ok(tonic::Response::new(Bytes::from(format!(
                        "{messages} {bytes}"
                    ))))
                });
                Box::pin(async move {
                    Ok(tonic::server::Grpc::new(Raw)
                        .client_streaming(collect, req)
                        .await)
                })
            }
            "/interop.Echo/Unary" => {
                let echo = tower::service_fn(|req: tonic::Request<Bytes>| {
                    ready(Ok::<_, Status>(tonic::Response::new(req.into_inner())))
                });
                Box::pin(async move { Ok(tonic::server::Grpc::new(Raw).unary(echo, req).await) })
            }
            _ => Box::pin(ready(Ok(
                Status::unimplemented("no such method").into_http()
            ))),
        }
    }
}

struct Args {
    port: u16,
    metrics_port: u16,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        port: 0,
        metrics_port: 0,
    };
    while let Some(arg) = args.next() {
        let slot = match arg.as_str() {
            "--port" => &mut parsed.port,
            "--metrics-port" => &mut parsed.metrics_port,
            _ => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
        };
        let value = args.next().ok_or_else(|| format!("{arg} needs a port"))?;
        *slot = value
            .parse()
            .map_err(|_| format!("{arg}: {value:?} is not a port"))?;
    }
    Ok(parsed)
}

async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let telemetry = Telemetry::init_local(&Config::default())?;
    let layer = GrpcLayer::from_telemetry(&telemetry)
        .with_names(GrpcMetricNames::go_grpc_prometheus())
        .with_grpc_type("interop.Echo/Bidi", GrpcType::BidiStream)
        .with_grpc_type("interop.Echo/Collect", GrpcType::ClientStream)
        .with_grpc_type("interop.Echo/Unary", GrpcType::Unary);
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let metrics = MetricsServer::bind_endpoint(
        loopback(args.metrics_port),
        "/metrics",
        telemetry.metrics_endpoint(),
    )
    .await?;
    let incoming = TcpIncoming::bind(loopback(args.port))?;
    let addr = incoming.local_addr()?;
    println!(
        "grpc_stream: grpc {addr} metrics http://{}/metrics",
        metrics.local_addr()
    );
    std::io::stdout().flush()?;
    Server::builder()
        .layer(layer)
        .add_service(Echo)
        .serve_with_incoming_shutdown(incoming, stop_signal())
        .await?;
    metrics.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("grpc_stream: {message}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("grpc_stream: {err}");
            ExitCode::FAILURE
        }
    }
}
