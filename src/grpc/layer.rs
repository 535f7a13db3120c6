//! [`GrpcLayer`], its service and its response future.

use crate::trace::propagation::{IncomingContext, Propagator};
use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use http::{HeaderName, Request, Response};
use opentelemetry::{propagation::TextMapPropagator, trace::SpanKind, KeyValue};
use tower_layer::Layer;
use tower_service::Service;
use tracing::{field::Empty, Span};

use super::{
    body::{GrpcCall, ResponseBody},
    names::{GrpcMetricNames, GrpcType},
    request::{Counting, RequestBody},
    series::{self, SeriesTable},
    status::GrpcOperation,
};
use crate::{
    metrics::{
        toolkit::{self, RecorderRef, SettleFuture, SettleGuard},
        MetricsRegistry, DEFAULT_MAX_OPERATIONS,
    },
    operation::OperationId,
    request_id::{is_valid_request_id, RequestId, X_REQUEST_ID},
    trace::{ServerSpan, SpanExport, SpanStart, GRPC_LOG_SPAN_TARGET},
};

/// The `?comp=` component the gRPC families are registered under.
pub const GRPC_COMPONENT: &str = "grpc";

/// Layer that measures and traces the calls of a tonic server; see the
/// [module docs](super).
///
/// The `with_*` setters only store their value. The series table is built, and the families
/// described (and registered under `grpc` with a registry), once, when the layer first wraps
/// a service; the clones of a layer share that table.
#[derive(Clone)]
pub struct GrpcLayer {
    recorder: RecorderRef,
    /// The registry the families are served from under [`GRPC_COMPONENT`].
    registry: Option<MetricsRegistry>,
    names: GrpcMetricNames,
    max_operations: usize,
    types: Arc<HashMap<String, GrpcType>>,
    metrics: bool,
    spans: Arc<CallSpans>,
    table: Arc<OnceLock<Arc<SeriesTable>>>,
}

/// How the server span of a call is made; shared by the services of a layer.
#[derive(Clone)]
struct CallSpans {
    propagator: Option<IncomingContext>,
    request_id_header: HeaderName,
    /// How the spans are exported: through `tracing`, or by the layer (`from_telemetry`).
    export: SpanExport,
}

impl fmt::Debug for GrpcLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcLayer")
            .field("names", &self.names)
            .field("max_operations", &self.max_operations)
            .field("types", &self.types)
            .field("metrics", &self.metrics)
            .field("spans", &self.spans)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for CallSpans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallSpans")
            .field("extracts_context", &self.propagator.is_some())
            .field("request_id_header", &self.request_id_header)
            .field("export", &self.export)
            .finish()
    }
}

impl GrpcLayer {
    /// A layer recording into `registry` with towerscope's names without a prefix, a cap of
    /// 1000 operations, no parent extraction, families served under the `grpc` component.
    pub fn new(registry: &MetricsRegistry) -> Self {
        let mut layer = Self::with_recorder_ref(RecorderRef::from(registry));
        layer.registry = Some(registry.clone());
        layer
    }

    /// A layer recording into `recorder`: for tests with `metrics_util`'s
    /// `DebuggingRecorder`, or for other exporters.
    pub fn with_recorder(recorder: Arc<dyn metrics::Recorder + Send + Sync>) -> Self {
        Self::with_recorder_ref(RecorderRef::Shared(recorder))
    }

    /// A layer recording through the global `metrics` recorder, whatever it is.
    pub fn with_global_recorder() -> Self {
        Self::with_recorder_ref(RecorderRef::Global)
    }

    fn with_recorder_ref(recorder: RecorderRef) -> Self {
        Self {
            recorder,
            registry: None,
            names: GrpcMetricNames::default(),
            max_operations: DEFAULT_MAX_OPERATIONS,
            types: Arc::default(),
            metrics: true,
            spans: Arc::new(CallSpans {
                propagator: None,
                request_id_header: X_REQUEST_ID,
                export: SpanExport::Tracing,
            }),
            table: Arc::default(),
        }
    }

    /// A setter changed what the table is built from: the next service gets a new one.
    fn changed(mut self) -> Self {
        self.table = Arc::default();
        self
    }

    /// Uses `names` (and their label scheme) for the families. Defaults to towerscope's names
    /// without a prefix; [`GrpcMetricNames::go_grpc_prometheus`] gives go-grpc-prometheus'.
    pub fn with_names(mut self, names: GrpcMetricNames) -> Self {
        self.names = names;
        self.changed()
    }

    /// Labels `operation` (`package.Service/Method`) with `grpc_type` in the
    /// go-grpc-prometheus scheme. Defaults to [`GrpcType::Unary`] for every method: the
    /// streaming type is in the service's descriptor, not on the wire.
    pub fn with_grpc_type(mut self, operation: &str, grpc_type: GrpcType) -> Self {
        Arc::make_mut(&mut self.types).insert(operation.to_owned(), grpc_type);
        self.changed()
    }

    /// Caps the distinct operations; calls of further ones are labelled `_overflow` and
    /// counted in the overflow counter. Paths that are not gRPC paths are `unknown` and never
    /// count against the cap. Defaults to 1000.
    pub fn with_max_operations(mut self, max: usize) -> Self {
        self.max_operations = max;
        self.changed()
    }

    /// Reads the caller's trace context from the request metadata with `propagator`.
    /// Defaults to none (every call starts a new trace); [`from_telemetry`](Self::from_telemetry)
    /// uses the configured propagators.
    pub fn with_propagator(
        mut self,
        propagator: impl TextMapPropagator + Send + Sync + 'static,
    ) -> Self {
        Arc::make_mut(&mut self.spans).propagator = Some(IncomingContext::custom(propagator));
        self
    }

    /// Reads the caller's trace context in the given formats, in order. Defaults to none.
    pub fn with_propagators(mut self, propagators: &[Propagator]) -> Self {
        Arc::make_mut(&mut self.spans).propagator = Some(IncomingContext::configured(propagators));
        self
    }

    /// Records the request id from `header` on the span when no [`RequestIdLayer`] ran
    /// before this layer. Defaults to `x-request-id`.
    ///
    /// [`RequestIdLayer`]: crate::RequestIdLayer
    pub fn with_request_id_header(mut self, header: HeaderName) -> Self {
        Arc::make_mut(&mut self.spans).request_id_header = header;
        self
    }

    /// Exports the spans itself, as [`Telemetry::layer`](crate::Telemetry::layer) does (see
    /// `trace::direct`), instead of through `tracing`.
    pub(crate) fn export_with(mut self, export: SpanExport) -> Self {
        Arc::make_mut(&mut self.spans).export = export;
        self
    }

    /// Records no metrics (spans only). Defaults to recording them.
    pub fn without_metrics(mut self) -> Self {
        self.metrics = false;
        self.changed()
    }

    /// The family names in use.
    pub fn names(&self) -> &GrpcMetricNames {
        &self.names
    }

    /// The series table, built (and its families declared) on first use.
    fn table(&self) -> Option<Arc<SeriesTable>> {
        if !self.metrics {
            return None;
        }
        let table = self.table.get_or_init(|| {
            let families = series::families(&self.names);
            let registry = self.registry.as_ref();
            if let (true, Some(registry)) = (self.names.is_otel(), registry) {
                registry.advise_buckets(
                    self.names.duration(),
                    &crate::metrics::semconv::ADVISED_DURATION_BUCKETS,
                );
            }
            toolkit::declare(&self.recorder, registry, &[GRPC_COMPONENT], &families);
            let types = self.types.clone();
            let table = SeriesTable::new(
                self.recorder.clone(),
                &self.names,
                self.max_operations,
                types,
            );
            Arc::new(table)
        });
        Some(table.clone())
    }
}

impl<S> Layer<S> for GrpcLayer {
    type Service = GrpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcService {
            inner,
            table: self.table(),
            spans: self.spans.clone(),
        }
    }
}

/// Service that measures and traces gRPC calls; built by [`GrpcLayer`].
#[derive(Clone)]
pub struct GrpcService<S> {
    inner: S,
    table: Option<Arc<SeriesTable>>,
    spans: Arc<CallSpans>,
}

impl<S: fmt::Debug> fmt::Debug for GrpcService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcService")
            .field("inner", &self.inner)
            .field("metrics", &self.table.is_some())
            .field("spans", &self.spans)
            .finish()
    }
}

impl CallSpans {
    /// The server span of a call, with every field known from the request recorded at
    /// creation; `None` when it is exported through `tracing` and no subscriber wants it.
    fn open<B>(
        &self,
        req: &Request<B>,
        operation: Option<GrpcOperation<'_>>,
    ) -> Option<ServerSpan> {
        let request_id = match req.extensions().get::<RequestId>() {
            Some(id) => Some(id.as_str()),
            None => req
                .headers()
                .get(&self.request_id_header)
                .filter(|v| is_valid_request_id(v.as_bytes()))
                .and_then(|v| v.to_str().ok()),
        };
        let name = operation.map_or(OperationId::UNKNOWN, |op| op.as_str());
        // One field list for both callsites (a callsite's target is fixed).
        macro_rules! call_span {
            ($target:expr) => {
                tracing::info_span!(
                    target: $target,
                    "gRPC call",
                    otel.name = name,
                    otel.kind = "server",
                    otel.status_code = Empty,
                    otel.status_description = Empty,
                    rpc.system = "grpc",
                    rpc.service = operation.map(|op| op.service()),
                    rpc.method = operation.map(|op| op.method()),
                    rpc.grpc.status_code = Empty,
                    rpc.message.received.count = Empty,
                    rpc.message.sent.count = Empty,
                    request_id = request_id,
                )
            };
        }
        match &self.export {
            SpanExport::Tracing => {
                if !tracing::enabled!(
                    kind: tracing::metadata::Kind::SPAN,
                    target: "towerscope::grpc",
                    tracing::Level::INFO
                ) {
                    return None;
                }
                ServerSpan::traced(call_span!("towerscope::grpc"), self.extract(req))
            }
            SpanExport::Direct {
                tracer,
                rate,
                log_span,
            } => {
                let log = if *log_span
                    && tracing::enabled!(
                        kind: tracing::metadata::Kind::SPAN,
                        target: GRPC_LOG_SPAN_TARGET,
                        tracing::Level::INFO
                    ) {
                    call_span!(GRPC_LOG_SPAN_TARGET)
                } else {
                    Span::none()
                };
                let start = || {
                    let mut attributes = Vec::with_capacity(5);
                    attributes.push(KeyValue::new("rpc.system", "grpc"));
                    if let Some(op) = operation {
                        attributes.push(KeyValue::new("rpc.service", op.service().to_owned()));
                        attributes.push(KeyValue::new("rpc.method", op.method().to_owned()));
                    }
                    if let Some(id) = request_id {
                        attributes.push(KeyValue::new("request_id", id.to_owned()));
                    }
                    SpanStart {
                        name: name.to_owned().into(),
                        kind: SpanKind::Server,
                        attributes,
                    }
                };
                let parent = self.extract(req).unwrap_or_default();
                Some(ServerSpan::direct(tracer, *rate, parent, start, log))
            }
        }
    }

    /// The caller's context, read with the propagator.
    fn extract<B>(&self, req: &Request<B>) -> Option<opentelemetry::Context> {
        self.propagator
            .as_ref()
            .map(|incoming| incoming.extract(req.headers()))
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcService<S>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
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
        let series = self.table.as_ref().map(|t| t.series(operation));
        let span = self.spans.open(&req, operation);
        let counter = series.as_ref().and_then(|s| s.request_messages.clone());
        let call = GrpcCall::start(series, span);
        let counting = Counting::new(counter, call.request_tally());
        let req = req.map(|body| RequestBody::new(body, counting));
        let mut guard = SettleGuard::new(call);
        let inner = guard.poll(|| self.inner.call(req));
        SettleFuture::new(inner, Some(guard))
    }
}

/// Response future of [`GrpcService`].
pub type ResponseFuture<F> = SettleFuture<F, GrpcCall>;
