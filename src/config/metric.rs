//! The `metric:` block: Harbor's `enabled`, `port` and `path`, plus towerscope's keys.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use http::Method;
use serde::{de, Deserialize, Deserializer};

use super::{
    error::{ConfigProblem, Problems},
    metric_labels::MetricLabelConfig,
    NativeHistogramConfig, OtelConfig, OtlpProtocol,
};
use crate::metrics::{HistogramMode, MetricNaming, DEFAULT_MAX_OPERATIONS, OTHER_METHOD};

/// The `metric:` block: Harbor's `enabled`, `port` and `path`, plus towerscope's keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricConfig {
    /// Whether requests are measured and the metrics server runs. Defaults to `true`. With
    /// `enabled: false` and `otlp` set, requests are measured and pushed, not served.
    pub enabled: bool,
    /// Address the standalone metrics server binds. Defaults to `127.0.0.1`.
    pub host: IpAddr,
    /// Port of the standalone metrics server. Defaults to `9090` (Harbor's).
    pub port: u16,
    /// Path the metrics are served on. Defaults to `/metrics`.
    pub path: String,
    /// First part of every metric name's prefix (Harbor: `harbor`). Defaults to none.
    pub namespace: Option<String>,
    /// Second part of the prefix (Harbor core: `core`). Defaults to none.
    pub subsystem: Option<String>,
    /// The `?comp=` component the HTTP request families are registered under. Defaults to `core`.
    pub component: String,
    /// Quantiles of the request-duration summary. Defaults to `[0.5, 0.9, 0.99]`.
    pub quantiles: Option<Vec<f64>>,
    /// Histogram buckets (upper bounds, seconds) for request durations; when set, durations are
    /// a histogram instead of a summary. Defaults to none (a summary).
    pub buckets: Option<Vec<f64>>,
    /// Methods kept as label values; any other method is counted as `_OTHER`.
    /// Defaults to the eight RFC 9110 methods and PATCH.
    #[serde(deserialize_with = "de_methods")]
    pub methods: Vec<Method>,
    /// Cap on distinct `operation` label values per family. Defaults to `1000`.
    pub max_operations: usize,
    /// A bearer token the metrics endpoint requires. Defaults to none (no authentication).
    pub bearer_token: Option<String>,
    /// Seconds between upkeep runs (draining summary samples). Defaults to `5`.
    pub upkeep_interval_secs: u64,
    /// Histogram buckets for individual families, by full name, whatever `quantiles` and
    /// `buckets` say (e.g. a Distribution-compatible `registry_http_request_duration_seconds`
    /// beside Harbor's summaries). Defaults to none.
    pub family_buckets: BTreeMap<String, Vec<f64>>,
    /// Whether a sampled request's trace and span id are kept as the exemplar of its
    /// duration bucket and request counter, served in OpenMetrics. Defaults to `true`.
    pub exemplars: bool,
    /// Which families and labels the request layers record: `harbor` (Harbor's
    /// `http_request_total`, `http_request_duration_seconds`, ... by `method`, `code`,
    /// `operation`) or `otel` (the OpenTelemetry semantic conventions'
    /// `http_server_request_duration_seconds`, ... by `http_request_method`, `http_route`, ...;
    /// see [`semconv`](crate::metrics::semconv)). Defaults to `harbor`.
    pub naming: MetricNaming,
    /// With `naming: otel`, also records the conventions' opt-in body-size histograms,
    /// `http_server_request_body_size_bytes` (from `Content-Length`) and
    /// `http_server_response_body_size_bytes` (the bytes the response body passed on).
    /// Defaults to `false`.
    pub body_sizes: bool,
    /// Also records the time to the response head (time to first byte) of every request,
    /// beside its duration to the end of the body: `http_request_time_to_first_byte_seconds`
    /// (Harbor's naming, under the prefix) or `http_server_time_to_first_byte_seconds`
    /// (`naming: otel`); a summary or a histogram as the durations are; and marks the head on
    /// sampled server spans with an event. The gRPC layers built `from_telemetry` follow it
    /// too, server and client: `grpc_request_time_to_first_byte_seconds`,
    /// `grpc_client_request_time_to_first_byte_seconds` (or `rpc_server_…`, `rpc_client_…`
    /// with `naming: otel`; see `grpc::GrpcMetricNames`). Defaults to `false` (one more
    /// series per operation and method).
    pub time_to_first_byte: bool,
    /// Labels of the user's own on the HTTP server families, each valued by a request
    /// header through a capped table ([`MetricLabelConfig`]; at most 4). Defaults to none.
    pub labels: Vec<MetricLabelConfig>,
    /// With `naming: otel`, serves the conventions' families under their own UTF-8 names
    /// and attribute keys (`{"http.server.request.duration", "http.request.method"="GET"}`)
    /// to scrapes that allow UTF-8 names (Prometheus 3 by default); other scrapes, and the
    /// OTLP push, are unchanged. Defaults to `false`: the underscored names for every scrape,
    /// as the OpenTelemetry Collector and Prometheus 3's OTLP receiver write them by default.
    pub utf8_names: bool,
    /// How histogram families are kept: `classic` (summaries, or classic buckets where
    /// `buckets`/`family_buckets` say), `native` (Prometheus native histograms: exponential
    /// buckets, served in the protobuf format and pushed as OTLP exponential histograms) or
    /// `both` (native histograms and classic buckets: `buckets`, or Prometheus' default
    /// buckets). Defaults to `classic`. See the README for which to choose.
    pub histogram: HistogramMode,
    /// The native histograms' bucket factor, zero threshold, bucket limit and reset rule.
    pub native_histogram: NativeHistogramConfig,
    /// Pushes every family over OTLP too, beside the Prometheus endpoint (feature `otlp`).
    /// Defaults to none.
    pub otlp: Option<MetricOtlpConfig>,
}

/// `metric.otlp`: push the registry's families to an OpenTelemetry collector every
/// `interval_secs`, over the transport `trace.otel` uses.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricOtlpConfig {
    /// `host:port` (joined with `url_path` for HTTP) or a full `http(s)://` URL.
    pub endpoint: String,
    /// Path appended to a `host:port` endpoint for HTTP. Defaults to `/v1/metrics`.
    pub url_path: String,
    /// `http` (http/protobuf) or `grpc`. Defaults to `http`.
    pub protocol: OtlpProtocol,
    /// Seconds between pushes. Defaults to `60` (the OpenTelemetry SDKs' default).
    pub interval_secs: u64,
    /// `cumulative` (totals since the start, what Prometheus-style backends want) or `delta`
    /// (the change since the last push). Defaults to `cumulative`. Summaries are always
    /// cumulative: OTLP defines no delta summary.
    pub temporality: MetricTemporality,
    /// gzip the export requests. Defaults to `false`.
    pub compression: bool,
    /// Plain text instead of TLS for a `host:port` endpoint. Defaults to `false`.
    pub insecure: bool,
    /// Seconds one push may take. Defaults to `10`.
    pub timeout: u64,
    /// Headers (gRPC metadata) sent with every push.
    pub headers: BTreeMap<String, String>,
}

impl Default for MetricOtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            url_path: "/v1/metrics".to_owned(),
            protocol: OtlpProtocol::Http,
            interval_secs: 60,
            temporality: MetricTemporality::Cumulative,
            compression: false,
            insecure: false,
            timeout: 10,
            headers: BTreeMap::new(),
        }
    }
}

impl MetricOtlpConfig {
    /// The transport settings, as `trace.otel` holds them.
    pub fn transport(&self) -> OtelConfig {
        OtelConfig {
            endpoint: self.endpoint.clone(),
            url_path: self.url_path.clone(),
            protocol: self.protocol,
            compression: self.compression,
            insecure: self.insecure,
            timeout: self.timeout,
            headers: self.headers.clone(),
        }
    }

    fn check(&self, p: &mut Problems<'_>) {
        if !cfg!(feature = "otlp") {
            p.push(
                "",
                "metric.otlp is set but towerscope was built without the `otlp` feature: enable it in Cargo.toml",
            );
        }
        self.transport().check(p);
        if self.interval_secs == 0 {
            p.push("interval_secs", "must be at least 1");
        }
    }
}

/// What the values of a push are: totals since the start, or changes since the last push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricTemporality {
    /// Totals since the start (the start time is when the registry began pushing).
    Cumulative,
    /// Changes since the previous push.
    Delta,
}

/// The methods counted under their own name by default.
pub const DEFAULT_METHODS: [Method; 9] = crate::labels::STANDARD_METHODS;

/// The default quantiles of the request-duration summary (Harbor's).
const DEFAULT_QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

impl Default for MetricConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 9090,
            path: "/metrics".to_owned(),
            namespace: None,
            subsystem: None,
            component: "core".to_owned(),
            quantiles: None,
            buckets: None,
            methods: DEFAULT_METHODS.to_vec(),
            max_operations: DEFAULT_MAX_OPERATIONS,
            bearer_token: None,
            upkeep_interval_secs: 5,
            family_buckets: BTreeMap::new(),
            exemplars: true,
            naming: MetricNaming::Harbor,
            body_sizes: false,
            time_to_first_byte: false,
            labels: Vec::new(),
            utf8_names: false,
            histogram: HistogramMode::Classic,
            native_histogram: NativeHistogramConfig::default(),
            otlp: None,
        }
    }
}

impl MetricConfig {
    /// The metric name prefix, `{namespace}_{subsystem}_`, each part optional.
    pub fn prefix(&self) -> String {
        let mut prefix = String::new();
        for part in [&self.namespace, &self.subsystem].into_iter().flatten() {
            prefix.push_str(part);
            prefix.push('_');
        }
        prefix
    }

    /// Whether the layers record: `enabled`, or an OTLP push configured (`enabled: false` with
    /// `otlp` set pushes without serving Prometheus).
    pub fn records(&self) -> bool {
        self.enabled || self.otlp.is_some()
    }

    /// The address of the standalone metrics server.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// The summary quantiles in force (the configured ones or the default).
    pub fn quantiles(&self) -> &[f64] {
        self.quantiles.as_deref().unwrap_or(&DEFAULT_QUANTILES)
    }

    /// Checks the block, field by field in the order the fields are documented.
    pub(super) fn check(&self, problems: &mut Vec<ConfigProblem>) {
        let mut p = Problems::new(problems, "metric");
        self.check_path(&mut p);
        self.check_prefix(&mut p);
        self.check_component(&mut p);
        self.check_durations(&mut p);
        self.check_methods(&mut p);
        if self.max_operations == 0 {
            p.push("max_operations", "must be at least 1");
        }
        self.check_bearer_token(&mut p);
        self.check_family_buckets(&mut p);
        if self.upkeep_interval_secs == 0 {
            p.push("upkeep_interval_secs", "must be at least 1");
        }
        if self.body_sizes && self.naming != MetricNaming::Otel {
            p.push(
                "body_sizes",
                "needs `naming: otel` (the body-size families are the OpenTelemetry conventions')",
            );
        }
        if self.utf8_names && self.naming != MetricNaming::Otel {
            p.push(
                "utf8_names",
                "needs `naming: otel` (only the OpenTelemetry conventions' families have UTF-8 names)",
            );
        }
        self.check_histogram(&mut p);
        super::metric_labels::check(&self.labels, &mut p);
        if let Some(otlp) = &self.otlp {
            otlp.check(&mut p.block("otlp"));
        }
    }

    /// `histogram` and `native_histogram`: native histograms are only seen in the protobuf
    /// format or an OTLP push, and make summaries (`quantiles`) moot.
    fn check_histogram(&self, p: &mut Problems<'_>) {
        if self.histogram == HistogramMode::Classic {
            return;
        }
        self.native_histogram
            .check(&mut p.block("native_histogram"));
        if !cfg!(feature = "protobuf") && self.otlp.is_none() {
            p.push(
                "histogram",
                "native histograms are served in the protobuf format: enable towerscope's \
                 `protobuf` feature (on by default), or push them with `otlp`",
            );
        }
        if self.quantiles.is_some() {
            p.push(
                "quantiles",
                "durations are native histograms, not summaries, with `histogram: native` or \
                 `both`: remove quantiles",
            );
        }
        if self.histogram == HistogramMode::Native
            && (self.buckets.is_some() || !self.family_buckets.is_empty())
        {
            p.push(
                "histogram",
                "`native` keeps no classic buckets: use `both` to keep `buckets` and \
                 `family_buckets` beside the native ones",
            );
        }
    }

    fn check_path(&self, p: &mut Problems<'_>) {
        if !self.path.starts_with('/') {
            p.push("path", format!("must start with '/' (got {:?})", self.path));
        } else if self
            .path
            .bytes()
            .any(|b| b == b'?' || b == b'#' || b.is_ascii_whitespace() || b.is_ascii_control())
        {
            p.push(
                "path",
                format!(
                    "must be a plain path without query, fragment or spaces (got {:?})",
                    self.path
                ),
            );
        }
    }

    /// `namespace` and `subsystem`: each becomes part of every metric name.
    fn check_prefix(&self, p: &mut Problems<'_>) {
        for (key, part) in [
            ("namespace", &self.namespace),
            ("subsystem", &self.subsystem),
        ] {
            if let Some(part) = part {
                if !is_metric_name_part(part) {
                    p.push(
                        key,
                        format!("must match [a-zA-Z_][a-zA-Z0-9_]* (got {part:?})"),
                    );
                }
            }
        }
    }

    fn check_component(&self, p: &mut Problems<'_>) {
        if self.component.is_empty()
            || !self
                .component
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            p.push(
                "component",
                format!(
                    "must be non-empty and match [a-zA-Z0-9_-]+ (got {:?})",
                    self.component
                ),
            );
        }
    }

    /// `quantiles` (a summary) or `buckets` (a histogram), not both.
    fn check_durations(&self, p: &mut Problems<'_>) {
        if self.quantiles.is_some() && self.buckets.is_some() {
            p.push(
                "buckets",
                "set either quantiles (a summary) or buckets (a histogram), not both",
            );
        }
        if let Some(quantiles) = &self.quantiles {
            if quantiles.is_empty() {
                p.push("quantiles", "must not be empty");
            }
            for (i, q) in quantiles.iter().enumerate() {
                if !(0.0..=1.0).contains(q) {
                    p.push(
                        &format!("quantiles[{i}]"),
                        format!("must be between 0 and 1 (got {q})"),
                    );
                }
            }
        }
        if let Some(buckets) = &self.buckets {
            check_buckets("buckets", buckets, p);
        }
    }

    fn check_methods(&self, p: &mut Problems<'_>) {
        for (i, m) in self.methods.iter().enumerate() {
            if self.methods[..i].contains(m) {
                p.push(&format!("methods[{i}]"), format!("{m} is listed twice"));
            }
        }
    }

    fn check_bearer_token(&self, p: &mut Problems<'_>) {
        if let Some(token) = &self.bearer_token {
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                p.push(
                    "bearer_token",
                    "must be non-empty printable ASCII without spaces",
                );
            }
        }
    }

    fn check_family_buckets(&self, p: &mut Problems<'_>) {
        for (family, buckets) in &self.family_buckets {
            let field = format!("family_buckets.{family}");
            if !is_metric_name_part(family) {
                p.push(
                    &field,
                    "must be a metric name matching [a-zA-Z_][a-zA-Z0-9_]*",
                );
            }
            check_buckets(&field, buckets, p);
        }
    }
}

/// Histogram buckets: non-empty, positive, finite, strictly increasing.
fn check_buckets(field: &str, buckets: &[f64], p: &mut Problems<'_>) {
    if buckets.is_empty() {
        p.push(field, "must not be empty");
    }
    for (i, b) in buckets.iter().enumerate() {
        if !b.is_finite() || *b <= 0.0 {
            p.push(
                &format!("{field}[{i}]"),
                format!("must be a positive number (got {b})"),
            );
        } else if i > 0 && buckets[i - 1] >= *b {
            p.push(
                &format!("{field}[{i}]"),
                format!("must be greater than the bucket before it (got {b})"),
            );
        }
    }
}

fn is_metric_name_part(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn de_methods<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Method>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    names
        .iter()
        .map(|s| {
            if s == OTHER_METHOD {
                return Err(de::Error::custom("_OTHER is the label of unlisted methods"));
            }
            Method::from_bytes(s.as_bytes())
                .map_err(|_| de::Error::custom(format!("{s:?} is not a valid HTTP method")))
        })
        .collect()
}
