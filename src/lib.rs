//! Observability middleware for [tower] services: one `.layer(...)` on an axum router (or any
//! tower HTTP service) gives every request an `X-Request-ID`, Prometheus metrics with Harbor's
//! names, and an OpenTelemetry server span exported over OTLP or to Jaeger.
//!
//! The same holds for what a request causes, each behind a feature: outgoing reqwest calls,
//! sqlx transactions, tonic gRPC calls and background jobs, all sharing the request's id,
//! operation and trace. Configuration is Harbor's `metric:` and `trace:` blocks, and the
//! standard `OTEL_*` variables.
//!
//! # Adding it
//!
//! ```toml
//! [dependencies]
//! towerscope = "0.1"
//! axum = "0.8"
//! tokio = { version = "1", features = ["macros", "rt-multi-thread", "net", "signal"] }
//! ```
//!
//! The default features serve an axum service, read YAML configuration and export spans over
//! OTLP (http/protobuf) or to Jaeger, with TLS. The crates you pair with it, in the versions
//! towerscope is built against, and the feature each integration needs:
//!
//! | you use | add to `[dependencies]` | towerscope feature |
//! |---|---|---|
//! | axum | `axum = "0.8"` | `axum` (default) |
//! | tokio | `tokio = { version = "1", features = ["macros", "rt-multi-thread", "net", "signal"] }` | none |
//! | tonic | `tonic = "0.14"`, and `tonic-health = "0.14"` for the health service | `tonic` |
//! | reqwest | `reqwest = "0.13"` (or none: towerscope re-exports it as `client::reqwest`) | `reqwest` |
//! | sqlx | `sqlx = { version = "0.9", features = ["runtime-tokio", "postgres"] }` (or `"sqlite"`, `"mysql"`: a driver and tokio's runtime) | `sqlx` |
//!
//! ```toml
//! towerscope = { version = "0.1", features = ["reqwest", "sqlx", "tonic"] }
//! ```
//!
//! OTLP over gRPC (`protocol: grpc`) needs the `otlp-grpc` feature, TOML configuration files
//! the `toml` feature; see [Feature flags](#feature-flags).
//!
//! Rust 1.90 or newer builds the default features; the `sqlx` feature needs 1.94 (sqlx 0.9).
//!
//! # A minimal service
//!
//! Configuration, then [`Telemetry::init`], then [`telemetry.layer()`](Telemetry::layer) on the
//! router, the metrics server, and a graceful shutdown. This one listens on free ports, sends
//! itself one request, reads `/metrics` and stops:
//!
//! ```
//! use std::{future::IntoFuture, net::SocketAddr};
//!
//! use axum::{routing::get, Router};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use towerscope::{Config, Telemetry};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // 1. The configuration: Harbor's `metric:` block (here from a string; a file with
//!     //    `Config::from_path`). Port 0: any free port.
//!     let config = Config::from_yaml_str("metric: { namespace: harbor, subsystem: core, port: 0 }")?;
//!
//!     // 2. Telemetry: the `OTEL_*` variables applied, the configuration validated, the metrics
//!     //    recorder (and, with `trace.enabled`, the span pipeline) installed; log lines on
//!     //    stderr, filtered by RUST_LOG, each with its request's id.
//!     let telemetry = Telemetry::init(&config)?;
//!     telemetry.init_subscriber()?;
//!
//!     // 3. One layer: request id, operation, server span, metrics.
//!     let app = Router::new()
//!         .route("/users/{id}", get(|| async { "a user\n" }))
//!         .layer(telemetry.layer());
//!
//!     // 4. The metrics server, on metric.host:metric.port (127.0.0.1:9090 by default).
//!     let metrics = telemetry.serve_metrics().await?.expect("metric.enabled is true");
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//!     let addr = listener.local_addr()?;
//!     println!("http://{addr}, metrics on http://{}/metrics", metrics.local_addr());
//!
//!     // 5. Serve until told to stop: on Ctrl-C in a service (`tokio::signal::ctrl_c()`);
//!     //    here, once the example has sent its request.
//!     let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//!     let server = tokio::spawn(
//!         axum::serve(listener, app)
//!             .with_graceful_shutdown(async move { stopped.await.unwrap_or(()) })
//!             .into_future(),
//!     );
//!     let response = http_get(addr, "/users/42").await?;
//!     assert!(response.contains("x-request-id: ")); // made up, as the request had none
//!     stop.send(()).ok();
//!     server.await??;
//!
//!     // What Prometheus scrapes: the operation is the route (or its OpenAPI operationId).
//!     let scrape = http_get(metrics.local_addr(), "/metrics").await?;
//!     assert!(scrape.contains(
//!         r#"harbor_core_http_request_total{method="GET",code="200",operation="/users/{id}"} 1"#
//!     ));
//!
//!     // 6. Shutdown: the metrics server, then the spans. `Telemetry::shutdown` blocks while it
//!     //    flushes them (at most trace.shutdown_timeout_secs): from async code, call it on
//!     //    tokio's blocking pool.
//!     metrics.shutdown().await;
//!     let report = tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
//!     assert_eq!(report, None); // no span report: this configuration does not trace
//!     Ok(())
//! }
//!
//! /// One HTTP/1.1 GET, the whole answer as text (a stand-in for curl).
//! async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
//!     let mut stream = tokio::net::TcpStream::connect(addr).await?;
//!     let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
//!     stream.write_all(request.as_bytes()).await?;
//!     let mut response = String::new();
//!     stream.read_to_string(&mut response).await?;
//!     Ok(response)
//! }
//! ```
//!
//! The same service as it runs in production, with a configuration file, fixed ports and
//! Ctrl-C (the README's quick start):
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use towerscope::{Config, Telemetry};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let config = Config::from_path("telemetry.yml")?;
//!     let telemetry = Telemetry::init(&config)?;
//!     telemetry.init_subscriber()?;
//!
//!     let app = Router::new()
//!         .route("/users/{id}", get(|| async { "a user\n" }))
//!         .layer(telemetry.layer());
//!
//!     let metrics = telemetry.serve_metrics().await?; // None with metric.enabled: false
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     axum::serve(listener, app)
//!         .with_graceful_shutdown(async { tokio::signal::ctrl_c().await.unwrap_or(()) })
//!         .await?;
//!
//!     if let Some(metrics) = metrics {
//!         metrics.shutdown().await;
//!     }
//!     // Blocks until the spans are flushed (trace.shutdown_timeout_secs at most).
//!     let report = tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
//!     if let Some(report) = report {
//!         eprintln!("spans: {} exported, {} lost", report.exported, report.lost());
//!     }
//!     Ok(())
//! }
//! ```
//!
//! After a few requests, `/metrics` shows (durations abridged; a summary by default, a
//! histogram with `metric.buckets`):
//!
//! ```text
//! # TYPE harbor_core_http_inflight_requests gauge
//! harbor_core_http_inflight_requests{method="GET",operation="/users/{id}"} 0
//! # TYPE harbor_core_http_request_duration_seconds summary
//! harbor_core_http_request_duration_seconds{method="GET",operation="/users/{id}",quantile="0.5"} 0.000021
//! harbor_core_http_request_duration_seconds_sum{method="GET",operation="/users/{id}"} 0.000043
//! harbor_core_http_request_duration_seconds_count{method="GET",operation="/users/{id}"} 2
//! # TYPE harbor_core_http_request_total counter
//! harbor_core_http_request_total{method="GET",code="200",operation="/users/{id}"} 2
//! ```
//!
//! `/metrics?comp=core` serves only the HTTP families; each integration has its component
//! (`client`, `db`, `grpc`, `jobservice`, `trace`, ...). See [`metrics`].
//!
//! ## Exporting spans
//!
//! Tracing is off until the `trace:` block turns it on. To send spans to an OpenTelemetry
//! collector (or Jaeger v2) on this machine over OTLP http/protobuf:
//!
//! ```yaml
//! # telemetry.yml
//! metric: { namespace: harbor, subsystem: core, port: 9090 }
//! trace:
//!   enabled: true
//!   service_name: users-api
//!   otel:
//!     endpoint: http://127.0.0.1:4318/v1/traces   # a URL is used as written
//! ```
//!
//! or, without a `trace:` block, `OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318` and
//! `OTEL_SERVICE_NAME=users-api` in the environment. Harbor's form `endpoint:
//! 127.0.0.1:4318` (no scheme) is exported over **https** unless `insecure: true` is set. At
//! start-up one `info` line names each exporter's URL and protocol; a failing export is
//! logged once at `warn` with its cause. [`trace`] has the whole story (sampling, propagation,
//! the spans of the integrations, what the exporters log, an application's own OpenTelemetry
//! layer beside towerscope's), [`config`] every key.
//!
//! ## Shutdown
//!
//! [`Telemetry::shutdown`] flushes the spans still queued (and pushes the metrics once more
//! with `metric.otlp`) and **blocks** for at most `trace.shutdown_timeout_secs`. From async
//! code, call it through [`tokio::task::spawn_blocking`], as above and in every example; the
//! last clone of a [`Telemetry`] dropped runs it too, so drop it there or after the runtime.
//!
//! # Feature flags
//!
//! | flag | default | enables | crates it adds |
//! |---|---|---|---|
//! | `axum` | yes | the [`RequestId`] extractor and the `MatchedPath` resolver ([`operation`]) | 5 |
//! | `otlp` | yes | OTLP over http/protobuf: span export and the `metric.otlp` push ([`metrics::otlp`]) | 52 |
//! | `jaeger` | yes | Jaeger span export: agent (compact Thrift over UDP) and collector (binary Thrift over HTTP) ([`trace::jaeger`]) | 44 |
//! | `tls` | yes | `https://` export endpoints (rustls with ring, the system's roots) | 50 |
//! | `yaml` | yes | YAML configuration files and OpenAPI documents (JSON needs no feature) | 6 |
//! | `otlp-grpc` | no | OTLP over gRPC too (`protocol: grpc`), with `otlp` | 67 (15 beyond `otlp`) |
//! | `toml` | no | TOML configuration files | 7 |
//! | `reqwest` | no | [`client`]: reqwest-middleware instrumentation of outgoing calls | 41 |
//! | `sqlx` | no | [`db`]: transaction spans and metrics (Rust 1.94) | 57 |
//! | `tonic` | no | [`grpc`]: tonic server and client layers | 7 |
//! | `pushgateway` | no | [`metrics::push`]: the Pushgateway pusher | 38 |
//! | `process` | no | [`metrics::runtime::RuntimeMetrics`]: process and tokio runtime metrics (metrics-process) | 7 |
//! | `cli` | no | the `towerscope` command (`towerscope rules`) and [`rules`], with `yaml` | 6 |
//!
//! The layers, the Prometheus registry, the endpoint and its standalone server, the span
//! pipeline, JSON configuration and the jobs instrumentation need no flag. "Crates it adds"
//! counts the distinct crates (name and version) in `cargo tree -e normal` of towerscope with
//! that feature alone that towerscope without features does not have. Features share crates,
//! so the numbers do not add up: towerscope and its dependencies are 68 crates without
//! features (the OpenTelemetry SDK, `tracing-subscriber` and hyper are among them), 147 with
//! the defaults, 196 with every feature.
//!
//! # Modules
//!
//! - [`telemetry`]: [`Telemetry`], everything a service needs started from one [`Config`];
//!   shutdown, and what a running service exposes (security).
//! - [`config`]: the `metric:`, `request_id:` and `trace:` blocks, every key with its
//!   default, the `OTEL_*` variables, validation.
//! - [`layer`]: [`ObservabilityLayer`], the one layer, and how a request is recorded.
//! - [`request_id`]: the `X-Request-ID` layer and the [`RequestId`] extractor.
//! - [`operation`]: which operation a request belongs to, the label of its metrics and span.
//! - [`openapi`]: operations resolved from an OpenAPI or Swagger document's `operationId`s.
//! - [`metrics`]: the request families, the registry, `/metrics` with `?comp=`, OpenMetrics
//!   and exemplars, the OTLP push, the semantic-convention naming, dashboards and alerts,
//!   and the toolkit for families of your own.
//! - [`trace`]: server spans, propagation, the span pipeline and its exporters.
//! - [`log`]: log lines that name their request (`request_id`, `operation`).
//! - [`client`] (feature `reqwest`): client spans, propagation and metrics for reqwest calls.
//! - [`db`] (feature `sqlx`): transaction spans and metrics.
//! - [`grpc`] (feature `tonic`): tonic server and channel layers.
//! - [`jobs`]: background jobs' spans linked to the request that queued them, task metrics,
//!   and queue gauges.
//! - [`rules`] (feature `cli`): Prometheus SLO rules generated from an OpenAPI document.
//!
//! Runnable programs are in [`examples/`][examples] (each says how to run it in its first
//! lines): `axum_basic`, `client`, `sqlx`, `grpc`, `jobs`, and `registry_demo`, a small OCI
//! registry instrumented with all of the above. What the crate costs per request, and how it
//! compares with what it replaces, is in [BENCHMARKS.md][benchmarks].
//!
//! [tower]: https://docs.rs/tower
//! [examples]: https://github.com/towerscope/towerscope/blob/main/examples
//! [benchmarks]: https://github.com/towerscope/towerscope/blob/main/BENCHMARKS.md
// Modules behind a feature are linked in the docs of every build: to themselves when the
// feature is on, to their page on docs.rs (built with every feature) when it is off.
#![cfg_attr(feature = "reqwest", doc = "[`client`]: crate::client")]
#![cfg_attr(
    not(feature = "reqwest"),
    doc = "[`client`]: https://docs.rs/towerscope/latest/towerscope/client/index.html"
)]
#![cfg_attr(feature = "sqlx", doc = "[`db`]: crate::db")]
#![cfg_attr(
    not(feature = "sqlx"),
    doc = "[`db`]: https://docs.rs/towerscope/latest/towerscope/db/index.html"
)]
#![cfg_attr(feature = "tonic", doc = "[`grpc`]: crate::grpc")]
#![cfg_attr(
    not(feature = "tonic"),
    doc = "[`grpc`]: https://docs.rs/towerscope/latest/towerscope/grpc/index.html"
)]
#![cfg_attr(feature = "cli", doc = "[`rules`]: crate::rules")]
#![cfg_attr(
    not(feature = "cli"),
    doc = "[`rules`]: https://docs.rs/towerscope/latest/towerscope/rules/index.html"
)]
#![cfg_attr(feature = "otlp", doc = "[`metrics::otlp`]: crate::metrics::otlp")]
#![cfg_attr(
    not(feature = "otlp"),
    doc = "[`metrics::otlp`]: https://docs.rs/towerscope/latest/towerscope/metrics/otlp/index.html"
)]
#![cfg_attr(
    feature = "pushgateway",
    doc = "[`metrics::push`]: crate::metrics::push"
)]
#![cfg_attr(
    not(feature = "pushgateway"),
    doc = "[`metrics::push`]: https://docs.rs/towerscope/latest/towerscope/metrics/push/index.html"
)]
#![cfg_attr(
    feature = "process",
    doc = "[`metrics::runtime::RuntimeMetrics`]: crate::metrics::runtime::RuntimeMetrics"
)]
#![cfg_attr(
    not(feature = "process"),
    doc = "[`metrics::runtime::RuntimeMetrics`]: https://docs.rs/towerscope/latest/towerscope/metrics/runtime/struct.RuntimeMetrics.html"
)]
#![cfg_attr(feature = "jaeger", doc = "[`trace::jaeger`]: crate::trace::jaeger")]
#![cfg_attr(
    not(feature = "jaeger"),
    doc = "[`trace::jaeger`]: https://docs.rs/towerscope/latest/towerscope/trace/jaeger/index.html"
)]
#![forbid(unsafe_code)]

#[cfg(feature = "reqwest")]
pub mod client;
pub mod config;
mod current;
#[cfg(feature = "sqlx")]
pub mod db;
mod export_log;
pub mod filter;
#[cfg(feature = "tonic")]
pub mod grpc;
pub mod head;
pub mod jobs;
mod labels;
pub mod layer;
pub mod log;
pub mod metrics;
pub mod openapi;
pub mod operation;
pub mod request_id;
#[cfg(feature = "cli")]
pub mod rules;
pub mod telemetry;
mod text;
mod tls;
pub mod trace;

pub use config::Config;
pub use layer::{Observability, ObservabilityLayer};
pub use metrics::{MetricsEndpoint, MetricsLayer, MetricsRegistry};
pub use operation::{OperationId, OperationResolver};
pub use request_id::{RequestId, RequestIdLayer};
pub use telemetry::{Telemetry, TelemetryError};
