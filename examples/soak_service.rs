//! The service the soak (`interop/soak.py`) runs against: every integration of towerscope
//! behind one layer, and handlers that misbehave on purpose.
//!
//! Run with `cargo run --example soak_service -- --config FILE --listen 127.0.0.1:PORT
//! [--upstream http://HOST:PORT]`; the YAML file is towerscope's configuration (`metric:`,
//! `trace:`, `request_id:`); `--upstream` is the service `/relay` calls (itself by default: a
//! second process makes one trace cross two services). Routes:
//!
//! | route | what it does |
//! |---|---|
//! | `GET /items/{id}` | reads a row in a traced sqlx transaction (`getItem`): 200 or 404 |
//! | `POST /items` | inserts the body in a transaction (`createItem`) and queues an `INDEX` job: 201 |
//! | `GET /relay` | calls the upstream's `GET /items/1` through the instrumented reqwest client |
//! | `POST /relay` | posts the body to the upstream's `POST /items` (`createItem`): its answer |
//! | `GET /unavailable` | logs a warning (an event on the request's span) and answers 503 |
//! | `GET /stream?kib=N` | a streamed body of N KiB (at most 64 MiB), 16 KiB per chunk |
//! | `PUT /upload` | reads the request body as it streams in, answers its length |
//! | `GET /panic` | panics; tower-http's `CatchPanicLayer` inside the towerscope layer answers 500 |
//!
//! The `INDEX` jobs run on a worker, each in its own task, through `Jobs` and `JobQueues`: one
//! in 7 fails and one in 13 panics (the message says `deliberate`, as does the handler's, so
//! the soak can tell a deliberate panic from one that escaped). SIGTERM stops it gracefully;
//! it then prints one JSON line, `{"shutdown": {...}}`: how long the span pipeline's shutdown
//! took and its report (ended, exported, failed, dropped, unexported, completed).

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::{Path, Query, Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use http_body_util::BodyExt;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use tokio::sync::mpsc;
use tower_http::catch_panic::CatchPanicLayer;
use towerscope::{
    client::ClientOperation,
    db::Transactions,
    jobs::{JobContext, JobInfo, JobQueues, Jobs, QueuedJob},
    metrics::MetricsServer,
    Config, Telemetry,
};

const USAGE: &str = "usage: soak_service --config FILE [--listen ADDR] [--upstream URL]";

/// The largest streamed response, in KiB.
const MAX_STREAM_KIB: usize = 64 * 1024;
const CHUNK: usize = 16 * 1024;
const JOB_TYPE: &str = "INDEX";
const JOB_POOL: &str = "indexer";

#[derive(Debug, Clone)]
struct AppState {
    pool: SqlitePool,
    transactions: Transactions,
    client: reqwest_middleware::ClientWithMiddleware,
    queues: JobQueues,
    queue: mpsc::UnboundedSender<(u64, JobContext, QueuedJob)>,
    next_job: Arc<AtomicU64>,
    /// Where `/relay` goes: `--upstream`, or this process.
    upstream: String,
}

#[derive(Debug)]
struct Args {
    config: PathBuf,
    listen: SocketAddr,
    upstream: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut config, mut listen) = (None, SocketAddr::from(([127, 0, 0, 1], 8080)));
    let mut upstream = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => config = Some(PathBuf::from(args.next().ok_or("--config needs a file")?)),
            "--listen" => {
                let addr = args.next().ok_or("--listen needs an address")?;
                listen = addr
                    .parse()
                    .map_err(|_| format!("--listen: {addr:?} is not host:port"))?;
            }
            "--upstream" => {
                let url = args.next().ok_or("--upstream needs a URL")?;
                if !url.starts_with("http://") && !url.starts_with("https://") {
                    return Err(format!("--upstream: {url:?} is not an http(s) URL"));
                }
                upstream = Some(url.trim_end_matches('/').to_owned());
            }
            _ => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
        }
    }
    let config = config.ok_or(USAGE)?;
    Ok(Args {
        config,
        listen,
        upstream,
    })
}

/// A database error, answered as a 500 and logged.
fn internal(err: impl std::fmt::Display) -> Response {
    tracing::error!(error = %err, "database error");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
}

async fn get_item(State(state): State<AppState>, Path(id): Path<i64>) -> Response {
    let result = async {
        let mut tx = state.transactions.begin(&state.pool, "getItem").await?;
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM item WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(body)
    }
    .await;
    match result {
        Ok(Some(body)) => body.into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such item\n").into_response(),
        Err(err) => internal(err),
    }
}

async fn create_item(State(state): State<AppState>, body: Bytes) -> Response {
    let body = String::from_utf8_lossy(&body).into_owned();
    let result = async {
        let mut tx = state.transactions.begin(&state.pool, "createItem").await?;
        let id: i64 = sqlx::query_scalar("INSERT INTO item (body) VALUES (?) RETURNING id")
            .bind(&body)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(id)
    }
    .await;
    match result {
        Ok(id) => {
            let job = state.next_job.fetch_add(1, Ordering::Relaxed);
            let ticket = state.queues.enqueue(JOB_TYPE);
            // The worker outlives every request; were it gone, the ticket is dropped here and
            // the queue gauge goes back down.
            let _ = state.queue.send((job, JobContext::capture(), ticket));
            (StatusCode::CREATED, format!("{id}\n")).into_response()
        }
        Err(err) => internal(err),
    }
}

async fn relay(State(state): State<AppState>) -> Response {
    let call = state
        .client
        .get(format!("{}/items/1", state.upstream))
        .with_extension(ClientOperation::new("getItem"))
        .send()
        .await;
    relayed(call).await
}

async fn relay_create(State(state): State<AppState>, body: Bytes) -> Response {
    let call = state
        .client
        .post(format!("{}/items", state.upstream))
        .with_extension(ClientOperation::new("createItem"))
        .body(body)
        .send()
        .await;
    relayed(call).await
}

/// The upstream's answer (status and body), or a 502 naming why there is none.
async fn relayed(call: reqwest_middleware::Result<reqwest::Response>) -> Response {
    match call {
        Ok(res) => {
            let status = res.status().as_u16();
            match res.bytes().await {
                Ok(body) => (
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                    body,
                )
                    .into_response(),
                Err(err) => (StatusCode::BAD_GATEWAY, format!("{err}\n")).into_response(),
            }
        }
        Err(err) => (StatusCode::BAD_GATEWAY, format!("{err}\n")).into_response(),
    }
}

async fn unavailable() -> Response {
    tracing::warn!(retry_after = 1, "deliberately unavailable");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "deliberately unavailable\n",
    )
        .into_response()
}

#[derive(Debug, serde::Deserialize)]
struct StreamQuery {
    kib: Option<usize>,
}

async fn stream(Query(query): Query<StreamQuery>) -> Response {
    let total = query.kib.unwrap_or(64).min(MAX_STREAM_KIB) * 1024;
    Body::new(Chunks {
        left: total,
        chunk: Bytes::from(vec![b'x'; CHUNK]),
    })
    .into_response()
}

/// A body of `left` bytes, sent `CHUNK` bytes at a time as fast as the client reads: a client
/// that stops reading and hangs up leaves it half sent.
#[derive(Debug)]
struct Chunks {
    left: usize,
    chunk: Bytes,
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let n = self.left.min(CHUNK);
        if n == 0 {
            return std::task::Poll::Ready(None);
        }
        self.left -= n;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left as u64)
    }
}

async fn upload(req: Request) -> Response {
    let mut body = req.into_body();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => received += frame.data_ref().map_or(0, |d| d.len()),
            // The client went away mid-body.
            Err(err) => return (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response(),
        }
    }
    format!("{received}\n").into_response()
}

async fn deliberate_panic() -> Response {
    panic!("soak: deliberate handler panic")
}

/// Runs the queued `INDEX` jobs, each in its own task (a panicking job fails that job only).
fn start_worker(
    state: AppState,
    jobs: Jobs,
    mut rx: mpsc::UnboundedReceiver<(u64, JobContext, QueuedJob)>,
) {
    tokio::spawn(async move {
        while let Some((n, context, ticket)) = rx.recv().await {
            let running = ticket.start(JOB_POOL);
            let info = JobInfo {
                id: n.to_string(),
                name: JOB_TYPE.to_owned(),
                periodic: false,
            };
            let state = state.clone();
            let job = jobs.run(info, context, async move {
                let _running = running;
                tokio::time::sleep(Duration::from_millis(1 + n % 5)).await;
                if n % 13 == 12 {
                    panic!("soak: deliberate job panic (job {n})");
                }
                let mut tx = state.transactions.begin(&state.pool, "indexItem").await?;
                sqlx::query("UPDATE item SET indexed = 1 WHERE id = ?")
                    .bind(n as i64)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                if n % 7 == 6 {
                    return Err(sqlx::Error::Protocol("deliberate job failure".into()));
                }
                Ok(())
            });
            let _ = tokio::spawn(job).await;
        }
    });
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

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("soak_service: {message}");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let Args {
        config: config_path,
        listen,
        upstream,
    } = match parse_args() {
        Ok(args) => args,
        Err(message) => return fail(message),
    };
    let config = match Config::from_path(&config_path) {
        Ok(config) => config,
        Err(err) => return fail(err),
    };
    let telemetry = match Telemetry::init(&config) {
        Ok(telemetry) => telemetry,
        Err(err) => return fail(err),
    };
    if let Err(err) = telemetry.init_subscriber() {
        return fail(err);
    }

    // One in-memory SQLite database, shared by every connection of the pool.
    let options = SqliteConnectOptions::new()
        .filename(format!(
            "file:soak-{}?mode=memory&cache=shared",
            std::process::id()
        ))
        .shared_cache(true);
    let pool = match SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
    {
        Ok(pool) => pool,
        Err(err) => return fail(format!("database: {err}")),
    };
    let schema = "CREATE TABLE item (id INTEGER PRIMARY KEY, body TEXT NOT NULL, indexed INTEGER NOT NULL DEFAULT 0); \
                  INSERT INTO item (body) VALUES ('the first item')";
    if let Err(err) = sqlx::raw_sql(schema).execute(&pool).await {
        return fail(format!("database schema: {err}"));
    }

    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(err) => return fail(format!("cannot bind {listen}: {err}")),
    };
    let local = listener.local_addr().unwrap_or(listen);
    let (queue, worker) = mpsc::unbounded_channel();
    let state = AppState {
        pool: pool.clone(),
        transactions: Transactions::from_telemetry(&telemetry),
        client: towerscope::client::instrumented_client(&telemetry),
        queues: JobQueues::from_telemetry(&telemetry),
        queue,
        next_job: Arc::new(AtomicU64::new(0)),
        upstream: upstream.unwrap_or_else(|| format!("http://{local}")),
    };
    start_worker(state.clone(), Jobs::from_telemetry(&telemetry), worker);

    let app = Router::new()
        .route("/items", axum::routing::post(create_item))
        .route("/items/{id}", get(get_item))
        .route("/relay", get(relay).post(relay_create))
        .route("/unavailable", get(unavailable))
        .route("/stream", get(stream))
        .route("/upload", axum::routing::put(upload))
        .route("/panic", get(deliberate_panic))
        .with_state(state)
        // Inside the towerscope layer: a panic is a 500 that the metrics and the span see.
        .layer(CatchPanicLayer::new())
        .layer(telemetry.layer());

    let metric = &telemetry.config().metric;
    let metrics = match MetricsServer::bind_endpoint(
        metric.socket_addr(),
        &metric.path,
        telemetry.metrics_endpoint(),
    )
    .await
    {
        Ok(server) => server,
        Err(err) => return fail(format!("cannot bind the metrics server: {err}")),
    };
    println!(
        "soak_service on http://{local}, metrics on http://{}{}",
        metrics.local_addr(),
        metric.path
    );

    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop_signal())
        .await;
    metrics.shutdown().await;
    pool.close().await;
    let started = Instant::now();
    // `shutdown` blocks while it flushes the spans (trace.shutdown_timeout_secs at most): from
    // async code it runs on tokio's blocking pool, never on a worker of the runtime.
    let report = tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .ok()
        .flatten();
    let took = started.elapsed();
    let report = report.map(|r| {
        serde_json::json!({
            "ended": r.ended, "exported": r.exported, "failed": r.failed,
            "dropped": r.dropped, "unexported": r.unexported, "completed": r.completed,
        })
    });
    println!(
        "{}",
        serde_json::json!({ "shutdown": { "seconds": took.as_secs_f64(), "report": report } })
    );
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(format!("server error: {err}")),
    }
}
