//! An axum service with towerscope's layer, its metrics and its spans.
//!
//! Run with `cargo run --example axum_basic`, then:
//!
//! ```text
//! curl -i http://127.0.0.1:3000/users/42            # note the x-request-id response header
//! curl -i -H 'x-request-id: my-id-1' http://127.0.0.1:3000/users/current
//! curl http://127.0.0.1:9090/metrics                # all families
//! curl 'http://127.0.0.1:9090/metrics?comp=core'    # only the HTTP families
//! ```
//!
//! Set `TOWERSCOPE_CONFIG` to a YAML or TOML file to change the configuration (e.g. a `trace:`
//! block to export spans), the standard `OTEL_*` variables to override it, and `APP_ADDR` to
//! move the service (default `127.0.0.1:3000`). Log lines (with each request's id) go to
//! stderr, filtered by `RUST_LOG`. Ctrl-C or SIGTERM stops it after flushing the spans.

use std::net::SocketAddr;

use axum::{extract::Path, routing::get, Router};
use towerscope::{operation::MatchedPathResolver, Config, RequestId, Telemetry};

async fn get_user(Path(id): Path<u64>, request_id: RequestId) -> String {
    tracing::info!(user = id, "looking up a user");
    format!("user {id} (request {request_id})\n")
}

async fn current_user() -> &'static str {
    "the current user\n"
}

async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() {
    let config = match std::env::var_os("TOWERSCOPE_CONFIG") {
        Some(path) => Config::from_path(path),
        None => Config::from_yaml_str("metric: { namespace: demo, subsystem: api }"),
    };
    let config = config.unwrap_or_else(|err| {
        eprintln!("{err}");
        std::process::exit(2);
    });
    let telemetry = Telemetry::init(&config).unwrap_or_else(|err| {
        eprintln!("{err}");
        std::process::exit(2);
    });
    if let Err(err) = telemetry.init_subscriber() {
        eprintln!("{err}");
    }

    // Route templates become operationIds; unmapped ones keep the template as their label.
    let resolver = MatchedPathResolver::new()
        .with_operation("/users/{id}", "getUser")
        .with_operation("/users/current", "getCurrentUser");
    let app = Router::new()
        .route("/users/{id}", get(get_user))
        .route("/users/current", get(current_user))
        .layer(telemetry.layer().with_resolver(resolver));

    let metrics = match telemetry.serve_metrics().await {
        Ok(server) => server,
        Err(err) => {
            eprintln!(
                "cannot bind the metrics server on {}: {err}",
                config.metric.socket_addr()
            );
            std::process::exit(1);
        }
    };
    let addr: SocketAddr = std::env::var("APP_ADDR")
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3000)));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("cannot bind {addr}: {err}");
            std::process::exit(1);
        }
    };
    println!(
        "service on http://{}",
        listener.local_addr().unwrap_or(addr)
    );
    if let Some(server) = &metrics {
        println!(
            "metrics on http://{}{}",
            server.local_addr(),
            config.metric.path
        );
    }
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(stop_signal())
        .await
    {
        eprintln!("server error: {err}");
    }
    // `shutdown` blocks while it flushes the spans (trace.shutdown_timeout_secs at most): from
    // async code it runs on tokio's blocking pool, never on a worker of the runtime.
    let report = tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .ok()
        .flatten();
    if let Some(report) = report {
        println!(
            "spans: {} exported, {} lost",
            report.exported,
            report.lost()
        );
    }
}
