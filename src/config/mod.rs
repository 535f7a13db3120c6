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
//! Inside an application's own configuration file, beside its keys (as harbor.yml holds
//! Harbor's): [`WithTelemetry`], with the same checks and field paths, and a misspelt block
//! refused rather than ignored.
#![doc = include_str!("../docs/config.md")]

use std::path::Path;

use serde::Deserialize;

mod batch;
mod build;
mod document;
mod env;
mod error;
mod filter;
mod histogram;
mod metric;
mod metric_labels;
mod pipeline;
mod request_id;
mod trace;

pub use batch::TraceBatchConfig;
pub use document::WithTelemetry;
pub use error::{ConfigError, ConfigProblem};
pub use filter::{FilterAction, FilterConfig};
pub use histogram::{NativeHistogramConfig, DEFAULT_ZERO_THRESHOLD};
pub use metric::{MetricConfig, MetricOtlpConfig, MetricTemporality, DEFAULT_METHODS};
pub use metric_labels::MetricLabelConfig;
pub use request_id::RequestIdConfig;
pub use trace::{JaegerConfig, OtelConfig, OtlpProtocol, Propagator, TraceConfig};

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
    /// The `filters:` list: requests the server layers (HTTP, and gRPC through
    /// `GrpcLayer::from_telemetry`) skip, measure without a span, or sample at a rate of their
    /// own (see [`crate::filter`]). Empty by default.
    pub filters: Vec<FilterConfig>,
}

impl Config {
    /// Parses and validates a YAML document (feature `yaml`, on by default).
    #[cfg(feature = "yaml")]
    pub fn from_yaml_str(yaml: &str) -> Result<Self, ConfigError> {
        let de = serde_norway::Deserializer::from_str(yaml);
        let config: Config =
            serde_path_to_error::deserialize(de).map_err(ConfigError::from_path_error)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates a JSON document (no feature needed).
    pub fn from_json_str(json: &str) -> Result<Self, ConfigError> {
        let mut de = serde_json::Deserializer::from_str(json);
        let config: Config =
            serde_path_to_error::deserialize(&mut de).map_err(ConfigError::from_path_error)?;
        de.end()
            .map_err(|e| ConfigError::one("(root)", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates a TOML document (feature `toml`).
    #[cfg(feature = "toml")]
    pub fn from_toml_str(toml: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(toml)
            .map_err(|e| ConfigError::one("(root)", e.to_string().trim_end().to_owned()))?;
        let config: Config =
            serde_path_to_error::deserialize(de).map_err(ConfigError::from_path_error)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a file: JSON for `.json`, TOML for `.toml` (feature
    /// `toml`), YAML otherwise (feature `yaml`); a format whose feature is off is an error
    /// naming the feature.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let (format, text) = document::read(path.as_ref())?;
        match format {
            document::Format::Json => Self::from_json_str(&text),
            #[cfg(feature = "toml")]
            document::Format::Toml => Self::from_toml_str(&text),
            #[cfg(feature = "yaml")]
            document::Format::Yaml => Self::from_yaml_str(&text),
        }
    }

    /// Checks every field; returns all problems at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.metric.check(&mut problems);
        self.trace.check(&mut problems);
        filter::check(&self.filters, &mut problems);
        ConfigError::check(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        Config::from_yaml_str(yaml).unwrap_err().to_string()
    }

    #[test]
    fn an_error_returned_from_main_reads_as_sentences() {
        // `fn main() -> Result<(), Box<dyn Error>>` prints the error with `{:?}`.
        let yaml = "metric: { path: metrics, quantiles: [2] }";
        let error = Config::from_yaml_str(yaml).unwrap_err();
        let expected =
            "invalid configuration:\n  metric.path: must start with '/' (got \"metrics\")\n  \
                        metric.quantiles[0]: must be between 0 and 1 (got 2)";
        let boxed: Box<dyn std::error::Error> = Box::new(error.clone());
        assert_eq!(format!("{boxed:?}"), expected);
        // The structure stays one `#` away.
        assert!(format!("{error:#?}").starts_with("ConfigError {\n    problems: ["));
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
            ("metric: { utf8_names: true }", "metric.utf8_names: needs `naming: otel`"),
            ("metric: { histogram: exponential }", "metric.histogram: unknown variant `exponential`, expected one of `classic`, `native`, `both`"),
            ("metric: { histogram: native, quantiles: [0.5] }", "metric.quantiles: durations are native histograms, not summaries"),
            ("metric: { histogram: native, buckets: [1] }", "metric.histogram: `native` keeps no classic buckets: use `both`"),
            ("metric: { histogram: both, native_histogram: { bucket_factor: 1 } }", "metric.native_histogram.bucket_factor: must be a number above 1 (got 1)"),
            ("metric: { histogram: native, native_histogram: { zero_threshold: -1 } }", "metric.native_histogram.zero_threshold: must be a finite number, 0 or more (got -1)"),
            ("metric: { histogram: native, native_histogram: { max_buckets: 0, min_reset_duration_secs: 60 } }", "metric.native_histogram.min_reset_duration_secs: resets a series over max_buckets"),
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
    fn native_histogram_keys_parse_with_client_golang_s_defaults() {
        let c = Config::from_yaml_str(
            "metric: { histogram: both, buckets: [0.1, 1], native_histogram: { bucket_factor: 1.01, max_buckets: 100 } }",
        )
        .unwrap();
        assert_eq!(c.metric.histogram, crate::metrics::HistogramMode::Both);
        assert_eq!(c.metric.native_histogram.max_buckets, 100);
        assert_eq!(
            c.metric.native_histogram.zero_threshold,
            DEFAULT_ZERO_THRESHOLD
        );
        let d = Config::from_yaml_str("{}").unwrap().metric;
        assert_eq!(d.histogram, crate::metrics::HistogramMode::Classic);
        assert_eq!(d.native_histogram, NativeHistogramConfig::default());
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
