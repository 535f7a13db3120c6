//! [`ClientMiddleware`]: the span, the propagated context, the request id and the metrics of
//! each call; and [`ClientOperation`], a call's name for its `peer` label.

use std::{borrow::Cow, fmt, sync::Arc};

use http::{Extensions, HeaderName};
use opentelemetry::propagation::TextMapPropagator;
use reqwest::Request;
use reqwest_middleware::{ClientWithMiddleware, Middleware, Next};
use tracing::{field::Empty, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::{
    future::{BoxFuture, ResponseFuture},
    metrics::{
        known_method, ClientMetricNames, Families, InFlight, PeerRef, PeerTable, CLIENT_COMPONENT,
        DEFAULT_MAX_PEERS, METHODS,
    },
    propagation::{unbracketed, ContextHosts, FilteredInjector},
    redact::redact_url,
};
use crate::{
    config::Propagator,
    metrics::{MetricsRegistry, OTHER_METHOD},
    request_id::{self, X_REQUEST_ID},
    trace::propagation::composite,
    Telemetry,
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
#[derive(Clone)]
pub struct ClientMiddleware {
    propagator: Arc<dyn TextMapPropagator + Send + Sync>,
    context_hosts: Arc<ContextHosts>,
    request_id_header: HeaderName,
    pub(super) table: Option<Arc<PeerTable>>,
}

impl fmt::Debug for ClientMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientMiddleware")
            .field("context_hosts", &self.context_hosts)
            .field("request_id_header", &self.request_id_header)
            .field("max_peers", &self.table.as_ref().map(|t| t.max_peers))
            .finish_non_exhaustive()
    }
}

impl ClientMiddleware {
    /// A middleware recording into `registry` with metric names behind `prefix`, registered
    /// under the `client` component; propagating `tracecontext` and `baggage`, `tracestate`
    /// and `baggage` to no host; forwarding request ids in `x-request-id`; at most 1000 peers.
    pub fn new(registry: &MetricsRegistry, prefix: &str) -> Self {
        let names = ClientMetricNames::with_prefix(prefix);
        registry.register_component(CLIENT_COMPONENT, names.families());
        Self {
            propagator: Arc::new(composite(&[Propagator::TraceContext, Propagator::Baggage])),
            context_hosts: Arc::default(),
            request_id_header: X_REQUEST_ID,
            table: Some(PeerTable::new(
                Arc::new(Families::new(registry.recorder(), &names)),
                DEFAULT_MAX_PEERS,
            )),
        }
    }

    /// A middleware configured from `telemetry`: its registry, `metric` prefix (recording
    /// nothing when `metric.enabled` is false), `trace.propagators` and `request_id.header`.
    pub fn from_telemetry(telemetry: &Telemetry) -> Self {
        let config = telemetry.config();
        let mut middleware = Self::new(telemetry.registry(), &config.metric.prefix())
            .with_propagators(&config.trace.propagators)
            .with_request_id_header(config.request_id.header.clone());
        if !config.metric.enabled {
            middleware.table = None;
        }
        middleware
    }

    /// Writes the trace context in these formats. Defaults to `tracecontext` and `baggage`.
    pub fn with_propagators(mut self, propagators: &[Propagator]) -> Self {
        self.propagator = Arc::new(composite(propagators));
        self
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

    /// Caps the distinct `peer` label values (hosts and operations together); calls to further
    /// peers are labelled `_overflow` and counted in `http_client_peer_overflow_total`.
    /// Defaults to 1000.
    pub fn with_max_peers(mut self, max: usize) -> Self {
        if let Some(table) = &self.table {
            self.table = Some(PeerTable::new(table.families.clone(), max));
        }
        self
    }

    /// Builds a client from `builder` with this middleware. With the `tls` feature, installs
    /// rustls' ring provider first unless a provider is installed.
    ///
    /// Fails as [`reqwest::ClientBuilder::build`] does.
    pub fn build_client(
        self,
        builder: reqwest::ClientBuilder,
    ) -> Result<ClientWithMiddleware, reqwest::Error> {
        crate::trace::ensure_tls_provider();
        let client = builder.build()?;
        Ok(reqwest_middleware::ClientBuilder::new(client)
            .with(self)
            .build())
    }

    /// Opens the span, writes the headers and counts the call in flight.
    fn start(&self, req: &mut Request, extensions: &Extensions) -> (Span, Option<InFlight>) {
        let method = req.method();
        let known = known_method(method);
        let span = tracing::info_span!(
            target: "towerscope::client",
            "HTTP client request",
            otel.name = known.map_or("HTTP", |(_, m)| m),
            otel.kind = "client",
            otel.status_code = Empty,
            otel.status_description = Empty,
            http.request.method = known.map_or(OTHER_METHOD, |(_, m)| m),
            url.full = Empty,
            server.address = Empty,
            server.port = Empty,
            http.response.status_code = Empty,
            network.protocol.version = Empty,
            "error.type" = Empty,
            operation = Empty,
        );
        let operation = extensions.get::<ClientOperation>();
        let url = req.url();
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or_default();
        let cx = if span.is_disabled() {
            // Filtered out: still pass on the caller's context.
            Span::current().context()
        } else {
            span.record("url.full", &*redact_url(url));
            span.record("server.address", unbracketed(host));
            span.record("server.port", i64::from(port));
            if let Some(op) = operation {
                span.record("operation", op.as_str());
            }
            span.context()
        };
        let metrics = self.table.as_ref().map(|table| {
            let peer = match operation {
                Some(op) => PeerRef::Operation(op.as_str()),
                None => PeerRef::Host(host, port),
            };
            InFlight::start(table.series(peer, known.map_or(METHODS, |(i, _)| i)))
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
        (span, metrics)
    }
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
        let (span, metrics) = self.start(&mut req, extensions);
        let inner = {
            let _entered = span.enter();
            next.run(req, extensions)
        };
        Box::pin(ResponseFuture {
            inner,
            span: Some(span),
            metrics,
        })
    }
}
