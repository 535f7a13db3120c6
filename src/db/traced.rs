//! [`TraceResult`]: a statement's result marks its transaction's span when it failed.

use sqlx::Database;

use super::TracedTransaction;

/// Records a failed statement on its transaction's span, passing the result through:
/// `sqlx::query(...).execute(&mut *tx).await.traced(&tx)?`.
///
/// Implemented for sqlx's results (`Result<T, sqlx::Error>`); see
/// [`TracedTransaction::record_error`] for what an error marks.
pub trait TraceResult: Sized {
    /// Returns `self` unchanged; an error is recorded on `tx`'s span first.
    fn traced<DB: Database>(self, tx: &TracedTransaction<'_, DB>) -> Self;
}

impl<T> TraceResult for Result<T, sqlx::Error> {
    fn traced<DB: Database>(self, tx: &TracedTransaction<'_, DB>) -> Self {
        tx.record(self)
    }
}
