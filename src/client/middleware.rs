//! [`ClientMiddleware`]: the span, the propagated context, the request id and the metrics of
//! each call; and [`ClientOperation`], a call's name for its `peer` label.

use crate::trace::propagation::{composite, Propagator};
use std::{
    borrow::Cow,
    fmt,
    sync::{Arc, OnceLock},
};

use http::{Extensions, HeaderName, Uri};
use opentelemetry::propagation::TextMapPropagator;
use reqwest::Request;
use reqwest_middleware::{ClientWithMiddleware, Middleware, Next};
use tracing::{field::Empty, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{
    future::{BoxFuture, InFlight, ResponseFuture},
    metrics::{
        families, ClientMetricNames, PeerRef, PeerTable, CLIENT_COMPONENT, DEFAULT_MAX_PEERS,
    },
    propagation::{unbracketed, ContextHosts, FilteredInjector},
    redact::redact_url,
};
use crate::{
    filter::{RequestFilter, Treatment},
    head::RequestHead,
    labels::{standard_method, OTHER_METHOD},
    metrics::{
        semconv::{ADVISED_DURATION_BUCKETS, HTTP_CLIENT_REQUEST_DURATION},
        toolkit::{self, RecorderRef, SettleGuard},
        MetricNaming, MetricsRegistry,
    },
    request_id::{self, X_REQUEST_ID},
};

/// A name for a call, used as its `peer` label instead of the URL's `host:port`.
///
/// Set it per request with
/// [`with_extension`](reqwest_middleware::RequestBuilder::with_extension). Names come from
/// code, never from a peer: each distinct one is a series.
///
/// ```
/// use towerscope::client::ClientOperation;
///
/// assert_eq!(ClientOperation::new("getManifest").as_str(), "getManifest");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientOperation(Cow<'static, str>);

impl ClientOperation {
    /// An operation named `name`.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Self(name.into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Middleware instrumenting reqwest calls; see the [module docs](super).
///
/// The `with_*` setters only store their value. The series table is built, and the families
/// described and registered under the `client` component, once: in
/// [`build_client`](Self::build_client), or at the first call when the middleware is added to
/// a `reqwest_middleware` client by hand. The clones of a middleware share that table.
#[derive(Clone)]
pub struct ClientMiddleware {
    recorder: RecorderRef,
    /// The registry the families are served from under [`CLIENT_COMPONENT`].
    registry: Option<MetricsRegistry>,
    names: ClientMetricNames,
    max_peers: usize,
    metrics: bool,
    naming: MetricNaming,
    propagator: Arc<dyn TextMapPropagator + Send + Sync>,
    context_hosts: Arc<ContextHosts>,
    request_id_header: HeaderName,
    filter: RequestFilter,
    table: Arc<OnceLock<PeerTable>>,
}

impl fmt::Debug for ClientMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientMiddleware")
            .field("names", &self.names)
            .field("max_peers", &self.max_peers)
            .field("metrics", &self.metrics)
            .field("naming", &self.naming)
            .field("context_hosts", &self.context_hosts)
            .field("request_id_header", &self.request_id_header)
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl ClientMiddleware {
    /// A middleware recording into `registry` with metric names without a prefix, served
    /// under the `client` component; propagating `tracecontext` and `baggage`, `tracestate`
    /// and `baggage` to no host; forwarding request ids in `x-request-id`; at most 1000 peers.
    pub fn new(registry: &MetricsRegistry) -> Self {
        Self {
            registry: Some(registry.clone()),
            ..Self::recording_into(RecorderRef::from(registry))
        }
    }

    /// Like [`new`](Self::new), recording into `recorder` (for tests with `metrics_util`'s
    /// `DebuggingRecorder`, or for other exporters), its families served under no component.
    pub fn with_recorder(recorder: Arc<dyn metrics::Recorder + Send + Sync>) -> Self {
        Self::recording_into(RecorderRef::Shared(recorder))
    }

    /// Like [`new`](Self::new), recording through the global `metrics` recorder, whatever it
    /// is, its families served under no component.
    pub fn with_global_recorder() -> Self {
        Self::recording_into(RecorderRef::Global)
    }

    fn recording_into(recorder: RecorderRef) -> Self {
        Self {
            recorder,
            registry: None,
            names: ClientMetricNames::default(),
            max_peers: DEFAULT_MAX_PEERS,
            metrics: true,
            naming: MetricNaming::Harbor,
            propagator: Arc::new(composite(&[Propagator::TraceContext, Propagator::Baggage])),
            context_hosts: Arc::default(),
            request_id_header: X_REQUEST_ID,
            filter: RequestFilter::new(),
            table: Arc::default(),
        }
    }

    /// A setter changed what the table is built from: the next use builds a new one.
    fn changed(mut self) -> Self {
        self.table = Arc::default();
        self
    }

    /// Names the families behind `prefix` (which ends in `_` unless empty):
    /// `{prefix}http_client_request_total`, ... Defaults to no prefix.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.names = ClientMetricNames::with_prefix(prefix);
        self.changed()
    }

    /// Writes the trace context with `propagator` (every host gets `traceparent` and
    /// `uber-trace-id`, only the [context hosts](Self::with_context_hosts) the rest).
    /// Defaults to `tracecontext` and `baggage`.
    pub fn with_propagator<P>(self, propagator: P) -> Self
    where
        P: TextMapPropagator + Send + Sync + 'static,
    {
        let propagator = Arc::new(propagator);
        Self { propagator, ..self }
    }

    /// Writes the trace context in these formats. Defaults to `tracecontext` and `baggage`.
    pub fn with_propagators(self, propagators: &[Propagator]) -> Self {
        self.with_propagator(composite(propagators))
    }

    /// Hosts that receive `tracestate` and `baggage` (`traceparent` and `uber-trace-id` go to
    /// every host). A host matches exactly, case-insensitively (IPv6 with or without
    /// brackets); `*.example.com` matches every subdomain of `example.com`. Replaces the
    /// earlier list. By default, no host.
    pub fn with_context_hosts(
        mut self,
        hosts: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.context_hosts = Arc::new(ContextHosts::new(hosts));
        self
    }

    /// Forwards the current request id in `header`. Defaults to `x-request-id`.
    pub fn with_request_id_header(mut self, header: HeaderName) -> Self {
        self.request_id_header = header;
        self
    }

    /// Records the families of `naming`: Harbor-style `http_client_*` by `method`, `code`,
    /// `peer`, or the OpenTelemetry conventions' `http_client_request_duration_seconds` by
    /// `http_request_method`, `server_address`, `server_port`, `url_scheme`,
    /// `http_response_status_code`, `network_protocol_version` and `error_type` (a
    /// [`ClientOperation`] does not change the labels then; the
    /// [`with_prefix`](Self::with_prefix) names only the overflow counter). Defaults to
    /// [`MetricNaming::Harbor`].
    pub fn with_naming(mut self, naming: MetricNaming) -> Self {
        self.naming = naming;
        self.changed()
    }

    /// Caps the distinct `peer` label values (hosts and operations together); calls to further
    /// peers are labelled `_overflow` and counted in `http_client_peer_overflow_total`.
    /// Defaults to 1000.
    pub fn with_max_peers(mut self, max: usize) -> Self {
        self.max_peers = max;
        self.changed()
    }

    /// Records no metrics (spans, trace context and request ids only). Defaults to recording
    /// them.
    pub fn without_metrics(mut self) -> Self {
        self.metrics = false;
        self.changed()
    }

    /// Builds a client from `builder` with this middleware, and this middleware's series
    /// table. With the `tls` feature, installs rustls' ring provider first unless a provider
    /// is installed.
    ///
    /// Fails as [`reqwest::ClientBuilder::build`] does.
    pub fn build_client(
        self,
        builder: reqwest::ClientBuilder,
    ) -> Result<ClientWithMiddleware, reqwest::Error> {
        crate::tls::ensure_tls_provider();
        let client = builder.build()?;
        self.table();
        Ok(reqwest_middleware::ClientBuilder::new(client)
            .with(self)
            .build())
    }

    /// The series table, built (and its families declared) on first use.
    pub(super) fn table(&self) -> Option<&PeerTable> {
        if !self.metrics {
            return None;
        }
        Some(self.table.get_or_init(|| {
            let (recorder, served) = (&self.recorder, self.registry.as_ref());
            if let (MetricNaming::Otel, Some(registry)) = (self.naming, served) {
                registry.advise_buckets(HTTP_CLIENT_REQUEST_DURATION, &ADVISED_DURATION_BUCKETS);
            }
            toolkit::declare(
                recorder,
                served,
                &[CLIENT_COMPONENT],
                &families(&self.names, self.naming),
            );
            PeerTable::new(recorder.clone(), &self.names, self.max_peers, self.naming)
        }))
    }

    /// Measures and traces calls as `filter` says (see [`crate::filter`]): skipped (no span,
    /// no metrics), metrics only (no span), or observed. Path patterns match the URL's path,
    /// operation rules the call's [`ClientOperation`], a predicate sees the head (its URI the
    /// whole URL). A skipped or metrics-only call still carries the caller's trace context and
    /// request id. [`Treatment::SampleRate`] is [`Treatment::Observe`] here: a client span
    /// follows its parent, and the subscriber's sampler decides for a call without one.
    /// Defaults to no filter (every call observed); with one, each call's URL is parsed once
    /// more to give the head a URI.
    pub fn with_filter(mut self, filter: RequestFilter) -> Self {
        self.filter = filter;
        self
    }

    /// What the filter says of `req`.
    fn treat(&self, req: &Request, operation: Option<&ClientOperation>) -> Treatment {
        if self.filter.is_empty() {
            return Treatment::Observe;
        }
        let uri = req.url().as_str().parse::<Uri>().unwrap_or_default();
        let head = RequestHead::from_parts(
            req.method(),
            &uri,
            req.headers(),
            operation.map(ClientOperation::as_str),
        );
        self.filter.treat_head(&head)
    }

    /// Opens the span, writes the headers and counts the call in flight.
    fn start(&self, req: &mut Request, extensions: &Extensions) -> SettleGuard<InFlight> {
        let operation = extensions.get::<ClientOperation>();
        let treatment = self.treat(req, operation);
        let span = match treatment {
            Treatment::Skip | Treatment::MetricsOnly => Span::none(),
            _ => client_span(standard_method(req.method())),
        };
        let url = req.url();
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or_default();
        let cx = if span.is_disabled() {
            // Filtered out: still pass on the caller's context.
            crate::trace::current_context()
        } else {
            span.record("url.full", &*redact_url(url));
            span.record("server.address", unbracketed(host));
            span.record("server.port", i64::from(port));
            if let Some(op) = operation {
                span.record("operation", op.as_str());
            }
            span.context()
        };
        let table = match treatment {
            Treatment::Skip => None,
            _ => self.table(),
        };
        let series = table.map(|table| {
            let peer = match (operation, table.naming()) {
                (Some(op), MetricNaming::Harbor) => PeerRef::Operation(op.as_str()),
                _ => PeerRef::Host(host, port),
            };
            let scheme = usize::from(url.scheme() == "https");
            table.series(peer, table.method_index(req.method()), scheme)
        });
        let full_context = self.context_hosts.allows(host);
        let headers = req.headers_mut();
        self.propagator.inject_context(
            &cx,
            &mut FilteredInjector {
                headers,
                full_context,
            },
        );
        if !headers.contains_key(&self.request_id_header) {
            if let Some(id) = request_id::current() {
                headers.insert(self.request_id_header.clone(), id.into_header_value());
            }
        }
        SettleGuard::new(InFlight::start(span, series))
    }
}

/// The span of a call with `method` (`None`: not a standard one), its URL fields empty.
fn client_span(method: Option<&'static str>) -> Span {
    tracing::info_span!(
        target: "towerscope::client",
        "HTTP client request",
        otel.name = method.unwrap_or("HTTP"),
        otel.kind = "client",
        otel.status_code = Empty,
        otel.status_description = Empty,
        http.request.method = method.unwrap_or(OTHER_METHOD),
        url.full = Empty,
        server.address = Empty,
        server.port = Empty,
        http.response.status_code = Empty,
        network.protocol.version = Empty,
        "error.type" = Empty,
        operation = Empty,
    )
}

impl Middleware for ClientMiddleware {
    fn handle<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        mut req: Request,
        extensions: &'life1 mut Extensions,
        next: Next<'life2>,
    ) -> BoxFuture<'async_trait>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        let mut guard = self.start(&mut req, extensions);
        let inner = guard.poll(|| next.run(req, extensions));
        Box::pin(ResponseFuture {
            inner,
            guard: Some(guard),
        })
    }
}
