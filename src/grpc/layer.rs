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
    filter::{RequestFilter, Treatment},
    head::RequestHead,
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
    /// Whether the time to the response head is recorded.
    first_byte: bool,
    policy: Arc<CallPolicy>,
    table: Arc<OnceLock<Arc<SeriesTable>>>,
}

/// Which calls are observed and how their server spans are made; shared by the services of
/// a layer (one reference count to clone when tonic clones the service for a request).
#[derive(Clone)]
struct CallPolicy {
    propagator: Option<IncomingContext>,
    request_id_header: HeaderName,
    /// How the spans are exported: through `tracing`, or by the layer (`from_telemetry`).
    export: SpanExport,
    /// Which calls are skipped, measured without a span, or sampled at a rate of their own.
    filter: RequestFilter,
    /// Whether a sampled span marks the response head with an event.
    head_event: bool,
}

impl fmt::Debug for GrpcLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcLayer")
            .field("names", &self.names)
            .field("max_operations", &self.max_operations)
            .field("types", &self.types)
            .field("metrics", &self.metrics)
            .field("first_byte", &self.first_byte)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for CallPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallPolicy")
            .field("extracts_context", &self.propagator.is_some())
            .field("request_id_header", &self.request_id_header)
            .field("export", &self.export)
            .field("filter", &self.filter)
            .field("head_event", &self.head_event)
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
            first_byte: false,
            policy: Arc::new(CallPolicy {
                propagator: None,
                request_id_header: X_REQUEST_ID,
                export: SpanExport::Tracing,
                filter: RequestFilter::new(),
                head_event: false,
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
        Arc::make_mut(&mut self.policy).propagator = Some(IncomingContext::custom(propagator));
        self
    }

    /// Reads the caller's trace context in the given formats, in order. Defaults to none.
    pub fn with_propagators(mut self, propagators: &[Propagator]) -> Self {
        Arc::make_mut(&mut self.policy).propagator = Some(IncomingContext::configured(propagators));
        self
    }

    /// Records the request id from `header` on the span when no [`RequestIdLayer`] ran
    /// before this layer. Defaults to `x-request-id`.
    ///
    /// [`RequestIdLayer`]: crate::RequestIdLayer
    pub fn with_request_id_header(mut self, header: HeaderName) -> Self {
        Arc::make_mut(&mut self.policy).request_id_header = header;
        self
    }

    /// Exports the spans itself, as [`Telemetry::layer`](crate::Telemetry::layer) does (see
    /// `trace::direct`), instead of through `tracing`.
    pub(crate) fn export_with(mut self, export: SpanExport) -> Self {
        Arc::make_mut(&mut self.policy).export = export;
        self
    }

    /// Treats calls as `filter` says (see [`crate::filter`]): skipped (neither metrics nor
    /// span), metrics only (no span), or new traces sampled at a rate of their own (when the
    /// layer exports its spans itself, [`from_telemetry`](Self::from_telemetry); spans
    /// exported through `tracing` follow the subscriber's sampler). Path patterns match the
    /// request path (`/grpc.health.v1.Health/Check`), operation rules the operation
    /// (`grpc.health.v1.Health/Check`, before the cap), method rules `POST`; a predicate sees
    /// the request head, its [`operation`](crate::filter::RequestHead::operation) being
    /// the gRPC one. Defaults to no filter, every call observed;
    /// [`from_telemetry`](Self::from_telemetry) uses `filters:`.
    ///
    /// ```
    /// use towerscope::{
    ///     filter::{FilterRule, RequestFilter},
    ///     grpc::GrpcLayer,
    ///     metrics::MetricsRegistry,
    ///     config::MetricConfig,
    /// };
    ///
    /// let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
    /// let layer = GrpcLayer::new(&registry).with_filter(
    ///     RequestFilter::new().rule(FilterRule::operation("grpc.health.v1.Health/Check").skip()),
    /// );
    /// # drop(layer);
    /// ```
    pub fn with_filter(mut self, filter: RequestFilter) -> Self {
        Arc::make_mut(&mut self.policy).filter = filter;
        self
    }

    /// Also records the time from each call to its response head (time to first byte), beside
    /// the duration to the end of the response stream: the family
    /// [`GrpcMetricNames::time_to_first_byte`] names, a summary or a histogram as the durations
    /// are; and marks the head on sampled server spans with the event
    /// [`RESPONSE_HEAD_EVENT`](super::RESPONSE_HEAD_EVENT) (`rpc.response.head`). Defaults to
    /// `false`; [`from_telemetry`](Self::from_telemetry) follows `metric.time_to_first_byte`.
    pub fn with_time_to_first_byte(mut self, on: bool) -> Self {
        self.first_byte = on;
        Arc::make_mut(&mut self.policy).head_event = on;
        self.changed()
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
            let families = series::families(&self.names, self.first_byte);
            let registry = self.registry.as_ref();
            if let (true, Some(registry)) = (self.names.is_otel(), registry) {
                let advised = &crate::metrics::semconv::ADVISED_DURATION_BUCKETS;
                registry.advise_buckets(self.names.duration(), advised);
                if self.first_byte {
                    registry.advise_buckets(self.names.time_to_first_byte(), advised);
                }
            }
            toolkit::declare(&self.recorder, registry, &[GRPC_COMPONENT], &families);
            let types = self.types.clone();
            let table = SeriesTable::new(
                self.recorder.clone(),
                &self.names,
                self.max_operations,
                types,
                self.first_byte,
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
            policy: self.policy.clone(),
        }
    }
}

/// Service that measures and traces gRPC calls; built by [`GrpcLayer`].
#[derive(Clone)]
pub struct GrpcService<S> {
    inner: S,
    table: Option<Arc<SeriesTable>>,
    policy: Arc<CallPolicy>,
}

impl<S: fmt::Debug> fmt::Debug for GrpcService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcService")
            .field("inner", &self.inner)
            .field("metrics", &self.table.is_some())
            .field("policy", &self.policy)
            .finish()
    }
}

impl CallPolicy {
    /// What the filter does with a call of `operation`.
    fn treat<B>(&self, req: &Request<B>, operation: Option<GrpcOperation<'_>>) -> Treatment {
        let operation = operation.map(|op| op.as_str());
        self.filter
            .treat_head(&RequestHead::with_operation(req, operation))
    }

    /// The server span of a call, with every field known from the request recorded at
    /// creation; `None` when it is exported through `tracing` and no subscriber wants it. A
    /// span the layer exports itself samples a new trace at `rate` when given (a filter's),
    /// else at the configured rate; a caller's context decides when there is one.
    fn open<B>(
        &self,
        req: &Request<B>,
        operation: Option<GrpcOperation<'_>>,
        rate_override: Option<f64>,
    ) -> Option<ServerSpan> {
        let request_id = self.request_id(req);
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
                    .map(|span| span.with_head_event(self.head_event))
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
                let start = || span_start(name, operation, request_id);
                let parent = self.extract(req).unwrap_or_default();
                let rate = rate_override.unwrap_or(*rate);
                let span = ServerSpan::direct(tracer, rate, parent, start, log);
                Some(span.with_head_event(self.head_event))
            }
        }
    }

    /// The request id to record: a [`RequestId`] set by a layer before this one, else a valid
    /// id in the request id header.
    fn request_id<'r, B>(&self, req: &'r Request<B>) -> Option<&'r str> {
        match req.extensions().get::<RequestId>() {
            Some(id) => Some(id.as_str()),
            None => req
                .headers()
                .get(&self.request_id_header)
                .filter(|v| is_valid_request_id(v.as_bytes()))
                .and_then(|v| v.to_str().ok()),
        }
    }

    /// The caller's context, read with the propagator.
    fn extract<B>(&self, req: &Request<B>) -> Option<opentelemetry::Context> {
        self.propagator
            .as_ref()
            .map(|incoming| incoming.extract(req.headers()))
    }
}

/// How a span the layer exports itself starts: its name and the attributes known from the
/// request.
fn span_start(
    name: &str,
    operation: Option<GrpcOperation<'_>>,
    request_id: Option<&str>,
) -> SpanStart {
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
        let treatment = match self.policy.filter.is_empty() {
            true => Treatment::Observe,
            false => self.policy.treat(&req, operation),
        };
        let span = match treatment {
            Treatment::Observe => self.policy.open(&req, operation, None),
            Treatment::SampleRate(rate) => self.policy.open(&req, operation, Some(rate)),
            Treatment::MetricsOnly => None,
            // Neither metrics nor span: the body passes through, counted by nothing.
            Treatment::Skip => {
                let req = req.map(|body| RequestBody::new(body, None));
                return SettleFuture::new(self.inner.call(req), None);
            }
        };
        let series = self.table.as_ref().map(|t| t.series(operation));
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
