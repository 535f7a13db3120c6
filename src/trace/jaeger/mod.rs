//! A Jaeger span exporter for the OpenTelemetry SDK: agent mode (UDP) or collector mode (HTTP).
//!
//! ```
//! use std::{net::UdpSocket, time::Duration};
//!
//! use opentelemetry::trace::{Tracer, TracerProvider};
//! use opentelemetry_sdk::{trace::SdkTracerProvider, Resource};
//! use towerscope::trace::jaeger::{AgentOptions, JaegerExporter};
//!
//! // A stand-in for the Jaeger agent.
//! let agent = UdpSocket::bind("127.0.0.1:0")?;
//! agent.set_read_timeout(Some(Duration::from_secs(10)))?;
//!
//! let exporter = JaegerExporter::agent(AgentOptions {
//!     host: "127.0.0.1".into(),
//!     port: agent.local_addr()?.port(),
//!     ..AgentOptions::default()
//! })?;
//! let provider = SdkTracerProvider::builder()
//!     .with_resource(Resource::builder().with_service_name("registry").build())
//!     .with_batch_exporter(exporter)
//!     .build();
//! provider.tracer("example").in_span("GET /v2/", |_cx| {});
//! provider.shutdown()?; // flushes the batch
//!
//! let mut datagram = vec![0; 65_535];
//! let len = agent.recv(&mut datagram)?;
//! // A compact-protocol oneway message: protocol id 0x82, then type 4 (ONEWAY) << 5 | version 1.
//! assert_eq!(&datagram[..2], &[0x82, 0x81]);
//! assert!(len <= 65_000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Modes
//!
//! - [`JaegerExporter::agent`] sends `Agent.emitBatch` oneway messages, compact protocol, in
//!   UDP datagrams of at most [`AgentOptions::max_packet_size`] bytes to a Jaeger agent (or the
//!   OpenTelemetry Collector's `jaeger` receiver, `thrift_compact` protocol). An export that
//!   does not fit in one datagram is split over several; a span that cannot fit even alone is
//!   dropped and counted ([`JaegerExporter::dropped_spans`],
//!   [`JaegerExporter::with_dropped_counter`]), never sent truncated.
//! - [`JaegerExporter::collector`] posts a bare `Batch` in the binary protocol to a Jaeger
//!   collector's `/api/traces` (or the `jaeger` receiver's `thrift_http` protocol), with
//!   `Content-Type: application/vnd.apache.thrift.binary` and HTTP basic authentication when
//!   both a username and a password are set. Any 2xx answer is a success.
//!
//! # Blocking
//!
//! `export` does its I/O on the calling thread and returns a future that is already complete:
//! a UDP send in agent mode, an HTTP round trip of at most [`CollectorOptions::timeout`]
//! (plus a grace second) in collector mode. That suits the SDK's default batch span processor,
//! which exports from a thread of its own. With a simple span processor the application's
//! thread blocks for every span. The HTTP client lives on a worker thread of the exporter, so
//! building, using and dropping an exporter inside a tokio runtime is safe.
//!
//! # Mapping
//!
//! The 128-bit trace id becomes `traceIdHigh`/`traceIdLow` and span ids are reinterpreted as
//! signed 64-bit integers; `parentSpanId` is 0 for a root span, and a parent is also sent as a
//! `CHILD_OF` reference, as Jaeger clients do. Times are microseconds since the Unix epoch.
//! Attributes keep their type (string, bool, i64, f64); arrays become a JSON rendering in a
//! string tag. The exporter adds `span.kind` (not for internal spans), `otel.status_code`
//! (`OK`/`ERROR`), `otel.status_description` and `error=true` for an error status,
//! `otel.scope.name`/`otel.scope.version`, and `otel.dropped_{attributes,events,links}_count`
//! when the SDK dropped any. Events become logs (field `event` holds the name), links become
//! `FOLLOWS_FROM` references. The process's service name is the resource's `service.name`
//! (`unknown_service` without one); the other resource attributes become process tags.

mod agent;
mod collector;
mod compact;
mod convert;
mod model;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use reqwest::Url;

use agent::AgentTransport;
use collector::CollectorTransport;
use model::{BatchRef, Process, SpanList};

/// The Jaeger agent's default compact-Thrift UDP port.
const DEFAULT_AGENT_PORT: u16 = 6831;

/// The default largest datagram, the limit Jaeger's own clients use.
const DEFAULT_MAX_PACKET_SIZE: usize = 65_000;

/// The largest [`AgentOptions::max_packet_size`] accepted: the largest UDP payload over IPv4.
const MAX_PACKET_SIZE_LIMIT: usize = agent::MAX_UDP_PAYLOAD;

/// The default collector endpoint.
const DEFAULT_COLLECTOR_ENDPOINT: &str = "http://127.0.0.1:14268/api/traces";

/// The default collector request timeout.
const DEFAULT_COLLECTOR_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to reach a Jaeger agent over UDP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentOptions {
    /// The agent's host name or IP address; resolved again on every export, so a name that
    /// does not resolve is an export error, not a build error. Defaults to `127.0.0.1`.
    pub host: String,
    /// The agent's compact-Thrift port. Defaults to 6831.
    pub port: u16,
    /// The largest datagram sent, in bytes, between 1 and 65,507 (the largest UDP payload
    /// over IPv4). Defaults to 65,000, the limit Jaeger's own clients use.
    pub max_packet_size: usize,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            host: "127.0.0.1".to_owned(),
            port: DEFAULT_AGENT_PORT,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
        }
    }
}

/// Where and how to reach a Jaeger collector over HTTP.
#[derive(Clone, PartialEq, Eq)]
pub struct CollectorOptions {
    /// The collector URL, used as is (no path is appended), e.g.
    /// `http://jaeger:14268/api/traces`. Must be `http` or `https`; `https` needs a reqwest
    /// built with a TLS feature. Defaults to `http://127.0.0.1:14268/api/traces`.
    pub endpoint: String,
    /// The basic-auth username, sent only together with a password. Defaults to `None`.
    pub username: Option<String>,
    /// The basic-auth password, sent only together with a username. Defaults to `None`.
    pub password: Option<String>,
    /// The limit for one export: connect, send and response together. Must not be zero.
    /// Defaults to 10 s.
    pub timeout: Duration,
}

impl Default for CollectorOptions {
    fn default() -> Self {
        CollectorOptions {
            endpoint: DEFAULT_COLLECTOR_ENDPOINT.to_owned(),
            username: None,
            password: None,
            timeout: DEFAULT_COLLECTOR_TIMEOUT,
        }
    }
}

impl fmt::Debug for CollectorOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectorOptions")
            .field(
                "endpoint",
                &Url::parse(&self.endpoint)
                    .map(|url| collector::redacted(&url))
                    .unwrap_or_else(|_| self.endpoint.clone()),
            )
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why a [`JaegerExporter`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JaegerError {
    /// The agent host is empty. Set [`AgentOptions::host`] to the agent's name or address.
    #[error("jaeger agent: the host is empty (set the agent's host name or IP address)")]
    EmptyHost,
    /// The agent port is 0. Set [`AgentOptions::port`] (the agent listens on 6831).
    #[error(
        "jaeger agent: the port is 0 (the agent listens on {})",
        DEFAULT_AGENT_PORT
    )]
    ZeroPort,
    /// [`AgentOptions::max_packet_size`] is 0 or larger than a UDP datagram can be: leave the
    /// default or give a size up to the limit.
    #[error(
        "jaeger agent: max_packet_size {size} is outside 1..={} (the default is {})",
        MAX_PACKET_SIZE_LIMIT,
        DEFAULT_MAX_PACKET_SIZE
    )]
    InvalidPacketSize {
        /// The size that was given.
        size: usize,
    },
    /// [`CollectorOptions::endpoint`] is not a URL with a host. Give a full URL such as
    /// `http://jaeger:14268/api/traces`.
    #[error(
        "jaeger collector: endpoint {endpoint:?} is not a URL: {reason} (give a full URL such \
         as {})",
        DEFAULT_COLLECTOR_ENDPOINT
    )]
    InvalidEndpoint {
        /// The endpoint that was given.
        endpoint: String,
        /// Why it did not parse.
        reason: String,
    },
    /// [`CollectorOptions::endpoint`] is a URL whose scheme is neither `http` nor `https`:
    /// give the collector's `http://` or `https://` URL.
    #[error("jaeger collector: endpoint {endpoint:?} must be http:// or https://")]
    UnsupportedScheme {
        /// The endpoint that was given.
        endpoint: String,
    },
    /// [`CollectorOptions::timeout`] is zero, which would fail every export: leave the
    /// default or give at least a millisecond.
    #[error(
        "jaeger collector: the timeout is zero, which would fail every export (the default is \
         {:?})",
        DEFAULT_COLLECTOR_TIMEOUT
    )]
    ZeroTimeout,
}

enum Transport {
    Agent(AgentTransport),
    Collector(CollectorTransport),
}

/// An OpenTelemetry [`SpanExporter`] that sends spans to Jaeger, as an agent (UDP) or a
/// collector (HTTP) takes them. See the [module docs](self).
pub struct JaegerExporter {
    transport: Transport,
    process: Process,
    dropped_counter: Option<metrics::Counter>,
    is_shutdown: AtomicBool,
}

impl fmt::Debug for JaegerExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("JaegerExporter");
        match &self.transport {
            Transport::Agent(agent) => d.field("agent", agent),
            Transport::Collector(collector) => d.field("collector", collector),
        };
        d.field("service_name", &self.process.service_name)
            .field("dropped_spans", &self.dropped_spans())
            .field("dropped_counter", &self.dropped_counter.is_some())
            .field("is_shutdown", &self.is_shutdown.load(Ordering::Relaxed))
            .finish()
    }
}

impl JaegerExporter {
    /// An exporter that sends `Agent.emitBatch` messages to a Jaeger agent over UDP.
    ///
    /// Nothing is resolved or bound here: the host is resolved and the socket bound on export.
    pub fn agent(options: AgentOptions) -> Result<Self, JaegerError> {
        let AgentOptions {
            host,
            port,
            max_packet_size,
        } = options;
        if host.trim().is_empty() {
            return Err(JaegerError::EmptyHost);
        }
        if port == 0 {
            return Err(JaegerError::ZeroPort);
        }
        if max_packet_size == 0 || max_packet_size > MAX_PACKET_SIZE_LIMIT {
            return Err(JaegerError::InvalidPacketSize {
                size: max_packet_size,
            });
        }
        // `[::1]` is how a user writes an IPv6 literal in a URL; the resolver wants `::1`.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&host)
            .to_owned();
        Ok(Self::with_transport(Transport::Agent(AgentTransport::new(
            host,
            port,
            max_packet_size,
        ))))
    }

    /// An exporter that posts binary-protocol batches to a Jaeger collector over HTTP.
    ///
    /// The endpoint is parsed here; no connection is made until the first export.
    pub fn collector(options: CollectorOptions) -> Result<Self, JaegerError> {
        crate::tls::ensure_tls_provider();
        let CollectorOptions {
            endpoint,
            username,
            password,
            timeout,
        } = options;
        let url = Url::parse(endpoint.trim()).map_err(|e| JaegerError::InvalidEndpoint {
            endpoint: endpoint.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(JaegerError::UnsupportedScheme { endpoint });
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(JaegerError::InvalidEndpoint {
                endpoint,
                reason: "no host".to_owned(),
            });
        }
        if timeout.is_zero() {
            return Err(JaegerError::ZeroTimeout);
        }
        let auth = match (username, password) {
            (Some(u), Some(p)) => Some((u, p)),
            _ => None,
        };
        Ok(Self::with_transport(Transport::Collector(
            CollectorTransport::new(url, auth, timeout),
        )))
    }

    fn with_transport(transport: Transport) -> Self {
        JaegerExporter {
            transport,
            process: convert::default_process(),
            dropped_counter: None,
            is_shutdown: AtomicBool::new(false),
        }
    }

    /// Also counts dropped spans (see [`dropped_spans`](Self::dropped_spans)) on `counter`,
    /// for example one registered as `towerscope_jaeger_dropped_spans_total`.
    ///
    /// By default, dropped spans are only counted in [`dropped_spans`](Self::dropped_spans).
    pub fn with_dropped_counter(mut self, counter: metrics::Counter) -> Self {
        self.dropped_counter = Some(counter);
        self
    }

    /// How many spans were dropped because they could not fit in a datagram even alone
    /// (agent mode; always 0 in collector mode).
    pub fn dropped_spans(&self) -> u64 {
        match &self.transport {
            Transport::Agent(agent) => agent.too_large_dropped(),
            Transport::Collector(_) => 0,
        }
    }

    fn export_now(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if self.is_shutdown.load(Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let spans: Vec<_> = batch.iter().map(convert::span_from_data).collect();
        match &self.transport {
            Transport::Agent(agent) => {
                let report = agent.send(&self.process, spans);
                if report.too_large > 0 {
                    if let Some(counter) = &self.dropped_counter {
                        counter.increment(report.too_large);
                    }
                }
                report.error.map_or(Ok(()), |e| Err(internal_failure(&e)))
            }
            Transport::Collector(collector) => {
                let body = BatchRef {
                    process: &self.process,
                    spans: SpanList::Structs(&spans),
                    seq_no: None,
                    stats: None,
                }
                .encode_binary();
                collector.post(body).map_err(|e| internal_failure(&e))
            }
        }
    }
}

impl SpanExporter for JaegerExporter {
    /// Sends the batch before returning; the returned future is already complete. See
    /// [Blocking](self#blocking).
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        std::future::ready(self.export_now(batch))
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        if self.is_shutdown.swap(true, Ordering::AcqRel) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        if let Transport::Collector(collector) = &self.transport {
            collector.stop();
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.process = convert::process_from_resource(resource);
    }
}

/// The SDK's error type carries a message only: the transport error's, which names its cause.
fn internal_failure(e: &dyn std::error::Error) -> OTelSdkError {
    OTelSdkError::InternalFailure(e.to_string())
}
