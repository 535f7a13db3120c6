//! [`TraceLayer`], its service, future and body.

use crate::text::capped;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use http::{HeaderValue, Method, Request, Response};
use http_body::Body;
use opentelemetry::{propagation::TextMapPropagator, trace::TraceContextExt};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;
use tracing::{field::Empty, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{propagation, sampling};
use crate::{
    labels::{standard_method, OTHER_METHOD},
    metrics::{
        toolkit::{sends_no_body, Outcome, Settle, SettleBody, SettleGuard},
        SpanIds,
    },
    operation::{default_resolver, matched_path, operation_of, OperationId, OperationResolver},
    request_id::RequestId,
};

/// Longest `url.path`/`url.query` value recorded, in bytes.
pub const MAX_PATH_ATTRIBUTE: usize = 1024;
/// Longest `user_agent.original` value recorded, in bytes.
pub const MAX_USER_AGENT_ATTRIBUTE: usize = 256;

/// Layer that opens a server span per request.
///
/// The span is a `tracing` span; with the OpenTelemetry layer of
/// [`Telemetry`](crate::Telemetry) in the subscriber it becomes an OpenTelemetry server span.
/// Its fields follow the stable HTTP semantic conventions:
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
    propagator: Option<Arc<dyn TextMapPropagator + Send + Sync>>,
    resolver: Arc<dyn OperationResolver>,
    echo_traceparent: bool,
    /// The pipeline's sample rate, when the layer decides sampling itself (see `sampling`).
    presample: Option<f64>,
    /// Whether a sampled span's ids go into the request's extensions, for exemplars.
    exemplar_ids: bool,
}

impl fmt::Debug for TraceLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceLayer")
            .field("extracts_context", &self.propagator.is_some())
            .field("echo_traceparent", &self.echo_traceparent)
            .field("presample", &self.presample)
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
            presample: None,
            exemplar_ids: false,
        }
    }

    /// Reads the parent context with `propagator`. Defaults to none.
    pub fn with_propagator(
        mut self,
        propagator: impl TextMapPropagator + Send + Sync + 'static,
    ) -> Self {
        self.propagator = Some(Arc::new(propagator));
        self
    }

    pub(crate) fn with_shared_propagator(
        mut self,
        propagator: Option<Arc<dyn TextMapPropagator + Send + Sync>>,
    ) -> Self {
        self.propagator = propagator;
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

    /// Puts the ids of a sampled server span in the request's extensions
    /// ([`SpanIds`](crate::metrics::SpanIds)), where the [`MetricsLayer`](crate::metrics::MetricsLayer)
    /// inside finds them and keeps them as the exemplars of the request's duration and total.
    /// Costs one lookup of the span's OpenTelemetry context per sampled request. Defaults to
    /// `false`; `ObservabilityLayer::from_config` and `Telemetry::layer` set it from
    /// `metric.exemplars` (default `true`).
    pub fn with_exemplar_ids(mut self, on: bool) -> Self {
        self.exemplar_ids = on;
        self
    }

    /// Decides sampling before the span is built, with the rule of `Telemetry`'s pipeline at
    /// `rate` (see `sampling`); only for spans exported by that pipeline.
    pub(crate) fn presample(mut self, rate: f64) -> Self {
        self.presample = Some(rate);
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

/// What the trace stage carries for one request: its server span (when a subscriber wants
/// it) and, for a request the layer sampled out, the context to make current while it is
/// polled.
pub(crate) struct Opened {
    pub(crate) span: Option<Span>,
    pub(crate) sampled_out: Option<opentelemetry::Context>,
}

impl TraceLayer {
    /// Opens the server span of `req` and, for exemplars, puts a sampled span's ids in its
    /// extensions; `None` when no subscriber wants a span (nothing to carry, nothing to enter).
    pub(crate) fn open<B>(&self, req: &mut Request<B>) -> Option<Opened> {
        let (span, sampled_out, started) = self.make_span(req);
        let span = (!span.is_disabled()).then_some(span);
        if self.exemplar_ids && sampled_out.is_none() {
            // A new trace's ids came with its start; a remote parent's child is looked up.
            if let Some(ids) = started.or_else(|| span.as_ref().and_then(SpanIds::of)) {
                req.extensions_mut().insert(ids);
            }
        }
        if span.is_none() && sampled_out.is_none() {
            return None;
        }
        Some(Opened { span, sampled_out })
    }

    /// Whether responses carry a `traceparent` naming the server span.
    pub(crate) fn echoes_traceparent(&self) -> bool {
        self.echo_traceparent
    }

    /// The request's server span, with every field known from the request recorded at
    /// creation: one pass through the subscriber's `on_new_span` instead of one `on_record`
    /// per field; and, for a request the layer sampled out, the context to make current while
    /// it is polled. Nothing is computed when no subscriber wants the span.
    /// The server span, the context of a sampled-out request, and the ids of a new trace the
    /// layer sampled (see [`sampling::open`]).
    fn make_span<B>(
        &self,
        req: &Request<B>,
    ) -> (Span, Option<opentelemetry::Context>, Option<SpanIds>) {
        if !tracing::enabled!(
            kind: tracing::metadata::Kind::SPAN,
            target: "towerscope::http",
            tracing::Level::INFO
        ) {
            return (Span::none(), None, None);
        }
        let parent = self
            .propagator
            .as_ref()
            .map(|propagator| propagation::extract(&**propagator, req.headers()));
        let method = standard_method(req.method());
        // Resolved by the operation stage when there is one (ObservabilityLayer), so that the
        // metrics label does not depend on whether this span is enabled.
        let operation = operation_of(req, &*self.resolver);
        let route = matched_path(req.extensions());
        let name = SpanName {
            verb: method.unwrap_or("HTTP"),
            route,
            operation: &operation,
        };
        let user_agent = req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| capped(ua, MAX_USER_AGENT_ATTRIBUTE));
        // One field list for both callsites (a callsite's target is fixed).
        macro_rules! server_span {
            ($target:expr, $name:expr) => {
                tracing::info_span!(
                    target: $target,
                    "HTTP request",
                    otel.name = $name,
                    otel.kind = "server",
                    otel.status_code = Empty,
                    http.request.method = method.unwrap_or(OTHER_METHOD),
                    url.path = capped(req.uri().path(), MAX_PATH_ATTRIBUTE),
                    url.query = req.uri().query().map(|q| capped(q, MAX_PATH_ATTRIBUTE)),
                    http.route = route,
                    user_agent.original = user_agent,
                    http.response.status_code = Empty,
                    operation = operation.as_str(),
                    request_id = req.extensions().get::<RequestId>().map(RequestId::as_str),
                )
            };
        }
        sampling::open(
            self.presample,
            parent,
            || name.with_str(|name| server_span!("towerscope::http", name)),
            || {
                // Only log layers want a sampled-out span: without one (RUST_LOG=warn, or no
                // log layer), its name is not even written.
                if tracing::enabled!(
                    kind: tracing::metadata::Kind::SPAN,
                    target: sampling::UNSAMPLED_TARGET,
                    tracing::Level::INFO
                ) {
                    name.with_str(|name| server_span!(sampling::UNSAMPLED_TARGET, name))
                } else {
                    Span::none()
                }
            },
        )
    }
}

/// A server span's name: `{verb} {route}` with a route template, else `{verb} {operation}`
/// for a known operation, else `{verb}`.
struct SpanName<'a> {
    verb: &'a str,
    route: Option<&'a str>,
    operation: &'a OperationId,
}

impl fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.route, self.operation.as_str()) {
            (Some(route), _) => write!(f, "{} {route}", self.verb),
            (None, op) if op != OperationId::UNKNOWN => write!(f, "{} {op}", self.verb),
            _ => f.write_str(self.verb),
        }
    }
}

impl SpanName<'_> {
    /// Calls `f` with the name written into a per-thread buffer (subscribers copy what they
    /// keep), so building it allocates nothing once the buffer has grown.
    fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        use std::{cell::RefCell, fmt::Write};
        thread_local! {
            static BUFFER: RefCell<String> = const { RefCell::new(String::new()) };
        }
        BUFFER.with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut buffer) => {
                buffer.clear();
                let _ = write!(buffer, "{self}");
                f(&buffer)
            }
            // Re-entered from inside `f` (a subscriber handling the span opened another
            // request's): a buffer of its own.
            Err(_) => f(&self.to_string()),
        })
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

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let Some(Opened { span, sampled_out }) = self.layer.open(&mut req) else {
            // No subscriber wants it: carry nothing, enter nothing.
            return ResponseFuture {
                inner: self.inner.call(req),
                span: None,
                sampled_out: None,
                echo_traceparent: false,
                head: false,
            };
        };
        let head = req.method() == Method::HEAD;
        let inner = {
            let _entered = span.as_ref().map(Span::enter);
            let _current = sampled_out.clone().map(opentelemetry::Context::attach);
            self.inner.call(req)
        };
        ResponseFuture {
            inner,
            span,
            sampled_out,
            echo_traceparent: self.layer.echo_traceparent,
            head,
        }
    }
}

pin_project! {
    /// Response future of [`TraceService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        span: Option<Span>,
        // The context of a request the layer sampled out, current while it is polled.
        sampled_out: Option<opentelemetry::Context>,
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

/// The `traceparent` naming the server span: the sampled-out context's, else `span`'s
/// OpenTelemetry context's, when it is valid.
fn traceparent(
    span: Option<&Span>,
    sampled_out: Option<&opentelemetry::Context>,
) -> Option<HeaderValue> {
    let cx = match (sampled_out, span) {
        (Some(cx), _) => cx.clone(),
        (None, Some(span)) => span.context(),
        (None, None) => return None,
    };
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return None;
    }
    HeaderValue::try_from(format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    ))
    .ok()
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.span.as_ref().map(Span::enter);
            let _current = this.sampled_out.clone().map(opentelemetry::Context::attach);
            ready!(this.inner.poll(cx))
        };
        let span = this.span.take();
        let sampled_out = this.sampled_out.take();
        match result {
            Ok(mut res) => {
                on_response(
                    span.as_ref(),
                    sampled_out.as_ref(),
                    *this.echo_traceparent,
                    &mut res,
                );
                let mut guard = span.map(|span| SettleGuard::new(ServerSpan(span)));
                if sends_no_body(*this.head, res.status()) {
                    if let Some(mut guard) = guard.take() {
                        guard.settle(Outcome::Complete);
                    }
                }
                Poll::Ready(Ok(res.map(|inner| SettleBody::new(inner, guard))))
            }
            Err(err) => {
                if let Some(span) = &span {
                    span.record("otel.status_code", "ERROR");
                }
                Poll::Ready(Err(err))
            }
        }
    }
}

/// Records the response head on the server span (status, `ERROR` for a 5xx, a handler's
/// operation override) and, with `echo`, names the span in a `traceparent` header.
pub(crate) fn on_response<B>(
    span: Option<&Span>,
    sampled_out: Option<&opentelemetry::Context>,
    echo: bool,
    res: &mut Response<B>,
) {
    if let Some(span) = span {
        let status = res.status();
        span.record("http.response.status_code", i64::from(status.as_u16()));
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
        // A handler's override renames the metrics; the span says the same.
        if let Some(op) = res.extensions().get::<OperationId>() {
            span.record("operation", op.as_str());
        }
    }
    if echo {
        if let Some(tp) = traceparent(span, sampled_out) {
            res.headers_mut().insert("traceparent", tp);
        }
    }
}

/// Response body of [`TraceService`]: holds the span open until the body ends, fails or
/// drops.
pub type ResponseBody<B> = SettleBody<B, ServerSpan>;

/// The server span of one request, carried by the response body of [`TraceService`] and ended
/// when the request settles; a body that fails mid-stream marks it `ERROR`.
#[derive(Debug)]
pub struct ServerSpan(Span);

impl ServerSpan {
    /// Carries `span` until the request settles.
    pub(crate) fn new(span: Span) -> Self {
        Self(span)
    }

    /// The span.
    pub(crate) fn span(&self) -> &Span {
        &self.0
    }
}

impl Settle for ServerSpan {
    fn settle(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Error | Outcome::Panicked => {
                self.0.record("otel.status_code", "ERROR");
            }
            Outcome::Complete | Outcome::Cancelled => {}
        }
        // The state is dropped right after this: the span ends with the body, not when hyper
        // frees it.
    }
}
