//! Database transactions as spans (and, optionally, metrics), for any sqlx database.
//!
//! [`Transactions::begin`] (or the free function [`begin`]) begins a sqlx transaction inside a
//! span named like Harbor's (`tx-<operation>`; `start-transaction` without an operation) and
//! returns a [`TracedTransaction`], which queries run on as on a `sqlx::Transaction`
//! (`.execute(&mut *tx)`). The span ends when the transaction is committed, rolled back, or
//! dropped without either (which sqlx turns into a rollback), and says which happened.
//!
//! Generic over sqlx's databases (tested on SQLite and PostgreSQL). The application depends on sqlx with
//! tokio's runtime and its driver, in the version towerscope's `sqlx` feature is built against
//! (which needs Rust 1.94):
//!
//! ```toml
//! towerscope = { version = "0.1", features = ["sqlx"] }
//! sqlx = { version = "0.9", features = ["runtime-tokio", "postgres"] } # or "sqlite", "mysql"
//! ```
//!
//! [`Transactions::from_telemetry`] takes the registry and prefix of a started `Telemetry`;
//! [`Transactions::without_metrics`] records spans only. See
//! [`examples/sqlx.rs`](https://github.com/towerscope/towerscope/blob/main/examples/sqlx.rs)
//! (`cargo run --example sqlx`): a committed and a rolled-back transaction on in-memory
//! SQLite, and their `db_transaction_*` series.
//!
//! # Example
//!
//! ```
//! use towerscope::{config::MetricConfig, db::Transactions, metrics::MetricsRegistry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), sqlx::Error> {
//! let pool = sqlx::sqlite::SqlitePoolOptions::new()
//!     .max_connections(1)
//!     .connect("sqlite::memory:")
//!     .await?;
//! sqlx::query("CREATE TABLE project (name TEXT NOT NULL)").execute(&pool).await?;
//!
//! let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
//! let transactions = Transactions::new(&registry).with_prefix("harbor_core_");
//!
//! // Inside a request handler, the span `tx-createProject` is a child of the request's span.
//! let mut tx = transactions.begin(&pool, "createProject").await?;
//! sqlx::query("INSERT INTO project (name) VALUES (?)")
//!     .bind("library")
//!     .execute(&mut *tx)
//!     .await?;
//! tx.commit().await?;
//!
//! let (projects,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM project")
//!     .fetch_one(&pool)
//!     .await?;
//! assert_eq!(projects, 1);
//! let text = registry.render_components(&["db"]).unwrap();
//! assert!(text.contains(
//!     r#"harbor_core_db_transaction_total{operation="createProject",outcome="commit"} 1"#
//! ));
//! # Ok(())
//! # }
//! ```
//!
//! # The span
//!
//! A `tracing` span (target `towerscope::db`, level `INFO`), so it nests under the current
//! request span; with the OpenTelemetry layer of `Telemetry` (its `tracing_layer`) it becomes
//! an OpenTelemetry span in the request's trace.
//!
//! | field | value |
//! |---|---|
//! | name (`otel.name`) | `tx-<operation>`, or `start-transaction` when the operation is empty |
//! | `otel.kind` | `client` |
//! | `db.system.name` | `Database::NAME` in lower case: `sqlite`, `postgresql`, `mysql` |
//! | `db.operation.name` | the operation (absent when empty) |
//! | `db.namespace` | the database name given to [`Transactions::with_namespace`] (absent otherwise) |
//! | `outcome` | `commit`, `rollback`, `rollback_on_drop` or `error` ([`Outcome`]) |
//! | `otel.status_code` | `ERROR` when begin, commit or rollback failed, or a statement's error was recorded ([failed statements](#failed-statements)) |
//! | `error.type` | the first failure's: the database's error code (SQLSTATE on PostgreSQL, the extended result code on SQLite), else the kind of sqlx error (`pool_closed`, `pool_timed_out`, `io`, ...) |
//! | `db.response.status_code` | the database's error code, when there is one |
//!
//! The span kind is `client`, as the database semantic conventions ask of calls to a database:
//! the span covers acquiring a connection and the `BEGIN`/`COMMIT` round trips to a server, and
//! trace backends draw the service-to-database edge from client spans. SQLite runs in-process,
//! but the same code runs against PostgreSQL, so the kind does not change with the driver.
//!
//! Events on the span (their names): `rollback` and `rollback_on_drop` (level `INFO`), and
//! `begin_failed` / `commit_failed` / `rollback_failed` (level `WARN`, with `error.type`). A
//! commit is logged at `DEBUG` (`commit`), for log lines only: the OpenTelemetry layer takes
//! `INFO` and above, so it is not on the exported span, whose `outcome` already says `commit`
//! (an `INFO` line for every committed transaction would crowd the default log).
//! Error messages are not recorded: PostgreSQL puts input values in some of them (`invalid input
//! syntax for type integer: "..."`), and bound values are never recorded.
//!
//! ## Failed statements
//!
//! sqlx does not tell the span about the statements run on the transaction. To mark the
//! span with a failing statement's error, pass its result through
//! [`.traced(&tx)`](TraceResult::traced) ([`TraceResult`]), which returns it unchanged
//! ([`TracedTransaction::record`] and [`record_error`](TracedTransaction::record_error) do
//! the same as methods): status `ERROR`, `error.type` and `db.response.status_code` (the
//! SQLSTATE on PostgreSQL, `23505` for a unique violation; SQLite's extended result code),
//! and an event `statement_failed` (level `WARN`, with `error.type`). The first failure of a
//! transaction stays on the span (PostgreSQL answers every later statement of an aborted
//! transaction with `25P02`); each failure adds its event. The `outcome` still says how the
//! transaction ended (`rollback`, `rollback_on_drop`, ...).
//!
//! ```
//! use towerscope::db::{self, TraceResult};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), sqlx::Error> {
//! let pool = sqlx::sqlite::SqlitePoolOptions::new()
//!     .max_connections(1)
//!     .connect("sqlite::memory:")
//!     .await?;
//! sqlx::query("CREATE TABLE project (name TEXT NOT NULL UNIQUE)").execute(&pool).await?;
//!
//! let mut tx = db::begin(&pool, "createProject").await?;
//! let insert = "INSERT INTO project (name) VALUES (?)";
//! sqlx::query(insert).bind("library").execute(&mut *tx).await.traced(&tx)?;
//! // The same name again: the span of `tx` is marked ERROR, error.type = "2067"
//! // (SQLITE_CONSTRAINT_UNIQUE), and the error comes back as it was.
//! let duplicate = sqlx::query(insert).bind("library").execute(&mut *tx).await.traced(&tx);
//! let code = duplicate.unwrap_err().as_database_error().and_then(|e| e.code().map(|c| c.into_owned()));
//! assert_eq!(code.as_deref(), Some("2067"));
//! tx.rollback().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Statement text is recorded only when the application opts in twice: the
//! [`Transactions`] are built [`with_statements(true)`](Transactions::with_statements) and
//! the code calls [`TracedTransaction::record_statement`] (an event `statement` with
//! `db.query.text`, capped at [`MAX_STATEMENT_TEXT`] bytes). Pass the statement with its
//! placeholders; nothing here ever sees the bound values.
//!
//! A transaction dropped while its commit or rollback is still running (a cancelled request)
//! is recorded as `rollback_on_drop`: sqlx then queues a rollback, as for any dropped
//! transaction.
//!
//! ## Threads
//!
//! sqlx's `BEGIN`, `COMMIT` and `ROLLBACK` run in the caller's span, not in the transaction
//! span. sqlx's SQLite driver hands a clone of the current span to its worker thread with every
//! command and drops it there after answering; a span whose last handle drops on a thread where
//! its subscriber is not the default (a subscriber installed with
//! `tracing::subscriber::set_default`, as in tests) never releases its parent, so the request
//! span would never end. The transaction span is therefore only ever held by the
//! [`TracedTransaction`], and ends on the caller's thread. The same caution applies to spans of
//! your own that you make current around SQLite queries.
//!
//! # Metrics
//!
//! Built with [`Transactions::new`] (a registry) or [`Transactions::from_telemetry`] (the
//! registry of a started `Telemetry`, its prefix `{metric.namespace}_{metric.subsystem}_` and
//! its `metric.max_operations`), each transaction is also counted:
//!
//! | family (after the prefix) | type | labels |
//! |---|---|---|
//! | `db_transaction_duration_seconds` | summary (the registry's quantiles) | `operation`, `outcome` |
//! | `db_transaction_total` | counter | `operation`, `outcome` |
//! | `db_transaction_operation_overflow_total` | counter | |
//!
//! The duration runs from the call to `begin` (acquiring a connection included) until the
//! commit or rollback returns, or the transaction is dropped. The families are registered
//! under the `?comp=` component [`DB_COMPONENT`] (`db`). Handles are resolved once per
//! (operation, outcome); operations beyond the cap (default
//! [`DEFAULT_MAX_OPERATIONS`](crate::metrics::DEFAULT_MAX_OPERATIONS)) are counted as
//! [`_overflow`](crate::metrics::OVERFLOW_OPERATION), and each such transaction in
//! `db_transaction_operation_overflow_total`; an empty operation is `unknown`.
//!
//! ## `metric.naming: otel`
//!
//! With [`Transactions::with_naming`] and [`MetricNaming::Otel`](crate::metrics::MetricNaming::Otel) (which
//! [`Transactions::from_telemetry`] sets from `metric.naming: otel`), a transaction is
//! recorded instead as the database semantic conventions' stable
//! `db.client.operation.duration`, in the Prometheus form without prefix, as the other
//! families of the conventions (see [`semconv`](crate::metrics::semconv)):
//!
//! | family | type | labels |
//! |---|---|---|
//! | `db_client_operation_duration_seconds` | histogram (advised buckets 0.001 … 10 s) | `db_system_name`, `db_operation_name`, `db_namespace`, `error_type`, `db_response_status_code` |
//! | `{prefix}db_transaction_operation_overflow_total` | counter | |
//!
//! - `db_system_name`: from the sqlx database type, as on the span (`postgresql`, `sqlite`,
//!   `mysql`);
//! - `db_operation_name`: the transaction's operation, as on the span (`createProject`),
//!   capped like Harbor's `operation` (`_overflow`); absent when the operation is empty (or
//!   `unknown`, which shares that series). The
//!   conventions name the operation the application asked for, and a transaction here is one
//!   operation of the application; its statements are not timed one by one;
//! - `db_namespace`: the database name given to [`Transactions::with_namespace`]; absent
//!   when none was given;
//! - `error_type`, `db_response_status_code`: only when the transaction failed: a begin,
//!   commit or rollback that failed, or a statement's error recorded with
//!   [`traced`](TraceResult::traced); the values are the span's. A rollback, or a drop,
//!   without a recorded error is not a failure by the conventions: it has neither (Harbor's
//!   `outcome` label, or the span's `outcome`, tells them apart).
//!
//! The duration is the same as Harbor's. There is no counter: the histogram's `_count`
//! counts transactions. Over the `metric.otlp` push the histogram goes out as
//! `db.client.operation.duration` (unit `s`) with the attribute keys `db.system.name`,
//! `db.operation.name`, `db.namespace`, `error.type`, `db.response.status_code` (a string);
//! a scrape that allows UTF-8 names gets those names too.
//!
//! For spans without metrics, use [`Transactions::without_metrics`] (also
//! `Transactions::default()`) or the free function [`begin`].

mod metrics;
mod otel;
mod outcome;
mod span;
mod traced;
mod transaction;
mod transactions;

pub use self::{
    metrics::DB_COMPONENT,
    outcome::Outcome,
    traced::TraceResult,
    transaction::{TracedTransaction, MAX_STATEMENT_TEXT},
    transactions::{Transactions, DEFAULT_SPAN_NAME},
};

use sqlx::Acquire;

/// The `tracing` target of the transaction spans and their events.
const TARGET: &str = "towerscope::db";

/// Begins a traced transaction on `conn` (a `&Pool<DB>`, a `&mut DB::Connection`, a
/// `&mut Transaction` for a savepoint, ...) without metrics; see [`Transactions::begin`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), sqlx::Error> {
/// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
/// let mut tx = towerscope::db::begin(&pool, "ping").await?;
/// let (one,): (i64,) = sqlx::query_as("SELECT 1").fetch_one(&mut *tx).await?;
/// tx.commit().await?;
/// assert_eq!(one, 1);
/// # Ok(())
/// # }
/// ```
pub async fn begin<'c, A>(
    conn: A,
    operation: &str,
) -> Result<TracedTransaction<'c, A::Database>, sqlx::Error>
where
    A: Acquire<'c>,
{
    Transactions::without_metrics().begin(conn, operation).await
}
