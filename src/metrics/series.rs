//! The HTTP server families' handles, resolved once per (operation, method) and reused.
//!
//! The registry behind the `metrics` facade hashes the full key (name and labels) on every
//! `counter!` call. The layer instead resolves each series once and keeps the handles: a request
//! whose series exists does one lookup of its operation in the [`LabelTable`], one index by
//! method, and atomic updates on the handles.

use std::sync::{Arc, OnceLock, Weak};

use metrics::{Gauge, Histogram, Key, Label, SharedString};

use super::{
    names::MetricNames,
    toolkit::{http_slot, status_label, CodeCounters, Family, LabelTable, RecorderRef, HTTP_SLOTS},
};
use crate::{labels::MethodTable, operation::OperationId};

/// The families of [`MetricsLayer`](super::MetricsLayer), with their help texts.
pub(crate) fn families(names: &MetricNames, first_byte: bool) -> Vec<Family> {
    let first_byte = first_byte.then(|| {
        Family::seconds(
            names.first_byte.clone(),
            "Time to the response head in seconds (time to first byte), by method and operation.",
        )
    });
    let families = [
        Family::gauge(
            names.inflight.clone(),
            "Requests in flight, by method and operation.",
        ),
        Family::seconds(
            names.duration.clone(),
            "Request durations in seconds until the response body ended, by method and operation.",
        ),
        Family::counter(
            names.total.clone(),
            "Finished requests, by method, status code and operation (499: client went away).",
        ),
        Family::counter(
            names.overflow.clone(),
            "Requests labelled operation=\"_overflow\" because the cap on distinct operations was reached.",
        ),
    ];
    families.into_iter().chain(first_byte).collect()
}

/// The handles of one (operation, method), each registered on first use.
#[derive(Debug)]
pub(crate) struct MethodSeries {
    inflight: OnceLock<Gauge>,
    duration: OnceLock<Histogram>,
    first_byte: OnceLock<Histogram>,
    /// `method`, `operation`, then the table's labels of the user's own.
    labels: Box<[Label]>,
    totals: CodeCounters<u16, HTTP_SLOTS>,
    registrar: Arc<Registrar>,
    /// The table this series belongs to, for a response that overrides the operation: weak,
    /// so that a request holds no reference count of its own on the table.
    table: Weak<SeriesTable>,
    method_index: usize,
}

/// Where and under which names a [`MethodSeries`] registers its handles.
#[derive(Debug)]
struct Registrar {
    recorder: RecorderRef,
    inflight: SharedString,
    duration: SharedString,
    total: SharedString,
    /// The time-to-first-byte family, when it is recorded.
    first_byte: Option<SharedString>,
}

impl MethodSeries {
    fn key(&self, name: &SharedString) -> Key {
        Key::from_parts(name.clone(), self.labels.to_vec())
    }

    /// The in-flight gauge.
    pub(crate) fn inflight(&self) -> &Gauge {
        let r = &self.registrar;
        self.inflight
            .get_or_init(|| r.recorder.gauge(&self.key(&r.inflight)))
    }

    /// The duration histogram.
    pub(crate) fn duration(&self) -> &Histogram {
        let r = &self.registrar;
        self.duration
            .get_or_init(|| r.recorder.histogram(&self.key(&r.duration)))
    }

    /// The time-to-first-byte histogram, when it is recorded.
    pub(crate) fn first_byte(&self) -> Option<&Histogram> {
        let r = &self.registrar;
        let name = r.first_byte.as_ref()?;
        Some(
            self.first_byte
                .get_or_init(|| r.recorder.histogram(&self.key(name))),
        )
    }

    /// Counts one finished request with `code`.
    pub(crate) fn count(&self, code: u16) {
        self.totals.increment(code, http_slot(code), |code| {
            let mut labels = Vec::with_capacity(self.labels.len() + 1);
            labels.push(self.labels[0].clone());
            labels.push(Label::new("code", status_label(code)));
            labels.extend(self.labels[1..].iter().cloned());
            let r = &self.registrar;
            r.recorder
                .counter(&Key::from_parts(r.total.clone(), labels))
        });
    }

    /// The series of `operation` with this series' method, in the same table; `None` once
    /// the table is gone (the layer and every service built from it were dropped).
    pub(crate) fn sibling(&self, operation: &OperationId) -> Option<Arc<MethodSeries>> {
        Some(self.table.upgrade()?.series(operation, self.method_index))
    }

    /// The `operation` label value of this series (`_overflow` past the cap).
    pub(crate) fn operation(&self) -> &str {
        self.labels[1].value()
    }
}

/// The series of one operation label, by method index.
#[derive(Debug)]
struct OperationSeries {
    label: SharedString,
    by_method: Box<[OnceLock<Arc<MethodSeries>>]>,
}

/// The per-layer cache of series, with the cap on distinct operations.
#[derive(Debug)]
pub(crate) struct SeriesTable {
    registrar: Arc<Registrar>,
    methods: MethodTable,
    operations: LabelTable<OperationSeries>,
    unknown: OperationId,
    /// Labels of the user's own on every series of this table.
    extra: Arc<[Label]>,
    this: Weak<SeriesTable>,
}

impl SeriesTable {
    /// An empty table whose series carry `extra` after `method` and `operation`; the
    /// families are described by the caller.
    pub(crate) fn new(
        recorder: RecorderRef,
        names: &MetricNames,
        methods: MethodTable,
        max_operations: usize,
        first_byte: bool,
        extra: Arc<[Label]>,
    ) -> Arc<Self> {
        let operations = LabelTable::new(max_operations)
            .with_overflow_counter(recorder.clone(), names.overflow.clone());
        Arc::new_cyclic(|this| Self {
            registrar: Arc::new(Registrar {
                recorder,
                inflight: names.inflight.clone().into(),
                duration: names.duration.clone().into(),
                total: names.total.clone().into(),
                first_byte: first_byte.then(|| names.first_byte.clone().into()),
            }),
            methods,
            operations,
            unknown: OperationId::unknown(),
            extra,
            this: this.clone(),
        })
    }

    /// The index of `method` in the label table; unknown methods share the last slot.
    pub(crate) fn method_index(&self, method: &http::Method) -> usize {
        self.methods.index(method)
    }

    /// The handles of the `unknown` operation.
    pub(crate) fn unknown_series(&self, method_index: usize) -> Arc<MethodSeries> {
        self.series(&self.unknown, method_index)
    }

    /// The handles of (`operation`, method at `method_index`), registered on first use.
    pub(crate) fn series(&self, operation: &OperationId, method_index: usize) -> Arc<MethodSeries> {
        let method_index = method_index.min(self.methods.len());
        let methods = self.methods.len() + 1;
        let make = |label| OperationSeries {
            label,
            by_method: (0..methods).map(|_| OnceLock::new()).collect(),
        };
        // No clone of the operation's `Arc` on the hot path: one read lock, one index.
        self.operations.with(operation.as_str(), make, |op| {
            op.by_method[method_index]
                .get_or_init(|| {
                    Arc::new(MethodSeries {
                        inflight: OnceLock::new(),
                        duration: OnceLock::new(),
                        first_byte: OnceLock::new(),
                        labels: [
                            Label::new("method", self.methods.label(method_index)),
                            Label::new("operation", op.label.clone()),
                        ]
                        .into_iter()
                        .chain(self.extra.iter().cloned())
                        .collect(),
                        totals: CodeCounters::new(),
                        registrar: self.registrar.clone(),
                        table: self.this.clone(),
                        method_index,
                    })
                })
                .clone()
        })
    }
}
