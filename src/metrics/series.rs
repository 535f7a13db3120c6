//! Resolved metric handles, cached per (operation, method[, code]).
//!
//! The registry behind the `metrics` facade hashes the full key (name and labels) on every
//! `counter!` call. The layer instead resolves each series once and keeps the handles: a request
//! whose series exists does one lookup of its operation in a read-locked map, one index by
//! method, and atomic updates on the handles.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock, PoisonError, RwLock},
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
    fn with<T>(&self, f: impl FnOnce(&dyn Recorder) -> T) -> T {
        match self {
            Self::Shared(r) => f(&**r),
            Self::Global => metrics::with_recorder(|r| f(r)),
        }
    }
}

/// What a [`MethodSeries`] needs to register counters for new status codes.
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
    codes: RwLock<Vec<(u16, Counter)>>,
    registrar: Arc<Registrar>,
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

    /// Counts one finished request with `code`.
    pub(crate) fn count(&self, code: u16) {
        {
            let codes = self.codes.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((_, counter)) = codes.iter().find(|(c, _)| *c == code) {
                counter.increment(1);
                return;
            }
        }
        let mut codes = self.codes.write().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, counter)) = codes.iter().find(|(c, _)| *c == code) {
            counter.increment(1);
            return;
        }
        let code_label = SharedString::from(code.to_string());
        let [method, operation] = self.labels.clone();
        let key = Key::from_parts(
            self.registrar.total.clone(),
            vec![method, Label::new("code", code_label), operation],
        );
        let counter = self
            .registrar
            .recorder
            .with(|r| r.register_counter(&key, &METADATA));
        counter.increment(1);
        codes.push((code, counter));
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
    operations: RwLock<HashMap<OperationId, Arc<OperationSeries>>>,
    overflow: OnceLock<Arc<OperationSeries>>,
    overflowed: Counter,
    unknown: OperationId,
}

impl SeriesTable {
    pub(crate) fn new(
        recorder: RecorderRef,
        names: MetricNames,
        methods: &[Method],
        max_operations: usize,
    ) -> Self {
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
        Self {
            registrar: Arc::new(Registrar {
                recorder,
                inflight: names.inflight.clone().into(),
                duration: names.duration.clone().into(),
                total: names.total.clone().into(),
            }),
            methods,
            max_operations: max_operations.max(1),
            operations: RwLock::new(HashMap::new()),
            overflow: OnceLock::new(),
            overflowed,
            unknown: OperationId::unknown(),
        }
    }

    /// The handles of the `unknown` operation.
    pub(crate) fn unknown_series(&self, method_index: usize) -> Arc<MethodSeries> {
        self.series(&self.unknown, method_index)
    }

    /// The index of `method` in the label table; unknown methods share the last slot.
    pub(crate) fn method_index(&self, method: &Method) -> usize {
        self.methods
            .iter()
            .position(|(m, _)| m == method)
            .unwrap_or(self.methods.len())
    }

    /// The handles of (`operation`, method at `method_index`), registering them on first use.
    pub(crate) fn series(&self, operation: &OperationId, method_index: usize) -> Arc<MethodSeries> {
        let op = self.operation(operation);
        let slot = &op.by_method[method_index.min(self.methods.len())];
        slot.get_or_init(|| self.register(&op.label, method_index))
            .clone()
    }

    fn operation(&self, operation: &OperationId) -> Arc<OperationSeries> {
        if let Some(op) = self
            .operations
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(operation.as_str())
        {
            return op.clone();
        }
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
        let labels = [
            Label::new("method", method),
            Label::new("operation", operation.clone()),
        ];
        Arc::new(MethodSeries {
            inflight: OnceLock::new(),
            duration: OnceLock::new(),
            labels,
            codes: RwLock::new(Vec::new()),
            registrar: self.registrar.clone(),
        })
    }
}
