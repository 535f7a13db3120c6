//! [`Telemetry`]: everything a service needs, started from one [`Config`].

use std::io;

use crate::{
    config::{Config, ConfigError},
    layer::ObservabilityLayer,
    metrics::{MetricsEndpoint, MetricsError, MetricsRegistry, MetricsServer},
};

/// Errors of [`Telemetry::init`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The configuration is invalid; the message lists every problem with its field.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Metrics could not be set up.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// The running telemetry of a service: its metrics registry and the layer built from the
/// configuration.
///
/// ```
/// use towerscope::{Config, Telemetry};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut config = Config::default();
/// config.metric.port = 0; // any free port
/// let telemetry = Telemetry::init_local(&config).unwrap();
/// let server = telemetry.serve_metrics().await.unwrap().expect("metrics are enabled");
/// println!("metrics on http://{}/metrics", server.local_addr());
/// let _layer = telemetry.layer(); // add to the router: .layer(telemetry.layer())
/// server.shutdown().await;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Telemetry {
    config: Config,
    registry: MetricsRegistry,
}

impl Telemetry {
    /// Validates `config`, builds the metrics registry and installs it as the global `metrics`
    /// recorder (so `counter!` anywhere in the service lands on the same `/metrics`).
    ///
    /// Fails if the configuration is invalid or a global recorder is already installed.
    pub fn init(config: &Config) -> Result<Self, TelemetryError> {
        let telemetry = Self::init_local(config)?;
        telemetry.registry.install_global()?;
        Ok(telemetry)
    }

    /// Like [`init`](Self::init) but installs nothing global: for tests, and for several
    /// services in one process.
    pub fn init_local(config: &Config) -> Result<Self, TelemetryError> {
        config.validate()?;
        let registry = MetricsRegistry::new(&config.metric)?;
        Ok(Self {
            config: config.clone(),
            registry,
        })
    }

    /// The configuration this telemetry was started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The metrics registry.
    pub fn registry(&self) -> &MetricsRegistry {
        &self.registry
    }

    /// The [`ObservabilityLayer`] for the service, built from the configuration.
    pub fn layer(&self) -> ObservabilityLayer {
        ObservabilityLayer::from_config(&self.config, &self.registry)
    }

    /// The metrics endpoint, to mount on the service's own router.
    pub fn metrics_endpoint(&self) -> MetricsEndpoint {
        MetricsEndpoint::from_config(&self.config.metric, self.registry.clone())
    }

    /// Starts the standalone metrics server on `metric.host:metric.port`; `None` when
    /// `metric.enabled` is false.
    pub async fn serve_metrics(&self) -> io::Result<Option<MetricsServer>> {
        if !self.config.metric.enabled {
            return Ok(None);
        }
        MetricsServer::bind(&self.config.metric, self.registry.clone())
            .await
            .map(Some)
    }
}
