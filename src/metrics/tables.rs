//! The series tables of a [`MetricsLayer`](super::MetricsLayer): what they are built from, the
//! families they declare, and one table per combination of the user's label values.

use std::sync::Arc;

use metrics::Label;

use super::{
    names::{MetricNames, MetricNaming},
    registry::MetricsRegistry,
    semconv::{self, server::ServerTable},
    series::{self, SeriesTable},
    toolkit::{self, Family, RecorderRef},
    user_labels::{LabeledTables, MetricLabel, MAX_METRIC_LABELS},
};
use crate::labels::MethodTable;

/// The series cache of one set of labels, in the layer's naming.
#[derive(Debug, Clone)]
pub(super) enum Table {
    Harbor(Arc<SeriesTable>),
    Otel(Arc<ServerTable>),
}

/// The tables of a layer: one, or one per combination of its labels' values.
#[derive(Debug, Clone)]
pub(super) enum Tables {
    One(Table),
    Labeled(Arc<LabeledTables<Table>>),
}

/// What a layer's tables are built from.
#[derive(Debug, Clone)]
pub(super) struct TableSpec {
    pub(super) recorder: RecorderRef,
    pub(super) names: MetricNames,
    pub(super) methods: MethodTable,
    pub(super) max_operations: usize,
    pub(super) naming: MetricNaming,
    pub(super) body_sizes: bool,
    pub(super) time_to_first_byte: bool,
}

impl TableSpec {
    /// Describes the families (with the labels' overflow counter when `labels`), serves them
    /// under `components` of `registry`, and advises the OpenTelemetry buckets.
    pub(super) fn declare(
        &self,
        registry: Option<&MetricsRegistry>,
        components: &[String],
        labels: bool,
    ) {
        let mut families = match self.naming {
            MetricNaming::Harbor => series::families(&self.names, self.time_to_first_byte),
            MetricNaming::Otel => {
                if let Some(registry) = registry {
                    advise_otel_buckets(registry);
                }
                semconv::server::families(&self.names, self.body_sizes, self.time_to_first_byte)
            }
        };
        if labels {
            families.push(Family::counter(
                self.names.label_overflow.clone(),
                "Requests whose value of a label of the user's own was replaced by `_overflow` (the label's cap was reached, or the value was too long), by label.",
            ));
        }
        toolkit::declare(&self.recorder, registry, components, &families);
    }

    /// The tables for `labels` (the first [`MAX_METRIC_LABELS`]; an error is logged for the
    /// rest).
    pub(super) fn tables(self, labels: &[MetricLabel]) -> Tables {
        if labels.is_empty() {
            return Tables::One(self.build(Arc::from([])));
        }
        if let Some(ignored) = labels.get(MAX_METRIC_LABELS..) {
            let names: Vec<&str> = ignored.iter().map(MetricLabel::name).collect();
            tracing::error!(
                ignored = ?names,
                "towerscope: at most {MAX_METRIC_LABELS} metric labels per layer; the rest are not recorded"
            );
        }
        let (recorder, overflow) = (self.recorder.clone(), self.names.label_overflow.clone());
        Tables::Labeled(Arc::new(LabeledTables::new(
            labels,
            &recorder,
            &overflow,
            move |extra| self.build(extra),
        )))
    }

    /// A table whose series carry `extra`.
    fn build(&self, extra: Arc<[Label]>) -> Table {
        match self.naming {
            MetricNaming::Harbor => Table::Harbor(SeriesTable::new(
                self.recorder.clone(),
                &self.names,
                self.methods.clone(),
                self.max_operations,
                self.time_to_first_byte,
                extra,
            )),
            MetricNaming::Otel => Table::Otel(ServerTable::new(
                self.recorder.clone(),
                &self.names,
                self.methods.clone(),
                self.max_operations,
                self.body_sizes,
                self.time_to_first_byte,
                extra,
            )),
        }
    }
}

/// The conventions' advised buckets of the duration and size families.
fn advise_otel_buckets(registry: &MetricsRegistry) {
    for family in [
        semconv::HTTP_SERVER_REQUEST_DURATION,
        semconv::HTTP_SERVER_TIME_TO_FIRST_BYTE,
    ] {
        registry.advise_buckets(family, &semconv::ADVISED_DURATION_BUCKETS);
    }
    for family in [
        semconv::HTTP_SERVER_REQUEST_BODY_SIZE,
        semconv::HTTP_SERVER_RESPONSE_BODY_SIZE,
    ] {
        registry.advise_buckets(family, &semconv::BODY_SIZE_BUCKETS);
    }
}
