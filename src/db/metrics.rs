//! The transaction families, and their handles per operation in a capped [`LabelTable`].

use std::sync::{Arc, OnceLock};

use metrics::{Counter, Histogram, Key, Label, SharedString};

use super::Outcome;
use crate::{
    metrics::{
        toolkit::{self, Family, LabelTable, RecorderRef},
        MetricsRegistry, DEFAULT_MAX_OPERATIONS,
    },
    operation::OperationId,
};

/// The `?comp=` component the transaction families are registered under.
pub const DB_COMPONENT: &str = "db";

/// The transaction families under `prefix`, with their help texts: duration, total, overflow.
pub(super) fn families(prefix: &str) -> [Family; 3] {
    [
        Family::seconds(
            format!("{prefix}db_transaction_duration_seconds"),
            "Database transaction durations in seconds, from begin (acquiring a connection included) to commit, rollback or drop, by operation and outcome.",
        ),
        Family::counter(
            format!("{prefix}db_transaction_total"),
            "Database transactions by operation and outcome (commit, rollback, rollback_on_drop, error).",
        ),
        Family::counter(
            format!("{prefix}db_transaction_operation_overflow_total"),
            "Database transactions labelled operation=\"_overflow\" because the cap on distinct operations was reached.",
        ),
    ]
}

/// Where and under which names an [`OperationSeries`] registers its handles.
#[derive(Debug)]
struct Registrar {
    recorder: RecorderRef,
    duration: SharedString,
    total: SharedString,
}

/// The handles of one operation, one (duration, total) pair per outcome, each registered
/// with its first transaction.
#[derive(Debug)]
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
            (r.recorder.histogram(&duration), r.recorder.counter(&total))
        })
    }
}

/// The series of each operation, built once per [`Transactions`](super::Transactions) (and
/// shared by its clones).
#[derive(Debug)]
pub(super) struct TxMetrics {
    registrar: Arc<Registrar>,
    operations: LabelTable<OperationSeries>,
}

impl TxMetrics {
    /// An empty table for the `families` (as [`families`] returns them) recorded in
    /// `recorder`; the families are described by the caller. The overflow counter is
    /// registered now.
    pub(super) fn new(
        recorder: RecorderRef,
        families: &[Family; 3],
        max_operations: usize,
    ) -> Self {
        let [duration, total, overflow] = families.clone().map(|family| family.name);
        Self {
            operations: LabelTable::new(max_operations)
                .with_overflow_counter(recorder.clone(), overflow),
            registrar: Arc::new(Registrar {
                recorder,
                duration,
                total,
            }),
        }
    }

    /// The series of `operation` (`unknown` when empty), created on first use.
    pub(super) fn series(&self, operation: &str) -> Arc<OperationSeries> {
        let operation = if operation.is_empty() {
            OperationId::UNKNOWN
        } else {
            operation
        };
        self.operations.get(operation, |label| OperationSeries {
            label: Label::new("operation", label),
            by_outcome: std::array::from_fn(|_| OnceLock::new()),
            registrar: self.registrar.clone(),
        })
    }
}

/// What the metrics of a [`Transactions`](super::Transactions) are built from, and their
/// table once built, shared by the clones.
#[derive(Debug, Clone)]
pub(super) struct MetricsSpec {
    recorder: RecorderRef,
    /// Serves the families under [`DB_COMPONENT`].
    registry: MetricsRegistry,
    pub(super) prefix: Arc<str>,
    pub(super) max_operations: usize,
    table: Arc<OnceLock<TxMetrics>>,
}

impl MetricsSpec {
    /// Metrics in `registry`, without prefix, with the default cap.
    pub(super) fn new(registry: &MetricsRegistry) -> Self {
        // The component exists from now on, so that `?comp=db` is served (empty) before the
        // first transaction; its families are added when the table is built.
        registry.register_component(DB_COMPONENT, std::iter::empty::<&str>());
        Self {
            recorder: RecorderRef::from(registry),
            registry: registry.clone(),
            prefix: Arc::from(""),
            max_operations: DEFAULT_MAX_OPERATIONS,
            table: Arc::default(),
        }
    }

    /// Changes what the table is built from: the next transaction builds a new one.
    pub(super) fn set(&mut self, change: impl FnOnce(&mut Self)) {
        change(self);
        self.table = Arc::default();
    }

    /// The table, built (and its families described and served) on first use.
    pub(super) fn table(&self) -> &TxMetrics {
        self.table.get_or_init(|| {
            let families = families(&self.prefix);
            toolkit::declare(
                &self.recorder,
                Some(&self.registry),
                &[DB_COMPONENT],
                &families,
            );
            TxMetrics::new(self.recorder.clone(), &families, self.max_operations)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{db::Transactions, metrics::OVERFLOW_OPERATION};

    #[test]
    fn series_are_cached_per_operation_and_capped() {
        let registry = MetricsRegistry::new(&Default::default()).unwrap();
        let tx = Transactions::new(&registry)
            .with_prefix("t_")
            .with_max_operations(2);
        let metrics = tx.metrics().unwrap();
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
    fn the_cap_set_before_the_prefix_applies() {
        let registry = MetricsRegistry::new(&Default::default()).unwrap();
        let tx = Transactions::new(&registry)
            .with_max_operations(1)
            .with_prefix("");
        let metrics = tx.metrics().unwrap();
        metrics.series("a");
        assert_eq!(metrics.series("b").label.value(), OVERFLOW_OPERATION);
    }

    #[test]
    fn lookups_past_the_cap_are_counted_in_the_overflow_family() {
        let registry = MetricsRegistry::new(&Default::default()).unwrap();
        let tx = Transactions::new(&registry)
            .with_prefix("t_")
            .with_max_operations(1);
        let metrics = tx.metrics().unwrap();
        let overflow = "t_db_transaction_operation_overflow_total";
        let text = registry.render_components(&[DB_COMPONENT]).unwrap();
        assert!(text.contains(&format!("{overflow} 0")), "{text}");
        metrics.series("a");
        metrics.series("b");
        metrics.series("c");
        let text = registry.render_components(&[DB_COMPONENT]).unwrap();
        assert!(text.contains(&format!("{overflow} 2")), "{text}");
        assert!(text.contains(&format!("# HELP {overflow} ")), "{text}");
    }
}
