//! Metric family names: Harbor's, under a `{namespace}_{subsystem}_` prefix.

/// The names of the HTTP request families a [`MetricsLayer`](super::MetricsLayer) records.
///
/// ```
/// use towerscope::metrics::MetricNames;
///
/// let names = MetricNames::with_prefix("harbor_core_");
/// assert_eq!(names.inflight, "harbor_core_http_inflight_requests");
/// assert_eq!(names.duration, "harbor_core_http_request_duration_seconds");
/// assert_eq!(names.total, "harbor_core_http_request_total");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricNames {
    /// Gauge of requests in flight, `{method, operation}`.
    pub inflight: String,
    /// Summary (or histogram) of request durations in seconds, `{method, operation}`.
    pub duration: String,
    /// Counter of finished requests, `{method, code, operation}`.
    pub total: String,
    /// Counter of requests whose operation label was replaced by `_overflow` because the cap
    /// on distinct operations was reached.
    pub overflow: String,
    /// Summary (or histogram) of the time to the response head in seconds, `{method,
    /// operation}`: recorded only with `metric.time_to_first_byte`
    /// ([`MetricsLayer::with_time_to_first_byte`](super::MetricsLayer::with_time_to_first_byte)).
    pub first_byte: String,
    /// Counter of requests whose value of a label of the user's own
    /// ([`MetricLabel`](super::MetricLabel)) was replaced by `_overflow`, `{label}`.
    pub label_overflow: String,
}

impl MetricNames {
    /// Harbor's names behind `prefix` (which ends in `_` unless empty).
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            inflight: format!("{prefix}http_inflight_requests"),
            duration: format!("{prefix}http_request_duration_seconds"),
            total: format!("{prefix}http_request_total"),
            overflow: format!("{prefix}http_operation_overflow_total"),
            first_byte: format!("{prefix}http_request_time_to_first_byte_seconds"),
            label_overflow: format!("{prefix}http_request_label_overflow_total"),
        }
    }

    /// Harbor core's own names: `harbor_core_http_*`.
    pub fn harbor_core() -> Self {
        Self::with_prefix("harbor_core_")
    }

    /// The family names, for component registration.
    pub fn families(&self) -> [&str; 4] {
        [&self.inflight, &self.duration, &self.total, &self.overflow]
    }
}

impl Default for MetricNames {
    /// Harbor's names without a prefix: `http_request_total`, ...
    fn default() -> Self {
        Self::with_prefix("")
    }
}

/// How duration (histogram) families are stored and exposed (`metric.histogram`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistogramMode {
    /// Summaries, or classic buckets where buckets are configured or advised (as before).
    #[default]
    Classic,
    /// Prometheus native histograms (exponential buckets), exposed in the protobuf format
    /// and pushed as OTLP exponential histograms; the text formats show their count and sum.
    Native,
    /// Native histograms and classic buckets (the configured ones, the advised ones, or
    /// Prometheus' default buckets), as client_golang exposes both: the text formats show the
    /// classic buckets, the protobuf format both.
    Both,
}

/// Which names and labels the request families use: `metric.naming`.
///
/// | | `Harbor` (default) | `Otel` |
/// |---|---|---|
/// | HTTP server | `{prefix}http_request_duration_seconds` (summary or histogram), `{prefix}http_request_total`, `{prefix}http_inflight_requests`, by `method`, `code`, `operation` | `http_server_request_duration_seconds` (histogram), `http_server_active_requests`, by the semantic conventions' attributes |
/// | HTTP client | `{prefix}http_client_*`, by `method`, `code`, `peer` | `http_client_request_duration_seconds` |
/// | gRPC | `{prefix}grpc_*` (or go-grpc-prometheus') | `rpc_server_call_duration_seconds`, `rpc_client_call_duration_seconds` |
/// | sqlx transactions | `{prefix}db_transaction_duration_seconds`, `{prefix}db_transaction_total`, by `operation`, `outcome` | `db_client_operation_duration_seconds` |
///
/// The OpenTelemetry names are those of the HTTP and database semantic conventions (stable
/// part) and of
/// the RPC conventions (after v1.37, release candidate), in the
/// Prometheus form the OpenTelemetry Collector's Prometheus exporter writes: dots become `_`,
/// the unit `s` becomes `_seconds`, and no prefix. The families towerscope adds of its own
/// (overflow counters, span export, jobs) keep their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricNaming {
    /// Harbor's families and labels.
    #[default]
    Harbor,
    /// The OpenTelemetry semantic conventions' families and attributes.
    Otel,
}
