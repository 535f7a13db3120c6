//! Metric family names of [`GrpcLayer`](super::GrpcLayer): towerscope's (Harbor-style, under a
//! prefix) or go-grpc-prometheus'.

use std::fmt;

/// The streaming type of a method, go-grpc-prometheus' `grpc_type` label.
///
/// Nothing on the wire tells a unary call from a streaming one (both are one HTTP/2 stream),
/// so every method is `unary` unless declared with
/// [`GrpcLayer::with_grpc_type`](super::GrpcLayer::with_grpc_type).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GrpcType {
    /// One request message, one response message.
    #[default]
    Unary,
    /// A stream of request messages, one response message.
    ClientStream,
    /// One request message, a stream of response messages.
    ServerStream,
    /// Streams both ways.
    BidiStream,
}

impl GrpcType {
    /// The label value: `unary`, `client_stream`, `server_stream` or `bidi_stream`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unary => "unary",
            Self::ClientStream => "client_stream",
            Self::ServerStream => "server_stream",
            Self::BidiStream => "bidi_stream",
        }
    }
}

impl fmt::Display for GrpcType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which label scheme the families use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scheme {
    /// `{operation}`, `{code, grpc_code, operation}`.
    Towerscope,
    /// `{grpc_type, grpc_service, grpc_method[, grpc_code]}`.
    GoGrpcPrometheus,
    /// The OpenTelemetry conventions': `{error_type, rpc_method, rpc_response_status_code,
    /// rpc_system_name}`.
    Otel,
}

/// The names (and label scheme) of the families a [`GrpcLayer`](super::GrpcLayer) records.
///
/// Towerscope's names, the default, follow the HTTP families under the same prefix:
///
/// | family | type | labels |
/// |---|---|---|
/// | `{prefix}grpc_inflight_requests` | gauge | `operation` |
/// | `{prefix}grpc_request_duration_seconds` | summary or histogram | `operation` |
/// | `{prefix}grpc_request_total` | counter | `code`, `grpc_code`, `operation` |
/// | `{prefix}grpc_messages_received_total` | counter | `operation` |
/// | `{prefix}grpc_messages_sent_total` | counter | `operation` |
/// | `{prefix}grpc_operation_overflow_total` | counter | |
/// | `{prefix}grpc_request_time_to_first_byte_seconds` (opt-in) | summary or histogram | `operation` |
///
/// [`go_grpc_prometheus`](Self::go_grpc_prometheus) gives the server names of
/// go-grpc-prometheus, for dashboards built on them:
///
/// | family | type | labels |
/// |---|---|---|
/// | `grpc_server_started_total` | counter | `grpc_type`, `grpc_service`, `grpc_method` |
/// | `grpc_server_handled_total` | counter | `grpc_type`, `grpc_service`, `grpc_method`, `grpc_code` |
/// | `grpc_server_handling_seconds` | summary or histogram | `grpc_type`, `grpc_service`, `grpc_method` |
/// | `grpc_server_msg_received_total` | counter | `grpc_type`, `grpc_service`, `grpc_method` |
/// | `grpc_server_msg_sent_total` | counter | `grpc_type`, `grpc_service`, `grpc_method` |
/// | `grpc_server_operation_overflow_total` | counter | |
/// | `grpc_server_time_to_first_byte_seconds` (opt-in; towerscope's, see below) | summary or histogram | `grpc_type`, `grpc_service`, `grpc_method` |
///
/// In this preset `grpc_code` is spelled as grpc-go spells it (`OK`, `NotFound`, `Canceled`,
/// `DeadlineExceeded`: [`go_code_name`](super::go_code_name)), as go-grpc-prometheus writes
/// it, so that its dashboards' and alerts' selectors match.
///
/// [`otel`](Self::otel) gives the OpenTelemetry RPC conventions' server family
/// (`metric.naming: otel`; the conventions after v1.37, release candidate), in the
/// Collector's Prometheus form:
///
/// | family | type | labels |
/// |---|---|---|
/// | `rpc_server_call_duration_seconds` | histogram (advised buckets) | `error_type`, `rpc_method`, `rpc_response_status_code`, `rpc_system_name` |
/// | `{prefix}grpc_operation_overflow_total` | counter | |
/// | `rpc_server_time_to_first_byte_seconds` (opt-in; towerscope's, see below) | histogram (advised buckets) | `rpc_method`, `rpc_system_name` |
///
/// `rpc_method` is the fully-qualified method (`grpc.health.v1.Health/Check`, `_OTHER` for a
/// path that is not a gRPC one, `_overflow` past the cap), `rpc_system_name` is `grpc`,
/// `rpc_response_status_code` the status name (`OK`, `NOT_FOUND`, ...), and `error_type` the
/// same name when the call failed: on a server for the codes the span marks as errors
/// (`UNKNOWN`, `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS`),
/// on a client ([`otel_client`](Self::otel_client)) for every code but `OK`.
///
/// The time-to-first-byte families are recorded only when asked for
/// ([`GrpcLayer::with_time_to_first_byte`](super::GrpcLayer::with_time_to_first_byte),
/// [`GrpcClientLayer::with_time_to_first_byte`](super::GrpcClientLayer::with_time_to_first_byte),
/// `metric.time_to_first_byte`): the time from the call to the response head (sent by a
/// server, received by a client). For a unary call the head comes just before the one
/// message; for a streaming call it comes when the service answers, well before the stream
/// ends, where the duration ends. A trailers-only response (an error before any message) is
/// its own head: both times are the same. Neither go-grpc-prometheus nor the OpenTelemetry
/// conventions have such a family: `grpc_server_time_to_first_byte_seconds` /
/// `grpc_client_time_to_first_byte_seconds` are towerscope's names in go-grpc-prometheus'
/// style, `rpc_server_time_to_first_byte_seconds` / `rpc_client_time_to_first_byte_seconds`
/// (`rpc.server.time_to_first_byte` over OTLP) in the conventions' style. They carry the
/// operation's labels and no status: the gRPC status comes with the trailers, after the head.
///
/// Calls of paths that are not gRPC paths are labelled `operation="unknown"` (both
/// `grpc_service` and `grpc_method` `unknown` in the go-grpc-prometheus scheme), calls beyond
/// the cap on operations `_overflow`.
///
/// The message counters count the gRPC messages of each call as their last byte passes
/// (read from the length-prefixed framing of the request and response bodies; a partial
/// message counts nothing), so a long stream shows its progress. A server receives the
/// request messages and sends the response messages; a client the other way round. The
/// clients' names are [`client_with_prefix`](Self::client_with_prefix)'s
/// (`{prefix}grpc_client_messages_received_total`, ...) and
/// [`go_grpc_prometheus_client`](Self::go_grpc_prometheus_client)'s
/// (`grpc_client_msg_received_total`, `grpc_client_msg_sent_total`).
///
/// The OpenTelemetry scheme has no message counter: the conventions count messages only as
/// the histograms `rpc.{server,client}.requests_per_rpc` / `responses_per_rpc` (status
/// Development, one observation at the end of each call), which towerscope does not record;
/// the counts are on the call's span instead (`rpc.message.received.count`,
/// `rpc.message.sent.count`).
///
/// ```
/// use towerscope::grpc::GrpcMetricNames;
///
/// let names = GrpcMetricNames::with_prefix("harbor_core_");
/// assert_eq!(names.total(), "harbor_core_grpc_request_total");
/// assert_eq!(names.inflight(), Some("harbor_core_grpc_inflight_requests"));
///
/// let names = GrpcMetricNames::go_grpc_prometheus();
/// assert_eq!(names.total(), "grpc_server_handled_total");
/// assert_eq!(names.started(), Some("grpc_server_started_total"));
/// assert_eq!(names.inflight(), None);
/// assert_eq!(names.messages_received(), Some("grpc_server_msg_received_total"));
/// assert_eq!(names.messages_sent(), Some("grpc_server_msg_sent_total"));
/// assert_eq!(names.time_to_first_byte(), "grpc_server_time_to_first_byte_seconds");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcMetricNames {
    pub(super) scheme: Scheme,
    /// Names of a client's families (calls out, through a
    /// [`GrpcClientLayer`](super::GrpcClientLayer)).
    pub(super) client: bool,
    pub(super) inflight: String,
    pub(super) started: String,
    pub(super) duration: String,
    pub(super) total: String,
    pub(super) overflow: String,
    /// Messages received (a server's request messages, a client's response messages).
    pub(super) received: String,
    /// Messages sent (a server's response messages, a client's request messages).
    pub(super) sent: String,
    /// The time to the response head (recorded when asked for).
    pub(super) first_byte: String,
}

impl GrpcMetricNames {
    /// Towerscope's names behind `prefix` (which ends in `_` unless empty).
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            scheme: Scheme::Towerscope,
            client: false,
            inflight: format!("{prefix}grpc_inflight_requests"),
            started: String::new(),
            duration: format!("{prefix}grpc_request_duration_seconds"),
            total: format!("{prefix}grpc_request_total"),
            overflow: format!("{prefix}grpc_operation_overflow_total"),
            received: format!("{prefix}grpc_messages_received_total"),
            sent: format!("{prefix}grpc_messages_sent_total"),
            first_byte: format!("{prefix}grpc_request_time_to_first_byte_seconds"),
        }
    }

    /// go-grpc-prometheus' server names and labels (no prefix: dashboards expect the exact
    /// names).
    ///
    /// Its duration family, `grpc_server_handling_seconds`, ends in `_seconds` like every
    /// duration, so a registry with `metric.buckets` renders it as a histogram, as
    /// go-grpc-prometheus does with `EnableHandlingTimeHistogram`.
    pub fn go_grpc_prometheus() -> Self {
        Self {
            scheme: Scheme::GoGrpcPrometheus,
            client: false,
            inflight: String::new(),
            started: "grpc_server_started_total".to_owned(),
            duration: "grpc_server_handling_seconds".to_owned(),
            total: "grpc_server_handled_total".to_owned(),
            overflow: "grpc_server_operation_overflow_total".to_owned(),
            received: "grpc_server_msg_received_total".to_owned(),
            sent: "grpc_server_msg_sent_total".to_owned(),
            first_byte: "grpc_server_time_to_first_byte_seconds".to_owned(),
        }
    }

    /// The OpenTelemetry conventions' server family, `rpc_server_call_duration_seconds`, and
    /// towerscope's overflow counter behind `prefix`. The call count is the histogram's
    /// `_count`; there is no in-flight gauge nor total counter.
    pub fn otel(prefix: &str) -> Self {
        Self {
            scheme: Scheme::Otel,
            client: false,
            inflight: String::new(),
            started: String::new(),
            duration: crate::metrics::semconv::RPC_SERVER_CALL_DURATION.to_owned(),
            total: String::new(),
            overflow: format!("{prefix}grpc_operation_overflow_total"),
            received: String::new(),
            sent: String::new(),
            first_byte: crate::metrics::semconv::RPC_SERVER_TIME_TO_FIRST_BYTE.to_owned(),
        }
    }

    /// The names of a [`GrpcClientLayer`](super::GrpcClientLayer)'s families behind `prefix`,
    /// towerscope's scheme with `client` in the name:
    /// `{prefix}grpc_client_inflight_requests{operation}`,
    /// `{prefix}grpc_client_request_duration_seconds{operation}`,
    /// `{prefix}grpc_client_request_total{code, grpc_code, operation}`,
    /// `{prefix}grpc_client_operation_overflow_total` and, when asked for,
    /// `{prefix}grpc_client_request_time_to_first_byte_seconds{operation}`.
    pub fn client_with_prefix(prefix: &str) -> Self {
        Self {
            scheme: Scheme::Towerscope,
            client: true,
            inflight: format!("{prefix}grpc_client_inflight_requests"),
            started: String::new(),
            duration: format!("{prefix}grpc_client_request_duration_seconds"),
            total: format!("{prefix}grpc_client_request_total"),
            overflow: format!("{prefix}grpc_client_operation_overflow_total"),
            received: format!("{prefix}grpc_client_messages_received_total"),
            sent: format!("{prefix}grpc_client_messages_sent_total"),
            first_byte: format!("{prefix}grpc_client_request_time_to_first_byte_seconds"),
        }
    }

    /// The OpenTelemetry conventions' client family, `rpc_client_call_duration_seconds`
    /// (labels as [`otel`](Self::otel)'s), the overflow counter
    /// `{prefix}grpc_client_operation_overflow_total` and, when asked for,
    /// `rpc_client_time_to_first_byte_seconds` (towerscope's own).
    pub fn otel_client(prefix: &str) -> Self {
        Self {
            scheme: Scheme::Otel,
            client: true,
            inflight: String::new(),
            started: String::new(),
            duration: crate::metrics::semconv::RPC_CLIENT_CALL_DURATION.to_owned(),
            total: String::new(),
            overflow: format!("{prefix}grpc_client_operation_overflow_total"),
            received: String::new(),
            sent: String::new(),
            first_byte: crate::metrics::semconv::RPC_CLIENT_TIME_TO_FIRST_BYTE.to_owned(),
        }
    }

    /// go-grpc-prometheus' client names and labels, for a
    /// [`GrpcClientLayer`](super::GrpcClientLayer): `grpc_client_started_total`,
    /// `grpc_client_handled_total`, `grpc_client_handling_seconds`,
    /// `grpc_client_msg_received_total` and `grpc_client_msg_sent_total`, labelled
    /// `grpc_type`, `grpc_service`, `grpc_method` (and `grpc_code`, grpc-go's spelling, on the
    /// handled counter), the overflow counter `grpc_client_operation_overflow_total` and, when
    /// asked for, `grpc_client_time_to_first_byte_seconds` (towerscope's, in go-grpc-prometheus'
    /// style).
    pub fn go_grpc_prometheus_client() -> Self {
        Self {
            scheme: Scheme::GoGrpcPrometheus,
            client: true,
            inflight: String::new(),
            started: "grpc_client_started_total".to_owned(),
            duration: "grpc_client_handling_seconds".to_owned(),
            total: "grpc_client_handled_total".to_owned(),
            overflow: "grpc_client_operation_overflow_total".to_owned(),
            received: "grpc_client_msg_received_total".to_owned(),
            sent: "grpc_client_msg_sent_total".to_owned(),
            first_byte: "grpc_client_time_to_first_byte_seconds".to_owned(),
        }
    }

    /// Whether these name a client's families.
    pub fn is_client(&self) -> bool {
        self.client
    }

    /// Whether these are the OpenTelemetry conventions' names.
    pub fn is_otel(&self) -> bool {
        self.scheme == Scheme::Otel
    }

    /// Whether these are go-grpc-prometheus' names.
    pub fn is_go_grpc_prometheus(&self) -> bool {
        self.scheme == Scheme::GoGrpcPrometheus
    }

    /// The in-flight gauge; none in the go-grpc-prometheus scheme (started minus handled).
    pub fn inflight(&self) -> Option<&str> {
        (self.scheme == Scheme::Towerscope).then_some(self.inflight.as_str())
    }

    /// The counter of started calls; only in the go-grpc-prometheus scheme.
    pub fn started(&self) -> Option<&str> {
        (self.scheme == Scheme::GoGrpcPrometheus).then_some(self.started.as_str())
    }

    /// The duration family (seconds until the response stream ended).
    pub fn duration(&self) -> &str {
        &self.duration
    }

    /// The counter of finished calls; empty in the OpenTelemetry scheme (which counts calls
    /// in the duration histogram's `_count`).
    pub fn total(&self) -> &str {
        &self.total
    }

    /// The counter of calls whose operation was replaced by `_overflow`.
    pub fn overflow(&self) -> &str {
        &self.overflow
    }

    /// The counter of messages received (by a server: request messages; by a client:
    /// response messages); none in the OpenTelemetry scheme (see the type's docs).
    pub fn messages_received(&self) -> Option<&str> {
        (!self.received.is_empty()).then_some(self.received.as_str())
    }

    /// The counter of messages sent (by a server: response messages; by a client: request
    /// messages); none in the OpenTelemetry scheme.
    pub fn messages_sent(&self) -> Option<&str> {
        (!self.sent.is_empty()).then_some(self.sent.as_str())
    }

    /// The time-to-first-byte family (seconds until the response head), recorded only when
    /// the layer is asked to (see the type's docs).
    pub fn time_to_first_byte(&self) -> &str {
        &self.first_byte
    }

    /// Every family name, for component registration; the time-to-first-byte family, which
    /// is opt-in, is not among them.
    pub fn families(&self) -> Vec<&str> {
        [
            self.inflight(),
            self.started(),
            self.messages_received(),
            self.messages_sent(),
        ]
        .into_iter()
        .flatten()
        .chain([self.duration(), self.total(), self.overflow()])
        .filter(|name| !name.is_empty())
        .collect()
    }
}

impl Default for GrpcMetricNames {
    /// Towerscope's names without a prefix: `grpc_request_total`, ...
    fn default() -> Self {
        Self::with_prefix("")
    }
}
