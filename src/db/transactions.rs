//! [`Transactions`]: the options of traced transactions, and beginning one inside its span.

use std::{fmt, future::Future, sync::Arc, time::Instant};

use sqlx::{Acquire, Database, Transaction};
use tracing::field::Empty;

use super::{
    metrics::TxMetrics,
    span::{system_name, Ending, Step},
    transaction::TracedTransaction,
    TARGET,
};
use crate::{
    metrics::{MetricsRegistry, DEFAULT_MAX_OPERATIONS},
    Telemetry,
};

/// The span name of a transaction begun without an operation (Harbor's).
pub const DEFAULT_SPAN_NAME: &str = "start-transaction";

/// Begins traced transactions: the span options and, optionally, the metrics they record.
///
/// Cloning is cheap and shares the metric handles.
#[derive(Clone)]
pub struct Transactions {
    pub(super) metrics: Option<Arc<TxMetrics>>,
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
    /// [`DB_COMPONENT`](super::DB_COMPONENT). `prefix` ends in `_` unless empty. Defaults to no metrics.
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
