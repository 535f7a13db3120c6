//! The `/metrics` endpoint: a tower service for any router ([`MetricsEndpoint`]), its
//! response future (`future`), the answer's format from the scraper's `Accept` (`negotiate`),
//! and a standalone server (`server`).

mod future;
mod negotiate;
mod server;

pub use future::EndpointFuture;
use future::Render;
use negotiate::{negotiate, rendered, Answer};
pub use negotiate::{CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE};
pub use server::MetricsServer;

use std::{
    any::Any,
    convert::Infallible,
    error::Error as StdError,
    fmt,
    future::{Future, Ready},
    panic::{catch_unwind, AssertUnwindSafe},
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::sync::Semaphore;
use tower_service::Service;

use super::registry::{MetricsRegistry, UnknownComponent};

/// The `tracing` target of a failed or panicked [`Refresh`].
const LOG_TARGET: &str = "towerscope::metrics";

/// Updates computed gauges just before a scrape renders them: the hook of
/// [`MetricsEndpoint::with_refresh`].
///
/// `refresh` is called once per scrape that gets rendered, with the components it asks for
/// (the `?comp=` values, empty for every family), and the endpoint awaits its future before the
/// render moves to the blocking pool, so what it sets is in the same scrape. Requests that are
/// refused (method, bearer token, unknown component) do not call it. It runs only when the
/// endpoint is scraped, never on the request path of the instrumented service.
///
/// A refresh that returns an error or panics does not fail the scrape: it is logged at `warn`
/// (target `towerscope::metrics`) and the registry's current values are rendered. It has no
/// timeout of its own; bound a slow source with `tokio::time::timeout` inside the future.
///
/// Implemented for `()` (nothing to refresh) and for closures `Fn(&[&str]) -> Fut`, where
/// `Fut: Future<Output = Result<(), E>>` and `E` converts into
/// `Box<dyn Error + Send + Sync>`. Annotate the closure's argument (`|components: &[&str]|`);
/// the future must own what it uses, so copy what it needs from `components` before an
/// `async move` block. Blocking work belongs in `tokio::task::spawn_blocking`: the future is
/// polled on an async worker.
pub trait Refresh {
    /// Why a refresh failed; logged, never shown to the scraper.
    type Error: Into<Box<dyn StdError + Send + Sync>>;
    /// The refresh in progress.
    type Future: Future<Output = Result<(), Self::Error>>;

    /// Starts refreshing for a scrape of `components` (empty: every family).
    fn refresh(&self, components: &[&str]) -> Self::Future;
}

impl Refresh for () {
    type Error = Infallible;
    type Future = Ready<Result<(), Infallible>>;

    fn refresh(&self, _: &[&str]) -> Self::Future {
        std::future::ready(Ok(()))
    }
}

impl<F, Fut, E> Refresh for F
where
    F: Fn(&[&str]) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Into<Box<dyn StdError + Send + Sync>>,
{
    type Error = E;
    type Future = Fut;

    fn refresh(&self, components: &[&str]) -> Self::Future {
        self(components)
    }
}

/// Serves a [`MetricsRegistry`] in the Prometheus text format: GET and HEAD only, Harbor's
/// `?comp=NAME` selection (repeatable; an unknown name is a 404), optional bearer token, and an
/// optional [`Refresh`] hook that updates computed gauges before each render.
/// Rendering runs on tokio's blocking pool, off the async worker threads.
///
/// Mount it on any router; with axum: `Router::new().route_service("/metrics", endpoint)`.
///
/// ```
/// use http::Request;
/// use http_body_util::BodyExt;
/// use tower::ServiceExt;
/// use towerscope::{config::MetricConfig, metrics::{MetricsEndpoint, MetricsRegistry}};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
/// metrics::with_local_recorder(&*registry.recorder(), || metrics::counter!("up_total").increment(1));
///
/// let endpoint = MetricsEndpoint::new(registry);
/// let res = endpoint.oneshot(Request::get("/metrics").body(()).unwrap()).await.unwrap();
/// assert_eq!(res.status(), 200);
/// let body = res.into_body().collect().await.unwrap().to_bytes();
/// assert_eq!(body, "# TYPE up_total counter\nup_total 1\n\n");
/// # }
/// ```
#[derive(Clone)]
pub struct MetricsEndpoint<R = ()> {
    registry: MetricsRegistry,
    bearer: Option<Arc<[u8]>>,
    /// Whether a scrape that allows UTF-8 names gets the conventions' own.
    utf8_names: bool,
    refresh: R,
    /// Scrapes refreshed and rendered at once, shared by the clones.
    renders: Arc<Semaphore>,
}

/// Default cap on the scrapes one endpoint (and its clones) refreshes and renders at once;
/// further scrapes wait for a slot. Rendering takes a blocking-pool thread and a core: many
/// scrapes at once must not take them from the service.
pub const DEFAULT_MAX_CONCURRENT_RENDERS: usize = 2;

/// Default cap on the connections the [`MetricsServer`] holds open; further connections are
/// closed as soon as they are accepted.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// How long the [`MetricsServer`] keeps a connection, whatever it does: a client that reads a
/// scrape slowly, or keeps a connection idle, loses it then.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// How long the [`MetricsServer`] waits for a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

impl<R> fmt::Debug for MetricsEndpoint<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsEndpoint")
            .field("registry", &self.registry)
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("refresh", &std::any::type_name::<R>())
            .field("render_slots_free", &self.renders.available_permits())
            .finish()
    }
}

impl MetricsEndpoint {
    /// An endpoint serving `registry` without authentication.
    pub fn new(registry: MetricsRegistry) -> Self {
        Self {
            registry,
            bearer: None,
            utf8_names: false,
            refresh: (),
            renders: Arc::new(Semaphore::new(DEFAULT_MAX_CONCURRENT_RENDERS)),
        }
    }
}

impl<R> MetricsEndpoint<R> {
    /// Requires `Authorization: Bearer <token>`; other requests get a 401. Defaults to no
    /// authentication.
    pub fn with_bearer_token(mut self, token: &str) -> Self {
        let mut expected = b"Bearer ".to_vec();
        expected.extend_from_slice(token.as_bytes());
        self.bearer = Some(expected.into());
        self
    }

    /// Runs `refresh` before each render, to set gauges computed at scrape time (rows in a
    /// database, files on disk); it replaces any earlier hook. See [`Refresh`] for when it runs
    /// and what happens when it fails. Defaults to none: a scrape renders what the registry
    /// holds.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use http::Request;
    /// use http_body_util::BodyExt;
    /// use tower::ServiceExt;
    /// use towerscope::{config::MetricConfig, metrics::{MetricsEndpoint, MetricsRegistry}};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
    /// registry.register_component("queue", ["queue_depth"]);
    /// let recorder = registry.recorder();
    /// let endpoint = MetricsEndpoint::new(registry).with_refresh(move |components: &[&str]| {
    ///     let wanted = components.is_empty() || components.contains(&"queue");
    ///     let recorder = recorder.clone();
    ///     async move {
    ///         if wanted {
    ///             let depth = 7.0; // e.g. `SELECT COUNT(*) FROM queue`, awaited here
    ///             metrics::with_local_recorder(&*recorder, || metrics::gauge!("queue_depth").set(depth));
    ///         }
    ///         Ok::<_, Infallible>(())
    ///     }
    /// });
    ///
    /// let req = Request::get("/metrics?comp=queue").body(()).unwrap();
    /// let body = endpoint.oneshot(req).await.unwrap().into_body().collect().await.unwrap().to_bytes();
    /// assert_eq!(body, "# TYPE queue_depth gauge\nqueue_depth 7\n\n");
    /// # }
    /// ```
    pub fn with_refresh<T: Refresh>(self, refresh: T) -> MetricsEndpoint<T> {
        MetricsEndpoint {
            registry: self.registry,
            bearer: self.bearer,
            utf8_names: self.utf8_names,
            refresh,
            renders: self.renders,
        }
    }

    /// Serves the OpenTelemetry conventions' families (`metric.naming: otel`) under their own
    /// UTF-8 names and attribute keys (`http.server.request.duration`, `http.request.method`)
    /// to a scrape that allows them (`escaping=allow-utf-8` in its `Accept`: Prometheus 3 by
    /// default), stating the escaping in the `Content-Type`; other scrapes get the underscored
    /// names. Defaults to `false`: every scrape gets the underscored names, as the
    /// OpenTelemetry Collector's Prometheus exporter and Prometheus 3's OTLP receiver write them
    /// by default (`metric.utf8_names`).
    pub fn with_utf8_names(mut self, utf8_names: bool) -> Self {
        self.utf8_names = utf8_names;
        self
    }

    /// Refreshes and renders at most `max` (at least 1) scrapes at once; the others wait for a
    /// slot, their refresh hook not yet polled. Defaults to [`DEFAULT_MAX_CONCURRENT_RENDERS`].
    pub fn with_max_concurrent_renders(mut self, max: usize) -> Self {
        self.renders = Arc::new(Semaphore::new(max.max(1)));
        self
    }
}

impl<R: Refresh> MetricsEndpoint<R> {
    /// Answers one request; the future awaits the refresh hook, then renders on the blocking
    /// pool.
    pub fn respond<B>(&self, req: &Request<B>) -> EndpointFuture<R> {
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => {
                let mut res = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
                res.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                return EndpointFuture::ready(res);
            }
        };
        if let Some(expected) = &self.bearer {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .map_or(&[][..], |v| v.as_bytes());
            if !constant_time_eq(given, expected) {
                let mut res = plain(StatusCode::UNAUTHORIZED, "bearer token required\n");
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"metrics\""),
                );
                return EndpointFuture::ready(res);
            }
        }
        let components = components(req.uri().query());
        // Refused before the hook: a 404 is no reason to query a database.
        if !components.is_empty() {
            let known = self.registry.components();
            if let Some(unknown) = components.iter().find(|c| !known.contains(c)) {
                return EndpointFuture::ready(rendered(
                    Err(UnknownComponent(unknown.clone())),
                    head,
                    Answer::default(),
                ));
            }
        }
        let answer = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map_or(Answer::default(), negotiate);
        let answer = if self.utf8_names {
            answer
        } else {
            answer.legacy()
        };
        let names: Vec<&str> = components.iter().map(String::as_str).collect();
        let refresh = match catch_unwind(AssertUnwindSafe(|| self.refresh.refresh(&names))) {
            Ok(future) => Some(future),
            Err(panic) => {
                refresh_panicked(&*panic);
                None
            }
        };
        EndpointFuture::render(
            self.renders.clone(),
            refresh,
            Render::new(self.registry.clone(), components, head, answer),
        )
    }
}

impl<B, R: Refresh> Service<Request<B>> for MetricsEndpoint<R> {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = EndpointFuture<R>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.respond(&req)
    }
}

/// The `comp` values of a query string, percent-decoded.
fn components(query: Option<&str>) -> Vec<String> {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.strip_prefix("comp="))
        .filter(|v| !v.is_empty())
        .map(|v| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

/// Compares in time independent of where the bytes differ (`subtle`); a length difference
/// is not hidden (the token's length is no secret worth a padding scheme).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

fn refresh_failed(err: Box<dyn StdError + Send + Sync>) {
    tracing::warn!(
        target: LOG_TARGET,
        error = %err,
        "refreshing metrics before a scrape failed; rendering the current values"
    );
}

fn refresh_panicked(panic: &(dyn Any + Send)) {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)");
    tracing::warn!(
        target: LOG_TARGET,
        panic = message,
        "refreshing metrics before a scrape panicked; rendering the current values"
    );
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comp_values_are_decoded() {
        assert_eq!(components(None), Vec::<String>::new());
        assert_eq!(components(Some("comp=core")), ["core"]);
        assert_eq!(
            components(Some("x=1&comp=core&comp=job%20service&comp=")),
            ["core", "job service"]
        );
        assert_eq!(components(Some("compx=1&%ff")), Vec::<String>::new());
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"Bearer a", b"Bearer a"));
        assert!(!constant_time_eq(b"Bearer b", b"Bearer a"));
        assert!(!constant_time_eq(b"Bearer", b"Bearer a"));
    }
}
