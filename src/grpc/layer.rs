//! [`GrpcLayer`], its service and its response future.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use http::{HeaderName, Request, Response};
use opentelemetry::propagation::TextMapPropagator;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;
use tracing::{field::Empty, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{
    body::{CallGuard, ResponseBody},
    names::{GrpcMetricNames, GrpcType},
    series::{RecorderRef, SeriesTable},
    status::GrpcOperation,
};
use crate::{
    config::Propagator,
    metrics::{MetricsRegistry, DEFAULT_MAX_OPERATIONS},
    operation::OperationId,
    request_id::{is_valid_request_id, RequestId, X_REQUEST_ID},
    trace::propagation,
    Telemetry,
};

/// The `?comp=` component the gRPC families are registered under.
pub const GRPC_COMPONENT: &str = "grpc";

/// Layer that measures and traces the calls of a tonic server; see the
/// [module docs](super).
#[derive(Clone)]
pub struct GrpcLayer {
    recorder: RecorderRef,
    names: GrpcMetricNames,
    max_operations: usize,
    types: Arc<HashMap<String, GrpcType>>,
    /// Where the families are registered by component, when built from a registry.
    registry: Option<(MetricsRegistry, String)>,
    metrics: bool,
    shared: Arc<Shared>,
}

/// What every service of a layer shares.
struct Shared {
    table: Option<Arc<SeriesTable>>,
    propagator: Option<Arc<dyn TextMapPropagator + Send + Sync>>,
    request_id_header: HeaderName,
}

impl fmt::Debug for GrpcLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcLayer")
            .field("names", &self.names)
            .field("max_operations", &self.max_operations)
            .field("types", &self.types)
            .field("metrics", &self.metrics)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("enabled", &self.table.is_some())
            .field("extracts_context", &self.propagator.is_some())
            .field("request_id_header", &self.request_id_header)
            .finish()
    }
}

impl GrpcLayer {
    /// A layer recording into `registry` with towerscope's names without a prefix, a cap of
    /// 1000 operations, no parent extraction, families served under the `grpc` component.
    pub fn new(registry: &MetricsRegistry) -> Self {
        Self::build(RecorderRef::Shared(registry.recorder()))
            .registered_in(registry.clone(), GRPC_COMPONENT)
    }

    /// A layer recording into `recorder`: for tests with `metrics_util`'s
    /// `DebuggingRecorder`, or for other exporters.
    pub fn with_recorder(recorder: Arc<dyn metrics::Recorder + Send + Sync>) -> Self {
        let mut layer = Self::build(RecorderRef::Shared(recorder));
        layer.rebuild();
        layer
    }

    /// A layer recording through the global `metrics` recorder, whatever it is.
    pub fn with_global_recorder() -> Self {
        let mut layer = Self::build(RecorderRef::Global);
        layer.rebuild();
        layer
    }

    /// The layer for a service started with [`Telemetry`]: names under
    /// `metric.namespace`/`metric.subsystem`, `metric.max_operations`, the telemetry's
    /// registry (component `grpc`), parents read with `trace.propagators` (when
    /// `trace.enabled`), the request id read from `request_id.header`; no metrics when
    /// `metric.enabled` is false.
    pub fn from_telemetry(telemetry: &Telemetry) -> Self {
        let config = telemetry.config();
        let mut layer = Self::build(RecorderRef::Shared(telemetry.registry().recorder()));
        layer.names = GrpcMetricNames::with_prefix(&config.metric.prefix());
        layer.max_operations = config.metric.max_operations;
        layer.metrics = config.metric.enabled;
        let propagator: Option<Arc<dyn TextMapPropagator + Send + Sync>> = config
            .trace
            .enabled
            .then(|| Arc::new(propagation::composite(&config.trace.propagators)) as _);
        layer.shared = Arc::new(Shared {
            table: None,
            propagator,
            request_id_header: config.request_id.header.clone(),
        });
        layer.registered_in(telemetry.registry().clone(), GRPC_COMPONENT)
    }

    /// A layer with the defaults and no series table yet: every constructor ends in
    /// [`rebuild`](Self::rebuild), so that no family is registered under a name it replaces.
    fn build(recorder: RecorderRef) -> Self {
        Self {
            recorder,
            names: GrpcMetricNames::default(),
            max_operations: DEFAULT_MAX_OPERATIONS,
            types: Arc::default(),
            registry: None,
            metrics: true,
            shared: Arc::new(Shared {
                table: None,
                propagator: None,
                request_id_header: X_REQUEST_ID,
            }),
        }
    }

    fn registered_in(mut self, registry: MetricsRegistry, component: &str) -> Self {
        self.registry = Some((registry, component.to_owned()));
        self.rebuild();
        self
    }

    /// Rebuilds the series table (and registers the families) after a change of settings.
    fn rebuild(&mut self) {
        let table = self.metrics.then(|| {
            if let Some((registry, component)) = &self.registry {
                registry.register_component(component, self.names.families());
            }
            SeriesTable::new(
                self.recorder.clone(),
                &self.names,
                self.max_operations,
                self.types.clone(),
            )
        });
        self.shared = Arc::new(Shared {
            table,
            propagator: self.shared.propagator.clone(),
            request_id_header: self.shared.request_id_header.clone(),
        });
    }

    fn with_shared(mut self, f: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Shared {
            table: self.shared.table.clone(),
            propagator: self.shared.propagator.clone(),
            request_id_header: self.shared.request_id_header.clone(),
        };
        f(&mut shared);
        self.shared = Arc::new(shared);
        self
    }

    /// Uses `names` (and their label scheme) for the families. Defaults to towerscope's names
    /// without a prefix; [`GrpcMetricNames::go_grpc_prometheus`] gives go-grpc-prometheus'.
    pub fn with_names(mut self, names: GrpcMetricNames) -> Self {
        self.names = names;
        self.rebuild();
        self
    }

    /// Labels `operation` (`package.Service/Method`) with `grpc_type` in the
    /// go-grpc-prometheus scheme. Defaults to [`GrpcType::Unary`] for every method: the
    /// streaming type is in the service's descriptor, not on the wire.
    pub fn with_grpc_type(mut self, operation: &str, grpc_type: GrpcType) -> Self {
        Arc::make_mut(&mut self.types).insert(operation.to_owned(), grpc_type);
        self.rebuild();
        self
    }

    /// Caps the distinct operations; calls of further ones are labelled `_overflow` and
    /// counted in the overflow counter. Paths that are not gRPC paths are `unknown` and never
    /// count against the cap. Defaults to 1000.
    pub fn with_max_operations(mut self, max: usize) -> Self {
        self.max_operations = max;
        self.rebuild();
        self
    }

    /// Reads the caller's trace context from the request metadata with `propagator`.
    /// Defaults to none (every call starts a new trace); [`from_telemetry`](Self::from_telemetry)
    /// uses the configured propagators.
    pub fn with_propagator(
        self,
        propagator: impl TextMapPropagator + Send + Sync + 'static,
    ) -> Self {
        self.with_shared(|s| s.propagator = Some(Arc::new(propagator)))
    }

    /// Reads the caller's trace context in the given formats, in order. Defaults to none.
    pub fn with_propagators(self, propagators: &[Propagator]) -> Self {
        self.with_propagator(propagation::composite(propagators))
    }

    /// Records the request id from `header` on the span when no [`RequestIdLayer`] ran
    /// before this layer. Defaults to `x-request-id`.
    ///
    /// [`RequestIdLayer`]: crate::RequestIdLayer
    pub fn with_request_id_header(self, header: HeaderName) -> Self {
        self.with_shared(|s| s.request_id_header = header)
    }

    /// Records no metrics (spans only).
    pub fn without_metrics(mut self) -> Self {
        self.metrics = false;
        self.rebuild();
        self
    }

    /// The family names in use.
    pub fn names(&self) -> &GrpcMetricNames {
        &self.names
    }
}

impl<S> Layer<S> for GrpcLayer {
    type Service = GrpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Service that measures and traces gRPC calls; built by [`GrpcLayer`].
#[derive(Clone)]
pub struct GrpcService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for GrpcService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcService")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl Shared {
    /// The server span of a call, `None` when no subscriber wants it.
    fn make_span<B>(&self, req: &Request<B>, operation: Option<GrpcOperation<'_>>) -> Option<Span> {
        let span = tracing::info_span!(
            target: "towerscope::grpc",
            "gRPC call",
            otel.name = Empty,
            otel.kind = "server",
            otel.status_code = Empty,
            otel.status_description = Empty,
            rpc.system = "grpc",
            rpc.service = Empty,
            rpc.method = Empty,
            rpc.grpc.status_code = Empty,
            request_id = Empty,
        );
        if span.is_disabled() {
            return None;
        }
        match operation {
            Some(op) => {
                span.record("otel.name", op.as_str());
                span.record("rpc.service", op.service());
                span.record("rpc.method", op.method());
            }
            None => {
                span.record("otel.name", OperationId::UNKNOWN);
            }
        }
        let request_id = match req.extensions().get::<RequestId>() {
            Some(id) => Some(id.as_str()),
            None => req
                .headers()
                .get(&self.request_id_header)
                .filter(|v| is_valid_request_id(v.as_bytes()))
                .and_then(|v| v.to_str().ok()),
        };
        if let Some(id) = request_id {
            span.record("request_id", id);
        }
        if let Some(propagator) = &self.propagator {
            let _ = span.set_parent(propagation::extract(&**propagator, req.headers()));
        }
        Some(span)
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let operation = GrpcOperation::from_path(req.uri().path());
        let series = self.shared.table.as_ref().map(|t| t.series(operation));
        let span = self.shared.make_span(&req, operation);
        let mut guard = CallGuard::start(series, span);
        let inner = guard.poll_inner(|| self.inner.call(req));
        ResponseFuture {
            inner,
            guard: Some(guard),
        }
    }
}

pin_project! {
    /// Response future of [`GrpcService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        guard: Option<CallGuard>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = match this.guard.as_mut() {
            Some(guard) => ready!(guard.poll_inner(|| this.inner.as_mut().poll(cx))),
            None => ready!(this.inner.as_mut().poll(cx)),
        };
        let Some(mut guard) = this.guard.take() else {
            return Poll::Ready(result.map(|res| res.map(|b| ResponseBody::new(b, None))));
        };
        match result {
            Ok(res) => {
                guard.on_response(res.status(), res.headers());
                Poll::Ready(Ok(res.map(|b| ResponseBody::new(b, Some(guard)))))
            }
            Err(err) => {
                guard.finish(500, tonic::Code::Unknown);
                Poll::Ready(Err(err))
            }
        }
    }
}
