//! Instrumentation of outgoing HTTP calls made with reqwest: a client span per call, the trace
//! context and request id passed on, and client metrics named like the server's.
//!
//! [`ClientMiddleware`] is a [`reqwest_middleware::Middleware`]; [`instrumented_client`] builds
//! a client with it, configured from a [`Telemetry`]. Per call it:
//!
//! - opens a span, child of the current one, following the stable HTTP client semantic
//!   conventions:
//!
//!   | field | value |
//!   |---|---|
//!   | name (`otel.name`) | the method, `HTTP` for methods outside the standard set |
//!   | `otel.kind` | `client` |
//!   | `http.request.method` | the method, or `_OTHER` |
//!   | `url.full` | the URL, credentials and signature-like query values replaced by `REDACTED` ([`redact_url`]) |
//!   | `server.address`, `server.port` | host and port of the URL (the scheme's default port when none is given) |
//!   | `http.response.status_code`, `network.protocol.version` | from the response |
//!   | `error.type` | the status code for 4xx and 5xx; `timeout`, `connect`, `request` (other reqwest failures) or `_OTHER` (errors of other middleware) when no response came |
//!   | `otel.status_code` | `ERROR` for 5xx and failures, with the failure's cause as the description |
//!   | `operation` | the [`ClientOperation`] of the call, if any |
//!
//!   A 4xx response gets an `error.type` but no error status: registries answer `HEAD` probes
//!   with 404 all day.
//! - writes the span's context on the request with the configured propagators. `traceparent`
//!   (and Jaeger's `uber-trace-id`) go to every host; `tracestate` and `baggage`, which may
//!   carry tenant or user data, only to the hosts named with
//!   [`with_context_hosts`](ClientMiddleware::with_context_hosts). Empty values are not sent.
//! - forwards the id of the request being handled ([`request_id::current`]) in the request id
//!   header, unless the call already has one.
//! - records, after the `{namespace}_{subsystem}_` prefix, under the `?comp=client` component:
//!
//!   | family | type | labels |
//!   |---|---|---|
//!   | `http_client_inflight_requests` | gauge | `method`, `peer` |
//!   | `http_client_request_duration_seconds` | summary or histogram (as the registry's durations) | `method`, `peer` |
//!   | `http_client_request_total` | counter | `method`, `code`, `peer` |
//!   | `http_client_peer_overflow_total` | counter | |
//!
//!   `peer` is the URL's `host:port`, or the call's [`ClientOperation`]; distinct peers are
//!   capped ([`with_max_peers`](ClientMiddleware::with_max_peers)), the rest share `_overflow`.
//!   `method` is one of the eight RFC 9110 methods or PATCH, else `_OTHER`. `code` is the
//!   status, or `timeout`, `connect` or `error` when no response came, or `cancelled` when the
//!   caller dropped the call before its response.
//!
//! The span, the duration and the in-flight count end when the response headers arrive:
//! reading the body is the caller's business, and a body may be streamed for minutes.
//!
//! Where the middleware sits in the stack matters: added after a retry middleware, every
//! attempt is a span and a count; added before it, the whole call is one.
//!
//! The span exporters (OTLP over HTTP, the Jaeger collector) make their calls with a plain
//! reqwest client, never through this middleware, so exporting spans never makes spans.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use towerscope::client::{ClientMiddleware, ClientOperation};
//! use towerscope::{config::MetricConfig, metrics::MetricsRegistry};
//!
//! let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
//! // `towerscope::client::instrumented_client(&telemetry)` does this from a `Telemetry`.
//! let client = ClientMiddleware::new(&registry, "harbor_core_")
//!     .with_context_hosts(["registry.internal"])
//!     .build_client(reqwest::Client::builder().timeout(Duration::from_secs(30)))
//!     .unwrap();
//!
//! // In a handler: counted as peer="getManifest" rather than peer="registry.internal:443".
//! let _call = client
//!     .get("https://registry.internal/v2/library/alpine/manifests/3")
//!     .with_extension(ClientOperation::new("getManifest"));
//! // .send().await?
//!
//! assert_eq!(registry.components(), ["client"]);
//! ```

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    error::Error as StdError,
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock, PoisonError, RwLock},
    task::{ready, Context, Poll},
    time::Instant,
};

use http::{Extensions, HeaderMap, HeaderName, Method};
use metrics::{
    Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, SharedString, Unit,
};
use opentelemetry::propagation::{Injector, TextMapPropagator};
use percent_encoding::percent_decode_str;
use reqwest::{Request, Response, Url};
use reqwest_middleware::{ClientWithMiddleware, Middleware, Next};
use tracing::{field::Empty, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    config::Propagator,
    metrics::{MetricsRegistry, OTHER_METHOD, OVERFLOW_OPERATION},
    request_id::{self, X_REQUEST_ID},
    trace::propagation::{composite, HeaderInjector},
    Telemetry,
};

/// The `?comp=` component the client families are registered under.
pub const CLIENT_COMPONENT: &str = "client";

/// The default cap on distinct `peer` label values.
pub const DEFAULT_MAX_PEERS: usize = 1000;

/// What redacted credentials and query values are replaced with.
pub const REDACTED: &str = "REDACTED";

/// Query parameters whose values [`redact_url`] replaces (compared case-insensitively): the
/// signatures and credentials of pre-signed S3, GCS and Azure URLs, and bearer tokens.
pub const REDACTED_QUERY_PARAMS: [&str; 9] = [
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "X-Goog-Signature",
    "AWSAccessKeyId",
    "sig",
    "signature",
    "token",
    "access_token",
];

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

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

/// The names of the client families behind a prefix.
///
/// ```
/// use towerscope::client::ClientMetricNames;
///
/// let names = ClientMetricNames::with_prefix("harbor_core_");
/// assert_eq!(names.total, "harbor_core_http_client_request_total");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMetricNames {
    /// Gauge of calls in flight, `{method, peer}`.
    pub inflight: String,
    /// Summary (or histogram) of call durations in seconds, `{method, peer}`.
    pub duration: String,
    /// Counter of finished calls, `{method, code, peer}`.
    pub total: String,
    /// Counter of calls labelled `peer="_overflow"`.
    pub overflow: String,
}

impl ClientMetricNames {
    /// The names behind `prefix` (which ends in `_` unless empty).
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            inflight: format!("{prefix}http_client_inflight_requests"),
            duration: format!("{prefix}http_client_request_duration_seconds"),
            total: format!("{prefix}http_client_request_total"),
            overflow: format!("{prefix}http_client_peer_overflow_total"),
        }
    }

    /// The family names, for component registration.
    pub fn families(&self) -> [&str; 4] {
        [&self.inflight, &self.duration, &self.total, &self.overflow]
    }
}

/// Middleware instrumenting reqwest calls; see the [module docs](self).
#[derive(Clone)]
pub struct ClientMiddleware {
    propagator: Arc<dyn TextMapPropagator + Send + Sync>,
    context_hosts: Arc<ContextHosts>,
    request_id_header: HeaderName,
    table: Option<Arc<PeerTable>>,
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

/// A client with [`ClientMiddleware::from_telemetry`], built like `reqwest::Client::new()`.
///
/// # Panics
///
/// As `reqwest::Client::new()`, if the TLS backend cannot be initialized.
pub fn instrumented_client(telemetry: &Telemetry) -> ClientWithMiddleware {
    // Without user input the default builder only fails if TLS cannot start, which is
    // `reqwest::Client::new()`'s panic too.
    instrumented_client_with(reqwest::Client::builder(), telemetry)
        .unwrap_or_else(|e| panic!("cannot build the reqwest client: {e}"))
}

/// A client built from `builder` (timeouts, proxies, ...) with
/// [`ClientMiddleware::from_telemetry`].
///
/// Fails as [`reqwest::ClientBuilder::build`] does.
pub fn instrumented_client_with(
    builder: reqwest::ClientBuilder,
    telemetry: &Telemetry,
) -> Result<ClientWithMiddleware, reqwest::Error> {
    ClientMiddleware::from_telemetry(telemetry).build_client(builder)
}

/// `url` as recorded in `url.full`: a username and password replaced by `REDACTED`, and the
/// values of the [`REDACTED_QUERY_PARAMS`] too. Borrowed when there is nothing to redact.
///
/// ```
/// use towerscope::client::redact_url;
///
/// let url = "https://u:p@s3.example/b?X-Amz-Signature=abc&partNumber=1".parse().unwrap();
/// assert_eq!(
///     redact_url(&url),
///     "https://REDACTED:REDACTED@s3.example/b?X-Amz-Signature=REDACTED&partNumber=1"
/// );
/// ```
pub fn redact_url(url: &Url) -> Cow<'_, str> {
    let userinfo = !url.username().is_empty() || url.password().is_some();
    let query = url
        .query()
        .filter(|q| q.split('&').any(|pair| is_redacted_param(param_name(pair))));
    if !userinfo && query.is_none() {
        return Cow::Borrowed(url.as_str());
    }
    let mut redacted = url.clone();
    if userinfo {
        // Only fails for URLs without a host, which have no userinfo.
        let _ = redacted.set_username(REDACTED);
        if url.password().is_some() {
            let _ = redacted.set_password(Some(REDACTED));
        }
    }
    if let Some(query) = query {
        let mut out = String::with_capacity(query.len());
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            let name = param_name(pair);
            if is_redacted_param(name) {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            } else {
                out.push_str(pair);
            }
        }
        redacted.set_query(Some(&out));
    }
    Cow::Owned(redacted.into())
}

fn param_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(name, _)| name)
}

fn is_redacted_param(name: &str) -> bool {
    let name = percent_decode_str(name).decode_utf8_lossy();
    REDACTED_QUERY_PARAMS
        .iter()
        .any(|p| p.eq_ignore_ascii_case(&name))
}

fn unbracketed(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The number of standard methods; their indexes are `0..METHODS`, `_OTHER` is `METHODS`.
const METHODS: usize = 9;

/// The label index and name of a method of the standard set.
fn known_method(method: &Method) -> Option<(usize, &'static str)> {
    Some(match method.as_str() {
        "GET" => (0, "GET"),
        "HEAD" => (1, "HEAD"),
        "POST" => (2, "POST"),
        "PUT" => (3, "PUT"),
        "DELETE" => (4, "DELETE"),
        "CONNECT" => (5, "CONNECT"),
        "OPTIONS" => (6, "OPTIONS"),
        "TRACE" => (7, "TRACE"),
        "PATCH" => (8, "PATCH"),
        _ => return None,
    })
}

/// The hosts allowed to receive `tracestate` and `baggage`.
#[derive(Debug, Default)]
struct ContextHosts {
    exact: HashSet<String>,
    /// `.example.com` for `*.example.com`.
    suffixes: Vec<String>,
}

impl ContextHosts {
    fn new(hosts: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let mut this = Self::default();
        for host in hosts {
            let host = host.into().trim().to_ascii_lowercase();
            match host.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') => this.suffixes.push(suffix.to_owned()),
                _ => {
                    this.exact.insert(unbracketed(&host).to_owned());
                }
            }
        }
        this
    }

    /// `host` is a URL's host: lowercase when it is a name (the URL parser lowercases them).
    fn allows(&self, host: &str) -> bool {
        if self.exact.is_empty() && self.suffixes.is_empty() {
            return false;
        }
        let host = unbracketed(host);
        self.exact.contains(host)
            || self
                .suffixes
                .iter()
                .any(|s| host.len() > s.len() && host.ends_with(s.as_str()))
    }
}

/// Writes only non-empty values, and only `traceparent`/`uber-trace-id` unless the host may
/// have the full context.
struct FilteredInjector<'a> {
    headers: &'a mut HeaderMap,
    full_context: bool,
}

impl Injector for FilteredInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let everywhere =
            key.eq_ignore_ascii_case("traceparent") || key.eq_ignore_ascii_case("uber-trace-id");
        if value.is_empty() || !(everywhere || self.full_context) {
            return;
        }
        HeaderInjector(&mut *self.headers).set(key, value);
    }
}

/// How a call without a response failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Timeout,
    Connect,
    Request,
    Other,
}

impl Failure {
    fn of(err: &reqwest_middleware::Error) -> Self {
        let reqwest = match err {
            reqwest_middleware::Error::Reqwest(e) => Some(e),
            // Another middleware (a retry) may wrap reqwest's error.
            reqwest_middleware::Error::Middleware(e) => {
                e.chain().find_map(|e| e.downcast_ref::<reqwest::Error>())
            }
        };
        match reqwest {
            Some(e) if e.is_timeout() => Self::Timeout,
            Some(e) if e.is_connect() => Self::Connect,
            Some(_) => Self::Request,
            None => Self::Other,
        }
    }

    /// The span's `error.type`.
    fn error_type(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Request => "request",
            Self::Other => "_OTHER",
        }
    }
}

/// The deepest cause of `err`: the one that says what went wrong ("Connection refused"),
/// without the URL reqwest's own message carries.
fn cause(err: &reqwest_middleware::Error) -> Option<String> {
    let mut source = err.source()?;
    while let Some(next) = source.source() {
        source = next;
    }
    Some(source.to_string())
}

/// The `code` label of a finished call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    Status(u16),
    Timeout,
    Connect,
    Error,
    Cancelled,
}

impl Code {
    fn label(self) -> SharedString {
        match self {
            Self::Status(code) => SharedString::from(code.to_string()),
            Self::Timeout => SharedString::const_str("timeout"),
            Self::Connect => SharedString::const_str("connect"),
            Self::Error => SharedString::const_str("error"),
            Self::Cancelled => SharedString::const_str("cancelled"),
        }
    }
}

/// Where series are registered, and under which names.
struct Families {
    recorder: Arc<dyn Recorder + Send + Sync>,
    inflight: SharedString,
    duration: SharedString,
    total: SharedString,
    overflowed: Counter,
}

impl fmt::Debug for Families {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Families")
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl Families {
    fn new(recorder: Arc<dyn Recorder + Send + Sync>, names: &ClientMetricNames) -> Self {
        recorder.describe_gauge(
            names.inflight.clone().into(),
            None,
            "Outgoing HTTP requests in flight, by method and peer.".into(),
        );
        recorder.describe_histogram(
            names.duration.clone().into(),
            Some(Unit::Seconds),
            "Outgoing HTTP request durations in seconds until the response headers arrived, by method and peer.".into(),
        );
        recorder.describe_counter(
            names.total.clone().into(),
            None,
            "Finished outgoing HTTP requests, by method, status code (or timeout, connect, error, cancelled) and peer.".into(),
        );
        recorder.describe_counter(
            names.overflow.clone().into(),
            None,
            "Outgoing HTTP requests labelled peer=\"_overflow\" because the cap on distinct peers was reached.".into(),
        );
        let overflowed =
            recorder.register_counter(&Key::from_name(names.overflow.clone()), &METADATA);
        Self {
            recorder,
            inflight: names.inflight.clone().into(),
            duration: names.duration.clone().into(),
            total: names.total.clone().into(),
            overflowed,
        }
    }
}

/// The handles of one (peer, method).
#[derive(Debug)]
struct Series {
    inflight: Gauge,
    duration: Histogram,
    labels: [Label; 2],
    totals: RwLock<Vec<(Code, Counter)>>,
    families: Arc<Families>,
}

impl Series {
    fn new(families: &Arc<Families>, method: &'static str, peer: SharedString) -> Self {
        let labels = [
            Label::new("method", SharedString::const_str(method)),
            Label::new("peer", peer),
        ];
        let r = &families.recorder;
        let key = |name: &SharedString| Key::from_parts(name.clone(), labels.to_vec());
        Self {
            inflight: r.register_gauge(&key(&families.inflight), &METADATA),
            duration: r.register_histogram(&key(&families.duration), &METADATA),
            labels,
            totals: RwLock::new(Vec::new()),
            families: families.clone(),
        }
    }

    fn count(&self, code: Code) {
        let find = |totals: &[(Code, Counter)]| {
            totals
                .iter()
                .find(|(c, _)| *c == code)
                .map(|(_, counter)| counter.increment(1))
        };
        if find(&self.totals.read().unwrap_or_else(PoisonError::into_inner)).is_some() {
            return;
        }
        let mut totals = self.totals.write().unwrap_or_else(PoisonError::into_inner);
        if find(&totals).is_some() {
            return;
        }
        let [method, peer] = self.labels.clone();
        let key = Key::from_parts(
            self.families.total.clone(),
            vec![method, Label::new("code", code.label()), peer],
        );
        let counter = self.families.recorder.register_counter(&key, &METADATA);
        counter.increment(1);
        totals.push((code, counter));
    }
}

/// The series of one peer label, by method index.
#[derive(Debug)]
struct Peer {
    label: SharedString,
    by_method: [OnceLock<Arc<Series>>; METHODS + 1],
}

impl Peer {
    fn new(label: SharedString) -> Arc<Self> {
        Arc::new(Self {
            label,
            by_method: std::array::from_fn(|_| OnceLock::new()),
        })
    }
}

/// A call's peer before it is resolved to a label.
#[derive(Debug, Clone, Copy)]
enum PeerRef<'a> {
    Host(&'a str, u16),
    Operation(&'a str),
}

#[derive(Debug, Default)]
struct Peers {
    /// host -> (port, peer): looked up without formatting `host:port`.
    hosts: HashMap<String, Vec<(u16, Arc<Peer>)>, foldhash::fast::RandomState>,
    operations: HashMap<String, Arc<Peer>, foldhash::fast::RandomState>,
    len: usize,
}

impl Peers {
    fn get(&self, peer: PeerRef<'_>) -> Option<&Arc<Peer>> {
        match peer {
            PeerRef::Host(host, port) => self
                .hosts
                .get(host)?
                .iter()
                .find_map(|(p, peer)| (*p == port).then_some(peer)),
            PeerRef::Operation(name) => self.operations.get(name),
        }
    }
}

/// The per-middleware cache of series, with the cap on distinct peers.
#[derive(Debug)]
struct PeerTable {
    families: Arc<Families>,
    max_peers: usize,
    peers: RwLock<Peers>,
    overflow: OnceLock<Arc<Peer>>,
}

impl PeerTable {
    fn new(families: Arc<Families>, max_peers: usize) -> Arc<Self> {
        Arc::new(Self {
            families,
            max_peers: max_peers.max(1),
            peers: RwLock::default(),
            overflow: OnceLock::new(),
        })
    }

    /// The handles of (`peer`, method at `method_index`), registered on first use.
    fn series(&self, peer: PeerRef<'_>, method_index: usize) -> Arc<Series> {
        let peer = self.peer(peer);
        let method = method_index.min(METHODS);
        peer.by_method[method]
            .get_or_init(|| {
                let label = KNOWN_METHOD_LABELS.get(method).copied();
                Arc::new(Series::new(
                    &self.families,
                    label.unwrap_or(OTHER_METHOD),
                    peer.label.clone(),
                ))
            })
            .clone()
    }

    fn peer(&self, peer: PeerRef<'_>) -> Arc<Peer> {
        if let Some(found) = self
            .peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(peer)
        {
            return found.clone();
        }
        let mut peers = self.peers.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = peers.get(peer) {
            return found.clone();
        }
        if peers.len >= self.max_peers {
            drop(peers);
            self.families.overflowed.increment(1);
            return self
                .overflow
                .get_or_init(|| Peer::new(SharedString::const_str(OVERFLOW_OPERATION)))
                .clone();
        }
        peers.len += 1;
        match peer {
            PeerRef::Host(host, port) => {
                let new = Peer::new(SharedString::from(format!("{host}:{port}")));
                peers
                    .hosts
                    .entry(host.to_owned())
                    .or_default()
                    .push((port, new.clone()));
                new
            }
            PeerRef::Operation(name) => {
                let new = Peer::new(SharedString::from(name.to_owned()));
                peers.operations.insert(name.to_owned(), new.clone());
                new
            }
        }
    }
}

const KNOWN_METHOD_LABELS: [&str; METHODS] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// A call in flight: counted out when it finishes, or as `cancelled` when dropped before.
struct InFlight {
    series: Arc<Series>,
    start: Instant,
    done: bool,
}

impl InFlight {
    fn start(series: Arc<Series>) -> Self {
        series.inflight.increment(1.0);
        Self {
            series,
            start: Instant::now(),
            done: false,
        }
    }

    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.series.inflight.decrement(1.0);
        self.series
            .duration
            .record(self.start.elapsed().as_secs_f64());
        self.series.count(code);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

type BoxFuture<'a> =
    Pin<Box<dyn Future<Output = reqwest_middleware::Result<Response>> + Send + 'a>>;

/// The future of one call: polls the rest of the stack inside the span, then records the
/// outcome and ends the span.
struct ResponseFuture<'a> {
    inner: BoxFuture<'a>,
    span: Option<Span>,
    metrics: Option<InFlight>,
}

impl Future for ResponseFuture<'_> {
    type Output = reqwest_middleware::Result<Response>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let result = {
            let _entered = this.span.as_ref().map(Span::enter);
            ready!(this.inner.as_mut().poll(cx))
        };
        let failure = result.as_ref().err().map(Failure::of);
        if let Some(mut metrics) = this.metrics.take() {
            metrics.finish(match (&result, failure) {
                (Ok(res), _) => Code::Status(res.status().as_u16()),
                (Err(_), Some(Failure::Timeout)) => Code::Timeout,
                (Err(_), Some(Failure::Connect)) => Code::Connect,
                (Err(_), _) => Code::Error,
            });
        }
        // Dropping the span here ends it when the headers arrived.
        if let Some(span) = this.span.take() {
            match &result {
                Ok(res) => {
                    let status = res.status();
                    span.record("http.response.status_code", i64::from(status.as_u16()));
                    span.record("network.protocol.version", protocol_version(res.version()));
                    if status.is_client_error() || status.is_server_error() {
                        span.record("error.type", status.as_str());
                    }
                    if status.is_server_error() {
                        span.record("otel.status_code", "ERROR");
                    }
                }
                Err(err) => {
                    span.record("error.type", failure.map_or("_OTHER", Failure::error_type));
                    span.record("otel.status_code", "ERROR");
                    if let Some(cause) = cause(err) {
                        span.record("otel.status_description", cause);
                    }
                }
            }
        }
        Poll::Ready(result)
    }
}

fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MetricConfig;

    fn url(s: &str) -> Url {
        s.parse().unwrap()
    }

    #[test]
    fn clean_urls_are_borrowed() {
        let u = url("https://registry.example:8443/v2/x/blobs/sha256:1?n=10&last=a");
        assert!(matches!(redact_url(&u), Cow::Borrowed(s) if s == u.as_str()));
    }

    #[test]
    fn credentials_and_signature_values_are_redacted() {
        for (given, expected) in [
            ("http://user@h/", "http://REDACTED@h/"),
            ("http://user:pw@h/p", "http://REDACTED:REDACTED@h/p"),
            (
                "https://s3.example/b/k?X-Amz-Credential=AK%2F1&x-amz-signature=f00&X-Amz-Expires=60",
                "https://s3.example/b/k?X-Amz-Credential=REDACTED&x-amz-signature=REDACTED&X-Amz-Expires=60",
            ),
            (
                "https://h/?SIG=1&Signature=2&token&access_token=3&X-Goog-Signature=4&keep=5",
                "https://h/?SIG=REDACTED&Signature=REDACTED&token=REDACTED&access_token=REDACTED&X-Goog-Signature=REDACTED&keep=5",
            ),
            ("https://h/?X%2DAmz%2DSignature=1", "https://h/?X%2DAmz%2DSignature=REDACTED"),
            ("https://h/?tokens=1&not_token=2", "https://h/?tokens=1&not_token=2"),
        ] {
            assert_eq!(redact_url(&url(given)), expected, "{given}");
        }
    }

    #[test]
    fn context_hosts_match_exactly_or_by_wildcard() {
        let hosts = ContextHosts::new(["Registry.Internal", "*.svc.local", "[::1]", "10.0.0.1"]);
        for host in [
            "registry.internal",
            "a.svc.local",
            "a.b.svc.local",
            "[::1]",
            "10.0.0.1",
        ] {
            assert!(hosts.allows(host), "{host}");
        }
        for host in [
            "svc.local",
            "evil-svc.local",
            "registry.internal.evil",
            "10.0.0.10",
        ] {
            assert!(!hosts.allows(host), "{host}");
        }
        assert!(!ContextHosts::default().allows("registry.internal"));
    }

    #[test]
    fn injector_skips_empty_values_and_keeps_context_to_allowed_hosts() {
        let mut headers = HeaderMap::new();
        let mut injector = FilteredInjector {
            headers: &mut headers,
            full_context: false,
        };
        injector.set("traceparent", "00-1-2-01".into());
        injector.set("uber-trace-id", "1:2:0:1".into());
        injector.set("tracestate", "v=1".into());
        injector.set("baggage", "k=v".into());
        assert_eq!(headers.len(), 2);
        let mut injector = FilteredInjector {
            headers: &mut headers,
            full_context: true,
        };
        injector.set("tracestate", String::new());
        injector.set("baggage", "k=v".into());
        assert!(!headers.contains_key("tracestate"));
        assert_eq!(headers["baggage"], "k=v");
    }

    #[test]
    fn series_are_resolved_once_and_peers_capped() {
        let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
        let middleware = ClientMiddleware::new(&registry, "t_").with_max_peers(2);
        let table = middleware.table.unwrap();
        let a = table.series(PeerRef::Host("a", 80), 0);
        assert!(Arc::ptr_eq(&a, &table.series(PeerRef::Host("a", 80), 0)));
        let b = table.series(PeerRef::Operation("op"), 9);
        let c = table.series(PeerRef::Host("a", 81), 0);
        a.count(Code::Status(200));
        a.count(Code::Status(200));
        b.count(Code::Timeout);
        c.count(Code::Connect);
        let text = registry.render();
        for line in [
            r#"t_http_client_request_total{method="GET",code="200",peer="a:80"} 2"#,
            r#"t_http_client_request_total{method="_OTHER",code="timeout",peer="op"} 1"#,
            r#"t_http_client_request_total{method="GET",code="connect",peer="_overflow"} 1"#,
            "t_http_client_peer_overflow_total 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn failures_are_classified() {
        let err = reqwest_middleware::Error::Middleware(std::io::Error::other("boom").into());
        assert_eq!(Failure::of(&err), Failure::Other);
        assert_eq!(known_method(&Method::PATCH), Some((8, "PATCH")));
        assert_eq!(known_method(&Method::from_bytes(b"PURGE").unwrap()), None);
    }
}
