//! Instrumentation of outgoing HTTP calls made with reqwest: a client span per call, the trace
//! context and request id passed on, and client metrics named like the server's.
//!
//! [`ClientMiddleware`] is a [`reqwest_middleware::Middleware`]; [`instrumented_client`] builds
//! a client with it, configured from a [`Telemetry`](super::Telemetry), and returns a
//! [`ClientWithMiddleware`], re-exported here so that naming it needs no `reqwest-middleware`
//! dependency. Per call it:
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
//!   | `error.type` | the status code for 4xx and 5xx; `timeout`, `connect`, `request` (other reqwest failures) or `_OTHER` (errors or panics of other middleware) when no response came |
//!   | `otel.status_code` | `ERROR` for 5xx and failures, with the failure's cause as the description |
//!   | `operation` | the [`ClientOperation`] of the call, if any |
//!
//!   A 4xx response gets an `error.type` but no error status: registries answer `HEAD` probes
//!   with 404 all day.
//! - writes the span's context on the request with the configured propagators. `traceparent`
//!   (and Jaeger's `uber-trace-id`) go to every host; `tracestate` and `baggage`, which may
//!   carry tenant or user data, only to the hosts named with
//!   [`with_context_hosts`](ClientMiddleware::with_context_hosts). Empty values are not sent.
//! - forwards the id of the request being handled ([`request_id::current`](crate::request_id::current)) in the request id
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
//!   status, or `timeout`, `connect` or `error` when no response came (`error` also when a
//!   middleware below this one panicked), or `cancelled` when the caller dropped the call
//!   before its response.
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
//! From a started [`Telemetry`](crate::Telemetry): [`instrumented_client`]`(&telemetry)`, or
//! `ClientMiddleware::from_telemetry(&telemetry)` added to a reqwest-middleware client of your
//! own (the registry, the prefix `{metric.namespace}_{metric.subsystem}_` and the propagators
//! of the telemetry). reqwest is re-exported as [`reqwest`], for
//! [`instrumented_client_with`]'s builder. See
//! [`examples/client.rs`](https://github.com/towerscope/towerscope/blob/main/examples/client.rs)
//! (`cargo run --example client`): three calls to a loopback server, one named with
//! [`ClientOperation`], and the `http_client_*` series they make.
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
//! let client = ClientMiddleware::new(&registry)
//!     .with_prefix("harbor_core_")
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

mod future;
mod metrics;
mod middleware;
mod propagation;
mod redact;

pub use self::{
    metrics::{ClientMetricNames, CLIENT_COMPONENT, DEFAULT_MAX_PEERS},
    middleware::{ClientMiddleware, ClientOperation},
    redact::{redact_url, REDACTED, REDACTED_QUERY_PARAMS},
};
/// The reqwest crate towerscope builds its clients with, re-exported so that
/// [`instrumented_client_with`] takes a `towerscope::client::reqwest::Client::builder()`
/// without a reqwest dependency of the application's own (with one, the versions must match:
/// reqwest 0.13).
pub use reqwest;
/// The client [`instrumented_client`] and [`ClientMiddleware::build_client`] return.
pub use reqwest_middleware::ClientWithMiddleware;

/// A client with `middleware`, built like `reqwest::Client::new()`; with a
/// [`Telemetry`](super::Telemetry), `instrumented_client(&telemetry)` uses
/// [`ClientMiddleware::from_telemetry`].
///
/// # Panics
///
/// As `reqwest::Client::new()`, if the TLS backend cannot be initialized.
pub fn instrumented_client(middleware: impl Into<ClientMiddleware>) -> ClientWithMiddleware {
    // Without user input the default builder only fails if TLS cannot start, which is
    // `reqwest::Client::new()`'s panic too.
    instrumented_client_with(reqwest::Client::builder(), middleware)
        .unwrap_or_else(|e| panic!("cannot build the reqwest client: {e}"))
}

/// A client built from `builder` (timeouts, proxies, ...) with `middleware`; with a
/// [`Telemetry`](super::Telemetry), `instrumented_client_with(builder, &telemetry)` uses
/// [`ClientMiddleware::from_telemetry`]. The builder is reqwest's, re-exported as
/// [`towerscope::client::reqwest`](reqwest).
///
/// ```
/// use std::time::Duration;
/// use towerscope::{client::{instrumented_client_with, reqwest}, Config, Telemetry};
///
/// let telemetry = Telemetry::init_local(&Config::default()).unwrap();
/// let builder = reqwest::Client::builder().timeout(Duration::from_secs(5));
/// let client = instrumented_client_with(builder, &telemetry).unwrap();
/// # drop(client);
/// ```
///
/// Fails as [`reqwest::ClientBuilder::build`] does.
pub fn instrumented_client_with(
    builder: reqwest::ClientBuilder,
    middleware: impl Into<ClientMiddleware>,
) -> Result<ClientWithMiddleware, reqwest::Error> {
    middleware.into().build_client(builder)
}
