//! [`GrpcClientLayer`]: trace context and request id on the calls of a tonic channel.

use crate::trace::propagation::{composite, Propagator};
use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderName, Request};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    request_id::{self, X_REQUEST_ID},
    trace::propagation,
};

/// Layer for a tonic `Channel` (any `Service<http::Request<B>>`) that writes the current trace
/// context (`traceparent`, ...) and the current request's id onto every outgoing call.
///
/// The context is the current `tracing` span's OpenTelemetry context, or the current
/// OpenTelemetry context when the span has none. The request id is
/// [`request_id::current`]: the id of the request whose handler is running on this task,
/// behind a [`RequestIdLayer`](crate::RequestIdLayer). A request that already carries the
/// request id header keeps its own.
///
/// ```
/// use tonic::transport::Endpoint;
/// use tonic_health::pb::health_client::HealthClient;
/// use tower::ServiceBuilder;
/// use towerscope::grpc::GrpcClientLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let channel = Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
/// let channel = ServiceBuilder::new()
///     .layer(GrpcClientLayer::new())
///     .service(channel);
/// let _client = HealthClient::new(channel);
/// # }
/// ```
#[derive(Clone)]
pub struct GrpcClientLayer {
    propagator: Arc<dyn TextMapPropagator + Send + Sync>,
    request_id_header: HeaderName,
}

impl fmt::Debug for GrpcClientLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcClientLayer")
            .field("request_id_header", &self.request_id_header)
            .finish_non_exhaustive()
    }
}

impl Default for GrpcClientLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcClientLayer {
    /// A layer writing W3C `traceparent`/`tracestate` and `x-request-id`.
    pub fn new() -> Self {
        Self {
            propagator: Arc::new(TraceContextPropagator::new()),
            request_id_header: X_REQUEST_ID,
        }
    }

    /// Writes the context with `propagator`. Defaults to W3C trace context.
    pub fn with_propagator(
        mut self,
        propagator: impl TextMapPropagator + Send + Sync + 'static,
    ) -> Self {
        self.propagator = Arc::new(propagator);
        self
    }

    /// Writes the context in every one of the given formats (`baggage` included: a channel
    /// talks to one peer, chosen by the caller). Defaults to `[tracecontext]`.
    pub fn with_propagators(self, propagators: &[Propagator]) -> Self {
        self.with_propagator(composite(propagators))
    }

    /// Forwards the request id under `header`. Defaults to `x-request-id`.
    pub fn with_request_id_header(mut self, header: HeaderName) -> Self {
        self.request_id_header = header;
        self
    }
}

impl<S> Layer<S> for GrpcClientLayer {
    type Service = GrpcClientService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcClientService {
            inner,
            layer: self.clone(),
        }
    }
}

/// Service that writes trace context and request id on outgoing calls; built by
/// [`GrpcClientLayer`].
#[derive(Clone)]
pub struct GrpcClientService<S> {
    inner: S,
    layer: GrpcClientLayer,
}

impl<S: fmt::Debug> fmt::Debug for GrpcClientService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcClientService")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, B> Service<Request<B>> for GrpcClientService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let cx = crate::trace::current_context();
        propagation::inject(&*self.layer.propagator, &cx, req.headers_mut());
        let header = &self.layer.request_id_header;
        if !req.headers().contains_key(header) {
            if let Some(id) = request_id::current() {
                req.headers_mut()
                    .insert(header.clone(), id.into_header_value());
            }
        }
        self.inner.call(req)
    }
}
