//! Metric handles of each gRPC operation, resolved once and cached, with the cap on distinct
//! operations.

pub(super) use crate::metrics::RecorderRef;
use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, OnceLock, PoisonError, RwLock},
};

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, SharedString, Unit};
use tonic::Code;

use super::{
    names::{GrpcMetricNames, GrpcType, Scheme},
    status::{code_index, code_name, GrpcOperation, CODE_COUNT},
};
use crate::{metrics::OVERFLOW_OPERATION, operation::OperationId};

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Where series are registered: an explicit recorder, or the global one.
#[derive(Debug)]
struct Registrar {
    recorder: RecorderRef,
    scheme: Scheme,
    inflight: SharedString,
    started: SharedString,
    duration: SharedString,
    total: SharedString,
}

impl Registrar {
    fn key(&self, name: &SharedString, labels: Vec<Label>) -> Key {
        Key::from_parts(name.clone(), labels)
    }
}

/// The handles of one operation.
pub(super) struct OperationSeries {
    inflight: Option<Gauge>,
    started: Option<Counter>,
    duration: Histogram,
    /// `[operation]`, or `[grpc_type, grpc_service, grpc_method]`.
    labels: Box<[Label]>,
    /// Totals of HTTP 200 by gRPC code (every HTTP status in the go-grpc-prometheus scheme,
    /// which has no `code` label): read without a lock.
    by_code: [OnceLock<Counter>; CODE_COUNT],
    /// Totals of other HTTP statuses (499 for cancelled calls, a proxy's 503, ...).
    other: RwLock<Vec<(u16, Code, Counter)>>,
    registrar: Arc<Registrar>,
}

impl fmt::Debug for OperationSeries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperationSeries")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl OperationSeries {
    /// Counts a call as started and in flight.
    pub(super) fn start(&self) {
        if let Some(g) = &self.inflight {
            g.increment(1.0);
        }
        if let Some(c) = &self.started {
            c.increment(1);
        }
    }

    /// Ends a call started with [`start`](Self::start).
    pub(super) fn finish(&self, seconds: f64, http_status: u16, code: Code) {
        if let Some(g) = &self.inflight {
            g.decrement(1.0);
        }
        self.duration.record(seconds);
        self.count(http_status, code);
    }

    fn count(&self, http_status: u16, code: Code) {
        let index = code_index(code);
        if http_status == 200 || self.registrar.scheme == Scheme::GoGrpcPrometheus {
            self.by_code[index]
                .get_or_init(|| self.register_total(200, code))
                .increment(1);
            return;
        }
        let find = |list: &[(u16, Code, Counter)]| {
            list.iter()
                .find(|(s, c, _)| *s == http_status && *c == code)
                .map(|(_, _, counter)| counter.clone())
        };
        let known = find(&self.other.read().unwrap_or_else(PoisonError::into_inner));
        let counter = known.unwrap_or_else(|| {
            let mut list = self.other.write().unwrap_or_else(PoisonError::into_inner);
            find(&list).unwrap_or_else(|| {
                let counter = self.register_total(http_status, code);
                list.push((http_status, code, counter.clone()));
                counter
            })
        });
        counter.increment(1);
    }

    fn register_total(&self, http_status: u16, code: Code) -> Counter {
        let grpc_code = Label::new("grpc_code", SharedString::const_str(code_name(code)));
        let labels = match self.registrar.scheme {
            Scheme::Towerscope => {
                let code = match http_status {
                    200 => SharedString::const_str("200"),
                    other => SharedString::from(other.to_string()),
                };
                let mut labels = vec![Label::new("code", code), grpc_code];
                labels.extend(self.labels.iter().cloned());
                labels
            }
            Scheme::GoGrpcPrometheus => {
                let mut labels = self.labels.to_vec();
                labels.push(grpc_code);
                labels
            }
        };
        let key = self.registrar.key(&self.registrar.total, labels);
        self.registrar
            .recorder
            .with(|r| r.register_counter(&key, &METADATA))
    }
}

type OperationMap = HashMap<Box<str>, Arc<OperationSeries>, foldhash::fast::RandomState>;

/// The per-layer cache of series.
pub(super) struct SeriesTable {
    registrar: Arc<Registrar>,
    max_operations: usize,
    types: Arc<HashMap<String, GrpcType>>,
    operations: RwLock<OperationMap>,
    unknown: OnceLock<Arc<OperationSeries>>,
    overflow: OnceLock<Arc<OperationSeries>>,
    overflow_name: SharedString,
    /// Registered on the first overflow: a layer whose names are replaced by a later setter
    /// leaves no zero series of the old names behind.
    overflowed: OnceLock<Counter>,
}

impl fmt::Debug for SeriesTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeriesTable")
            .field("max_operations", &self.max_operations)
            .finish_non_exhaustive()
    }
}

impl SeriesTable {
    /// Describes the families in `recorder` and returns an empty table.
    pub(super) fn new(
        recorder: RecorderRef,
        names: &GrpcMetricNames,
        max_operations: usize,
        types: Arc<HashMap<String, GrpcType>>,
    ) -> Arc<Self> {
        recorder.with(|r| {
            let by = match names.scheme {
                Scheme::Towerscope => "by operation",
                Scheme::GoGrpcPrometheus => "by type, service and method",
            };
            if let Some(inflight) = names.inflight() {
                r.describe_gauge(
                    inflight.to_owned().into(),
                    None,
                    format!("gRPC calls in flight until their response stream ends, {by}.")
                        .into(),
                );
            }
            if let Some(started) = names.started() {
                r.describe_counter(
                    started.to_owned().into(),
                    None,
                    format!("gRPC calls started on the server, {by}.").into(),
                );
            }
            r.describe_histogram(
                names.duration().to_owned().into(),
                Some(Unit::Seconds),
                format!("gRPC call durations in seconds until the response stream ended, {by}.")
                    .into(),
            );
            let total = match names.scheme {
                Scheme::Towerscope => "Finished gRPC calls, by HTTP status code, gRPC status code and operation (499/CANCELLED: the client went away).",
                Scheme::GoGrpcPrometheus => "gRPC calls completed on the server, by type, service, method and gRPC status code.",
            };
            r.describe_counter(names.total().to_owned().into(), None, total.into());
            r.describe_counter(
                names.overflow().to_owned().into(),
                None,
                "gRPC calls labelled \"_overflow\" because the cap on distinct operations was reached.".into(),
            );
        });
        Arc::new(Self {
            registrar: Arc::new(Registrar {
                recorder,
                scheme: names.scheme,
                inflight: names.inflight.clone().into(),
                started: names.started.clone().into(),
                duration: names.duration.clone().into(),
                total: names.total.clone().into(),
            }),
            max_operations: max_operations.max(1),
            types,
            operations: RwLock::new(HashMap::default()),
            unknown: OnceLock::new(),
            overflow: OnceLock::new(),
            overflow_name: names.overflow().to_owned().into(),
            overflowed: OnceLock::new(),
        })
    }

    /// The series of `operation` (`None`: the path is not a gRPC one), registered on first use.
    pub(super) fn series(&self, operation: Option<GrpcOperation<'_>>) -> Arc<OperationSeries> {
        let Some(op) = operation else {
            return self.unknown().clone();
        };
        if let Some(series) = self
            .operations
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(op.as_str())
        {
            return series.clone();
        }
        let mut ops = self
            .operations
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = ops.get(op.as_str()) {
            return series.clone();
        }
        if ops.len() >= self.max_operations {
            drop(ops);
            self.overflowed
                .get_or_init(|| {
                    let key = Key::from_name(self.overflow_name.clone());
                    self.registrar
                        .recorder
                        .with(|r| r.register_counter(&key, &METADATA))
                })
                .increment(1);
            return self
                .overflow
                .get_or_init(|| {
                    self.register(
                        OVERFLOW_OPERATION,
                        OVERFLOW_OPERATION,
                        OVERFLOW_OPERATION,
                        GrpcType::Unary,
                    )
                })
                .clone();
        }
        let grpc_type = self.types.get(op.as_str()).copied().unwrap_or_default();
        let series = self.register(op.as_str(), op.service(), op.method(), grpc_type);
        ops.insert(op.as_str().into(), series.clone());
        series
    }

    fn unknown(&self) -> &Arc<OperationSeries> {
        self.unknown.get_or_init(|| {
            let unknown = OperationId::UNKNOWN;
            self.register(unknown, unknown, unknown, GrpcType::Unary)
        })
    }

    fn register(
        &self,
        operation: &str,
        service: &str,
        method: &str,
        grpc_type: GrpcType,
    ) -> Arc<OperationSeries> {
        let reg = &self.registrar;
        let labels: Box<[Label]> = match reg.scheme {
            Scheme::Towerscope => Box::new([Label::new("operation", operation.to_owned())]),
            Scheme::GoGrpcPrometheus => Box::new([
                Label::new("grpc_type", SharedString::const_str(grpc_type.as_str())),
                Label::new("grpc_service", service.to_owned()),
                Label::new("grpc_method", method.to_owned()),
            ]),
        };
        let (inflight, started, duration) = reg.recorder.with(|r| {
            let inflight = (reg.scheme == Scheme::Towerscope)
                .then(|| r.register_gauge(&reg.key(&reg.inflight, labels.to_vec()), &METADATA));
            let started = (reg.scheme == Scheme::GoGrpcPrometheus)
                .then(|| r.register_counter(&reg.key(&reg.started, labels.to_vec()), &METADATA));
            let duration =
                r.register_histogram(&reg.key(&reg.duration, labels.to_vec()), &METADATA);
            (inflight, started, duration)
        });
        Arc::new(OperationSeries {
            inflight,
            started,
            duration,
            labels,
            by_code: std::array::from_fn(|_| OnceLock::new()),
            other: RwLock::new(Vec::new()),
            registrar: reg.clone(),
        })
    }
}
