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
}

impl MetricNames {
    /// Harbor's names behind `prefix` (which ends in `_` unless empty).
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            inflight: format!("{prefix}http_inflight_requests"),
            duration: format!("{prefix}http_request_duration_seconds"),
            total: format!("{prefix}http_request_total"),
            overflow: format!("{prefix}http_operation_overflow_total"),
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
