//! [`Transactions`]: the options of traced transactions, and beginning one inside its span.

use std::{
    fmt,
    future::Future,
    sync::{Arc, OnceLock},
    time::Instant,
};

use sqlx::{Acquire, Database, Transaction};
use tracing::field::Empty;

use super::{
    metrics::{MetricsSpec, TxMetrics},
    span::{system_name, Ending, Step},
    transaction::TracedTransaction,
    TARGET,
};
use crate::metrics::{MetricNaming, MetricsRegistry};

/// The span name of a transaction begun without an operation (Harbor's).
pub const DEFAULT_SPAN_NAME: &str = "start-transaction";

/// Begins traced transactions: the span options and, optionally, the metrics they record.
///
/// Built with [`new`](Self::new) (spans and metrics in a [`MetricsRegistry`]),
/// [`from_telemetry`](Self::from_telemetry) (a started `Telemetry`'s registry and prefix) or
/// [`without_metrics`](Self::without_metrics) (spans only, also the [`Default`]), then the
/// `with_*` setters, which only store their value. The families are described (and served
/// under `?comp=db`) and the series table is built once, at the first transaction; the
/// clones of a `Transactions` share that table and its metric handles.
#[derive(Clone, Default)]
pub struct Transactions {
    /// `None`: spans only.
    metrics: Option<MetricsSpec>,
    statements: bool,
    /// `db.namespace`: the database name, when the application gave it.
    namespace: Option<Arc<str>>,
}

impl fmt::Debug for Transactions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transactions")
            .field("metrics", &self.metrics)
            .field("statements", &self.statements)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Transactions {
    /// Spans, and metrics in `registry`: `db_transaction_duration_seconds`,
    /// `db_transaction_total` (by operation and outcome) and
    /// `db_transaction_operation_overflow_total`, served under the `?comp=` component
    /// [`DB_COMPONENT`](super::DB_COMPONENT) (`db`); no prefix (see
    /// [`with_prefix`](Self::with_prefix)), no statement text.
    pub fn new(registry: &MetricsRegistry) -> Self {
        Self {
            metrics: Some(MetricsSpec::new(registry)),
            statements: false,
            namespace: None,
        }
    }

    /// Spans only: no metrics, no statement text. Also the [`Default`], and what the free
    /// function [`begin`](super::begin) uses.
    pub fn without_metrics() -> Self {
        Self::default()
    }

    /// Puts `prefix` before the family names (`{prefix}db_transaction_total`, ...); it ends
    /// in `_` unless empty. Defaults to none; does nothing without metrics.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        if let Some(spec) = &mut self.metrics {
            spec.set(|spec| spec.prefix = prefix.into());
        }
        self
    }

    /// Caps the distinct `operation` label values; further operations are counted as
    /// `_overflow`, and in `db_transaction_operation_overflow_total`. Defaults to
    /// [`DEFAULT_MAX_OPERATIONS`](crate::metrics::DEFAULT_MAX_OPERATIONS); does nothing
    /// without metrics.
    pub fn with_max_operations(mut self, max: usize) -> Self {
        if let Some(spec) = &mut self.metrics {
            spec.set(|spec| spec.max_operations = max);
        }
        self
    }

    /// The families of `naming`: Harbor's `db_transaction_*` (the default), or with
    /// [`MetricNaming::Otel`] the conventions' `db_client_operation_duration_seconds`
    /// histogram (see "Metrics" in the [module docs](super)). Does nothing without metrics.
    pub fn with_naming(mut self, naming: MetricNaming) -> Self {
        if let Some(spec) = &mut self.metrics {
            spec.set(|spec| spec.naming = naming);
        }
        self
    }

    /// The database name, recorded as `db.namespace` on the spans and, under
    /// [`MetricNaming::Otel`], on the duration; an empty name (the default) records none.
    /// sqlx's drivers know it: e.g. `pool.connect_options().get_database()` on PostgreSQL.
    pub fn with_namespace(mut self, database: &str) -> Self {
        let namespace: Option<Arc<str>> = (!database.is_empty()).then(|| database.into());
        if let Some(spec) = &mut self.metrics {
            spec.set(|spec| spec.namespace = namespace.clone());
        }
        self.namespace = namespace;
        self
    }

    /// Lets [`TracedTransaction::record_statement`] record statement text. Defaults to
    /// `false`: statement text can carry literal values, so recording it is the operator's
    /// choice.
    pub fn with_statements(mut self, record: bool) -> Self {
        self.statements = record;
        self
    }

    /// The series table, built on first use; `None` without metrics.
    pub(super) fn metrics(&self) -> Option<&TxMetrics> {
        self.metrics.as_ref().map(MetricsSpec::table)
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
            db.namespace = Empty,
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
            if let Some(namespace) = &self.namespace {
                span.record("db.namespace", &**namespace);
            }
        }
        Ending {
            span,
            start: Instant::now(),
            series: self.metrics().map(|m| m.series(operation)),
            system: DB::NAME,
            statements: self.statements,
            failure: OnceLock::new(),
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
