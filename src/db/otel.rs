//! The transaction duration of `metric.naming: otel`: the database semantic conventions'
//! `db.client.operation.duration` (Prometheus name `db_client_operation_duration_seconds`),
//! one histogram series per (system, operation, namespace, failure).

use std::sync::OnceLock;

use metrics::{Histogram, Key, Label, SharedString};

use super::span::{system_name, Failure};
use crate::metrics::{
    semconv::{sorted, DB_CLIENT_OPERATION_DURATION},
    toolkit::{Family, RecorderRef},
};

/// The family of `metric.naming: otel`, without prefix (as the conventions' families are).
pub(super) fn family() -> Family {
    Family::seconds(
        DB_CLIENT_OPERATION_DURATION,
        "Duration of database transactions, from begin (acquiring a connection included) to commit, rollback or drop (OpenTelemetry db.client.operation.duration).",
    )
}

/// The durations of one operation label.
#[derive(Debug)]
pub(super) struct OtelSeries {
    /// `db_operation_name` (absent for an empty operation) and `db_namespace` (when known).
    labels: Vec<Label>,
    /// The series without failure, of the first database system seen (a `Transactions` is
    /// almost always used with one driver; another one is looked up in the recorder).
    ok: OnceLock<(&'static str, Histogram)>,
    recorder: RecorderRef,
}

impl OtelSeries {
    /// The series of `operation` (`None`: no operation name) in `namespace` (`None`: unknown).
    pub(super) fn new(
        recorder: RecorderRef,
        operation: Option<SharedString>,
        namespace: Option<&str>,
    ) -> Self {
        let mut labels = Vec::with_capacity(2);
        if let Some(operation) = operation {
            labels.push(Label::new("db_operation_name", operation));
        }
        if let Some(namespace) = namespace {
            labels.push(Label::new("db_namespace", namespace.to_owned()));
        }
        Self {
            labels,
            ok: OnceLock::new(),
            recorder,
        }
    }

    /// Records a transaction of the database `system` (`Database::NAME`) that took `seconds`
    /// and ended with `failure`, if any.
    pub(super) fn record(&self, system: &'static str, failure: Option<&Failure>, seconds: f64) {
        match failure {
            None => {
                let (first, ok) = self
                    .ok
                    .get_or_init(|| (system, self.histogram(system, None)));
                if *first == system {
                    ok.record(seconds);
                } else {
                    self.histogram(system, None).record(seconds);
                }
            }
            // Failures are rare: their series are looked up in the recorder each time.
            Some(failure) => self.histogram(system, Some(failure)).record(seconds),
        }
    }

    fn histogram(&self, system: &'static str, failure: Option<&Failure>) -> Histogram {
        let mut labels = self.labels.clone();
        labels.push(Label::new("db_system_name", system_name(system)));
        if let Some(failure) = failure {
            labels.push(Label::new("error_type", failure.error_type.clone()));
            if let Some(code) = &failure.status_code {
                labels.push(Label::new("db_response_status_code", code.clone()));
            }
        }
        let key = Key::from_parts(DB_CLIENT_OPERATION_DURATION, sorted(labels));
        self.recorder.histogram(&key)
    }
}
