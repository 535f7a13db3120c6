//! Run with: cargo run --example client
//!
//! Calls an axum server on loopback through `towerscope::client::instrumented_client`, then
//! prints the `http_client_*` families, as `/metrics?comp=client` would serve them. Look at the
//! `peer` label: the URL's `host:port`, or the `ClientOperation` a call was given
//! (`peer="getGreeting"`); and at `code`, the response status.

use axum::{routing::get, Router};
use towerscope::{client::ClientOperation, Config, Telemetry};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_yaml_str("metric: { namespace: demo, subsystem: api }")?;
    let telemetry = Telemetry::init_local(&config)?;

    // A server to call, on a free loopback port.
    let app = Router::new().route("/hello", get(|| async { "hello\n" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    // A reqwest client with towerscope's middleware: a client span per call, the trace
    // context and request id passed on, and the client metrics.
    let client = towerscope::client::instrumented_client(&telemetry);
    let hello = client.get(format!("{base}/hello")).send().await?.status();
    println!("GET /hello: {hello}");
    let missing = client.get(format!("{base}/missing")).send().await?.status();
    println!("GET /missing: {missing}");
    // Named calls are counted under their name instead of the host: one series per remote
    // operation rather than per host.
    let named = client
        .get(format!("{base}/hello"))
        .with_extension(ClientOperation::new("getGreeting"))
        .send()
        .await?
        .status();
    println!("GET /hello as getGreeting: {named}\n");

    drop(client);
    let _ = stop.send(());
    server.await??;

    println!("{}", telemetry.registry().render_components(&["client"])?);
    Ok(())
}
