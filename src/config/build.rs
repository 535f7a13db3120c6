//! Building the layers from their configuration blocks.
//!
//! These constructors live with the configuration, not with the layers, so that the layers
//! never depend on `config` (imports point from the configuration down to the domain types).

use crate::{
    config::MetricConfig,
    metrics::{MetricNames, MetricsLayer, MetricsRegistry},
};

impl MetricsLayer {
    /// A layer built from the `metric:` configuration: names from `namespace`/`subsystem`,
    /// `methods`, `max_operations`, served under `component`; disabled (a pass-through)
    /// when `enabled` is false.
    pub fn from_config(config: &MetricConfig, registry: &MetricsRegistry) -> Self {
        let layer = MetricsLayer::new_unserved(registry)
            .with_component(registry, &config.component)
            .with_names(MetricNames::with_prefix(&config.prefix()))
            .with_methods(config.methods.iter().cloned())
            .with_max_operations(config.max_operations);
        if config.enabled {
            layer
        } else {
            layer.disabled()
        }
    }
}
