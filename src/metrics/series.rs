//! Resolved metric handles, cached per (operation, method[, code]).
//!
//! The registry behind the `metrics` facade hashes the full key (name and labels) on every
//! `counter!` call. The layer instead resolves each series once and keeps the handles: a request
//! whose series exists does one lookup of its operation in a read-locked map (a fast seeded
//! hash of a short string), one index by method, and atomic updates on the handles. Counters of
//! the common status codes sit in fixed slots read without a lock.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock, PoisonError, RwLock, Weak},
};

use http::Method;
use metrics::{
    Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, SharedString, Unit,
};

use super::names::MetricNames;
use crate::operation::OperationId;

/// Label value of a method outside the configured set.
pub const OTHER_METHOD: &str = "_OTHER";

/// Label value of the operations beyond the cap.
pub const OVERFLOW_OPERATION: &str = "_overflow";

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Status codes whose counters live in lock-free slots; others go to a locked list.
const SLOTTED_CODES: [u16; 32] = [
    200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 406, 408, 409,
    410, 412, 413, 415, 416, 422, 429, 499, 500, 501, 502, 503, 504,
];

/// `SLOT_OF[code]` = slot index + 1, or 0 for codes without a slot.
static SLOT_OF: [u8; 600] = {
    let mut table = [0u8; 600];
    let mut i = 0;
    while i < SLOTTED_CODES.len() {
        table[SLOTTED_CODES[i] as usize] = (i + 1) as u8;
        i += 1;
    }
    table
};

/// Where series are registered: an explicit recorder, or the global one.
#[derive(Clone)]
pub(crate) enum RecorderRef {
    Shared(Arc<dyn Recorder + Send + Sync>),
    Global,
}

impl std::fmt::Debug for RecorderRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shared(_) => f.write_str("Shared(..)"),
            Self::Global => f.write_str("Global"),
        }
    }
}

impl RecorderRef {
    pub(crate) fn with<T>(&self, f: impl FnOnce(&dyn Recorder) -> T) -> T {
        match self {
            Self::Shared(r) => f(&**r),
            Self::Global => metrics::with_recorder(|r| f(r)),
        }
    }
}

/// What a [`MethodSeries`] needs to register its handles lazily.
#[derive(Debug)]
struct Registrar {
    recorder: RecorderRef,
    inflight: SharedString,
    duration: SharedString,
    total: SharedString,
}

/// The handles of one (operation, method).
#[derive(Debug)]
pub(crate) struct MethodSeries {
    inflight: OnceLock<Gauge>,
    duration: OnceLock<Histogram>,
    labels: [Label; 2],
    slotted: [OnceLock<Counter>; SLOTTED_CODES.len()],
    other_codes: RwLock<Vec<(u16, Counter)>>,
    registrar: Arc<Registrar>,
    /// The table this series belongs to, for a response that overrides the operation.
    table: Weak<SeriesTable>,
    method_index: usize,
}

impl MethodSeries {
    /// The in-flight gauge, registered on first use.
    pub(crate) fn inflight(&self) -> &Gauge {
        self.inflight.get_or_init(|| {
            let key = Key::from_parts(self.registrar.inflight.clone(), self.labels.to_vec());
            self.registrar
                .recorder
                .with(|r| r.register_gauge(&key, &METADATA))
        })
    }

    /// The duration histogram, registered on first use.
    pub(crate) fn duration(&self) -> &Histogram {
        self.duration.get_or_init(|| {
            let key = Key::from_parts(self.registrar.duration.clone(), self.labels.to_vec());
            self.registrar
                .recorder
                .with(|r| r.register_histogram(&key, &METADATA))
        })
    }

    fn register_total(&self, code: u16) -> Counter {
        let [method, operation] = self.labels.clone();
        let key = Key::from_parts(
            self.registrar.total.clone(),
            vec![
                method,
                Label::new("code", SharedString::from(code.to_string())),
                operation,
            ],
        );
        self.registrar
            .recorder
            .with(|r| r.register_counter(&key, &METADATA))
    }

    /// Counts one finished request with `code`.
    pub(crate) fn count(&self, code: u16) {
        if let Some(&slot) = SLOT_OF.get(code as usize) {
            if slot > 0 {
                self.slotted[slot as usize - 1]
                    .get_or_init(|| self.register_total(code))
                    .increment(1);
                return;
            }
        }
        {
            let codes = self
                .other_codes
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some((_, counter)) = codes.iter().find(|(c, _)| *c == code) {
                counter.increment(1);
                return;
            }
        }
        let mut codes = self
            .other_codes
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, counter)) = codes.iter().find(|(c, _)| *c == code) {
            counter.increment(1);
            return;
        }
        let counter = self.register_total(code);
        counter.increment(1);
        codes.push((code, counter));
    }

    /// The series of `operation` with this series' method, in the same table.
    pub(crate) fn sibling(&self, operation: &OperationId) -> Option<Arc<MethodSeries>> {
        Some(self.table.upgrade()?.series(operation, self.method_index))
    }
}

#[derive(Debug)]
struct OperationSeries {
    label: SharedString,
    by_method: Box<[OnceLock<Arc<MethodSeries>>]>,
}

/// The per-layer cache of series, with the cap on distinct operations.
#[derive(Debug)]
pub(crate) struct SeriesTable {
    registrar: Arc<Registrar>,
    methods: Box<[(Method, SharedString)]>,
    max_operations: usize,
    operations: RwLock<HashMap<OperationId, Arc<OperationSeries>, foldhash::fast::RandomState>>,
    overflow: OnceLock<Arc<OperationSeries>>,
    overflowed: Counter,
    unknown: OperationId,
    this: Weak<SeriesTable>,
}

impl SeriesTable {
    pub(crate) fn new(
        recorder: RecorderRef,
        names: MetricNames,
        methods: &[Method],
        max_operations: usize,
    ) -> Arc<Self> {
        recorder.with(|r| {
            r.describe_gauge(
                names.inflight.clone().into(),
                None,
                "Requests in flight, by method and operation.".into(),
            );
            r.describe_histogram(
                names.duration.clone().into(),
                Some(Unit::Seconds),
                "Request durations in seconds until the response body ended, by method and operation.".into(),
            );
            r.describe_counter(
                names.total.clone().into(),
                None,
                "Finished requests, by method, status code and operation (499: client went away).".into(),
            );
            r.describe_counter(
                names.overflow.clone().into(),
                None,
                "Requests labelled operation=\"_overflow\" because the cap on distinct operations was reached.".into(),
            );
        });
        let overflowed = recorder
            .with(|r| r.register_counter(&Key::from_name(names.overflow.clone()), &METADATA));
        let methods = methods
            .iter()
            .map(|m| (m.clone(), SharedString::from(m.as_str().to_owned())))
            .collect();
        Arc::new_cyclic(|this| Self {
            registrar: Arc::new(Registrar {
                recorder,
                inflight: names.inflight.clone().into(),
                duration: names.duration.clone().into(),
                total: names.total.clone().into(),
            }),
            methods,
            max_operations: max_operations.max(1),
            operations: RwLock::new(HashMap::default()),
            overflow: OnceLock::new(),
            overflowed,
            unknown: OperationId::unknown(),
            this: this.clone(),
        })
    }

    /// The index of `method` in the label table; unknown methods share the last slot.
    pub(crate) fn method_index(&self, method: &Method) -> usize {
        self.methods
            .iter()
            .position(|(m, _)| m == method)
            .unwrap_or(self.methods.len())
    }

    /// The handles of the `unknown` operation.
    pub(crate) fn unknown_series(&self, method_index: usize) -> Arc<MethodSeries> {
        self.series(&self.unknown, method_index)
    }

    /// The handles of (`operation`, method at `method_index`), registering them on first use.
    pub(crate) fn series(&self, operation: &OperationId, method_index: usize) -> Arc<MethodSeries> {
        let method_index = method_index.min(self.methods.len());
        {
            let ops = self
                .operations
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(op) = ops.get(operation.as_str()) {
                if let Some(series) = op.by_method[method_index].get() {
                    return series.clone();
                }
            }
        }
        let op = self.operation(operation);
        op.by_method[method_index]
            .get_or_init(|| self.register(&op.label, method_index))
            .clone()
    }

    fn operation(&self, operation: &OperationId) -> Arc<OperationSeries> {
        let mut ops = self
            .operations
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(op) = ops.get(operation.as_str()) {
            return op.clone();
        }
        // `unknown` is always allowed: it is the fallback of every resolver.
        if ops.len() >= self.max_operations && operation.as_str() != OperationId::UNKNOWN {
            drop(ops);
            self.overflowed.increment(1);
            return self
                .overflow
                .get_or_init(|| self.new_operation(SharedString::const_str(OVERFLOW_OPERATION)))
                .clone();
        }
        let op = self.new_operation(SharedString::from(operation.as_str().to_owned()));
        ops.insert(operation.clone(), op.clone());
        op
    }

    fn new_operation(&self, label: SharedString) -> Arc<OperationSeries> {
        Arc::new(OperationSeries {
            label,
            by_method: (0..=self.methods.len()).map(|_| OnceLock::new()).collect(),
        })
    }

    fn register(&self, operation: &SharedString, method_index: usize) -> Arc<MethodSeries> {
        let method = self
            .methods
            .get(method_index)
            .map(|(_, label)| label.clone())
            .unwrap_or(SharedString::const_str(OTHER_METHOD));
        Arc::new(MethodSeries {
            inflight: OnceLock::new(),
            duration: OnceLock::new(),
            labels: [
                Label::new("method", method),
                Label::new("operation", operation.clone()),
            ],
            slotted: std::array::from_fn(|_| OnceLock::new()),
            other_codes: RwLock::new(Vec::new()),
            registrar: self.registrar.clone(),
            table: self.this.clone(),
            method_index,
        })
    }
}
