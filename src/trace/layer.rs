//! [`TraceLayer`], its service, future and body.

use std::{
    cell::OnceCell,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use http::{Method, Request, Response};
use http_body::Body;
use opentelemetry::propagation::TextMapPropagator;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;
use tracing::{field::Empty, Span};

use super::{
    attributes::SpanAttributes,
    direct::DirectTracer,
    fields::SpanFields,
    propagation::IncomingContext,
    server::{ServerSpan, SpanExport, LOG_SPAN_TARGET},
};
use crate::{
    head::{RequestHead, ResponseHead},
    labels::{standard_method, OTHER_METHOD},
    metrics::{
        toolkit::{sends_no_body, Outcome, SettleBody, SettleGuard},
        SpanIds,
    },
    operation::{default_resolver, operation_of, OperationId, OperationResolver},
};

/// Longest `url.path`/`url.query` value recorded, in bytes.
pub const MAX_PATH_ATTRIBUTE: usize = 1024;
/// Longest `user_agent.original` value recorded, in bytes.
pub const MAX_USER_AGENT_ATTRIBUTE: usize = 256;

/// Layer that opens a server span per request.
///
/// Built on its own, the span is a `tracing` span (target `towerscope::http`): with an
/// OpenTelemetry layer in the subscriber it becomes an OpenTelemetry server span. Behind
/// [`Telemetry::layer`](crate::Telemetry::layer) the layer decides sampling and builds the
/// OpenTelemetry span itself, current as an OpenTelemetry context while the request is polled
/// (read it with [`current_context`](super::current_context)), and opens a `tracing` span with
/// the same fields only for log layers (target [`LOG_SPAN_TARGET`](super::LOG_SPAN_TARGET)).
/// The fields and attributes follow the stable HTTP semantic conventions:
///
/// | field | value |
/// |---|---|
/// | name (`otel.name`) | `{METHOD} {route}` with axum's route template, else `{METHOD} {operationId}`, else `{METHOD}`; `HTTP` for methods outside the standard set |
/// | `otel.kind` | `server` |
/// | `http.request.method` | the method, or `_OTHER` |
/// | `url.path`, `url.query` | as received, capped at 1024 bytes |
/// | `http.route` | axum's route template, when there is one |
/// | `user_agent.original` | capped at 256 bytes |
/// | `http.response.status_code` | the status |
/// | `otel.status_code` | `ERROR` for 5xx and service errors |
/// | `operation`, `request_id` | the resolved operation and the request's id |
///
/// The span ends when the response body ends or is dropped. The parent comes from the
/// configured propagators; header values are capped before parsing
/// (see [`propagation`](super::propagation)).
#[derive(Clone)]
pub struct TraceLayer {
    propagator: Option<IncomingContext>,
    resolver: Arc<dyn OperationResolver>,
    echo_traceparent: bool,
    /// How the spans are exported: through `tracing`, or by the layer (`Telemetry::layer`).
    export: SpanExport,
    /// Whether a sampled span's ids go into the request's extensions, for exemplars.
    exemplar_ids: bool,
    /// Captured headers and the application's hooks.
    attributes: SpanAttributes,
    /// Whether the response head is marked by an event.
    head_event: bool,
}

impl fmt::Debug for TraceLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceLayer")
            .field("extracts_context", &self.propagator.is_some())
            .field("echo_traceparent", &self.echo_traceparent)
            .field("export", &self.export)
            .field("exemplar_ids", &self.exemplar_ids)
            .finish_non_exhaustive()
    }
}

impl Default for TraceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceLayer {
    /// A layer that opens spans without reading a parent from the request (a new trace per
    /// request) and resolves operations like [`MetricsLayer`](crate::metrics::MetricsLayer).
    pub fn new() -> Self {
        Self {
            propagator: None,
            resolver: default_resolver(),
            echo_traceparent: false,
            export: SpanExport::Tracing,
            exemplar_ids: false,
            attributes: SpanAttributes::default(),
            head_event: false,
        }
    }

    /// Reads the parent context with `propagator`. Defaults to none.
    pub fn with_propagator(
        mut self,
        propagator: impl TextMapPropagator + Send + Sync + 'static,
    ) -> Self {
        self.propagator = Some(IncomingContext::custom(propagator));
        self
    }

    /// Reads the parent context with `incoming` (`Telemetry`'s configured propagators).
    pub(crate) fn with_incoming(mut self, incoming: Option<IncomingContext>) -> Self {
        self.propagator = incoming;
        self
    }

    /// Resolves operations with `resolver`. Defaults to the metrics layer's default.
    pub fn with_resolver(mut self, resolver: impl OperationResolver) -> Self {
        self.resolver = Arc::new(resolver);
        self
    }

    pub(crate) fn with_shared_resolver(mut self, resolver: Arc<dyn OperationResolver>) -> Self {
        self.resolver = resolver;
        self
    }

    /// Sets a `traceparent` header naming the server span on responses. Defaults to `false`.
    pub fn echo_traceparent(mut self, echo: bool) -> Self {
        self.echo_traceparent = echo;
        self
    }

    /// Hands the ids of a sampled server span ([`SpanIds`](crate::metrics::SpanIds)) to the
    /// metrics stage of an [`ObservabilityLayer`](crate::ObservabilityLayer), which keeps them
    /// as the exemplars of the request's duration and total. Costs one lookup of the span's
    /// OpenTelemetry context per sampled request when the span is exported through `tracing`
    /// (none behind `Telemetry::layer`). A [`MetricsLayer`](crate::metrics::MetricsLayer) of
    /// its own inside a trace layer finds the ids itself, in the context current while the
    /// request is polled. Defaults to `false`; `ObservabilityLayer::from_config` and
    /// `Telemetry::layer` set it from `metric.exemplars` (default `true`).
    pub fn with_exemplar_ids(mut self, on: bool) -> Self {
        self.exemplar_ids = on;
        self
    }

    /// Adds `attributes` to sampled spans: captured request and response headers, and the
    /// application's hooks (see [`SpanAttributes`]). `ObservabilityLayer::from_config` and
    /// `Telemetry::layer` set it from `trace.capture_request_headers` and
    /// `trace.capture_response_headers`.
    pub fn with_attributes(mut self, attributes: SpanAttributes) -> Self {
        self.attributes = attributes;
        self
    }

    /// Marks the response head of sampled spans with an event,
    /// [`RESPONSE_HEAD_EVENT`](super::RESPONSE_HEAD_EVENT) (`http.response.head`, with the
    /// status): the time to first byte on the span. `ObservabilityLayer::from_config` and
    /// `Telemetry::layer` set it from `metric.time_to_first_byte`. Defaults to `false`.
    pub fn with_response_head_event(mut self, on: bool) -> Self {
        self.head_event = on;
        self
    }

    /// Exports the spans itself into `tracer`'s pipeline, sampling new traces at `rate` (see
    /// `trace::direct`), instead of through `tracing`; with `log_span`, a log-only `tracing`
    /// span per request too, when a log layer wants it.
    pub(crate) fn export_direct(mut self, tracer: DirectTracer, rate: f64, log_span: bool) -> Self {
        self.export = SpanExport::Direct {
            tracer,
            rate,
            log_span,
        };
        self
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService {
            inner,
            layer: self.clone(),
        }
    }
}

/// Service that opens the server span; built by [`TraceLayer`].
#[derive(Clone)]
pub struct TraceService<S> {
    inner: S,
    layer: TraceLayer,
}

impl<S: fmt::Debug> fmt::Debug for TraceService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceService")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

/// A server span's `tracing` span with its fields (one field list for both callsites: a
/// callsite's target is fixed).
macro_rules! server_span {
    ($target:expr, $fields:expr, $method:expr) => {{
        let fields = $fields;
        fields.name.with_str(|name| {
            tracing::info_span!(
                target: $target,
                "HTTP request",
                otel.name = name,
                otel.kind = "server",
                otel.status_code = Empty,
                http.request.method = $method.unwrap_or(OTHER_METHOD),
                url.path = fields.path,
                url.query = fields.query,
                http.route = fields.name.route,
                user_agent.original = fields.user_agent,
                http.response.status_code = Empty,
                operation = fields.name.operation.as_str(),
                request_id = fields.request_id,
            )
        })
    }};
}

impl TraceLayer {
    /// The ids of `span` when it is sampled and exemplars are on, for the metrics stage of an
    /// [`ObservabilityLayer`](crate::ObservabilityLayer).
    pub(crate) fn exemplar_ids(&self, span: &ServerSpan) -> Option<SpanIds> {
        self.exemplar_ids.then(|| span.sampled_ids()).flatten()
    }

    /// Whether responses carry a `traceparent` naming the server span.
    pub(crate) fn echoes_traceparent(&self) -> bool {
        self.echo_traceparent
    }

    /// Opens the server span of `req`, with every field known from the request recorded at
    /// creation (one pass through the subscriber's `on_new_span` for a `tracing` span, one
    /// attribute list for a direct one); `None` when there is nothing to carry or enter
    /// (exported through `tracing` with no subscriber that wants the span). Nothing is computed
    /// for a `tracing` span no subscriber wants, nor for a log-only span no log layer wants.
    pub(crate) fn open<B>(&self, req: &Request<B>) -> Option<ServerSpan> {
        self.open_at_rate(req, None)
    }

    /// [`open`](Self::open), new traces sampled at `rate` instead of the layer's when given (a
    /// filter's rate for the request's route; spans exported through `tracing` follow the
    /// subscriber's sampler).
    pub(crate) fn open_at_rate<B>(
        &self,
        req: &Request<B>,
        rate_override: Option<f64>,
    ) -> Option<ServerSpan> {
        let method = standard_method(req.method());
        match &self.export {
            SpanExport::Tracing => self.open_traced(req, method),
            SpanExport::Direct {
                tracer,
                rate,
                log_span,
            } => Some(self.open_direct(
                req,
                method,
                tracer,
                rate_override.unwrap_or(*rate),
                *log_span,
            )),
        }
    }

    /// A server span exported through `tracing`: `None` when no subscriber wants it.
    fn open_traced<B>(&self, req: &Request<B>, method: Option<&'static str>) -> Option<ServerSpan> {
        if !tracing::enabled!(
            kind: tracing::metadata::Kind::SPAN,
            target: "towerscope::http",
            tracing::Level::INFO
        ) {
            return None;
        }
        let operation = operation_of(req, &*self.resolver);
        let span = server_span!(
            "towerscope::http",
            SpanFields::of(req, method, &operation),
            method
        );
        let span = ServerSpan::traced(span, self.extract(req))?.with_head_event(self.head_event);
        Some(match self.attributes.is_empty() {
            true => span,
            false => span.with_attributes(&self.attributes, || {
                let mut attributes = Vec::new();
                self.attributes
                    .request_into(&RequestHead::of(req), &mut attributes);
                attributes
            }),
        })
    }

    /// A server span the layer exports itself, sampled at `rate` (new traces).
    fn open_direct<B>(
        &self,
        req: &Request<B>,
        method: Option<&'static str>,
        tracer: &DirectTracer,
        rate: f64,
        log_span: bool,
    ) -> ServerSpan {
        // Read only when something uses them: a request sampled out with no log layer
        // (RUST_LOG=warn, or none) looks up nothing, and writes no name.
        let (operation, fields) = (OnceCell::new(), OnceCell::new());
        let fields = || {
            fields.get_or_init(|| {
                // Resolved by the operation stage when there is one (ObservabilityLayer), so
                // that the metrics label does not depend on the span.
                let operation = operation.get_or_init(|| operation_of(req, &*self.resolver));
                SpanFields::of(req, method, operation)
            })
        };
        // Only log layers want this span, and only when asked for (`trace.log_span`).
        let log = if log_span
            && tracing::enabled!(
                kind: tracing::metadata::Kind::SPAN,
                target: LOG_SPAN_TARGET,
                tracing::Level::INFO
            ) {
            server_span!(LOG_SPAN_TARGET, fields(), method)
        } else {
            Span::none()
        };
        let parent = self.extract(req).unwrap_or_default();
        let start = || {
            let mut start = fields().start(method);
            if !self.attributes.is_empty() {
                self.attributes
                    .request_into(&RequestHead::of(req), &mut start.attributes);
            }
            start
        };
        let span = ServerSpan::direct(tracer, rate, parent, start, log);
        if !span.is_direct() {
            return span;
        }
        let span = span.with_head_event(self.head_event);
        match self.attributes.is_empty() {
            true => span,
            false => span.with_attributes(&self.attributes, Vec::new),
        }
    }

    /// The caller's context, read with the propagator.
    fn extract<B>(&self, req: &Request<B>) -> Option<opentelemetry::Context> {
        self.propagator
            .as_ref()
            .map(|incoming| incoming.extract(req.headers()))
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TraceService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let span = self.layer.open(&req);
        let head = req.method() == Method::HEAD;
        // `call` itself runs inside the span, as the future's polls do.
        let inner = in_span(span.as_ref(), || self.inner.call(req));
        ResponseFuture {
            inner,
            echo_traceparent: self.layer.echo_traceparent && span.is_some(),
            span,
            head,
        }
    }
}

/// Runs `f` inside `span`: its `tracing` span entered, its context current.
fn in_span<R>(span: Option<&ServerSpan>, f: impl FnOnce() -> R) -> R {
    let _entered = span.and_then(ServerSpan::tracing_span).map(Span::enter);
    let _current = span
        .and_then(ServerSpan::context)
        .map(|cx| cx.clone().attach());
    f()
}

pin_project! {
    /// Response future of [`TraceService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // Entered while the inner future is polled; then carried by the body to its end.
        span: Option<ServerSpan>,
        echo_traceparent: bool,
        // A HEAD's body is never sent: the span ends with the response head.
        head: bool,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let result = ready!(in_span(this.span.as_ref(), || inner.poll(cx)));
        let span = this.span.take();
        match result {
            Ok(mut res) => {
                on_response(span.as_ref(), *this.echo_traceparent, &mut res);
                let mut guard = span.map(SettleGuard::new);
                if sends_no_body(*this.head, res.status()) {
                    if let Some(mut guard) = guard.take() {
                        guard.settle(Outcome::Complete);
                    }
                }
                Poll::Ready(Ok(res.map(|inner| SettleBody::new(inner, guard))))
            }
            Err(err) => {
                if let Some(span) = &span {
                    span.set_error(None);
                }
                Poll::Ready(Err(err))
            }
        }
    }
}

/// Records the response head on the server span (status, `ERROR` for a 5xx, a handler's
/// operation override) and, with `echo`, names the span in a `traceparent` header.
pub(crate) fn on_response<B>(span: Option<&ServerSpan>, echo: bool, res: &mut Response<B>) {
    let Some(span) = span else { return };
    span.on_response_head(&ResponseHead::of(res));
    let status = res.status();
    span.record_i64("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.set_error(None);
    }
    // A handler's override renames the metrics; the span says the same.
    if let Some(op) = res.extensions().get::<OperationId>() {
        span.record_str("operation", op.as_str());
    }
    if echo {
        if let Some(tp) = span.traceparent() {
            res.headers_mut().insert("traceparent", tp);
        }
    }
}

/// Response body of [`TraceService`]: holds the span open until the body ends, fails or
/// drops.
pub type ResponseBody<B> = SettleBody<B, ServerSpan>;
