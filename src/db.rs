//! Database transactions as spans (and, optionally, metrics), for any sqlx database.
//!
//! [`Transactions::begin`] (or the free function [`begin`]) begins a sqlx transaction inside a
//! span named like Harbor's (`tx-<operation>`; `start-transaction` without an operation) and
//! returns a [`TracedTransaction`], which queries run on as on a `sqlx::Transaction`
//! (`.execute(&mut *tx)`). The span ends when the transaction is committed, rolled back, or
//! dropped without either (which sqlx turns into a rollback), and says which happened.
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
//! let transactions = Transactions::new().with_metrics(&registry, "harbor_core_");
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
//! request span; with the OpenTelemetry layer of [`Telemetry`] it becomes an
//! OpenTelemetry span in the request's trace.
//!
//! | field | value |
//! |---|---|
//! | name (`otel.name`) | `tx-<operation>`, or `start-transaction` when the operation is empty |
//! | `otel.kind` | `client` |
//! | `db.system.name` | `Database::NAME` in lower case: `sqlite`, `postgresql`, `mysql` |
//! | `db.operation.name` | the operation (absent when empty) |
//! | `outcome` | `commit`, `rollback`, `rollback_on_drop` or `error` ([`Outcome`]) |
//! | `otel.status_code` | `ERROR` when begin, commit or rollback failed |
//! | `error.type` | the database's error code (SQLSTATE on PostgreSQL, the extended result code on SQLite), else the kind of sqlx error (`pool_closed`, `pool_timed_out`, `io`, ...) |
//! | `db.response.status_code` | the database's error code, when there is one |
//!
//! The span kind is `client`, as the database semantic conventions ask of calls to a database:
//! the span covers acquiring a connection and the `BEGIN`/`COMMIT` round trips to a server, and
//! trace backends draw the service-to-database edge from client spans. SQLite runs in-process,
//! but the same code runs against PostgreSQL, so the kind does not change with the driver.
//!
//! Events on the span (their names): `commit`, `rollback`, `rollback_on_drop`, and
//! `begin_failed` / `commit_failed` / `rollback_failed` (level `WARN`, with `error.type`).
//! Error messages are not recorded: PostgreSQL puts input values in some of them (`invalid input
//! syntax for type integer: "..."`), and bound values are never recorded.
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
//! Built [`with_metrics`](Transactions::with_metrics), each transaction is also counted:
//!
//! | family (after the prefix) | type | labels |
//! |---|---|---|
//! | `db_transaction_duration_seconds` | summary (the registry's quantiles) | `operation`, `outcome` |
//! | `db_transaction_total` | counter | `operation`, `outcome` |
//!
//! The duration runs from the call to `begin` (acquiring a connection included) until the
//! commit or rollback returns, or the transaction is dropped. Both families are registered
//! under the `?comp=` component [`DB_COMPONENT`] (`db`). Handles are resolved once per
//! (operation, outcome); operations beyond the cap (default
//! [`DEFAULT_MAX_OPERATIONS`]) are counted as
//! [`_overflow`](crate::metrics::OVERFLOW_OPERATION), an empty operation as `unknown`.

use crate::text::capped;
use std::{
    borrow::Cow,
    collections::HashMap,
    fmt,
    future::Future,
    ops::{Deref, DerefMut},
    pin::Pin,
    sync::{Arc, OnceLock, PoisonError, RwLock},
    time::Instant,
};

use metrics::{Counter, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, Unit};
use sqlx::{Acquire, Database, Transaction};
use tracing::{field::Empty, Span};

use crate::{
    metrics::{MetricsRegistry, DEFAULT_MAX_OPERATIONS, OVERFLOW_OPERATION},
    operation::OperationId,
    Telemetry,
};

/// The `?comp=` component the transaction families are registered under.
pub const DB_COMPONENT: &str = "db";

/// The span name of a transaction begun without an operation (Harbor's).
pub const DEFAULT_SPAN_NAME: &str = "start-transaction";

/// Longest statement text recorded by [`TracedTransaction::record_statement`], in bytes.
pub const MAX_STATEMENT_TEXT: usize = 2048;

/// The `tracing` target of the transaction spans and their events.
const TARGET: &str = "towerscope::db";

/// How a transaction ended: the span's `outcome` and the metrics' `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Committed.
    Commit,
    /// Rolled back by [`TracedTransaction::rollback`].
    Rollback,
    /// Dropped without commit or rollback; sqlx rolls it back.
    RollbackOnDrop,
    /// Begin, commit or rollback failed.
    Error,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Outcome; 4] = [
        Outcome::Commit,
        Outcome::Rollback,
        Outcome::RollbackOnDrop,
        Outcome::Error,
    ];

    /// The label value: `commit`, `rollback`, `rollback_on_drop` or `error`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Commit => "commit",
            Self::Rollback => "rollback",
            Self::RollbackOnDrop => "rollback_on_drop",
            Self::Error => "error",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    Transactions::new().begin(conn, operation).await
}

/// Begins traced transactions: the span options and, optionally, the metrics they record.
///
/// Cloning is cheap and shares the metric handles.
#[derive(Clone)]
pub struct Transactions {
    metrics: Option<Arc<TxMetrics>>,
    max_operations: usize,
    statements: bool,
}

impl Default for Transactions {
    fn default() -> Self {
        Self {
            metrics: None,
            max_operations: DEFAULT_MAX_OPERATIONS,
            statements: false,
        }
    }
}

impl fmt::Debug for Transactions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transactions")
            .field("metrics", &self.metrics.as_ref().map(|m| &m.registrar))
            .field("max_operations", &self.max_operations)
            .field("statements", &self.statements)
            .finish()
    }
}

impl Transactions {
    /// Spans only: no metrics, no statement text.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spans and metrics in the telemetry's registry, with its prefix
    /// (`{namespace}_{subsystem}_`) and its cap on distinct operations (`metric.max_operations`).
    pub fn from_telemetry(telemetry: &Telemetry) -> Self {
        let metric = &telemetry.config().metric;
        Self::new()
            .with_max_operations(metric.max_operations)
            .with_metrics(telemetry.registry(), &metric.prefix())
    }

    /// Records `{prefix}db_transaction_duration_seconds` and `{prefix}db_transaction_total` by
    /// operation and outcome in `registry`, registered under the `?comp=` component
    /// [`DB_COMPONENT`]. `prefix` ends in `_` unless empty. Defaults to no metrics.
    pub fn with_metrics(mut self, registry: &MetricsRegistry, prefix: &str) -> Self {
        self.metrics = Some(Arc::new(TxMetrics::new(
            registry,
            prefix,
            self.max_operations,
        )));
        self
    }

    /// Caps the distinct `operation` label values; further operations are counted as
    /// `_overflow`. Defaults to [`DEFAULT_MAX_OPERATIONS`].
    pub fn with_max_operations(mut self, max: usize) -> Self {
        self.max_operations = max.max(1);
        if let Some(metrics) = &mut self.metrics {
            *metrics = Arc::new(TxMetrics::from_registrar(
                metrics.registrar.clone(),
                self.max_operations,
            ));
        }
        self
    }

    /// Lets [`TracedTransaction::record_statement`] record statement text. Defaults to
    /// `false`: statement text can carry literal values, so recording it is the operator's
    /// choice.
    pub fn with_statements(mut self, record: bool) -> Self {
        self.statements = record;
        self
    }

    /// Begins a transaction on `conn` inside a span `tx-<operation>` (`start-transaction` when
    /// `operation` is empty), a child of the current span.
    ///
    /// `conn` is anything sqlx can begin a transaction on: `&Pool<DB>`, `&mut DB::Connection`,
    /// or a `&mut` (traced) transaction for a savepoint. A failed begin ends the span with the
    /// outcome `error` and returns sqlx's error.
    pub async fn begin<'c, A>(
        &self,
        conn: A,
        operation: &str,
    ) -> Result<TracedTransaction<'c, A::Database>, sqlx::Error>
    where
        A: Acquire<'c>,
    {
        let ending = self.start::<A::Database>(operation);
        Self::finish_begin(ending, conn.begin()).await
    }

    /// Like [`begin`](Self::begin), beginning through `begin`: any future that yields a sqlx
    /// transaction, such as `pool.begin_with("BEGIN IMMEDIATE")`. The span starts now.
    pub async fn trace_begin<'c, DB, F>(
        &self,
        operation: &str,
        begin: F,
    ) -> Result<TracedTransaction<'c, DB>, sqlx::Error>
    where
        DB: Database,
        F: Future<Output = Result<Transaction<'c, DB>, sqlx::Error>>,
    {
        let ending = self.start::<DB>(operation);
        Self::finish_begin(ending, begin).await
    }

    fn start<DB: Database>(&self, operation: &str) -> Ending {
        let span = tracing::info_span!(
            target: TARGET,
            "db.transaction",
            otel.name = Empty,
            otel.kind = "client",
            otel.status_code = Empty,
            db.system.name = Empty,
            db.operation.name = Empty,
            db.response.status_code = Empty,
            error.type = Empty,
            outcome = Empty,
        );
        if !span.is_disabled() {
            if operation.is_empty() {
                span.record("otel.name", DEFAULT_SPAN_NAME);
            } else {
                span.record("otel.name", format!("tx-{operation}"));
                span.record("db.operation.name", operation);
            }
            span.record("db.system.name", &*system_name(DB::NAME));
        }
        Ending {
            span,
            start: Instant::now(),
            series: self.metrics.as_ref().map(|m| m.series(operation)),
            statements: self.statements,
            ended: false,
        }
    }

    async fn finish_begin<'c, DB, F>(
        mut ending: Ending,
        begin: F,
    ) -> Result<TracedTransaction<'c, DB>, sqlx::Error>
    where
        DB: Database,
        F: Future<Output = Result<Transaction<'c, DB>, sqlx::Error>>,
    {
        // A begin future dropped here leaves `ending` unended: recorded as rollback_on_drop,
        // which is what sqlx does with a half-begun transaction. sqlx's futures run in the
        // caller's span, not ours (see "Threads" in the module docs).
        match begin.await {
            Ok(tx) => Ok(TracedTransaction { tx, ending }),
            Err(e) => {
                ending.fail(Step::Begin, &e);
                Err(e)
            }
        }
    }
}

/// A sqlx transaction inside its span; see the [module docs](self).
///
/// Dereferences to the connection like `sqlx::Transaction` does, so queries take `&mut *tx`.
/// End it with [`commit`](Self::commit) or [`rollback`](Self::rollback); dropped without
/// either, it is rolled back by sqlx and its span says `rollback_on_drop`.
pub struct TracedTransaction<'c, DB: Database> {
    // Dropped first: sqlx queues its rollback before the span ends.
    tx: Transaction<'c, DB>,
    ending: Ending,
}

impl<DB: Database> fmt::Debug for TracedTransaction<'_, DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedTransaction")
            .field("database", &DB::NAME)
            .field("span", &self.ending.span)
            .finish_non_exhaustive()
    }
}

impl<'c, DB: Database> TracedTransaction<'c, DB> {
    /// Commits the transaction and ends the span with the outcome `commit`, or `error` (and the
    /// error marked) when the commit fails; sqlx then rolls the transaction back.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let Self { tx, mut ending } = self;
        match tx.commit().await {
            Ok(()) => {
                tracing::info!(target: TARGET, parent: &ending.span, "commit");
                ending.end(Outcome::Commit);
                Ok(())
            }
            Err(e) => {
                ending.fail(Step::Commit, &e);
                Err(e)
            }
        }
    }

    /// Rolls the transaction back and ends the span with the outcome `rollback`, or `error`
    /// when the rollback fails.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        let Self { tx, mut ending } = self;
        match tx.rollback().await {
            Ok(()) => {
                tracing::info!(target: TARGET, parent: &ending.span, "rollback");
                ending.end(Outcome::Rollback);
                Ok(())
            }
            Err(e) => {
                ending.fail(Step::Rollback, &e);
                Err(e)
            }
        }
    }

    /// Adds an event `statement` with `db.query.text` = `sql` (capped at
    /// [`MAX_STATEMENT_TEXT`] bytes) to the span, when the [`Transactions`] were built
    /// [`with_statements(true)`](Transactions::with_statements); does nothing otherwise.
    /// Pass the statement with its placeholders, never with values spliced in.
    pub fn record_statement(&self, sql: &str) {
        if self.ending.statements {
            tracing::info!(
                target: TARGET,
                parent: &self.ending.span,
                { db.query.text = capped(sql, MAX_STATEMENT_TEXT) },
                "statement"
            );
        }
    }

    /// The transaction's span, e.g. to record fields of your own on it or to parent spans
    /// explicitly (`tracing::info_span!(parent: tx.span(), ...)`; see "Threads" in the
    /// [module docs](self) before making such a span current around SQLite queries).
    pub fn span(&self) -> &Span {
        &self.ending.span
    }

    /// The sqlx transaction.
    pub fn as_transaction(&self) -> &Transaction<'c, DB> {
        &self.tx
    }

    /// The sqlx transaction, e.g. to hand to code that takes `&mut Transaction`.
    pub fn as_transaction_mut(&mut self) -> &mut Transaction<'c, DB> {
        &mut self.tx
    }
}

impl<DB: Database> Deref for TracedTransaction<'_, DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl<DB: Database> DerefMut for TracedTransaction<'_, DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl<DB: Database> AsMut<DB::Connection> for TracedTransaction<'_, DB> {
    fn as_mut(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }
}

/// sqlx's boxed future (`futures_core::future::BoxFuture`), as [`Acquire`] returns it.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Like `&mut sqlx::Transaction`: code generic over [`Acquire`] takes `&mut tx`, and `begin`
/// opens a savepoint.
impl<'t, DB: Database> Acquire<'t> for &'t mut TracedTransaction<'_, DB> {
    type Database = DB;
    type Connection = &'t mut DB::Connection;

    fn acquire(self) -> BoxFuture<'t, Result<Self::Connection, sqlx::Error>> {
        (&mut self.tx).acquire()
    }

    fn begin(self) -> BoxFuture<'t, Result<Transaction<'t, DB>, sqlx::Error>> {
        (&mut self.tx).begin()
    }
}

/// The step that failed.
#[derive(Debug, Clone, Copy)]
enum Step {
    Begin,
    Commit,
    Rollback,
}

/// Ends the span and records the metrics exactly once: on commit, rollback, failure, or drop.
struct Ending {
    span: Span,
    start: Instant,
    series: Option<Arc<OperationSeries>>,
    statements: bool,
    ended: bool,
}

impl Ending {
    fn end(&mut self, outcome: Outcome) {
        self.ended = true;
        self.span.record("outcome", outcome.as_str());
        if let Some(series) = &self.series {
            let (duration, total) = series.handles(outcome);
            duration.record(self.start.elapsed().as_secs_f64());
            total.increment(1);
        }
    }

    fn fail(&mut self, step: Step, error: &sqlx::Error) {
        let error_type = error_type(error);
        if let sqlx::Error::Database(db) = error {
            if let Some(code) = db.code() {
                self.span.record("db.response.status_code", &*code);
            }
        }
        self.span.record("error.type", &*error_type);
        self.span.record("otel.status_code", "ERROR");
        let parent = &self.span;
        match step {
            Step::Begin => {
                tracing::warn!(target: TARGET, parent: parent, { error.type = &*error_type }, "begin_failed")
            }
            Step::Commit => {
                tracing::warn!(target: TARGET, parent: parent, { error.type = &*error_type }, "commit_failed")
            }
            Step::Rollback => {
                tracing::warn!(target: TARGET, parent: parent, { error.type = &*error_type }, "rollback_failed")
            }
        }
        self.end(Outcome::Error);
    }
}

impl Drop for Ending {
    fn drop(&mut self) {
        if !self.ended {
            tracing::info!(target: TARGET, parent: &self.span, "rollback_on_drop");
            self.end(Outcome::RollbackOnDrop);
        }
    }
}

/// `error.type` of a sqlx error: the database's code, else the kind of error.
fn error_type(error: &sqlx::Error) -> Cow<'static, str> {
    use sqlx::Error as E;
    let kind = match error {
        E::Database(db) => {
            return match db.code() {
                Some(code) => Cow::Owned(code.into_owned()),
                None => Cow::Borrowed("database"),
            }
        }
        E::Configuration(_) => "configuration",
        E::InvalidArgument(_) => "invalid_argument",
        E::Io(_) => "io",
        E::Tls(_) => "tls",
        E::Protocol(_) => "protocol",
        E::RowNotFound => "row_not_found",
        E::TypeNotFound { .. } => "type_not_found",
        E::ColumnIndexOutOfBounds { .. } => "column_index_out_of_bounds",
        E::ColumnNotFound(_) => "column_not_found",
        E::ColumnDecode { .. } => "column_decode",
        E::Encode(_) => "encode",
        E::Decode(_) => "decode",
        E::AnyDriverError(_) => "any_driver",
        E::PoolTimedOut => "pool_timed_out",
        E::PoolClosed => "pool_closed",
        E::WorkerCrashed => "worker_crashed",
        E::InvalidSavePointStatement => "invalid_savepoint_statement",
        E::BeginFailed => "begin_failed",
        // The semantic conventions' fallback for an error without a known name.
        _ => "_OTHER",
    };
    Cow::Borrowed(kind)
}

/// `db.system.name` from `Database::NAME`, without allocating for the common drivers.
fn system_name(name: &'static str) -> Cow<'static, str> {
    match name {
        "SQLite" => Cow::Borrowed("sqlite"),
        "PostgreSQL" => Cow::Borrowed("postgresql"),
        "MySQL" => Cow::Borrowed("mysql"),
        other if !other.bytes().any(|b| b.is_ascii_uppercase()) => Cow::Borrowed(other),
        other => Cow::Owned(other.to_ascii_lowercase()),
    }
}

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(TARGET));

/// What an [`OperationSeries`] needs to register its handles lazily.
struct Registrar {
    recorder: Arc<dyn Recorder + Send + Sync>,
    duration: KeyName,
    total: KeyName,
}

impl fmt::Debug for Registrar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registrar")
            .field("duration", &self.duration)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

/// The handles of one operation, one (duration, total) pair per outcome.
struct OperationSeries {
    label: Label,
    by_outcome: [OnceLock<(Histogram, Counter)>; Outcome::ALL.len()],
    registrar: Arc<Registrar>,
}

impl OperationSeries {
    fn handles(&self, outcome: Outcome) -> &(Histogram, Counter) {
        self.by_outcome[outcome.index()].get_or_init(|| {
            let labels = vec![
                self.label.clone(),
                Label::from_static_parts("outcome", outcome.as_str()),
            ];
            let r = &self.registrar;
            let duration = Key::from_parts(r.duration.clone(), labels.clone());
            let total = Key::from_parts(r.total.clone(), labels);
            (
                r.recorder.register_histogram(&duration, &METADATA),
                r.recorder.register_counter(&total, &METADATA),
            )
        })
    }
}

/// The per-[`Transactions`] cache of series, with the cap on distinct operations.
struct TxMetrics {
    registrar: Arc<Registrar>,
    max_operations: usize,
    operations: RwLock<HashMap<Box<str>, Arc<OperationSeries>, foldhash::fast::RandomState>>,
    overflow: OnceLock<Arc<OperationSeries>>,
}

impl TxMetrics {
    fn new(registry: &MetricsRegistry, prefix: &str, max_operations: usize) -> Self {
        let duration = format!("{prefix}db_transaction_duration_seconds");
        let total = format!("{prefix}db_transaction_total");
        registry.register_component(DB_COMPONENT, [&duration, &total]);
        let recorder: Arc<dyn Recorder + Send + Sync> = registry.recorder();
        recorder.describe_histogram(
            KeyName::from(duration.clone()),
            Some(Unit::Seconds),
            "Database transaction durations in seconds, from begin (acquiring a connection included) to commit, rollback or drop, by operation and outcome.".into(),
        );
        recorder.describe_counter(
            KeyName::from(total.clone()),
            None,
            "Database transactions by operation and outcome (commit, rollback, rollback_on_drop, error).".into(),
        );
        Self::from_registrar(
            Arc::new(Registrar {
                recorder,
                duration: duration.into(),
                total: total.into(),
            }),
            max_operations,
        )
    }

    fn from_registrar(registrar: Arc<Registrar>, max_operations: usize) -> Self {
        Self {
            registrar,
            max_operations: max_operations.max(1),
            operations: RwLock::new(HashMap::default()),
            overflow: OnceLock::new(),
        }
    }

    /// The series of `operation` (`unknown` when empty), created on first use.
    fn series(&self, operation: &str) -> Arc<OperationSeries> {
        let operation = if operation.is_empty() {
            OperationId::UNKNOWN
        } else {
            operation
        };
        if let Some(series) = self
            .operations
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(operation)
        {
            return series.clone();
        }
        let mut ops = self
            .operations
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = ops.get(operation) {
            return series.clone();
        }
        if ops.len() >= self.max_operations {
            drop(ops);
            return self
                .overflow
                .get_or_init(|| self.new_series(Cow::Borrowed(OVERFLOW_OPERATION)))
                .clone();
        }
        let series = self.new_series(Cow::Owned(operation.to_owned()));
        ops.insert(operation.into(), series.clone());
        series
    }

    fn new_series(&self, operation: Cow<'static, str>) -> Arc<OperationSeries> {
        Arc::new(OperationSeries {
            label: Label::new("operation", operation),
            by_outcome: std::array::from_fn(|_| OnceLock::new()),
            registrar: self.registrar.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MetricConfig;

    #[test]
    fn system_names_are_the_semantic_convention_values() {
        assert_eq!(system_name("SQLite"), "sqlite");
        assert_eq!(system_name("PostgreSQL"), "postgresql");
        assert_eq!(system_name("MySQL"), "mysql");
        assert_eq!(system_name("Any"), "any");
        assert_eq!(system_name("mariadb"), "mariadb");
    }

    #[test]
    fn error_types_name_the_kind_of_error() {
        assert_eq!(error_type(&sqlx::Error::PoolClosed), "pool_closed");
        assert_eq!(error_type(&sqlx::Error::PoolTimedOut), "pool_timed_out");
        assert_eq!(error_type(&sqlx::Error::RowNotFound), "row_not_found");
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(error_type(&sqlx::Error::Io(io)), "io");
        assert_eq!(error_type(&sqlx::Error::Protocol("x".into())), "protocol");
    }

    #[test]
    fn statement_text_is_capped_at_a_char_boundary() {
        assert_eq!(capped("SELECT 1", 100), "SELECT 1");
        assert_eq!(capped("abc", 2), "ab");
        // 'é' is two bytes: cutting inside it backs off to before it.
        assert_eq!(capped("aé", 2), "a");
    }

    #[test]
    fn outcomes_index_their_slots_in_label_order() {
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(outcome.index(), i);
        }
        assert_eq!(Outcome::RollbackOnDrop.to_string(), "rollback_on_drop");
    }

    #[test]
    fn series_are_cached_per_operation_and_capped() {
        let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
        let tx = Transactions::new()
            .with_metrics(&registry, "t_")
            .with_max_operations(2);
        let metrics = tx.metrics.as_ref().unwrap();
        let a = metrics.series("a");
        assert!(Arc::ptr_eq(&a, &metrics.series("a")));
        let unknown = metrics.series("");
        assert_eq!(unknown.label.value(), "unknown");
        let over = metrics.series("c");
        assert_eq!(over.label.value(), OVERFLOW_OPERATION);
        assert!(Arc::ptr_eq(&over, &metrics.series("d")));
        // Known operations keep their series once the cap is reached.
        assert!(Arc::ptr_eq(&a, &metrics.series("a")));

        a.handles(Outcome::Commit).1.increment(2);
        let text = registry.render_components(&[DB_COMPONENT]).unwrap();
        assert!(
            text.contains(r#"t_db_transaction_total{operation="a",outcome="commit"} 2"#),
            "{text}"
        );
        assert!(text.contains("# HELP t_db_transaction_total"), "{text}");
    }

    #[test]
    fn the_cap_set_before_the_registry_applies() {
        let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
        let tx = Transactions::new()
            .with_max_operations(1)
            .with_metrics(&registry, "");
        let metrics = tx.metrics.as_ref().unwrap();
        metrics.series("a");
        assert_eq!(metrics.series("b").label.value(), OVERFLOW_OPERATION);
    }
}
