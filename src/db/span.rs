//! The end of a transaction span: its outcome, its error fields and its metrics, recorded once.

use std::{borrow::Cow, sync::Arc, time::Instant};

use tracing::Span;

use super::{metrics::OperationSeries, Outcome, TARGET};

/// The step that failed.
#[derive(Debug, Clone, Copy)]
pub(super) enum Step {
    Begin,
    Commit,
    Rollback,
}

/// Ends the span and records the metrics exactly once: on commit, rollback, failure, or drop.
pub(super) struct Ending {
    pub(super) span: Span,
    pub(super) start: Instant,
    pub(super) series: Option<Arc<OperationSeries>>,
    pub(super) statements: bool,
    pub(super) ended: bool,
}

impl Ending {
    pub(super) fn end(&mut self, outcome: Outcome) {
        self.ended = true;
        self.span.record("outcome", outcome.as_str());
        if let Some(series) = &self.series {
            let (duration, total) = series.handles(outcome);
            duration.record(self.start.elapsed().as_secs_f64());
            total.increment(1);
        }
    }

    pub(super) fn fail(&mut self, step: Step, error: &sqlx::Error) {
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
