#![doc = include_str!("../../docs/semconv.md")]

use http::{Uri, Version};
use metrics::{Label, SharedString};

use super::toolkit::status_label;

pub(crate) mod server;

/// The Prometheus name of `http.server.request.duration`.
pub const HTTP_SERVER_REQUEST_DURATION: &str = "http_server_request_duration_seconds";
/// The Prometheus name of `http.server.time_to_first_byte` (opt-in:
/// `metric.time_to_first_byte`): not one of the conventions' instruments, towerscope's own,
/// named in their style.
pub const HTTP_SERVER_TIME_TO_FIRST_BYTE: &str = "http_server_time_to_first_byte_seconds";
/// The Prometheus name of `http.server.active_requests`.
pub const HTTP_SERVER_ACTIVE_REQUESTS: &str = "http_server_active_requests";
/// The Prometheus name of `http.server.request.body.size` (opt-in: `metric.body_sizes`).
pub const HTTP_SERVER_REQUEST_BODY_SIZE: &str = "http_server_request_body_size_bytes";
/// The Prometheus name of `http.server.response.body.size` (opt-in: `metric.body_sizes`).
pub const HTTP_SERVER_RESPONSE_BODY_SIZE: &str = "http_server_response_body_size_bytes";
/// The Prometheus name of `http.client.request.duration`.
pub const HTTP_CLIENT_REQUEST_DURATION: &str = "http_client_request_duration_seconds";
/// The Prometheus name of `rpc.server.call.duration`.
pub const RPC_SERVER_CALL_DURATION: &str = "rpc_server_call_duration_seconds";
/// The Prometheus name of `rpc.client.call.duration`.
pub const RPC_CLIENT_CALL_DURATION: &str = "rpc_client_call_duration_seconds";
/// The Prometheus name of `rpc.server.time_to_first_byte` (opt-in: `metric.time_to_first_byte`,
/// `GrpcLayer::with_time_to_first_byte`): the time from a gRPC call to its response head;
/// towerscope's own, named in the conventions' style.
pub const RPC_SERVER_TIME_TO_FIRST_BYTE: &str = "rpc_server_time_to_first_byte_seconds";
/// The Prometheus name of `rpc.client.time_to_first_byte` (opt-in, as the server's): the time
/// from a call out to the response head it received; towerscope's own.
pub const RPC_CLIENT_TIME_TO_FIRST_BYTE: &str = "rpc_client_time_to_first_byte_seconds";
/// The Prometheus name of `db.client.operation.duration` (sqlx transactions, `db` module).
pub const DB_CLIENT_OPERATION_DURATION: &str = "db_client_operation_duration_seconds";

/// The bucket boundaries (seconds) the HTTP semantic conventions advise for request
/// durations.
pub const ADVISED_DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The bucket boundaries (seconds) the database semantic conventions advise for
/// `db.client.operation.duration`.
pub const DB_ADVISED_DURATION_BUCKETS: [f64; 9] =
    [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

/// The bucket boundaries (bytes) of the body-size histograms: powers of four from 64 B to
/// 1 GiB (the conventions advise none; the OpenTelemetry SDKs' default boundaries, made for
/// milliseconds, would put every blob above 10 kB in one bucket).
pub const BODY_SIZE_BUCKETS: [f64; 13] = [
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    268_435_456.0,
    1_073_741_824.0,
];

/// Why a request failed, as `error.type` says it; [`Failure::None`] for a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Not a failure (no `error_type` label).
    None,
    /// A status code that is a failure on this side (5xx on a server): `error_type` is the code.
    Status,
    /// The client went away (the server side) or the call was dropped (the client side).
    Cancelled,
    /// The handler panicked through the layer.
    Panic,
    /// The service returned an error instead of a response.
    ServiceError,
    /// The response body failed mid-stream.
    BodyError,
}

impl Failure {
    /// The `error_type` value, for a request whose status is `status` (0: none).
    pub(crate) fn label(self, status: u16) -> Option<SharedString> {
        Some(match self {
            Self::None => return None,
            Self::Status => status_label(status),
            Self::Cancelled => SharedString::const_str("cancelled"),
            Self::Panic => SharedString::const_str("panic"),
            Self::ServiceError => SharedString::const_str("service_error"),
            Self::BodyError => SharedString::const_str("body_error"),
        })
    }
}

/// The `url.scheme` values, by index.
pub(crate) const SCHEMES: [&str; 2] = ["http", "https"];

/// The index in [`SCHEMES`] of a request's scheme: `https` only when the URI says so.
pub(crate) fn scheme_index(uri: &Uri) -> usize {
    usize::from(uri.scheme() == Some(&http::uri::Scheme::HTTPS))
}

/// The `network.protocol.version` values, by index.
pub(crate) const VERSIONS: [&str; 5] = ["0.9", "1.0", "1.1", "2", "3"];

/// The index in [`VERSIONS`] of `version`.
pub(crate) fn version_index(version: Version) -> usize {
    match version {
        Version::HTTP_09 => 0,
        Version::HTTP_10 => 1,
        Version::HTTP_2 => 3,
        Version::HTTP_3 => 4,
        // HTTP/1.1, and any version a later `http` release adds.
        _ => 2,
    }
}

/// `labels` sorted by name, the order the Collector writes them in.
pub(crate) fn sorted(mut labels: Vec<Label>) -> Vec<Label> {
    labels.sort_by(|a, b| a.key().cmp(b.key()));
    labels
}

/// How a family above is sent as an OpenTelemetry instrument, and named in a UTF-8 scrape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OtelInstrument {
    pub(crate) name: &'static str,
    /// The instrument's unit (OTLP only: a scrape's names keep the unit's suffix).
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    pub(crate) unit: &'static str,
    /// An UpDownCounter (stored as a gauge): sent as a non-monotonic sum.
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    pub(crate) up_down: bool,
}

/// The OpenTelemetry instrument of a family above, by its Prometheus name: what an OTLP push
/// with `metric.naming: otel` sends instead of the Prometheus form, and the name a scrape that
/// allows UTF-8 names gets.
pub(crate) fn otel_instrument(prometheus: &str) -> Option<OtelInstrument> {
    let (name, unit, up_down) = match prometheus {
        HTTP_SERVER_REQUEST_DURATION => ("http.server.request.duration", "s", false),
        HTTP_SERVER_TIME_TO_FIRST_BYTE => ("http.server.time_to_first_byte", "s", false),
        HTTP_SERVER_ACTIVE_REQUESTS => ("http.server.active_requests", "{request}", true),
        HTTP_SERVER_REQUEST_BODY_SIZE => ("http.server.request.body.size", "By", false),
        HTTP_SERVER_RESPONSE_BODY_SIZE => ("http.server.response.body.size", "By", false),
        HTTP_CLIENT_REQUEST_DURATION => ("http.client.request.duration", "s", false),
        RPC_SERVER_CALL_DURATION => ("rpc.server.call.duration", "s", false),
        RPC_CLIENT_CALL_DURATION => ("rpc.client.call.duration", "s", false),
        RPC_SERVER_TIME_TO_FIRST_BYTE => ("rpc.server.time_to_first_byte", "s", false),
        RPC_CLIENT_TIME_TO_FIRST_BYTE => ("rpc.client.time_to_first_byte", "s", false),
        DB_CLIENT_OPERATION_DURATION => ("db.client.operation.duration", "s", false),
        _ => return None,
    };
    Some(OtelInstrument {
        name,
        unit,
        up_down,
    })
}

/// The OpenTelemetry attribute key of a label of these families, and whether its value is an
/// integer (`http.response.status_code`, `server.port`).
pub(crate) fn otel_attribute(label: &str) -> Option<(&'static str, bool)> {
    Some(match label {
        "error_type" => ("error.type", false),
        "http_request_method" => ("http.request.method", false),
        "http_response_status_code" => ("http.response.status_code", true),
        "http_route" => ("http.route", false),
        "network_protocol_version" => ("network.protocol.version", false),
        "url_scheme" => ("url.scheme", false),
        "server_address" => ("server.address", false),
        "server_port" => ("server.port", true),
        "rpc_method" => ("rpc.method", false),
        "rpc_response_status_code" => ("rpc.response.status_code", false),
        "rpc_system_name" => ("rpc.system.name", false),
        "db_system_name" => ("db.system.name", false),
        "db_operation_name" => ("db.operation.name", false),
        "db_namespace" => ("db.namespace", false),
        // A string in the conventions: SQLSTATE `23505`, SQLite's `2067`.
        "db_response_status_code" => ("db.response.status_code", false),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_duration_has_the_conventions_name_unit_and_keys() {
        let instrument = otel_instrument(DB_CLIENT_OPERATION_DURATION).unwrap();
        assert_eq!(instrument.name, "db.client.operation.duration");
        assert_eq!(instrument.unit, "s");
        assert!(!instrument.up_down);
        for (label, key) in [
            ("db_system_name", "db.system.name"),
            ("db_operation_name", "db.operation.name"),
            ("db_namespace", "db.namespace"),
            ("error_type", "error.type"),
            // A string: SQLSTATE codes such as `08P01` are not numbers.
            ("db_response_status_code", "db.response.status_code"),
        ] {
            assert_eq!(otel_attribute(label), Some((key, false)), "{label}");
        }
        assert!(DB_ADVISED_DURATION_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }
}
