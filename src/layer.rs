//! [`ObservabilityLayer`]: the one layer a service adds.
//!
//! It runs, in this order, the stages of [`RequestIdLayer`] → [`ResolveOperationLayer`] →
//! [`TraceLayer`] → [`MetricsLayer`] as one tower layer: one `Router::layer` call in axum
//! instead of four. The request id is set before the span opens (so the span carries it), and
//! the operation is resolved exactly once, by the operation stage, whatever the subscriber or
//! log level; the span, the metrics and the handler read that one [`OperationId`] from the
//! request extensions.
//!
//! The stages run in one service, [`Observability`], with one response future and one
//! response body carrying the span and the metrics state together: the same behaviour as the
//! four layers stacked, without four nested futures and two nested bodies to move on every
//! request, and with one reference count to clone when a router clones the service per
//! request (axum does).
//!
//! [`OperationId`]: crate::operation::OperationId
#![doc = include_str!("docs/layer.md")]

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::SystemTime,
};

use http::{HeaderName, HeaderValue, Method, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Span;

use crate::{
    config::Config,
    filter::{RequestFilter, Treatment},
    metrics::{
        toolkit::{sends_no_body, Outcome, Settle, SettleBody, SettleGuard},
        MetricsLayer, MetricsRegistry, MetricsStage, RequestMetrics,
    },
    operation::{self, OperationId, OperationResolver, ResolveOperationLayer},
    request_id::{self, RequestId, RequestIdLayer},
    trace::{self, ServerSpan, SpanAttributes, TraceLayer},
};

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
    filter: RequestFilter,
}

impl fmt::Debug for ObservabilityLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObservabilityLayer")
            .field("request_id", &self.request_id)
            .field("operation", &self.operation)
            .field("trace", &self.trace)
            .field("metrics", &self.metrics)
            .field("filter", &self.filter)
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
            filter: RequestFilter::new(),
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
                .with_exemplar_ids(config.metric.records() && config.metric.exemplars)
                .with_attributes(config.trace.span_attributes())
                .with_response_head_event(config.metric.time_to_first_byte),
            metrics: MetricsLayer::from_config(&config.metric, registry),
            filter: RequestFilter::from_config(&config.filters),
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

    /// Adds `attributes` to the server span of sampled requests: captured headers and the
    /// application's hooks over the request and response heads (replaces the configured
    /// `trace.capture_*_headers`).
    pub fn with_span_attributes(mut self, attributes: SpanAttributes) -> Self {
        self.trace = self.trace.with_attributes(attributes);
        self
    }

    /// Adds `label`, a metric label of the user's own valued from each request's head, to
    /// the request families (see [`MetricLabel`](crate::metrics::MetricLabel); beside the
    /// configured `metric.labels`, replacing one of the same name). The head it sees has the
    /// resolved operation.
    pub fn with_metric_label(mut self, label: crate::metrics::MetricLabel) -> Self {
        self.metrics = self.metrics.with_label(label);
        self
    }

    /// Treats requests as `filter` says: skipped, metrics only, or a sampling rate of their
    /// own (see [`crate::filter`]); replaces the `filters:` of the configuration. The filter
    /// runs after the operation is resolved, so rules can match the operation.
    pub fn with_filter(mut self, filter: RequestFilter) -> Self {
        self.filter = filter;
        self
    }
}

impl<S> Layer<S> for ObservabilityLayer {
    type Service = Observability<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observability {
            inner,
            stages: Arc::new(Stages {
                request_id: self.request_id.clone(),
                operation: self.operation.clone(),
                trace: self.trace.clone(),
                metrics: self.metrics.stage(),
                filter: self.filter.clone(),
            }),
        }
    }
}

/// The stages of an [`ObservabilityLayer`], shared by the clones of its service.
struct Stages {
    request_id: RequestIdLayer,
    operation: ResolveOperationLayer,
    trace: TraceLayer,
    metrics: MetricsStage,
    filter: RequestFilter,
}

/// The service [`ObservabilityLayer`] wraps around `S`: request id, operation, server span
/// and metrics in one service.
pub struct Observability<S> {
    inner: S,
    stages: Arc<Stages>,
}

impl<S: Clone> Clone for Observability<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            stages: self.stages.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Observability<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observability")
            .field("inner", &self.inner)
            .field("request_id", &self.stages.request_id)
            .field("trace", &self.stages.trace)
            .field("metrics", &self.stages.metrics.enabled())
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Observability<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = ObservedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let stages = &*self.stages;
        let id = stages.request_id.apply(&mut req);
        stages.operation.resolve_into(&mut req);
        // Current while the future is polled, for log lines (an Arc's count, no allocation).
        let operation = req.extensions().get::<OperationId>().cloned();
        let treatment = match stages.filter.is_empty() {
            true => Treatment::Observe,
            false => stages.filter.treat(&req),
        };
        let span = match treatment {
            Treatment::Skip | Treatment::MetricsOnly => None,
            Treatment::SampleRate(rate) => stages.trace.open_at_rate(&req, Some(rate)),
            _ => stages.trace.open(&req),
        };
        // The span's ids go to the metrics stage directly (an inner metrics layer finds them
        // in the context current while the request is polled).
        let exemplar = span
            .as_ref()
            .and_then(|span| stages.trace.exemplar_ids(span));
        let metrics = match treatment {
            Treatment::Skip => None,
            _ => stages.metrics.start(&req, exemplar),
        };
        let head = req.method() == Method::HEAD;
        let mut guard = match (span, metrics) {
            (None, None) => None,
            (span, metrics) => Some(SettleGuard::new(Observed {
                span,
                metrics,
                polling_future: true,
            })),
        };
        // `call` itself runs inside the span (its context current), as the trace layer does;
        // the request id is current only while the future is polled.
        let inner = match guard.as_mut() {
            Some(guard) => guard.poll(|| self.inner.call(req)),
            None => self.inner.call(req),
        };
        ObservedFuture {
            inner,
            request_id: Some(RequestId::new(id.clone())),
            operation,
            header: Some((stages.request_id.header().clone(), id)),
            guard,
            echo_traceparent: stages.trace.echoes_traceparent(),
            head,
        }
    }
}

/// What an [`Observability`] request carries until it settles: its server span (ended when
/// the response body ends) and its metrics state.
pub struct Observed {
    span: Option<ServerSpan>,
    metrics: Option<RequestMetrics>,
    /// Until the response head: the span is entered only while the future is polled, as
    /// the trace layer alone does, not while the body is.
    polling_future: bool,
}

impl fmt::Debug for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observed")
            .field("span", &self.span)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl Settle for Observed {
    fn settle(&mut self, outcome: Outcome) {
        // One wall-clock read for the exemplar and the span's end, when either needs it.
        let exemplar = self
            .metrics
            .as_ref()
            .is_some_and(RequestMetrics::has_exemplar);
        let now = (exemplar || self.span.as_ref().is_some_and(ServerSpan::is_direct))
            .then(SystemTime::now);
        if let Some(metrics) = &mut self.metrics {
            metrics.settle_at(outcome, now);
        }
        if let Some(span) = &mut self.span {
            span.settle_at(outcome, now);
        }
    }

    fn on_response<B>(&mut self, response: &Response<B>) {
        if let Some(metrics) = &mut self.metrics {
            metrics.on_response(response);
        }
    }

    fn on_data(&mut self, len: usize) {
        if let Some(metrics) = &mut self.metrics {
            metrics.on_data(len);
        }
    }

    fn span(&self) -> Option<&Span> {
        self.span
            .as_ref()
            .filter(|_| self.polling_future)
            .and_then(ServerSpan::tracing_span)
    }

    fn context(&self) -> Option<&opentelemetry::Context> {
        self.span
            .as_ref()
            .filter(|_| self.polling_future)
            .and_then(ServerSpan::context)
    }
}

/// Response body of [`Observability`]: ends the span and the request's measurement when the
/// inner body ends, fails or is dropped.
pub type ObservedBody<B> = SettleBody<B, Observed>;

pin_project! {
    /// Response future of [`Observability`]: polls the inner future with the request id
    /// current and inside the span; puts the id (and, when asked, a `traceparent`) on the
    /// response and hands the span and metrics state to its body.
    ///
    /// It settles like [`SettleFuture`](crate::metrics::toolkit::SettleFuture) but does not
    /// wrap one: the extra level (one more move of every response) measured ~60 ns per
    /// request in `benches/overhead.rs`, most of what the fused service saves.
    pub struct ObservedFuture<F> {
        #[pin]
        inner: F,
        // `None` only while the inner future is polled (the id is then `current`).
        request_id: Option<RequestId>,
        // Likewise (`operation::current`); `None` too when no operation was resolved.
        operation: Option<OperationId>,
        header: Option<(HeaderName, HeaderValue)>,
        guard: Option<SettleGuard<Observed>>,
        echo_traceparent: bool,
        head: bool,
    }
}

impl<F> fmt::Debug for ObservedFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObservedFuture")
            .field("request_id", &self.request_id)
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ObservedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body,
{
    type Output = Result<Response<ObservedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (inner, guard) = (this.inner, this.guard);
        let polled = request_id::scope(this.request_id, || {
            operation::scope(this.operation, || match guard.as_mut() {
                Some(guard) => guard.poll(|| inner.poll(cx)),
                None => inner.poll(cx),
            })
        });
        let result = ready!(polled);
        let mut guard = guard.take();
        Poll::Ready(match result {
            Ok(mut res) => {
                if let Some(state) = guard.as_mut().and_then(SettleGuard::state) {
                    state.polling_future = false;
                    state.on_response(&res);
                    trace::on_response(state.span.as_ref(), *this.echo_traceparent, &mut res);
                }
                if let Some((name, value)) = this.header.take() {
                    // The response always carries the request's id, even if the handler set
                    // another.
                    res.headers_mut().insert(name, value);
                }
                if sends_no_body(*this.head, res.status()) {
                    if let Some(mut guard) = guard.take() {
                        guard.settle(Outcome::Complete);
                    }
                }
                Ok(res.map(|body| SettleBody::new(body, guard)))
            }
            Err(err) => {
                // The span is marked `ERROR`, the request counted as a 500.
                if let Some(guard) = guard.as_mut() {
                    guard.settle(Outcome::Error);
                }
                Err(err)
            }
        })
    }
}
