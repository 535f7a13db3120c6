//! The transaction metric families and their handles, cached per operation with a cap.

use std::{
    borrow::Cow,
    collections::HashMap,
    fmt,
    sync::{Arc, OnceLock, PoisonError, RwLock},
};

use metrics::{Counter, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, Unit};

use super::{Outcome, TARGET};
use crate::{
    metrics::{MetricsRegistry, OVERFLOW_OPERATION},
    operation::OperationId,
};

/// The `?comp=` component the transaction families are registered under.
pub const DB_COMPONENT: &str = "db";

// `TARGET` is the module path of `db`, where the families were always recorded from.
static METADATA: Metadata<'static> = Metadata::new(TARGET, Level::INFO, Some(TARGET));

/// What an [`OperationSeries`] needs to register its handles lazily.
pub(super) struct Registrar {
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
pub(super) struct OperationSeries {
    label: Label,
    by_outcome: [OnceLock<(Histogram, Counter)>; Outcome::ALL.len()],
    registrar: Arc<Registrar>,
}

impl OperationSeries {
    pub(super) fn handles(&self, outcome: Outcome) -> &(Histogram, Counter) {
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

/// The per-[`Transactions`](super::Transactions) cache of series, with the cap on distinct operations.
pub(super) struct TxMetrics {
    pub(super) registrar: Arc<Registrar>,
    max_operations: usize,
    operations: RwLock<HashMap<Box<str>, Arc<OperationSeries>, foldhash::fast::RandomState>>,
    overflow: OnceLock<Arc<OperationSeries>>,
}

impl TxMetrics {
    pub(super) fn new(registry: &MetricsRegistry, prefix: &str, max_operations: usize) -> Self {
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

    pub(super) fn from_registrar(registrar: Arc<Registrar>, max_operations: usize) -> Self {
        Self {
            registrar,
            max_operations: max_operations.max(1),
            operations: RwLock::new(HashMap::default()),
            overflow: OnceLock::new(),
        }
    }

    /// The series of `operation` (`unknown` when empty), created on first use.
    pub(super) fn series(&self, operation: &str) -> Arc<OperationSeries> {
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
    use crate::{config::MetricConfig, db::Transactions};

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
