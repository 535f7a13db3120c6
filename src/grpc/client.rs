//! [`GrpcClientLayer`]: trace context and request id on the calls of a tonic channel, and
//! their metrics.

use crate::trace::propagation::{composite, Propagator, W3cPropagator};
use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use http::{HeaderName, Request, Response};
use opentelemetry::propagation::TextMapPropagator;
use tower_layer::Layer;
use tower_service::Service;

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
        semconv::ADVISED_DURATION_BUCKETS,
        toolkit::{self, RecorderRef, SettleFuture, SettleGuard},
        MetricsRegistry, SpanIds, DEFAULT_MAX_OPERATIONS,
    },
    request_id::{self, X_REQUEST_ID},
    trace::propagation,
};

/// The `?comp=` component a [`GrpcClientLayer`]'s families are registered under, with the
/// reqwest client's: every call out.
pub const GRPC_CLIENT_COMPONENT: &str = "client";

/// Layer for a tonic `Channel` (any `Service<http::Request<tonic::body::Body>, Response =
/// http::Response<_>>`) that writes the current trace
/// context (`traceparent`, ...) and the current request's id onto every outgoing call, and,
/// [`with_metrics`](GrpcClientLayer::with_metrics), measures each call until its response
/// stream ends, as [`GrpcLayer`](super::GrpcLayer) does on the server: by operation
/// (`package.Service/Method`, capped) and code, a call dropped by the caller counted
/// `CANCELLED` (HTTP 499), a call that got no response (the channel failed) `UNAVAILABLE`
/// (HTTP 500). The exemplar of a call's series is the caller's sampled span. The messages of
/// each call are counted as they pass (sent: the request body's, received: the response
/// body's); to count the sent ones the request body is wrapped, and tonic boxes the wrapper
/// (one allocation per call, only with metrics).
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
    metrics: Option<ClientMetrics>,
    types: Arc<HashMap<String, GrpcType>>,
    /// Which calls are left out of the metrics.
    filter: RequestFilter,
    /// Whether the time to the response head is recorded.
    first_byte: bool,
}

/// What a [`GrpcClientLayer`] records into, and its series table, built once.
#[derive(Clone)]
struct ClientMetrics {
    registry: MetricsRegistry,
    names: GrpcMetricNames,
    max_operations: usize,
    table: Arc<OnceLock<Arc<SeriesTable>>>,
}

impl fmt::Debug for GrpcClientLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcClientLayer")
            .field("request_id_header", &self.request_id_header)
            .field("metrics", &self.metrics.as_ref().map(|m| &m.names))
            .field("filter", &self.filter)
            .field("first_byte", &self.first_byte)
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
            propagator: Arc::new(W3cPropagator::new()),
            request_id_header: X_REQUEST_ID,
            metrics: None,
            types: Arc::default(),
            filter: RequestFilter::new(),
            first_byte: false,
        }
    }

    /// Measures the calls into `registry` with `names`
    /// ([`GrpcMetricNames::client_with_prefix`] or [`GrpcMetricNames::otel_client`]), served
    /// under `?comp=client`, at most `max_operations` distinct operations (then `_overflow`).
    /// Defaults to no metrics (a layer from [`new`](Self::new); `from_telemetry` measures).
    pub fn with_metrics(
        mut self,
        registry: &MetricsRegistry,
        names: GrpcMetricNames,
        max_operations: usize,
    ) -> Self {
        self.metrics = Some(ClientMetrics {
            registry: registry.clone(),
            names,
            max_operations,
            table: Arc::default(),
        });
        self
    }

    /// [`with_metrics`](Self::with_metrics) with towerscope's client names without a prefix
    /// ([`GrpcMetricNames::client_with_prefix`]`("")`) and a cap of 1000 operations.
    pub fn with_registry(self, registry: &MetricsRegistry) -> Self {
        self.with_metrics(
            registry,
            GrpcMetricNames::client_with_prefix(""),
            DEFAULT_MAX_OPERATIONS,
        )
    }

    /// The series table, built (and its families declared) on first use.
    fn table(&self) -> Option<Arc<SeriesTable>> {
        let metrics = self.metrics.as_ref()?;
        let table = metrics.table.get_or_init(|| {
            let (registry, names) = (&metrics.registry, &metrics.names);
            if names.is_otel() {
                registry.advise_buckets(names.duration(), &ADVISED_DURATION_BUCKETS);
                if self.first_byte {
                    registry.advise_buckets(names.time_to_first_byte(), &ADVISED_DURATION_BUCKETS);
                }
            }
            let recorder = RecorderRef::from(registry);
            let families = series::families(names, self.first_byte);
            toolkit::declare(
                &recorder,
                Some(registry),
                &[GRPC_CLIENT_COMPONENT],
                &families,
            );
            Arc::new(SeriesTable::new(
                recorder,
                names,
                metrics.max_operations,
                self.types.clone(),
                self.first_byte,
            ))
        });
        Some(table.clone())
    }

    /// Labels `operation` (`package.Service/Method`) with `grpc_type` in the
    /// go-grpc-prometheus scheme ([`GrpcMetricNames::go_grpc_prometheus_client`]). Defaults
    /// to [`GrpcType::Unary`] for every method.
    pub fn with_grpc_type(mut self, operation: &str, grpc_type: GrpcType) -> Self {
        Arc::make_mut(&mut self.types).insert(operation.to_owned(), grpc_type);
        self.changed()
    }

    /// A setter changed what the table is built from: the next service gets a new one.
    fn changed(mut self) -> Self {
        if let Some(metrics) = &mut self.metrics {
            metrics.table = Arc::default();
        }
        self
    }

    /// Leaves the calls `filter` skips out of the metrics (see [`crate::filter`]): path
    /// patterns match the request path (`/grpc.health.v1.Health/Check`), operation rules the
    /// operation (`grpc.health.v1.Health/Check`), a predicate sees the request head. A skipped
    /// call still carries the trace context and the request id: its server needs them
    /// whether or not the caller counts the call. The layer opens no span of its own, so
    /// [`Treatment::MetricsOnly`](crate::filter::Treatment::MetricsOnly) and
    /// [`Treatment::SampleRate`](crate::filter::Treatment::SampleRate) measure the call as
    /// usual (its trace is the caller's, sampled as the caller's is). Defaults to no filter,
    /// every call measured; `from_telemetry` takes none either (`filters:` is the servers'
    /// list).
    ///
    /// ```
    /// use towerscope::{
    ///     filter::{FilterRule, PathPattern, RequestFilter},
    ///     grpc::GrpcClientLayer,
    /// };
    ///
    /// let health = PathPattern::new("/grpc.health.v1.Health/**").unwrap();
    /// let layer = GrpcClientLayer::new()
    ///     .with_filter(RequestFilter::new().rule(FilterRule::path(health).skip()));
    /// # drop(layer);
    /// ```
    pub fn with_filter(mut self, filter: RequestFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Also records the time from each call to the response head it receives (time to first
    /// byte), beside the duration to the end of the response stream: the family
    /// [`GrpcMetricNames::time_to_first_byte`] names (`{prefix}grpc_client_request_time_to_first_byte_seconds`,
    /// `rpc_client_time_to_first_byte_seconds`, `grpc_client_time_to_first_byte_seconds`).
    /// Only with metrics ([`with_metrics`](Self::with_metrics)); no span event, the layer
    /// opening no span. Defaults to `false`; `from_telemetry` follows
    /// `metric.time_to_first_byte`.
    pub fn with_time_to_first_byte(mut self, on: bool) -> Self {
        self.first_byte = on;
        self.changed()
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
            table: self.table(),
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
    table: Option<Arc<SeriesTable>>,
}

impl<S: fmt::Debug> fmt::Debug for GrpcClientService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcClientService")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, ResBody> Service<Request<tonic::body::Body>> for GrpcClientService<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = SettleFuture<S::Future, GrpcCall>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<tonic::body::Body>) -> Self::Future {
        let cx = crate::trace::current_context();
        propagation::inject(&*self.layer.propagator, &cx, req.headers_mut());
        let header = &self.layer.request_id_header;
        if !req.headers().contains_key(header) {
            if let Some(id) = request_id::current() {
                req.headers_mut()
                    .insert(header.clone(), id.into_header_value());
            }
        }
        let Some(table) = &self.table else {
            return SettleFuture::new(self.inner.call(req), None);
        };
        let operation = GrpcOperation::from_path(req.uri().path());
        if !self.layer.filter.is_empty() {
            let head = RequestHead::with_operation(&req, operation.map(|op| op.as_str()));
            if let Treatment::Skip = self.layer.filter.treat_head(&head) {
                return SettleFuture::new(self.inner.call(req), None);
            }
        }
        let series = table.series(operation);
        // The channel takes tonic's body: the counting body goes inside one (tonic boxes it).
        if let Some(counting) = Counting::new(series.request_messages.clone(), None) {
            req = req.map(|body| tonic::body::Body::new(RequestBody::new(body, Some(counting))));
        }
        // The caller's span, from the context already read for the headers.
        let caller = SpanIds::of_context(&cx);
        let mut guard = SettleGuard::new(GrpcCall::client(series, caller));
        let inner = guard.poll(|| self.inner.call(req));
        SettleFuture::new(inner, Some(guard))
    }
}
