//! Transaction spans and metrics on SQLite through sqlx, inside real requests: commit,
//! rollback, drop without either, a failing commit and a failing begin, each with its span
//! outcome, status, events and parent, the data left in the database, and the metrics.
#![cfg(feature = "sqlx")]

mod support;

use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{body::Body, http::StatusCode, routing::post, Router};
use http::Request;
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use sqlx::{
    sqlite::{SqliteConnectOptions, SqlitePoolOptions},
    Connection, SqlitePool,
};
use tower::ServiceExt;
use towerscope::{
    db::{self, TraceResult, Transactions},
    Telemetry,
};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

const CONFIG: &str = "metric: { namespace: harbor, subsystem: core }
trace: { enabled: true, service_name: db-test, otel: { endpoint: '127.0.0.1:1' } }";

const SCHEMA: &str = "
CREATE TABLE project (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE repository (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES project (id) DEFERRABLE INITIALLY DEFERRED,
    name TEXT NOT NULL
);";

fn telemetry() -> (Telemetry, InMemorySpanExporter) {
    support::in_memory_telemetry(CONFIG)
}

/// An in-memory database: one connection that never closes (each connection of
/// `sqlite::memory:` is a database of its own).
async fn memory_pool() -> SqlitePool {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    sqlx::raw_sql(SCHEMA).execute(&pool).await.unwrap();
    pool
}

async fn file_pool(path: &Path) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap()
}

async fn project_names(pool: &SqlitePool) -> Vec<String> {
    sqlx::query_scalar("SELECT name FROM project ORDER BY name")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn repository_count(pool: &SqlitePool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM repository")
        .fetch_one(pool)
        .await
        .unwrap()
}

const INSERT_PROJECT: &str = "INSERT INTO project (name) VALUES (?)";

/// A router whose handlers each run one kind of transaction, under `telemetry.layer()`.
fn app(telemetry: &Telemetry, pool: SqlitePool, transactions: Transactions) -> Router {
    let state = (pool, transactions);
    Router::new()
        .route(
            "/commit",
            post({
                let (pool, txs) = state.clone();
                move || async move {
                    let mut tx = txs.begin(&pool, "createProject").await.unwrap();
                    tx.record_statement(INSERT_PROJECT);
                    sqlx::query(INSERT_PROJECT)
                        .bind("library")
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                    StatusCode::CREATED
                }
            }),
        )
        .route(
            "/rollback",
            post({
                let (pool, txs) = state.clone();
                move || async move {
                    let mut tx = txs.begin(&pool, "createProject").await.unwrap();
                    sqlx::query(INSERT_PROJECT)
                        .bind("rolled-back")
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    tx.rollback().await.unwrap();
                    StatusCode::OK
                }
            }),
        )
        .route(
            "/drop",
            post({
                let (pool, txs) = state.clone();
                move || async move {
                    // The handler's usual shape: `?` on a failing statement drops the
                    // transaction before its commit.
                    let insert_twice = async {
                        let mut tx = txs.begin(&pool, "createProject").await?;
                        sqlx::query(INSERT_PROJECT)
                            .bind("dropped")
                            .execute(&mut *tx)
                            .await?;
                        sqlx::query(INSERT_PROJECT)
                            .bind("dropped")
                            .execute(&mut *tx)
                            .await?;
                        tx.commit().await
                    };
                    match insert_twice.await {
                        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                            StatusCode::CONFLICT
                        }
                        other => panic!("expected a unique violation, got {other:?}"),
                    }
                }
            }),
        )
        .route(
            "/commit-fails",
            post({
                let (pool, txs) = state.clone();
                move || async move {
                    let mut tx = txs.begin(&pool, "createRepository").await.unwrap();
                    sqlx::query("INSERT INTO project (name) VALUES ('orphans-parent')")
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    // The foreign key is deferred: the insert succeeds, the commit fails.
                    sqlx::query("INSERT INTO repository (project_id, name) VALUES (999, 'x')")
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                    match tx.commit().await {
                        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                            StatusCode::CONFLICT
                        }
                        other => panic!("expected a foreign key violation, got {other:?}"),
                    }
                }
            }),
        )
        .route(
            "/begin-fails",
            post({
                let (pool, txs) = state;
                move || async move {
                    match txs.begin(&pool, "listProjects").await {
                        Err(sqlx::Error::PoolClosed) => StatusCode::SERVICE_UNAVAILABLE,
                        other => panic!("expected PoolClosed, got {other:?}"),
                    }
                }
            }),
        )
        .layer(telemetry.layer())
}

/// POSTs to `path` with the telemetry's subscriber active, flushes, returns the status and
/// every finished span.
async fn request(
    telemetry: &Telemetry,
    exporter: &InMemorySpanExporter,
    app: Router,
    path: &str,
) -> (StatusCode, Vec<SpanData>) {
    let subscriber = tracing_subscriber::registry().with(telemetry.tracing_layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    let res = app
        .oneshot(Request::post(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    // The server span ends with the response body.
    drop(res);
    let server = format!("POST {path}");
    (status, finished_spans(telemetry, exporter, &server).await)
}

/// Every finished span once the span `last` is among them. sqlx's SQLite worker thread holds
/// a clone of the current span while it runs a command, so a span can end on that thread
/// shortly after the code that opened it is done.
async fn finished_spans(
    telemetry: &Telemetry,
    exporter: &InMemorySpanExporter,
    last: &str,
) -> Vec<SpanData> {
    for _ in 0..200 {
        telemetry.trace_pipeline().unwrap().force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        if spans.iter().any(|s| s.name == last) {
            return spans;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!(
        "span {last} did not end; finished: {:?}",
        exporter
            .get_finished_spans()
            .unwrap()
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
    )
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no span {name} in {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn event_names(span: &SpanData) -> Vec<&str> {
    span.events.iter().map(|e| e.name.as_ref()).collect()
}

fn event_attr(span: &SpanData, event: &str, key: &str) -> Option<String> {
    span.events
        .iter()
        .find(|e| e.name == event)?
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// The transaction span `name`, checked to be a client child of the server span `server`
/// in the same trace.
fn tx_span<'a>(spans: &'a [SpanData], server: &str, name: &str) -> &'a SpanData {
    let server = named(spans, server);
    let tx = named(spans, name);
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(tx.span_kind, SpanKind::Client);
    assert_eq!(tx.parent_span_id, server.span_context.span_id());
    assert_eq!(tx.span_context.trace_id(), server.span_context.trace_id());
    assert!(tx.end_time <= server.end_time);
    assert_eq!(attr(tx, "db.system.name").as_deref(), Some("sqlite"));
    tx
}

fn metrics_of(telemetry: &Telemetry) -> String {
    telemetry.registry().render_components(&["db"]).unwrap()
}

#[tokio::test]
async fn commit_ends_the_span_with_outcome_commit_and_keeps_the_row() {
    let (t, exporter) = telemetry();
    let pool = memory_pool().await;
    let txs = Transactions::from_telemetry(&t).with_statements(true);
    let (status, spans) = request(&t, &exporter, app(&t, pool.clone(), txs), "/commit").await;
    assert_eq!(status, StatusCode::CREATED);

    let tx = tx_span(&spans, "POST /commit", "tx-createProject");
    assert_eq!(
        attr(tx, "db.operation.name").as_deref(),
        Some("createProject")
    );
    assert_eq!(attr(tx, "outcome").as_deref(), Some("commit"));
    assert_eq!(tx.status, Status::Unset);
    assert_eq!(attr(tx, "error.type"), None);
    assert_eq!(event_names(tx), ["statement", "commit"]);
    assert_eq!(
        event_attr(tx, "statement", "db.query.text").as_deref(),
        Some(INSERT_PROJECT)
    );
    assert_eq!(project_names(&pool).await, ["library"]);

    let text = metrics_of(&t);
    for line in [
        r#"harbor_core_db_transaction_total{operation="createProject",outcome="commit"} 1"#,
        r#"harbor_core_db_transaction_duration_seconds_count{operation="createProject",outcome="commit"} 1"#,
        "# TYPE harbor_core_db_transaction_duration_seconds summary",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    // `?comp=db` serves only the transaction families.
    assert!(!text.contains("http_request_total"), "{text}");
}

#[tokio::test]
async fn statements_are_not_recorded_unless_enabled() {
    let (t, exporter) = telemetry();
    let pool = memory_pool().await;
    let txs = Transactions::from_telemetry(&t);
    let (_, spans) = request(&t, &exporter, app(&t, pool, txs), "/commit").await;
    let tx = tx_span(&spans, "POST /commit", "tx-createProject");
    assert_eq!(event_names(tx), ["commit"]);
}

#[tokio::test]
async fn rollback_ends_the_span_with_outcome_rollback_and_discards_the_row() {
    let (t, exporter) = telemetry();
    let pool = memory_pool().await;
    let txs = Transactions::from_telemetry(&t);
    let (status, spans) = request(&t, &exporter, app(&t, pool.clone(), txs), "/rollback").await;
    assert_eq!(status, StatusCode::OK);

    let tx = tx_span(&spans, "POST /rollback", "tx-createProject");
    assert_eq!(attr(tx, "outcome").as_deref(), Some("rollback"));
    assert_eq!(tx.status, Status::Unset);
    assert_eq!(event_names(tx), ["rollback"]);
    assert!(project_names(&pool).await.is_empty());
    assert!(metrics_of(&t).contains(
        r#"harbor_core_db_transaction_total{operation="createProject",outcome="rollback"} 1"#
    ));
}

#[tokio::test]
async fn dropping_without_commit_is_a_rollback_on_drop() {
    let (t, exporter) = telemetry();
    let pool = memory_pool().await;
    let txs = Transactions::from_telemetry(&t);
    let (status, spans) = request(&t, &exporter, app(&t, pool.clone(), txs), "/drop").await;
    assert_eq!(status, StatusCode::CONFLICT);

    let tx = tx_span(&spans, "POST /drop", "tx-createProject");
    assert_eq!(attr(tx, "outcome").as_deref(), Some("rollback_on_drop"));
    // The failing statement is the application's error, not the transaction's.
    assert_eq!(tx.status, Status::Unset);
    assert_eq!(event_names(tx), ["rollback_on_drop"]);
    // The first insert of the dropped transaction is gone.
    assert!(project_names(&pool).await.is_empty());
    let text = metrics_of(&t);
    assert!(
        text.contains(
            r#"harbor_core_db_transaction_total{operation="createProject",outcome="rollback_on_drop"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn failing_commit_marks_the_span_with_the_database_error_code() {
    let (t, exporter) = telemetry();
    let pool = memory_pool().await;
    let txs = Transactions::from_telemetry(&t);
    let (status, spans) = request(&t, &exporter, app(&t, pool.clone(), txs), "/commit-fails").await;
    assert_eq!(status, StatusCode::CONFLICT);

    let tx = tx_span(&spans, "POST /commit-fails", "tx-createRepository");
    assert_eq!(attr(tx, "outcome").as_deref(), Some("error"));
    assert!(matches!(tx.status, Status::Error { .. }), "{:?}", tx.status);
    // SQLITE_CONSTRAINT_FOREIGNKEY, SQLite's extended result code.
    assert_eq!(attr(tx, "error.type").as_deref(), Some("787"));
    assert_eq!(attr(tx, "db.response.status_code").as_deref(), Some("787"));
    assert_eq!(event_names(tx), ["commit_failed"]);
    assert_eq!(
        event_attr(tx, "commit_failed", "error.type").as_deref(),
        Some("787")
    );
    // sqlx rolled the failed transaction back: neither row is there.
    assert_eq!(repository_count(&pool).await, 0);
    assert!(project_names(&pool).await.is_empty());
    assert!(metrics_of(&t).contains(
        r#"harbor_core_db_transaction_total{operation="createRepository",outcome="error"} 1"#
    ));
}

#[tokio::test]
async fn failing_begin_on_a_closed_pool_is_an_error_span() {
    let (t, exporter) = telemetry();
    let pool = memory_pool().await;
    pool.close().await;
    let txs = Transactions::from_telemetry(&t);
    let (status, spans) = request(&t, &exporter, app(&t, pool, txs), "/begin-fails").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    let tx = tx_span(&spans, "POST /begin-fails", "tx-listProjects");
    assert_eq!(attr(tx, "outcome").as_deref(), Some("error"));
    assert!(matches!(tx.status, Status::Error { .. }), "{:?}", tx.status);
    assert_eq!(attr(tx, "error.type").as_deref(), Some("pool_closed"));
    assert_eq!(attr(tx, "db.response.status_code"), None);
    assert_eq!(event_names(tx), ["begin_failed"]);
    let text = metrics_of(&t);
    assert!(
        text.contains(
            r#"harbor_core_db_transaction_total{operation="listProjects",outcome="error"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"harbor_core_db_transaction_duration_seconds_count{operation="listProjects",outcome="error"} 1"#
    ));
}

/// A database file in the temp directory, removed (with its journal) when dropped.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("towerscope-db-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("registry.db")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn file_database_keeps_committed_rows_across_pools_under_an_explicit_server_span() {
    let (t, exporter) = telemetry();
    let dir = TempDb::new();
    let pool = file_pool(&dir.file()).await;
    sqlx::raw_sql(SCHEMA).execute(&pool).await.unwrap();
    let txs = Transactions::from_telemetry(&t);

    let subscriber = tracing_subscriber::registry().with(t.tracing_layer());
    let guard = tracing::subscriber::set_default(subscriber);
    let server = tracing::info_span!("server", otel.name = "PUT /projects", otel.kind = "server");
    async {
        // Any begin future can be traced, here SQLite's write-locking `BEGIN IMMEDIATE`.
        let mut tx = txs
            .trace_begin("createProject", pool.begin_with("BEGIN IMMEDIATE"))
            .await
            .unwrap();
        sqlx::query(INSERT_PROJECT)
            .bind("kept")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let mut tx = txs.begin(&pool, "").await.unwrap();
        sqlx::query(INSERT_PROJECT)
            .bind("dropped")
            .execute(&mut *tx)
            .await
            .unwrap();
        drop(tx);
    }
    .instrument(server.clone())
    .await;
    drop(server);
    drop(guard);
    pool.close().await;

    let spans = finished_spans(&t, &exporter, "PUT /projects").await;
    let committed = tx_span(&spans, "PUT /projects", "tx-createProject");
    assert_eq!(attr(committed, "outcome").as_deref(), Some("commit"));
    // Without an operation: Harbor's span name, no operation attribute, `unknown` in metrics.
    let unnamed = tx_span(&spans, "PUT /projects", "start-transaction");
    assert_eq!(
        attr(unnamed, "outcome").as_deref(),
        Some("rollback_on_drop")
    );
    assert_eq!(attr(unnamed, "db.operation.name"), None);
    assert!(metrics_of(&t).contains(
        r#"harbor_core_db_transaction_total{operation="unknown",outcome="rollback_on_drop"} 1"#
    ));

    // A new pool on the same file sees the committed row only.
    let reopened = file_pool(&dir.file()).await;
    assert_eq!(project_names(&reopened).await, ["kept"]);
    reopened.close().await;
}

#[tokio::test]
async fn a_connection_and_a_savepoint_can_be_traced_too() {
    let (t, exporter) = telemetry();
    let pool = memory_pool().await;
    let subscriber = tracing_subscriber::registry().with(t.tracing_layer());
    let guard = tracing::subscriber::set_default(subscriber);
    let server = tracing::info_span!("server", otel.name = "job", otel.kind = "server");
    async {
        let mut conn = pool.acquire().await.unwrap();
        let mut outer = db::begin(&mut *conn, "outer").await.unwrap();
        // `&mut TracedTransaction` is an `Acquire`: a traced savepoint inside the transaction.
        let mut inner = db::begin(&mut outer, "inner").await.unwrap();
        sqlx::query(INSERT_PROJECT)
            .bind("inner")
            .execute(&mut *inner)
            .await
            .unwrap();
        inner.rollback().await.unwrap();
        sqlx::query(INSERT_PROJECT)
            .bind("outer")
            .execute(&mut *outer)
            .await
            .unwrap();
        outer.commit().await.unwrap();
        assert!(conn.ping().await.is_ok());
    }
    .instrument(server.clone())
    .await;
    drop(server);
    drop(guard);

    let spans = finished_spans(&t, &exporter, "job").await;
    assert_eq!(
        attr(tx_span(&spans, "job", "tx-outer"), "outcome").as_deref(),
        Some("commit")
    );
    assert_eq!(
        attr(tx_span(&spans, "job", "tx-inner"), "outcome").as_deref(),
        Some("rollback")
    );
    assert_eq!(project_names(&pool).await, ["outer"]);
    // `db::begin` records no metrics.
    assert!(!t.registry().render().contains("db_transaction_total"));
}

#[tokio::test]
async fn naming_otel_records_the_conventions_duration_and_traced_statement_errors() {
    let config = "metric: { namespace: harbor, subsystem: core, naming: otel }
trace: { enabled: true, service_name: db-test, otel: { endpoint: '127.0.0.1:1' } }";
    let (t, exporter) = support::in_memory_telemetry(config);
    let pool = memory_pool().await;
    let txs = Transactions::from_telemetry(&t);
    let subscriber = tracing_subscriber::registry().with(t.tracing_layer());
    let guard = tracing::subscriber::set_default(subscriber);
    let server = tracing::info_span!("server", otel.name = "job", otel.kind = "server");
    let duplicate = async {
        let mut tx = txs.begin(&pool, "createProject").await.unwrap();
        sqlx::query(INSERT_PROJECT)
            .bind("library")
            .execute(&mut *tx)
            .await
            .traced(&tx)
            .unwrap();
        tx.commit().await.unwrap();

        let mut tx = txs.begin(&pool, "").await.unwrap();
        let duplicate = sqlx::query(INSERT_PROJECT)
            .bind("library")
            .execute(&mut *tx)
            .await
            .traced(&tx);
        // Dropped without rollback, as a `?` would: still the statement's error.
        drop(tx);
        duplicate
    }
    .instrument(server.clone())
    .await;
    drop(server);
    drop(guard);
    // SQLITE_CONSTRAINT_UNIQUE, SQLite's extended result code.
    let code = duplicate
        .unwrap_err()
        .as_database_error()
        .and_then(|db| db.code().map(|c| c.into_owned()));
    assert_eq!(code.as_deref(), Some("2067"));

    let spans = finished_spans(&t, &exporter, "job").await;
    let ok = tx_span(&spans, "job", "tx-createProject");
    assert_eq!(ok.status, Status::Unset);
    assert_eq!(attr(ok, "db.namespace"), None);
    let failed = tx_span(&spans, "job", db::DEFAULT_SPAN_NAME);
    assert!(matches!(failed.status, Status::Error { .. }), "{failed:?}");
    assert_eq!(attr(failed, "error.type").as_deref(), Some("2067"));
    assert_eq!(
        attr(failed, "db.response.status_code").as_deref(),
        Some("2067")
    );
    assert_eq!(attr(failed, "outcome").as_deref(), Some("rollback_on_drop"));
    assert_eq!(
        event_names(failed),
        ["statement_failed", "rollback_on_drop"]
    );
    assert_eq!(
        event_attr(failed, "statement_failed", "error.type").as_deref(),
        Some("2067")
    );

    let text = metrics_of(&t);
    for series in [
        r#"db_client_operation_duration_seconds_count{db_operation_name="createProject",db_system_name="sqlite"} 1"#,
        // No operation name: no db_operation_name; no database name given: no db_namespace.
        r#"db_client_operation_duration_seconds_count{db_response_status_code="2067",db_system_name="sqlite",error_type="2067"} 1"#,
        r#"# TYPE db_client_operation_duration_seconds histogram"#,
        "harbor_core_db_transaction_operation_overflow_total 0",
    ] {
        assert!(text.contains(series), "no {series} in\n{text}");
    }
    assert!(!text.contains("db_transaction_total"), "{text}");
}
