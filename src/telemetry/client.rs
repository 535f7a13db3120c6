//! [`ClientMiddleware`] from a [`Telemetry`]: the integration itself does not know the facade.

use crate::{client::ClientMiddleware, Telemetry};

impl ClientMiddleware {
    /// A middleware configured from `telemetry`: its registry, `metric` prefix and naming
    /// (recording nothing when `metric.enabled` is false and no `metric.otlp` push is set),
    /// `trace.propagators` and `request_id.header`.
    pub fn from_telemetry(telemetry: &Telemetry) -> Self {
        let config = telemetry.config();
        let middleware = Self::new(telemetry.registry())
            .with_prefix(&config.metric.prefix())
            .with_naming(config.metric.naming)
            .with_propagators(&config.trace.propagators)
            .with_request_id_header(config.request_id.header.clone());
        if config.metric.records() {
            middleware
        } else {
            middleware.without_metrics()
        }
    }
}

/// [`ClientMiddleware::from_telemetry`], so that
/// [`instrumented_client(&telemetry)`](crate::client::instrumented_client) works.
impl From<&Telemetry> for ClientMiddleware {
    fn from(telemetry: &Telemetry) -> Self {
        Self::from_telemetry(telemetry)
    }
}
