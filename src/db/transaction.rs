//! [`TracedTransaction`]: a sqlx transaction inside its span.

use std::{
    fmt,
    future::Future,
    ops::{Deref, DerefMut},
    pin::Pin,
};

use sqlx::{Acquire, Database, Transaction};
use tracing::Span;

use super::{
    span::{Ending, Step},
    Outcome, TARGET,
};
use crate::text::capped;

/// Longest statement text recorded by [`TracedTransaction::record_statement`], in bytes.
pub const MAX_STATEMENT_TEXT: usize = 2048;

/// A sqlx transaction inside its span; see the [module docs](super).
///
/// Dereferences to the connection like `sqlx::Transaction` does, so queries take `&mut *tx`.
/// End it with [`commit`](Self::commit) or [`rollback`](Self::rollback); dropped without
/// either, it is rolled back by sqlx and its span says `rollback_on_drop`.
pub struct TracedTransaction<'c, DB: Database> {
    // Dropped first: sqlx queues its rollback before the span ends.
    pub(super) tx: Transaction<'c, DB>,
    pub(super) ending: Ending,
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
                tracing::debug!(target: TARGET, parent: &ending.span, "commit");
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
    /// [`MAX_STATEMENT_TEXT`] bytes) to the span, when the [`Transactions`](super::Transactions) were built
    /// [`with_statements(true)`](super::Transactions::with_statements); does nothing otherwise.
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

    /// Marks the span failed with a statement's `error`: status `ERROR`, `error.type` and
    /// `db.response.status_code` (the database's error code, SQLSTATE on PostgreSQL), an
    /// event `statement_failed`; under `metric.naming: otel` the transaction's duration gets
    /// the same `error_type` and `db_response_status_code`. The first failure of a
    /// transaction wins: later ones only add their event. Usually called through
    /// [`TraceResult::traced`](super::TraceResult::traced).
    pub fn record_error(&self, error: &sqlx::Error) {
        self.ending.statement_failed(error);
    }

    /// Passes `result` through unchanged, marking the span failed when it is an error (see
    /// [`record_error`](Self::record_error)).
    pub fn record<T>(&self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        if let Err(error) = &result {
            self.record_error(error);
        }
        result
    }

    /// The transaction's span, e.g. to record fields of your own on it or to parent spans
    /// explicitly (`tracing::info_span!(parent: tx.span(), ...)`; see "Threads" in the
    /// [module docs](super) before making such a span current around SQLite queries).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_text_is_capped_at_a_char_boundary() {
        assert_eq!(capped("SELECT 1", 100), "SELECT 1");
        assert_eq!(capped("abc", 2), "ab");
        // 'é' is two bytes: cutting inside it backs off to before it.
        assert_eq!(capped("aé", 2), "a");
    }
}
