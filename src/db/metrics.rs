//! The transaction families, and their handles per operation in a capped [`LabelTable`].

use std::sync::{Arc, OnceLock};

use metrics::{Counter, Histogram, Key, Label, SharedString};

use super::{
    otel::{self, OtelSeries},
    span::Failure,
    Outcome,
};
use crate::{
    metrics::{
        semconv::{DB_ADVISED_DURATION_BUCKETS, DB_CLIENT_OPERATION_DURATION},
        toolkit::{self, Family, LabelTable, RecorderRef},
        MetricNaming, MetricsRegistry, DEFAULT_MAX_OPERATIONS,
    },
    operation::OperationId,
};

/// The `?comp=` component the transaction families are registered under.
pub const DB_COMPONENT: &str = "db";

/// Harbor's transaction families under `prefix`, with their help texts: duration, total,
/// overflow.
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
        overflow_family(prefix),
    ]
}

/// towerscope's overflow counter, under `prefix` in both namings.
fn overflow_family(prefix: &str) -> Family {
    Family::counter(
        format!("{prefix}db_transaction_operation_overflow_total"),
        "Database transactions labelled operation=\"_overflow\" because the cap on distinct operations was reached.",
    )
}

/// The families of `naming` under `prefix`; the overflow counter last.
pub(super) fn families_of(naming: MetricNaming, prefix: &str) -> Vec<Family> {
    match naming {
        MetricNaming::Harbor => families(prefix).into(),
        MetricNaming::Otel => vec![otel::family(), overflow_family(prefix)],
    }
}

/// Where and under which names a [`HarborSeries`] registers its handles.
#[derive(Debug)]
struct Registrar {
    recorder: RecorderRef,
    duration: SharedString,
    total: SharedString,
}

/// The handles of one operation, one (duration, total) pair per outcome, each registered
/// with its first transaction.
#[derive(Debug)]
pub(super) struct HarborSeries {
    label: Label,
    by_outcome: [OnceLock<(Histogram, Counter)>; Outcome::ALL.len()],
    registrar: Arc<Registrar>,
}

impl HarborSeries {
    fn handles(&self, outcome: Outcome) -> &(Histogram, Counter) {
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

/// The series of one operation label, in the families of the naming.
#[derive(Debug)]
pub(super) enum OperationSeries {
    /// `db_transaction_*` by `operation` and `outcome`.
    Harbor(HarborSeries),
    /// `db_client_operation_duration_seconds` by the conventions' attributes.
    Otel(OtelSeries),
}

impl OperationSeries {
    /// Records a transaction of the database `system` (`Database::NAME`) that ended with
    /// `outcome` after `seconds`; `failure` is its first failure, if any (Harbor's families
    /// say `outcome` only).
    pub(super) fn record(
        &self,
        outcome: Outcome,
        system: &'static str,
        failure: Option<&Failure>,
        seconds: f64,
    ) {
        match self {
            Self::Harbor(series) => {
                let (duration, total) = series.handles(outcome);
                duration.record(seconds);
                total.increment(1);
            }
            Self::Otel(series) => series.record(system, failure, seconds),
        }
    }
}

/// What the series of each operation are made of.
#[derive(Debug)]
enum Maker {
    Harbor(Arc<Registrar>),
    Otel {
        recorder: RecorderRef,
        namespace: Option<Arc<str>>,
    },
}

/// The series of each operation, built once per [`Transactions`](super::Transactions) (and
/// shared by its clones).
#[derive(Debug)]
pub(super) struct TxMetrics {
    maker: Maker,
    operations: LabelTable<OperationSeries>,
}

impl TxMetrics {
    /// An empty table for the `families` (as [`families_of`] returns them for `naming`)
    /// recorded in `recorder`; the families are described by the caller. The overflow
    /// counter is registered now. `namespace` is `db_namespace` under `naming: otel`.
    pub(super) fn new(
        recorder: RecorderRef,
        naming: MetricNaming,
        families: &[Family],
        max_operations: usize,
        namespace: Option<Arc<str>>,
    ) -> Self {
        let overflow = families
            .last()
            .map_or_else(|| SharedString::const_str(""), |f| f.name.clone());
        let maker = match (naming, families) {
            (MetricNaming::Harbor, [duration, total, _]) => Maker::Harbor(Arc::new(Registrar {
                recorder: recorder.clone(),
                duration: duration.name.clone(),
                total: total.name.clone(),
            })),
            _ => Maker::Otel {
                recorder: recorder.clone(),
                namespace,
            },
        };
        Self {
            operations: LabelTable::new(max_operations).with_overflow_counter(recorder, overflow),
            maker,
        }
    }

    /// The series of `operation` (`unknown` under Harbor's naming when empty; no
    /// `db_operation_name` under the conventions' for an empty operation, nor for one named
    /// `unknown`, which shares its series), created on first use.
    pub(super) fn series(&self, operation: &str) -> Arc<OperationSeries> {
        // `unknown` is exempt from the cap.
        let key = if operation.is_empty() {
            OperationId::UNKNOWN
        } else {
            operation
        };
        self.operations.get(key, |label| match &self.maker {
            Maker::Harbor(registrar) => OperationSeries::Harbor(HarborSeries {
                label: Label::new("operation", label),
                by_outcome: std::array::from_fn(|_| OnceLock::new()),
                registrar: registrar.clone(),
            }),
            Maker::Otel {
                recorder,
                namespace,
            } => OperationSeries::Otel(OtelSeries::new(
                recorder.clone(),
                (&*label != OperationId::UNKNOWN).then_some(label),
                namespace.as_deref(),
            )),
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
    pub(super) naming: MetricNaming,
    /// `db_namespace` under `naming: otel`.
    pub(super) namespace: Option<Arc<str>>,
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
            naming: MetricNaming::Harbor,
            namespace: None,
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
            let families = families_of(self.naming, &self.prefix);
            if self.naming == MetricNaming::Otel {
                // Before the family is declared: the registry picks its buckets then.
                self.registry
                    .advise_buckets(DB_CLIENT_OPERATION_DURATION, &DB_ADVISED_DURATION_BUCKETS);
            }
            toolkit::declare(
                &self.recorder,
                Some(&self.registry),
                &[DB_COMPONENT],
                &families,
            );
            TxMetrics::new(
                self.recorder.clone(),
                self.naming,
                &families,
                self.max_operations,
                self.namespace.clone(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{db::Transactions, metrics::OVERFLOW_OPERATION};

    /// The operation label of a series of Harbor's naming.
    fn label(series: &OperationSeries) -> &str {
        match series {
            OperationSeries::Harbor(series) => series.label.value(),
            OperationSeries::Otel(_) => panic!("a series of naming: otel"),
        }
    }

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
        assert_eq!(label(&unknown), "unknown");
        let over = metrics.series("c");
        assert_eq!(label(&over), OVERFLOW_OPERATION);
        assert!(Arc::ptr_eq(&over, &metrics.series("d")));
        // Known operations keep their series once the cap is reached.
        assert!(Arc::ptr_eq(&a, &metrics.series("a")));

        a.record(Outcome::Commit, "SQLite", None, 0.1);
        a.record(Outcome::Commit, "SQLite", None, 0.2);
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
        assert_eq!(label(&metrics.series("b")), OVERFLOW_OPERATION);
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

    #[test]
    fn naming_otel_records_the_conventions_duration_by_their_attributes() {
        let registry = MetricsRegistry::new(&Default::default()).unwrap();
        let tx = Transactions::new(&registry)
            .with_prefix("t_")
            .with_naming(MetricNaming::Otel)
            .with_namespace("registry");
        let metrics = tx.metrics().unwrap();
        let series = metrics.series("createProject");
        series.record(Outcome::Commit, "PostgreSQL", None, 0.002);
        series.record(Outcome::Rollback, "PostgreSQL", None, 0.003);
        let unique = Failure {
            error_type: "23505".into(),
            status_code: Some("23505".into()),
        };
        series.record(Outcome::Rollback, "PostgreSQL", Some(&unique), 0.004);
        // Another driver through the same `Transactions`: its own series.
        series.record(Outcome::Commit, "SQLite", None, 0.001);
        metrics
            .series("")
            .record(Outcome::RollbackOnDrop, "SQLite", None, 0.001);

        let text = registry.render_components(&[DB_COMPONENT]).unwrap();
        let family = DB_CLIENT_OPERATION_DURATION;
        for line in [
            format!("{family}_count{{db_namespace=\"registry\",db_operation_name=\"createProject\",db_system_name=\"postgresql\"}} 2"),
            format!("{family}_count{{db_namespace=\"registry\",db_operation_name=\"createProject\",db_response_status_code=\"23505\",db_system_name=\"postgresql\",error_type=\"23505\"}} 1"),
            format!("{family}_count{{db_namespace=\"registry\",db_operation_name=\"createProject\",db_system_name=\"sqlite\"}} 1"),
            format!("{family}_count{{db_namespace=\"registry\",db_system_name=\"sqlite\"}} 1"),
            format!("{family}_bucket{{db_namespace=\"registry\",db_system_name=\"sqlite\",le=\"0.001\"}} 1"),
            "t_db_transaction_operation_overflow_total 0".to_owned(),
        ] {
            assert!(text.contains(&line), "no {line} in\n{text}");
        }
        assert!(!text.contains("t_db_transaction_total"), "{text}");
    }
}
