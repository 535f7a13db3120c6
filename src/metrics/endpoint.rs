//! The `/metrics` endpoint: a tower service for any router, and a standalone server.

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tower_service::Service;

use super::registry::{MetricsRegistry, UnknownComponent};
use crate::config::MetricConfig;

/// The content type of the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves a [`MetricsRegistry`] in the Prometheus text format: GET and HEAD only, Harbor's
/// `?comp=NAME` selection (repeatable; an unknown name is a 404), optional bearer token.
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
pub struct MetricsEndpoint {
    registry: MetricsRegistry,
    bearer: Option<Arc<[u8]>>,
}

impl fmt::Debug for MetricsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsEndpoint")
            .field("registry", &self.registry)
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl MetricsEndpoint {
    /// An endpoint serving `registry` without authentication.
    pub fn new(registry: MetricsRegistry) -> Self {
        Self {
            registry,
            bearer: None,
        }
    }

    /// An endpoint with the `metric.bearer_token` of `config`.
    pub fn from_config(config: &MetricConfig, registry: MetricsRegistry) -> Self {
        let endpoint = Self::new(registry);
        match &config.bearer_token {
            Some(token) => endpoint.with_bearer_token(token),
            None => endpoint,
        }
    }

    /// Requires `Authorization: Bearer <token>`; other requests get a 401. Defaults to no
    /// authentication.
    pub fn with_bearer_token(mut self, token: &str) -> Self {
        let mut expected = b"Bearer ".to_vec();
        expected.extend_from_slice(token.as_bytes());
        self.bearer = Some(expected.into());
        self
    }

    /// Answers one request; the future renders on the blocking pool.
    pub fn respond<B>(&self, req: &Request<B>) -> EndpointFuture {
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
        let registry = self.registry.clone();
        let render = move || {
            let names: Vec<&str> = components.iter().map(String::as_str).collect();
            registry.render_components(&names)
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => EndpointFuture {
                state: State::Rendering {
                    task: rt.spawn_blocking(render),
                    head,
                },
            },
            // Outside a tokio runtime there are no async workers to protect: render inline.
            Err(_) => EndpointFuture::ready(rendered(render(), head)),
        }
    }
}

impl<B> Service<Request<B>> for MetricsEndpoint {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = EndpointFuture;

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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

fn rendered(result: Result<String, UnknownComponent>, head: bool) -> Response<Full<Bytes>> {
    match result {
        Ok(text) => {
            let len = text.len();
            let body = if head {
                Bytes::new()
            } else {
                Bytes::from(text)
            };
            let mut res = Response::new(Full::new(body));
            let headers = res.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if head {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            }
            res
        }
        Err(err) => {
            let mut res = Response::new(Full::new(Bytes::from(format!("{err}\n"))));
            *res.status_mut() = StatusCode::NOT_FOUND;
            res
        }
    }
}

/// Response future of [`MetricsEndpoint`].
pub struct EndpointFuture {
    state: State,
}

enum State {
    Ready(Option<Response<Full<Bytes>>>),
    Rendering {
        task: JoinHandle<Result<String, UnknownComponent>>,
        head: bool,
    },
}

impl EndpointFuture {
    fn ready(res: Response<Full<Bytes>>) -> Self {
        Self {
            state: State::Ready(Some(res)),
        }
    }
}

impl fmt::Debug for EndpointFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointFuture").finish_non_exhaustive()
    }
}

impl Future for EndpointFuture {
    type Output = Result<Response<Full<Bytes>>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            State::Ready(res) => Poll::Ready(Ok(res.take().unwrap_or_else(|| {
                plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "polled after completion\n",
                )
            }))),
            State::Rendering { task, head } => {
                let res = match std::task::ready!(Pin::new(task).poll(cx)) {
                    Ok(result) => rendered(result, *head),
                    Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n"),
                };
                Poll::Ready(Ok(res))
            }
        }
    }
}

/// A standalone HTTP/1 server for the metrics endpoint, on `metric.host:metric.port` and
/// `metric.path` (other paths get a 404). Stops on [`shutdown`](Self::shutdown) or drop.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds the configured address and starts serving on the current tokio runtime.
    pub async fn bind(config: &MetricConfig, registry: MetricsRegistry) -> io::Result<Self> {
        Self::bind_endpoint(
            config.socket_addr(),
            &config.path,
            MetricsEndpoint::from_config(config, registry),
        )
        .await
    }

    /// Binds `addr` and serves `endpoint` on `path`.
    pub async fn bind_endpoint(
        addr: SocketAddr,
        path: &str,
        endpoint: MetricsEndpoint,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (stop, mut stopped) = oneshot::channel::<()>();
        let path: Arc<str> = path.into();
        let task = tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        // Out of file descriptors and the like: back off instead of spinning.
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let endpoint = endpoint.clone();
                let path = path.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            if req.uri().path() == &*path {
                                endpoint.respond(&req)
                            } else {
                                EndpointFuture::ready(plain(StatusCode::NOT_FOUND, "not found\n"))
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            local_addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
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
