//! Run with: cargo run --example w3c_service [-- --port PORT] [--context-host HOST]...
//!
//! The test service of the W3C Trace Context test suite (`interop/w3c/test.py`, driven by
//! `interop/w3c_e2e.py`): an axum server behind `Telemetry::layer()` whose `POST /test` takes
//! a JSON array `[{"url": ..., "arguments": [...]}, ...]` and, for each element in order,
//! POSTs `arguments` as JSON to `url` through towerscope's instrumented reqwest client. The
//! suite sends `traceparent` and `tracestate` to `/test` and reads what arrives at `url`: the
//! server layer continues the caller's trace, each outgoing call is a client span of its own
//! (a new `parent-id`), and the context goes out with `W3cPropagator`, the default of
//! `trace.propagators`.
//!
//! `tracestate` goes only to the hosts the client allows ([`with_context_hosts`]): the
//! `--context-host` arguments, by default `127.0.0.1` and `localhost`, where the suite's
//! harness listens. Tracing is on and samples every trace (`sample_rate: 1`, parent-based);
//! the spans are exported to an exporter that drops them, so the example needs no collector
//! (the `otel:` block below only satisfies the configuration's "one exporter" rule; nothing
//! is sent there).
//!
//! It binds 127.0.0.1 on `--port` (default `0`: a port chosen by the system), prints one
//! line, `w3c_service: http://127.0.0.1:<port>/test`, and serves until SIGTERM or Ctrl-C.
//! `/test` answers 200 with `{"calls": N}`, or 400 for a body that is not such an array; a
//! call that fails is logged on stderr and the next one is still made.
//!
//! [`with_context_hosts`]: towerscope::client::ClientMiddleware::with_context_hosts

use std::{io::Write, net::SocketAddr, process::ExitCode, time::Duration};

use axum::{
    body::Bytes,
    extract::State,
    http::{header::CONTENT_TYPE, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{SpanData, SpanExporter},
};
use towerscope::{
    client::{instrumented_client_with, reqwest, ClientMiddleware, ClientWithMiddleware},
    trace::TracePipeline,
    Config, MetricsRegistry, Telemetry,
};
use tracing_subscriber::layer::SubscriberExt;

const USAGE: &str = "usage: w3c_service [--port PORT] [--context-host HOST]...";

/// Tracing on, every trace sampled; W3C Trace Context is the default propagator.
const CONFIG: &str = "
metric: { namespace: w3c, subsystem: service }
trace:
  enabled: true
  sample_rate: 1
  otel: { endpoint: '127.0.0.1:1', insecure: true }
";

/// How long one call to the harness may take (the suite waits 5 seconds per test).
const CALL_TIMEOUT: Duration = Duration::from_secs(4);

/// Takes every batch of spans and drops it: nothing leaves the process.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        Ok(())
    }
}

#[derive(Debug)]
struct Args {
    port: u16,
    context_hosts: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut port, mut context_hosts) = (0, Vec::new());
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))?;
        match arg.as_str() {
            "--port" => {
                port = value
                    .parse()
                    .map_err(|_| format!("--port: {value:?} is not a port"))?;
            }
            "--context-host" => context_hosts.push(value),
            _ => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
        }
    }
    if context_hosts.is_empty() {
        context_hosts = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    }
    Ok(Args {
        port,
        context_hosts,
    })
}

/// One instruction of the harness: POST `arguments` to `url`.
#[derive(Debug, serde::Deserialize)]
struct Call {
    url: String,
    #[serde(default)]
    arguments: serde_json::Value,
}

/// `POST /test`: each call in order, through the instrumented client, inside the request's
/// server span (so each is a client span in the caller's trace).
async fn test(State(client): State<ClientWithMiddleware>, body: Bytes) -> Response {
    let calls: Vec<Call> = match serde_json::from_slice(&body) {
        Ok(calls) => calls,
        Err(err) => return (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response(),
    };
    for call in &calls {
        let arguments = if call.arguments.is_null() {
            serde_json::json!([])
        } else {
            call.arguments.clone()
        };
        let sent = client
            .post(&call.url)
            .header(CONTENT_TYPE, "application/json")
            .body(arguments.to_string())
            .send()
            .await;
        match sent {
            // The harness answers JSON; read it to the end so the connection can be reused.
            Ok(res) => drop(res.bytes().await),
            Err(err) => eprintln!("w3c_service: POST {}: {err}", call.url),
        }
    }
    (
        [(CONTENT_TYPE, "application/json")],
        serde_json::json!({ "calls": calls.len() }).to_string(),
    )
        .into_response()
}

/// The telemetry of the service: `CONFIG`, its spans dropped by [`Discard`].
fn telemetry() -> Result<Telemetry, Box<dyn std::error::Error>> {
    let config = Config::from_yaml_str(CONFIG)?;
    let registry = MetricsRegistry::new(&config.metric)?;
    let pipeline = TracePipeline::with_exporter(
        &config.trace,
        Discard,
        "discard",
        &registry,
        &config.metric.prefix(),
    );
    Ok(Telemetry::with_pipeline(&config, registry, pipeline)?)
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
    let telemetry = telemetry()?;
    // The OpenTelemetry layer only: the client spans become spans of the pipeline (each with
    // its own id), and nothing is logged.
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(telemetry.tracing_layer()),
    )?;
    let middleware =
        ClientMiddleware::from_telemetry(&telemetry).with_context_hosts(args.context_hosts);
    let builder = reqwest::Client::builder().timeout(CALL_TIMEOUT);
    let client = instrumented_client_with(builder, middleware)?;

    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port))).await?;
    println!("w3c_service: http://{}/test", listener.local_addr()?);
    std::io::stdout().flush()?;
    let app = Router::new()
        .route("/test", post(test))
        .with_state(client)
        .layer(telemetry.layer());
    axum::serve(listener, app)
        .with_graceful_shutdown(stop_signal())
        .await?;
    // Flushing blocks: off the runtime's workers.
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("w3c_service: {message}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("w3c_service: {err}");
            ExitCode::FAILURE
        }
    }
}
