//! Building the layers from their configuration blocks.
//!
//! These constructors live with the configuration, not with the layers, so that the layers
//! never depend on `config` (imports point from the configuration down to the domain types).

use std::{io, time::Duration};

use crate::{
    config::{MetricConfig, MetricLabelConfig, NativeHistogramConfig},
    metrics::{
        store::{native::NativeSettings, Settings},
        MetricNames, MetricsEndpoint, MetricsError, MetricsLayer, MetricsRegistry, MetricsServer,
        DURATION_SUFFIX,
    },
};

impl MetricsRegistry {
    /// Builds a registry from the `metric:` configuration: durations as a summary with
    /// `quantiles` (default 0.5, 0.9, 0.99 over a 40–60 s window), or as a histogram with `buckets`
    /// for every histogram family ending in `_seconds` (and `family_buckets` for single
    /// families); the summary windows checked every `upkeep_interval_secs`. Nothing global is
    /// installed.
    pub fn new(config: &MetricConfig) -> Result<Self, MetricsError> {
        let settings = Settings {
            quantiles: config.quantiles().to_vec(),
            suffix_buckets: config
                .buckets
                .clone()
                .map(|buckets| (DURATION_SUFFIX.to_owned(), buckets)),
            family_buckets: config.family_buckets.clone(),
            no_exemplars: !config.exemplars,
            histogram: config.histogram,
            native: native_settings(&config.native_histogram),
        };
        Self::from_settings(settings, Duration::from_secs(config.upkeep_interval_secs))
    }
}

/// The store's form of `metric.native_histogram`.
fn native_settings(config: &NativeHistogramConfig) -> NativeSettings {
    NativeSettings {
        zero_threshold: config.zero_threshold,
        max_buckets: config.max_buckets,
        min_reset: Duration::from_secs(config.min_reset_duration_secs),
        ..NativeSettings::new(config.bucket_factor)
    }
}

impl MetricsEndpoint {
    /// An endpoint with the `metric.bearer_token` and `metric.utf8_names` of `config`.
    pub fn from_config(config: &MetricConfig, registry: MetricsRegistry) -> Self {
        let endpoint = Self::new(registry).with_utf8_names(config.utf8_names);
        match &config.bearer_token {
            Some(token) => endpoint.with_bearer_token(token),
            None => endpoint,
        }
    }
}

impl MetricsServer {
    /// Binds `metric.host:port` and serves `metric.path` (with `metric.bearer_token`) on the
    /// current tokio runtime.
    pub async fn bind(config: &MetricConfig, registry: MetricsRegistry) -> io::Result<Self> {
        Self::bind_endpoint(
            config.socket_addr(),
            &config.path,
            MetricsEndpoint::from_config(config, registry),
        )
        .await
    }
}

impl MetricsLayer {
    /// A layer built from the `metric:` configuration: the families of `naming` (and
    /// `body_sizes`), names from `namespace`/`subsystem`, `methods`, `max_operations`, served
    /// under `component`; disabled (a pass-through) when `enabled` is false and no `otlp`
    /// push is set.
    pub fn from_config(config: &MetricConfig, registry: &MetricsRegistry) -> Self {
        let layer = MetricsLayer::new_unserved(registry)
            .with_component(registry, &config.component)
            .with_names(MetricNames::with_prefix(&config.prefix()))
            .with_naming(config.naming)
            .with_body_sizes(config.body_sizes)
            .with_time_to_first_byte(config.time_to_first_byte)
            .with_methods(config.methods.iter().cloned())
            .with_max_operations(config.max_operations);
        let layer = config
            .labels
            .iter()
            .filter_map(MetricLabelConfig::label)
            .fold(layer, MetricsLayer::with_label);
        if config.records() {
            layer
        } else {
            layer.disabled()
        }
    }
}

#[cfg(feature = "otlp")]
impl crate::metrics::otlp::OtlpMetricsPush {
    /// Starts the push of `metric.otlp` (which must be valid) for `registry`, with the
    /// resource of `trace:` (`service.name` and the rest, also when tracing is off); `None`
    /// when `metric.otlp` is not set.
    pub fn from_config(
        config: &crate::Config,
        registry: &MetricsRegistry,
    ) -> Result<Option<Self>, crate::metrics::otlp::OtlpPushError> {
        use crate::{
            config::MetricTemporality,
            metrics::otlp::{OtlpPushOptions, Temporality, TransportOptions},
        };
        let Some(otlp) = &config.metric.otlp else {
            return Ok(None);
        };
        let transport = otlp.transport();
        let options = OtlpPushOptions {
            transport: TransportOptions {
                url: transport.url(),
                grpc: transport.protocol == crate::config::OtlpProtocol::Grpc,
                timeout: Duration::from_secs(otlp.timeout.max(1)),
                headers: otlp.headers.clone(),
                gzip: otlp.compression,
            },
            interval: Duration::from_secs(otlp.interval_secs.max(1)),
            temporality: match otlp.temporality {
                MetricTemporality::Cumulative => Temporality::Cumulative,
                MetricTemporality::Delta => Temporality::Delta,
            },
            resource: config
                .trace
                .resource()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            prefix: config.metric.prefix(),
            naming: config.metric.naming,
        };
        Self::start(registry.clone(), options).map(Some)
    }
}
