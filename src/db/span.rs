//! The end of a transaction span: its outcome, its error fields and its metrics, recorded once.

use std::{
    borrow::Cow,
    sync::{Arc, OnceLock},
    time::Instant,
};

use tracing::Span;

use super::{metrics::OperationSeries, Outcome, TARGET};

/// The step that failed.
#[derive(Debug, Clone, Copy)]
pub(super) enum Step {
    Begin,
    Commit,
    Rollback,
}

/// The first failure of a transaction: a failed statement recorded on it, or a failed begin,
/// commit or rollback. Its `error.type` and `db.response.status_code` go on the span and on
/// the OpenTelemetry duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failure {
    pub(super) error_type: Cow<'static, str>,
    /// The database's error code (SQLSTATE on PostgreSQL), when the error has one.
    pub(super) status_code: Option<String>,
}

impl Failure {
    pub(super) fn of(error: &sqlx::Error) -> Self {
        let status_code = match error {
            sqlx::Error::Database(db) => db.code().map(Cow::into_owned),
            _ => None,
        };
        Self {
            error_type: error_type(error),
            status_code,
        }
    }
}

/// Ends the span and records the metrics exactly once: on commit, rollback, failure, or drop.
pub(super) struct Ending {
    pub(super) span: Span,
    pub(super) start: Instant,
    pub(super) series: Option<Arc<OperationSeries>>,
    /// `Database::NAME`.
    pub(super) system: &'static str,
    pub(super) statements: bool,
    /// The first failure; later ones (PostgreSQL refuses every statement after a failed one
    /// with `25P02`) do not replace it.
    pub(super) failure: OnceLock<Failure>,
    pub(super) ended: bool,
}

impl Ending {
    pub(super) fn end(&mut self, outcome: Outcome) {
        self.ended = true;
        self.span.record("outcome", outcome.as_str());
        if let Some(series) = &self.series {
            let seconds = self.start.elapsed().as_secs_f64();
            series.record(outcome, self.system, self.failure.get(), seconds);
        }
    }

    /// Marks the span failed with `error`, unless an earlier failure did; returns the
    /// error's `error.type`.
    pub(super) fn mark_failed(&self, error: &sqlx::Error) -> Cow<'static, str> {
        let failure = Failure::of(error);
        let error_type = failure.error_type.clone();
        if self.failure.set(failure).is_ok() {
            if let Some(failure) = self.failure.get() {
                if let Some(code) = &failure.status_code {
                    self.span.record("db.response.status_code", code.as_str());
                }
                self.span.record("error.type", &*failure.error_type);
                self.span.record("otel.status_code", "ERROR");
            }
        }
        error_type
    }

    pub(super) fn fail(&mut self, step: Step, error: &sqlx::Error) {
        let error_type = self.mark_failed(error);
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

    /// A statement of the transaction failed: the span is marked failed (first failure wins)
    /// and gets an event `statement_failed` with the error's `error.type`.
    pub(super) fn statement_failed(&self, error: &sqlx::Error) {
        let error_type = self.mark_failed(error);
        tracing::warn!(
            target: TARGET,
            parent: &self.span,
            { error.type = &*error_type },
            "statement_failed"
        );
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
pub(super) fn system_name(name: &'static str) -> Cow<'static, str> {
    match name {
        "SQLite" => Cow::Borrowed("sqlite"),
        "PostgreSQL" => Cow::Borrowed("postgresql"),
        "MySQL" => Cow::Borrowed("mysql"),
        other if !other.bytes().any(|b| b.is_ascii_uppercase()) => Cow::Borrowed(other),
        other => Cow::Owned(other.to_ascii_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
