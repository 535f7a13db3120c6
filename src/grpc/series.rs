//! The gRPC families and the handles of each operation: resolved once per operation in a
//! [`LabelTable`] (with its cap and `_overflow`), counted by code through [`CodeCounters`].

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use metrics::{Counter, Gauge, Histogram, Key, Label, SharedString};
use tonic::Code;

use super::{
    names::{GrpcMetricNames, GrpcType, Scheme},
    status::{code_index, code_name, go_code_name, is_server_error, GrpcOperation, CODE_COUNT},
};
use crate::{
    labels::{OTHER_METHOD, OVERFLOW_LABEL},
    metrics::{
        semconv::sorted,
        toolkit::{status_label, CodeCounters, Family, LabelTable, RecorderRef, StatusHandles},
    },
    operation::OperationId,
};

/// The families of [`GrpcLayer`](super::GrpcLayer) with `names`, with their help texts; the
/// time to the response head's too when `first_byte`.
pub(super) fn families(names: &GrpcMetricNames, first_byte: bool) -> Vec<Family> {
    let mut families = recorded_families(names);
    if first_byte {
        let way = if names.client { "received" } else { "sent" };
        let by = match names.scheme {
            Scheme::Towerscope => "by operation",
            Scheme::GoGrpcPrometheus => "by type, service and method",
            Scheme::Otel => "by method",
        };
        families.push(Family::seconds(
            names.time_to_first_byte().to_owned(),
            format!("Time from a gRPC call to the response head {way}, in seconds (time to first byte), {by}."),
        ));
    }
    families
}

/// The families always recorded with `names`.
fn recorded_families(names: &GrpcMetricNames) -> Vec<Family> {
    let side = if names.client { "client" } else { "server" };
    if names.scheme == Scheme::Otel {
        return vec![
            Family::seconds(
                names.duration().to_owned(),
                format!("Duration of gRPC calls on the {side} until the response stream ended (OpenTelemetry rpc.{side}.call.duration)."),
            ),
            Family::counter(
                names.overflow().to_owned(),
                "gRPC calls labelled \"_overflow\" because the cap on distinct operations was reached.",
            ),
        ];
    }
    let (by, total) = match names.scheme {
        Scheme::Towerscope if names.client => (
            "by operation",
            "Finished outgoing gRPC calls, by HTTP status code, gRPC status code and operation (499/CANCELLED: the caller dropped the call; 500/UNAVAILABLE: no response).",
        ),
        Scheme::Towerscope => (
            "by operation",
            "Finished gRPC calls, by HTTP status code, gRPC status code and operation (499/CANCELLED: the client went away).",
        ),
        Scheme::GoGrpcPrometheus | Scheme::Otel if names.client => (
            "by type, service and method",
            "gRPC calls completed on the client, by type, service, method and gRPC status code.",
        ),
        Scheme::GoGrpcPrometheus | Scheme::Otel => (
            "by type, service and method",
            "gRPC calls completed on the server, by type, service, method and gRPC status code.",
        ),
    };
    let calls = if names.client {
        "Outgoing gRPC calls"
    } else {
        "gRPC calls"
    };
    let inflight = names.inflight().map(|name| {
        let help = format!("{calls} in flight until their response stream ends, {by}.");
        Family::gauge(name.to_owned(), help)
    });
    let started = names.started().map(|name| {
        Family::counter(
            name.to_owned(),
            format!("gRPC calls started on the {side}, {by}."),
        )
    });
    let call = if names.client {
        "Outgoing gRPC call"
    } else {
        "gRPC call"
    };
    let help = format!("{call} durations in seconds until the response stream ended, {by}.");
    let messages = [
        (names.messages_received(), "received"),
        (names.messages_sent(), "sent"),
    ]
    .into_iter()
    .filter_map(|(name, way)| {
        let help = format!("gRPC messages {way} on the {side}, counted as each ends, {by}.");
        name.map(|name| Family::counter(name.to_owned(), help))
    });
    inflight
        .into_iter()
        .chain(started)
        .chain(messages)
        .chain([
            Family::seconds(names.duration().to_owned(), help),
            Family::counter(names.total().to_owned(), total),
            Family::counter(
                names.overflow().to_owned(),
                "gRPC calls labelled \"_overflow\" because the cap on distinct operations was reached.",
            ),
        ])
        .collect()
}

/// Where an [`OperationSeries`] registers the counter of each code it counts, and with which
/// labels.
#[derive(Debug)]
struct Totals {
    recorder: RecorderRef,
    scheme: Scheme,
    name: SharedString,
    /// The duration family: the OpenTelemetry scheme registers one histogram per code.
    duration: SharedString,
    /// A client's families: with the OpenTelemetry scheme every code but `OK` is an error
    /// (on a server, only the codes [`is_server_error`] names).
    client: bool,
}

/// The handles of one operation.
#[derive(Debug)]
pub(super) struct OperationSeries {
    inflight: Option<Gauge>,
    started: Option<Counter>,
    /// The duration (Harbor-style and go-grpc-prometheus schemes).
    duration: Option<Histogram>,
    /// The durations by gRPC code (the OpenTelemetry scheme).
    durations: Option<Box<StatusHandles<Code, Histogram, CODE_COUNT>>>,
    /// `[operation]`, `[grpc_type, grpc_service, grpc_method]`, or `[rpc_method,
    /// rpc_system_name]`.
    labels: Box<[Label]>,
    /// Totals by (HTTP status, gRPC code): HTTP 200 (every status in the go-grpc-prometheus
    /// scheme, which has no `code` label) has a slot per gRPC code; other statuses (499 for
    /// cancelled calls, a proxy's 503, ...) are in the list.
    totals: CodeCounters<(u16, Code), CODE_COUNT>,
    totals_in: Arc<Totals>,
    /// The messages of the request body: received by a server, sent by a client.
    pub(super) request_messages: Option<Counter>,
    /// The messages of the response body: sent by a server, received by a client.
    pub(super) response_messages: Option<Counter>,
    /// The time to the response head, when it is recorded.
    first_byte: Option<Histogram>,
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

    /// Counts `n` messages of the response body.
    pub(super) fn response_messages(&self, n: u64) {
        if let Some(c) = &self.response_messages {
            c.increment(n);
        }
    }

    /// Whether the time to the response head is recorded.
    pub(super) fn records_first_byte(&self) -> bool {
        self.first_byte.is_some()
    }

    /// Records the time from the call to its response head, when it is recorded.
    pub(super) fn first_byte(&self, seconds: f64) {
        if let Some(h) = &self.first_byte {
            h.record(seconds);
        }
    }

    /// Ends a call started with [`start`](Self::start).
    pub(super) fn finish(&self, seconds: f64, http_status: u16, code: Code) {
        if let Some(g) = &self.inflight {
            g.decrement(1.0);
        }
        if let Some(durations) = &self.durations {
            let register = |code: Code| {
                let totals = &self.totals_in;
                let name = SharedString::const_str(code_name(code));
                let mut labels = self.labels.to_vec();
                labels.push(Label::new("rpc_response_status_code", name.clone()));
                let failed = if totals.client {
                    code != Code::Ok
                } else {
                    is_server_error(code)
                };
                if failed {
                    labels.push(Label::new("error_type", name));
                }
                let key = Key::from_parts(totals.duration.clone(), sorted(labels));
                totals.recorder.histogram(&key)
            };
            let slot = Some(code_index(code));
            durations.with(code, slot, register, |h| h.record(seconds));
        }
        let Some(duration) = &self.duration else {
            return;
        };
        duration.record(seconds);
        let http_status = match self.totals_in.scheme {
            Scheme::Towerscope => http_status,
            Scheme::GoGrpcPrometheus | Scheme::Otel => 200,
        };
        let slot = (http_status == 200).then(|| code_index(code));
        self.totals
            .increment((http_status, code), slot, |(status, code)| {
                self.register_total(status, code)
            });
    }

    fn register_total(&self, http_status: u16, code: Code) -> Counter {
        let totals = &self.totals_in;
        let code_name = match totals.scheme {
            Scheme::GoGrpcPrometheus => go_code_name(code),
            Scheme::Towerscope | Scheme::Otel => code_name(code),
        };
        let grpc_code = Label::new("grpc_code", SharedString::const_str(code_name));
        let labels: Vec<Label> = match totals.scheme {
            Scheme::Towerscope => [Label::new("code", status_label(http_status)), grpc_code]
                .into_iter()
                .chain(self.labels.iter().cloned())
                .collect(),
            Scheme::GoGrpcPrometheus | Scheme::Otel => {
                self.labels.iter().cloned().chain([grpc_code]).collect()
            }
        };
        totals
            .recorder
            .counter(&Key::from_parts(totals.name.clone(), labels))
    }
}

/// The per-layer cache of series.
#[derive(Debug)]
pub(super) struct SeriesTable {
    recorder: RecorderRef,
    inflight: SharedString,
    started: SharedString,
    duration: SharedString,
    /// The counters of request and response messages (received and sent on a server, the
    /// other way round on a client); empty when not recorded.
    request_messages: SharedString,
    response_messages: SharedString,
    /// The time-to-first-byte family; empty when not recorded.
    first_byte: SharedString,
    totals: Arc<Totals>,
    types: Arc<HashMap<String, GrpcType>>,
    operations: LabelTable<OperationSeries>,
    /// Calls of paths that are not gRPC paths: kept out of the table, so that they never
    /// count against the cap (a scanner's paths cannot push real operations out).
    unknown: OnceLock<Arc<OperationSeries>>,
}

impl SeriesTable {
    /// An empty table, with its overflow counter registered; the families are described by
    /// the caller. The time to the response head is recorded when `first_byte`.
    pub(super) fn new(
        recorder: RecorderRef,
        names: &GrpcMetricNames,
        max_operations: usize,
        types: Arc<HashMap<String, GrpcType>>,
        first_byte: bool,
    ) -> Self {
        let (request, response) = if names.client {
            (&names.sent, &names.received)
        } else {
            (&names.received, &names.sent)
        };
        let operations = LabelTable::new(max_operations)
            .with_overflow_counter(recorder.clone(), names.overflow().to_owned());
        Self {
            totals: Arc::new(Totals {
                recorder: recorder.clone(),
                scheme: names.scheme,
                name: names.total.clone().into(),
                duration: names.duration.clone().into(),
                client: names.client,
            }),
            recorder,
            inflight: names.inflight.clone().into(),
            started: names.started.clone().into(),
            duration: names.duration.clone().into(),
            request_messages: request.clone().into(),
            response_messages: response.clone().into(),
            first_byte: match first_byte {
                true => names.first_byte.clone().into(),
                false => SharedString::const_str(""),
            },
            types,
            operations,
            unknown: OnceLock::new(),
        }
    }

    /// The series of `operation` (`None`: the path is not a gRPC one), registered on first use.
    pub(super) fn series(&self, operation: Option<GrpcOperation<'_>>) -> Arc<OperationSeries> {
        let Some(op) = operation else {
            let unknown = || {
                let label = SharedString::const_str(OperationId::UNKNOWN);
                Arc::new(self.register(label, OperationId::UNKNOWN, OperationId::UNKNOWN, None))
            };
            return self.unknown.get_or_init(unknown).clone();
        };
        self.operations.get(op.as_str(), |label| {
            if label.as_ref() == OVERFLOW_LABEL {
                return self.register(label, OVERFLOW_LABEL, OVERFLOW_LABEL, None);
            }
            let grpc_type = self.types.get(op.as_str()).copied();
            self.register(label, op.service(), op.method(), grpc_type)
        })
    }

    /// The handles of one `operation` label (`service` and `method` in the go-grpc-prometheus
    /// scheme), in flight and duration registered now.
    fn register(
        &self,
        operation: SharedString,
        service: &str,
        method: &str,
        grpc_type: Option<GrpcType>,
    ) -> OperationSeries {
        let scheme = self.totals.scheme;
        let labels: Box<[Label]> = match scheme {
            Scheme::Towerscope => Box::new([Label::new("operation", operation)]),
            Scheme::GoGrpcPrometheus => Box::new([
                Label::new(
                    "grpc_type",
                    SharedString::const_str(grpc_type.unwrap_or_default().as_str()),
                ),
                Label::new("grpc_service", service.to_owned()),
                Label::new("grpc_method", method.to_owned()),
            ]),
            // The fully-qualified method; `_OTHER` for a path that is not a gRPC one.
            Scheme::Otel => Box::new([
                Label::new(
                    "rpc_method",
                    if operation.as_ref() == OperationId::UNKNOWN {
                        SharedString::const_str(OTHER_METHOD)
                    } else {
                        operation
                    },
                ),
                Label::new("rpc_system_name", SharedString::const_str("grpc")),
            ]),
        };
        let key = |name: &SharedString| Key::from_parts(name.clone(), labels.to_vec());
        let (recorder, towerscope) = (&self.recorder, scheme == Scheme::Towerscope);
        let otel = scheme == Scheme::Otel;
        OperationSeries {
            inflight: towerscope.then(|| recorder.gauge(&key(&self.inflight))),
            started: (scheme == Scheme::GoGrpcPrometheus)
                .then(|| recorder.counter(&key(&self.started))),
            duration: (!otel).then(|| recorder.histogram(&key(&self.duration))),
            durations: otel.then(|| Box::new(StatusHandles::new())),
            request_messages: (!self.request_messages.is_empty())
                .then(|| recorder.counter(&key(&self.request_messages))),
            response_messages: (!self.response_messages.is_empty())
                .then(|| recorder.counter(&key(&self.response_messages))),
            // The operation's labels only: the gRPC status comes after the head.
            first_byte: (!self.first_byte.is_empty())
                .then(|| recorder.histogram(&key(&self.first_byte))),
            labels,
            totals: CodeCounters::new(),
            totals_in: self.totals.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;

    #[test]
    fn unknown_paths_stay_out_of_the_cap_and_codes_are_counted_once_each() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let names = GrpcMetricNames::default();
        let table = SeriesTable::new(
            RecorderRef::Shared(Arc::new(recorder)),
            &names,
            1,
            Arc::default(),
            false,
        );
        let unknown = table.series(None);
        assert!(Arc::ptr_eq(&unknown, &table.series(None)));
        let a = table.series(GrpcOperation::from_path("/a.A/One"));
        let over = table.series(GrpcOperation::from_path("/b.B/Two"));
        assert_eq!(over.labels[0].value(), OVERFLOW_LABEL);
        for (series, status, code) in [
            (&a, 200, Code::Ok),
            (&a, 200, Code::Ok),
            (&a, 499, Code::Cancelled),
            (&unknown, 200, Code::Unimplemented),
        ] {
            series.start();
            series.finish(0.1, status, code);
        }
        let mut totals: Vec<_> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| key.key().name() == "grpc_request_total")
            .map(|(key, _, _, value)| {
                let labels: Vec<_> = key.key().labels().map(|l| l.value().to_owned()).collect();
                (labels.join(","), value)
            })
            .collect();
        totals.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            totals,
            [
                ("200,OK,a.A/One".to_owned(), DebugValue::Counter(2)),
                (
                    "200,UNIMPLEMENTED,unknown".to_owned(),
                    DebugValue::Counter(1)
                ),
                ("499,CANCELLED,a.A/One".to_owned(), DebugValue::Counter(1)),
            ]
        );
    }
}
