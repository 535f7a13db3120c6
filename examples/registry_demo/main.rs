//! The example registry: a small OCI registry (`/v2/`) with a Harbor-like core API
//! (`/api/v2.0/`) and garbage collection as a background job, instrumented with towerscope.
//!
//! Run with `cargo run --example registry_demo [-- --config FILE]`, then:
//!
//! ```text
//! curl -i http://127.0.0.1:8080/v2/
//! skopeo copy --dest-tls-verify=false docker://docker.io/library/busybox:latest \
//!     docker://127.0.0.1:8080/library/busybox:latest
//! curl http://127.0.0.1:8080/api/v2.0/projects/library/repositories
//! curl -X POST -d '{"schedule":{"type":"Manual"}}' http://127.0.0.1:8080/api/v2.0/system/gc/schedule
//! curl http://127.0.0.1:8080/api/v2.0/system/gc
//! curl http://127.0.0.1:9090/metrics
//! ```
//!
//! Without `--config`, the API listens on 127.0.0.1:8080, metrics on 127.0.0.1:9090/metrics,
//! and the database and blobs live in a fresh temporary directory removed at exit. The YAML
//! file has `listen`, `database` (a sqlx SQLite URL), `storage` (a directory), `upstream`
//! (proxy-cache mode, see `proxy.rs`), `openapi` (a document to label core requests
//! with instead of the demo's own `openapi.yaml`) and towerscope's `metric:`, `trace:` and
//! `request_id:` blocks. SIGINT/SIGTERM stop it gracefully, flushing spans.

mod config;
mod core;
mod db;
mod digest;
mod distribution_metrics;
mod gauges;
mod gc;
mod proxy;
mod registry;
mod storage;
mod traffic;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Router,
};
use towerscope::{
    db::Transactions,
    jobs::{JobQueues, Jobs},
    metrics::{
        runtime::{build_info, RuntimeMetrics},
        MetricsServer,
    },
    openapi::OpenApiResolver,
    operation::OperationResolverExt,
    Telemetry,
};

use crate::{config::DemoConfig, db::Db, registry::RegistryResolver, storage::Storage};

/// The demo's own OpenAPI document of the core API.
const OPENAPI: &str = include_str!("openapi.yaml");

/// What the handlers share.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) db: Db,
    pub(crate) storage: Storage,
    pub(crate) jobs: Jobs,
    /// The garbage-collection queue and its periodic schedule.
    pub(crate) gc: gc::GcQueue,
    pub(crate) listen: SocketAddr,
    /// The upstream registry in proxy-cache mode.
    pub(crate) proxy: Option<proxy::Proxy>,
}

/// A JSON response body (axum's `json` feature is not enabled for the examples).
#[derive(Debug)]
pub(crate) struct Json<T>(pub(crate) T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response(),
            Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
        }
    }
}

/// A temporary directory removed when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "registry_demo-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const USAGE: &str = "usage: registry_demo [--config FILE] [--traffic [--traffic-seconds N]]";

fn parse_args() -> Result<Option<PathBuf>, String> {
    let mut args = std::env::args_os().skip(1);
    let mut config = None;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--config") => {
                config = Some(PathBuf::from(args.next().ok_or("--config needs a file")?));
            }
            Some("--traffic") => traffic::enable(),
            Some("--traffic-seconds") => {
                traffic::set_seconds(
                    args.next()
                        .and_then(|a| a.into_string().ok())
                        .as_deref()
                        .unwrap_or(""),
                )?;
            }
            Some("-h" | "--help") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
        }
    }
    Ok(config)
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

/// Everything that is not a core route: the registry under `/v2`, Harbor-style 404s under
/// `/api/v2.0`, plain 404s elsewhere.
async fn fallback(state: State<AppState>, req: Request) -> Response {
    let path = req.uri().path();
    if path == "/v2" || path.starts_with("/v2/") {
        registry::handle(state, req).await
    } else if path.starts_with("/api/v2.0/") {
        core::not_implemented()
    } else {
        (StatusCode::NOT_FOUND, "not found\n").into_response()
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("registry_demo: {message}");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    // 1. Configuration, validated before anything is bound.
    let config = match parse_args() {
        Ok(Some(path)) => DemoConfig::from_path(&path),
        Ok(None) => Ok(DemoConfig::default()),
        Err(message) => return fail(message),
    };
    let config = match config {
        Ok(config) => config,
        Err(err) => return fail(err),
    };
    let openapi = match &config.openapi {
        Some(path) => OpenApiResolver::from_path(path),
        None => OpenApiResolver::from_yaml_str(OPENAPI),
    };
    let openapi = match openapi {
        Ok(resolver) => resolver,
        Err(err) => return fail(format!("openapi: {err}")),
    };
    // Distribution's request durations are histograms with its default buckets (Harbor's
    // core durations stay summaries), unless the file sets buckets for them; with
    // `histogram: native` they are native histograms like every other duration.
    let mut telemetry_config = config.telemetry.clone();
    let classic = telemetry_config.metric.histogram != towerscope::metrics::HistogramMode::Native;
    for (family, buckets) in distribution_metrics::HISTOGRAMS.iter().filter(|_| classic) {
        telemetry_config
            .metric
            .family_buckets
            .entry((*family).to_owned())
            .or_insert_with(|| buckets.to_vec());
    }
    let telemetry = match Telemetry::init(&telemetry_config) {
        Ok(telemetry) => telemetry,
        Err(err) => return fail(err),
    };
    if let Err(err) = telemetry.init_subscriber() {
        eprintln!("registry_demo: {err}");
    }
    let prefix = telemetry.config().metric.prefix();
    let proxy = match &config.upstream {
        Some(upstream) => match proxy::Proxy::new(upstream, &telemetry) {
            Ok(proxy) => Some(proxy),
            Err(err) => return fail(format!("upstream: {err}")),
        },
        None => None,
    };

    // 2. Storage and database.
    let needs_temp = config.database.is_none() || config.storage.is_none();
    let temp = match needs_temp.then(TempDir::new).transpose() {
        Ok(temp) => temp,
        Err(err) => return fail(format!("cannot create a temporary directory: {err}")),
    };
    let temp_path = |name: &str| temp.as_ref().map(|t| t.0.join(name));
    let storage_dir = config
        .storage
        .clone()
        .or_else(|| temp_path("storage"))
        .unwrap_or_default();
    let database = config.database.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}",
            temp_path("registry.db").unwrap_or_default().display()
        )
    });
    let storage = match Storage::open(&storage_dir).await {
        Ok(storage) => storage,
        Err(err) => return fail(format!("storage {}: {err}", storage_dir.display())),
    };
    let db = match Db::connect(&database, Transactions::from_telemetry(&telemetry)).await {
        Ok(db) => db,
        Err(err) => return fail(format!("database {database}: {err}")),
    };

    // 3. Metrics of the process and the jobs.
    let jobs = Jobs::from_telemetry(&telemetry);
    let (gc_queue, gc_worker) = gc::GcQueue::new(JobQueues::from_telemetry(&telemetry));
    if let Err(err) = build_info(
        telemetry.registry(),
        &prefix,
        env!("CARGO_PKG_VERSION"),
        &[("app", "registry_demo")],
    ) {
        eprintln!("registry_demo: build_info: {err}");
    }
    let _runtime_metrics =
        match RuntimeMetrics::start(telemetry.registry(), Duration::from_secs(10)) {
            Ok(runtime) => Some(runtime),
            Err(err) => {
                eprintln!("registry_demo: runtime metrics: {err}");
                None
            }
        };

    // 4. The router, behind one towerscope layer: core requests are labelled from the OpenAPI
    // document, registry requests with their handler.
    let state = AppState {
        db: db.clone(),
        storage,
        jobs,
        gc: gc_queue,
        listen: config.listen,
        proxy,
    };
    gc::start_worker(state.clone(), gc_worker);
    let (exporter_gauges, pulls) = match gauges::ExporterGauges::new(&telemetry, &state).await {
        Ok(gauges) => gauges,
        Err(err) => return fail(format!("exporter gauges: {err}")),
    };
    let distribution = distribution_metrics::layer(telemetry.registry(), Some(pulls));
    let resolver = Arc::new(openapi).or(RegistryResolver::new());
    let mut app = Router::new()
        .merge(core::router())
        .fallback(fallback)
        .with_state(state);
    // `metric.enabled: false` records nothing: Distribution's families are metrics too.
    if telemetry.config().metric.enabled {
        app = app.layer(distribution);
    }
    let app = app.layer(telemetry.layer().with_resolver(resolver));

    // 5. Bind and serve.
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(err) => return fail(format!("cannot bind {}: {err}", config.listen)),
    };
    // The SDK's metrics server; its refresh hook computes the exporter gauges at scrape time.
    let metric = &telemetry.config().metric;
    let metrics = if metric.enabled {
        let endpoint = telemetry
            .metrics_endpoint()
            .with_refresh(move |components: &[&str]| exporter_gauges.refresh_for(components));
        match MetricsServer::bind_endpoint(metric.socket_addr(), &metric.path, endpoint).await {
            Ok(server) => Some(server),
            Err(err) => {
                return fail(format!(
                    "cannot bind the metrics server on {}: {err}",
                    metric.socket_addr()
                ))
            }
        }
    } else {
        None
    };
    let local = listener.local_addr().unwrap_or(config.listen);
    println!("registry (OCI distribution) on http://{local}/v2/");
    println!("core API on http://{local}/api/v2.0/");
    if let Some(server) = &metrics {
        println!(
            "metrics on http://{}{}",
            server.local_addr(),
            telemetry.config().metric.path
        );
    }
    println!("database {database}, storage {}", storage_dir.display());

    let traffic = traffic::start(local);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop_signal())
        .await;
    if let Some(traffic) = traffic {
        traffic.abort();
    }
    if let Some(server) = metrics {
        server.shutdown().await;
    }
    db.close().await;
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
    drop(temp);
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("registry_demo: server error: {err}");
            ExitCode::FAILURE
        }
    }
}
