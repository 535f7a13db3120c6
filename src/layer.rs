//! [`ObservabilityLayer`]: the one layer a service adds.
//!
//! It composes, outermost first, [`RequestIdLayer`] → [`ResolveOperationLayer`] →
//! [`TraceLayer`] → [`MetricsLayer`] as one tower layer: one `Router::layer` call in axum
//! instead of four. The request id is set before the span opens (so the span carries it), and
//! the operation is resolved exactly once, by the operation stage, whatever the subscriber or
//! log level; the span, the metrics and the handler read that one [`OperationId`] from the
//! request extensions.
//!
//! [`OperationId`]: crate::operation::OperationId

use std::{fmt, sync::Arc};

use tower_layer::Layer;

use crate::{
    config::Config,
    metrics::{MetricsLayer, MetricsRegistry, MetricsService},
    operation::{OperationResolver, ResolveOperation, ResolveOperationLayer},
    request_id::{RequestIdLayer, SetRequestId},
    trace::{TraceLayer, TraceService},
};

/// The service [`ObservabilityLayer`] wraps around `S`.
pub type Observability<S> = SetRequestId<ResolveOperation<TraceService<MetricsService<S>>>>;

/// Request id, server span and request metrics in one layer.
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
    operation: ResolveOperationLayer,
    trace: TraceLayer,
    metrics: MetricsLayer,
}

impl fmt::Debug for ObservabilityLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObservabilityLayer")
            .field("request_id", &self.request_id)
            .field("operation", &self.operation)
            .field("trace", &self.trace)
            .field("metrics", &self.metrics)
            .finish()
    }
}

impl ObservabilityLayer {
    /// Composes the given layers, with a [`TraceLayer`] that reads no parent context (use
    /// [`with_trace`](Self::with_trace) or [`Telemetry::layer`](crate::Telemetry::layer) for one
    /// that does).
    pub fn new(request_id: RequestIdLayer, metrics: MetricsLayer) -> Self {
        Self {
            request_id,
            operation: ResolveOperationLayer::default(),
            trace: TraceLayer::new(),
            metrics,
        }
    }

    /// Builds the layers from `config`, recording into `registry`. The trace layer reads no
    /// parent context; [`Telemetry::layer`](crate::Telemetry::layer) adds the configured
    /// propagators.
    pub fn from_config(config: &Config, registry: &MetricsRegistry) -> Self {
        Self {
            request_id: RequestIdLayer::from_config(&config.request_id),
            operation: ResolveOperationLayer::default(),
            trace: TraceLayer::new()
                .echo_traceparent(config.trace.echo_traceparent)
                .with_exemplar_ids(config.metric.records() && config.metric.exemplars),
            metrics: MetricsLayer::from_config(&config.metric, registry),
        }
    }

    /// Resolves operations with `resolver`, once per request, for the span, the metrics and
    /// the handler. Defaults to axum's `MatchedPath` (feature `axum`), or to nothing
    /// (`unknown`) without it.
    pub fn with_resolver(mut self, resolver: impl OperationResolver) -> Self {
        let resolver: Arc<dyn OperationResolver> = Arc::new(resolver);
        self.operation = ResolveOperationLayer::shared(resolver.clone());
        // Layers replaced later keep resolving the same way when used on their own.
        self.trace = self.trace.with_shared_resolver(resolver.clone());
        self.metrics = self.metrics.with_shared_resolver(resolver);
        self
    }

    /// Replaces the request id layer.
    pub fn with_request_id(mut self, request_id: RequestIdLayer) -> Self {
        self.request_id = request_id;
        self
    }

    /// Replaces the trace layer.
    pub fn with_trace(mut self, trace: TraceLayer) -> Self {
        self.trace = trace;
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
        let inner = self.trace.layer(self.metrics.layer(inner));
        self.request_id.layer(self.operation.layer(inner))
    }
}
