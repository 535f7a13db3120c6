//! Configuration: Harbor's `metric:` block plus towerscope's own keys, with validation.
//!
//! [`Config`] deserializes the `metric:` block of a `harbor.yml` (`enabled`, `port`, `path`)
//! and what towerscope adds. Unknown keys are errors: a typo must not silently change what is
//! measured. [`Config::validate`] collects every problem and names the field of each.
//!
//! # Example
//!
//! ```
//! use towerscope::Config;
//!
//! let config = Config::from_yaml_str(r#"
//! metric:
//!   enabled: true
//!   port: 9090
//!   path: /metrics
//!   namespace: harbor
//!   subsystem: core
//! "#).unwrap();
//! assert_eq!(config.metric.prefix(), "harbor_core_");
//!
//! let err = Config::from_yaml_str("metric: { path: metrics, quantiles: [1.5] }").unwrap_err();
//! assert_eq!(err.to_string(), "invalid configuration:\n  \
//!     metric.path: must start with '/' (got \"metrics\")\n  \
//!     metric.quantiles[0]: must be between 0 and 1 (got 1.5)");
//! ```
//!
//! The keys and their defaults:
//!
//! ```yaml
//! metric:
//!   enabled: true          # Harbor's key; false turns the metrics layer into a pass-through
//!   host: 127.0.0.1        # where the standalone metrics server binds
//!   port: 9090             # Harbor's key
//!   path: /metrics         # Harbor's key
//!   namespace: ~           # e.g. harbor  -> harbor_core_http_request_total
//!   subsystem: ~           # e.g. core
//!   component: core        # the ?comp= name the HTTP families are served under
//!   quantiles: [0.5, 0.9, 0.99]   # request duration as a summary (the default) ...
//!   # buckets: [0.005, 0.01, ...] # ... or as a histogram with these buckets (not both)
//!   methods: [GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH]  # others: _OTHER
//!   max_operations: 1000   # distinct operation label values per family; the rest: _overflow
//!   bearer_token: ~        # when set, /metrics requires "Authorization: Bearer <token>"
//!   upkeep_interval_secs: 5
//! request_id:
//!   header: X-Request-ID
//!   trust_incoming: true   # keep valid incoming ids; false: always make a new one
//! ```

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
};

use http::{HeaderName, Method};
use serde::{de, Deserialize, Deserializer};

mod build;
mod trace;

pub use trace::{
    JaegerConfig, OtelConfig, OtlpProtocol, Propagator, TraceConfig, DEFAULT_JAEGER_AGENT_PORT,
};

/// The whole towerscope configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The `metric:` block.
    pub metric: MetricConfig,
    /// The `request_id:` block.
    pub request_id: RequestIdConfig,
    /// The `trace:` block.
    pub trace: TraceConfig,
}

/// The `metric:` block: Harbor's `enabled`, `port` and `path`, plus towerscope's keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricConfig {
    /// Whether requests are measured and the metrics server runs. Defaults to `true`.
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
    pub family_buckets: std::collections::BTreeMap<String, Vec<f64>>,
}

/// The methods counted under their own name by default.
pub const DEFAULT_METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];

/// The default quantiles of the request-duration summary (Harbor's).
pub const DEFAULT_QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

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
            max_operations: 1000,
            bearer_token: None,
            upkeep_interval_secs: 5,
            family_buckets: std::collections::BTreeMap::new(),
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

    /// The address of the standalone metrics server.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// The summary quantiles in force (the configured ones or the default).
    pub fn quantiles(&self) -> &[f64] {
        self.quantiles.as_deref().unwrap_or(&DEFAULT_QUANTILES)
    }

    fn check(&self, problems: &mut Vec<ConfigProblem>) {
        let mut problem = |field: String, message: String| {
            problems.push(ConfigProblem {
                field: format!("metric.{field}"),
                message,
            })
        };
        if !self.path.starts_with('/') {
            problem(
                "path".into(),
                format!("must start with '/' (got {:?})", self.path),
            );
        } else if self
            .path
            .bytes()
            .any(|b| b == b'?' || b == b'#' || b.is_ascii_whitespace() || b.is_ascii_control())
        {
            problem(
                "path".into(),
                format!(
                    "must be a plain path without query, fragment or spaces (got {:?})",
                    self.path
                ),
            );
        }
        for (key, part) in [
            ("namespace", &self.namespace),
            ("subsystem", &self.subsystem),
        ] {
            if let Some(part) = part {
                if !is_metric_name_part(part) {
                    problem(
                        key.into(),
                        format!("must match [a-zA-Z_][a-zA-Z0-9_]* (got {part:?})"),
                    );
                }
            }
        }
        if self.component.is_empty()
            || !self
                .component
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            problem(
                "component".into(),
                format!(
                    "must be non-empty and match [a-zA-Z0-9_-]+ (got {:?})",
                    self.component
                ),
            );
        }
        if self.quantiles.is_some() && self.buckets.is_some() {
            problem(
                "buckets".into(),
                "set either quantiles (a summary) or buckets (a histogram), not both".into(),
            );
        }
        if let Some(quantiles) = &self.quantiles {
            if quantiles.is_empty() {
                problem("quantiles".into(), "must not be empty".into());
            }
            for (i, q) in quantiles.iter().enumerate() {
                if !(0.0..=1.0).contains(q) {
                    problem(
                        format!("quantiles[{i}]"),
                        format!("must be between 0 and 1 (got {q})"),
                    );
                }
            }
        }
        if let Some(buckets) = &self.buckets {
            check_buckets("buckets", buckets, &mut problem);
        }
        for (i, m) in self.methods.iter().enumerate() {
            if self.methods[..i].contains(m) {
                problem(format!("methods[{i}]"), format!("{m} is listed twice"));
            }
        }
        if self.max_operations == 0 {
            problem("max_operations".into(), "must be at least 1".into());
        }
        if let Some(token) = &self.bearer_token {
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                problem(
                    "bearer_token".into(),
                    "must be non-empty printable ASCII without spaces".into(),
                );
            }
        }
        for (family, buckets) in &self.family_buckets {
            let field = format!("family_buckets.{family}");
            if !is_metric_name_part(family) {
                problem(
                    field.clone(),
                    "must be a metric name matching [a-zA-Z_][a-zA-Z0-9_]*".into(),
                );
            }
            check_buckets(&field, buckets, &mut problem);
        }
        if self.upkeep_interval_secs == 0 {
            problem("upkeep_interval_secs".into(), "must be at least 1".into());
        }
    }
}

/// Histogram buckets: non-empty, positive, finite, strictly increasing.
fn check_buckets(field: &str, buckets: &[f64], problem: &mut impl FnMut(String, String)) {
    if buckets.is_empty() {
        problem(field.to_owned(), "must not be empty".into());
    }
    for (i, b) in buckets.iter().enumerate() {
        if !b.is_finite() || *b <= 0.0 {
            problem(
                format!("{field}[{i}]"),
                format!("must be a positive number (got {b})"),
            );
        } else if i > 0 && buckets[i - 1] >= *b {
            problem(
                format!("{field}[{i}]"),
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

/// The `request_id:` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestIdConfig {
    /// The request id header. Defaults to `X-Request-ID`.
    #[serde(deserialize_with = "de_header_name")]
    pub header: HeaderName,
    /// Keep valid incoming ids; when `false` every request gets a new id. Defaults to `true`.
    pub trust_incoming: bool,
}

impl Default for RequestIdConfig {
    fn default() -> Self {
        Self {
            header: crate::request_id::X_REQUEST_ID,
            trust_incoming: true,
        }
    }
}

fn de_header_name<'de, D: Deserializer<'de>>(d: D) -> Result<HeaderName, D::Error> {
    let s = String::deserialize(d)?;
    HeaderName::try_from(s.as_str())
        .map_err(|_| de::Error::custom(format!("{s:?} is not a valid header name")))
}

fn de_methods<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Method>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    names
        .iter()
        .map(|s| {
            if s == crate::metrics::OTHER_METHOD {
                return Err(de::Error::custom("_OTHER is the label of unlisted methods"));
            }
            Method::from_bytes(s.as_bytes())
                .map_err(|_| de::Error::custom(format!("{s:?} is not a valid HTTP method")))
        })
        .collect()
}

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The field path, e.g. `metric.quantiles[0]`.
    pub field: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// An invalid configuration: every problem found, each with its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in the order the fields appear.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration:")?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    fn one(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            problems: vec![ConfigProblem {
                field: field.into(),
                message: message.into(),
            }],
        }
    }

    fn from_path_error<E: fmt::Display>(err: serde_path_to_error::Error<E>) -> Self {
        let path = err.path().to_string();
        let field = if path == "." {
            "(root)".to_owned()
        } else {
            path
        };
        let message = err.into_inner().to_string();
        // serde_norway prefixes some messages with (part of) the path already.
        let message = match message.split_once(": ") {
            Some((prefix, rest)) if !prefix.contains(' ') && field.starts_with(prefix) => {
                rest.to_owned()
            }
            _ => message,
        };
        Self::one(field, message)
    }
}

impl Config {
    /// Parses and validates a YAML document.
    pub fn from_yaml_str(yaml: &str) -> Result<Self, ConfigError> {
        let de = serde_norway::Deserializer::from_str(yaml);
        let config: Config =
            serde_path_to_error::deserialize(de).map_err(ConfigError::from_path_error)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates a TOML document.
    pub fn from_toml_str(toml: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(toml)
            .map_err(|e| ConfigError::one("(root)", e.to_string().trim_end().to_owned()))?;
        let config: Config =
            serde_path_to_error::deserialize(de).map_err(ConfigError::from_path_error)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a file: TOML for `.toml`, YAML otherwise (JSON is YAML).
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::one("(file)", format!("cannot read {}: {e}", path.display()))
        })?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Self::from_toml_str(&text),
            _ => Self::from_yaml_str(&text),
        }
    }

    /// Applies the standard `OTEL_*` environment variables of this process over the file's
    /// values (see [`apply_env_overrides`](Self::apply_env_overrides)).
    /// [`Telemetry::init`](crate::Telemetry::init) calls it.
    pub fn apply_process_env(&mut self) -> Result<(), ConfigError> {
        self.apply_env_overrides(|name| std::env::var(name).ok())
    }

    /// Applies `OTEL_SDK_DISABLED`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
    /// `OTEL_TRACES_SAMPLER_ARG` and `OTEL_EXPORTER_OTLP[_TRACES]_{ENDPOINT,PROTOCOL,HEADERS,TIMEOUT}`
    /// read through `lookup`. A value that does not parse is a problem named `$VARIABLE`.
    pub fn apply_env_overrides(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.trace.apply_env(&lookup, &mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Checks every field; returns all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.metric.check(&mut problems);
        self.trace.check(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        Config::from_yaml_str(yaml).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_valid_and_harbor_like() {
        let c = Config::from_yaml_str("{}").unwrap();
        assert!(c.metric.enabled);
        assert_eq!(c.metric.socket_addr(), "127.0.0.1:9090".parse().unwrap());
        assert_eq!(c.metric.path, "/metrics");
        assert_eq!(c.metric.prefix(), "");
        assert_eq!(c.metric.quantiles(), &[0.5, 0.9, 0.99]);
        assert_eq!(c.metric.methods.len(), 9);
        assert_eq!(c.request_id.header, "x-request-id");
    }

    #[test]
    fn harbor_metric_block_parses() {
        let c =
            Config::from_yaml_str("metric:\n  enabled: false\n  port: 9091\n  path: /metrics\n")
                .unwrap();
        assert!(!c.metric.enabled);
        assert_eq!(c.metric.port, 9091);
    }

    #[test]
    fn invalid_configurations_name_their_fields() {
        let table: &[(&str, &str)] = &[
            ("metric: { path: metrics }", "metric.path: must start with '/' (got \"metrics\")"),
            ("metric: { path: '/m?x' }", "metric.path: must be a plain path"),
            ("metric: { namespace: 'har-bor' }", "metric.namespace: must match [a-zA-Z_][a-zA-Z0-9_]* (got \"har-bor\")"),
            ("metric: { subsystem: '9core' }", "metric.subsystem: must match"),
            ("metric: { component: '' }", "metric.component: must be non-empty"),
            ("metric: { quantiles: [0.5], buckets: [1] }", "metric.buckets: set either quantiles (a summary) or buckets (a histogram), not both"),
            ("metric: { quantiles: [] }", "metric.quantiles: must not be empty"),
            ("metric: { quantiles: [0.5, -1] }", "metric.quantiles[1]: must be between 0 and 1 (got -1)"),
            ("metric: { buckets: [0.1, 0.1] }", "metric.buckets[1]: must be greater than the bucket before it (got 0.1)"),
            ("metric: { buckets: [0] }", "metric.buckets[0]: must be a positive number (got 0)"),
            ("metric: { buckets: [] }", "metric.buckets: must not be empty"),
            ("metric: { methods: [GET, GET] }", "metric.methods[1]: GET is listed twice"),
            ("metric: { methods: ['G T'] }", "metric.methods: \"G T\" is not a valid HTTP method"),
            ("metric: { methods: [_OTHER] }", "metric.methods: _OTHER is the label of unlisted methods"),
            ("metric: { max_operations: 0 }", "metric.max_operations: must be at least 1"),
            ("metric: { bearer_token: 'a b' }", "metric.bearer_token: must be non-empty printable ASCII"),
            ("metric: { upkeep_interval_secs: 0 }", "metric.upkeep_interval_secs: must be at least 1"),
            ("metric: { family_buckets: { 'a-b': [1] } }", "metric.family_buckets.a-b: must be a metric name"),
            ("metric: { family_buckets: { x_seconds: [2, 1] } }", "metric.family_buckets.x_seconds[1]: must be greater than the bucket before it (got 1)"),
            ("metric: { port: 70000 }", "metric.port: invalid value: integer `70000`"),
            ("metric: { host: 'not-an-ip' }", "metric.host: invalid IP address syntax"),
            ("metric: { enabeld: true }", "metric.enabeld: unknown field `enabeld`, expected one of `enabled`"),
            ("metrics: {}", "metrics: unknown field `metrics`, expected one of `metric`, `request_id`, `trace`"),
            ("request_id: { header: 'a b' }", "request_id.header: \"a b\" is not a valid header name"),
            ("request_id: { trust: false }", "request_id.trust: unknown field `trust`"),
        ];
        for (yaml, expected) in table {
            let got = err(yaml);
            assert!(
                got.contains(expected),
                "{yaml}\n  expected: {expected}\n  got: {got}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = Config::from_yaml_str("metric: { path: x, namespace: '-', max_operations: 0 }")
            .unwrap_err();
        let fields: Vec<_> = e.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["metric.path", "metric.namespace", "metric.max_operations"]
        );
    }

    #[test]
    fn toml_loads_the_same() {
        let c = Config::from_toml_str(
            "[metric]\nnamespace = \"harbor\"\nsubsystem = \"core\"\nbuckets = [0.1, 1.0]\n",
        )
        .unwrap();
        assert_eq!(c.metric.prefix(), "harbor_core_");
        assert_eq!(c.metric.buckets.as_deref(), Some(&[0.1, 1.0][..]));
        let e = Config::from_toml_str("[metric]\nport = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("metric.port"), "{e}");
    }

    #[test]
    fn from_path_reads_yaml_and_toml() {
        let dir = std::env::temp_dir().join(format!("towerscope-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let yaml = dir.join("c.yml");
        std::fs::write(&yaml, "metric: { port: 9100 }\n").unwrap();
        assert_eq!(Config::from_path(&yaml).unwrap().metric.port, 9100);
        let toml = dir.join("c.toml");
        std::fs::write(&toml, "[metric]\nport = 9101\n").unwrap();
        assert_eq!(Config::from_path(&toml).unwrap().metric.port, 9101);
        let missing = Config::from_path(dir.join("missing.yml"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("cannot read"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
