//! [`ObservabilityLayer`]: the one layer a service adds.
//!
//! It composes, outermost first, [`RequestIdLayer`] → (the trace layer, once tracing lands) →
//! [`MetricsLayer`], as one tower layer: one `Router::layer` call in axum instead of several.

use std::fmt;

use tower_layer::Layer;

use crate::{
    config::Config,
    metrics::{MetricsLayer, MetricsRegistry, MetricsService},
    operation::OperationResolver,
    request_id::{RequestIdLayer, SetRequestId},
};

/// The service [`ObservabilityLayer`] wraps around `S`.
pub type Observability<S> = SetRequestId<MetricsService<S>>;

/// Request id and request metrics in one layer.
///
/// ```
/// use http::{Request, Response};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use towerscope::{Config, ObservabilityLayer, metrics::MetricsRegistry};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let config = Config::from_yaml_str("metric: { namespace: harbor, subsystem: core }").unwrap();
/// let registry = MetricsRegistry::new(&config.metric).unwrap();
/// let svc = ServiceBuilder::new()
///     .layer(ObservabilityLayer::from_config(&config, &registry))
///     .service(service_fn(|_req: Request<()>| async {
///         Ok::<_, std::convert::Infallible>(Response::new(String::new()))
///     }));
/// let res = svc.oneshot(Request::get("/").body(()).unwrap()).await.unwrap();
/// assert!(res.headers().contains_key("x-request-id"));
/// drop(res);
/// assert!(registry.render().contains(r#"harbor_core_http_request_total{method="GET",code="200",operation="unknown"} 1"#));
/// # }
/// ```
#[derive(Clone)]
pub struct ObservabilityLayer {
    request_id: RequestIdLayer,
    metrics: MetricsLayer,
}

impl fmt::Debug for ObservabilityLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObservabilityLayer")
            .field("request_id", &self.request_id)
            .field("metrics", &self.metrics)
            .finish()
    }
}

impl ObservabilityLayer {
    /// Composes the given layers.
    pub fn new(request_id: RequestIdLayer, metrics: MetricsLayer) -> Self {
        Self {
            request_id,
            metrics,
        }
    }

    /// Builds both layers from `config`, recording into `registry`.
    pub fn from_config(config: &Config, registry: &MetricsRegistry) -> Self {
        Self::new(
            RequestIdLayer::from_config(&config.request_id),
            MetricsLayer::from_config(&config.metric, registry),
        )
    }

    /// Resolves operations with `resolver` (see [`MetricsLayer::with_resolver`]).
    pub fn with_resolver(mut self, resolver: impl OperationResolver) -> Self {
        self.metrics = self.metrics.with_resolver(resolver);
        self
    }

    /// Replaces the request id layer.
    pub fn with_request_id(mut self, request_id: RequestIdLayer) -> Self {
        self.request_id = request_id;
        self
    }

    /// Replaces the metrics layer.
    pub fn with_metrics(mut self, metrics: MetricsLayer) -> Self {
        self.metrics = metrics;
        self
    }
}

impl<S> Layer<S> for ObservabilityLayer {
    type Service = Observability<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.request_id.layer(self.metrics.layer(inner))
    }
}
