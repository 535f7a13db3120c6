//! [`MetricsServer`]: the endpoint on a port of its own.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use http::{Request, StatusCode};
use tokio::{
    net::TcpListener,
    sync::{oneshot, Semaphore},
    task::JoinHandle,
};

use super::{
    plain, EndpointFuture, MetricsEndpoint, Refresh, CONNECTION_LIFETIME, DEFAULT_MAX_CONNECTIONS,
    HEADER_READ_TIMEOUT,
};

/// A standalone HTTP/1 server for the metrics endpoint, on `metric.host:metric.port` and
/// `metric.path` (other paths get a 404). Stops on [`shutdown`](Self::shutdown) or drop.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    /// Connection slots ([`DEFAULT_MAX_CONNECTIONS`]).
    connections: Arc<Semaphore>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `endpoint` on `path`, with its [`Refresh`] hook if it has one
    /// (for example [`Telemetry::metrics_endpoint`](crate::Telemetry::metrics_endpoint) with
    /// [`with_refresh`](MetricsEndpoint::with_refresh)).
    pub async fn bind_endpoint<R>(
        addr: SocketAddr,
        path: &str,
        endpoint: MetricsEndpoint<R>,
    ) -> io::Result<Self>
    where
        R: Refresh + Clone + Send + 'static,
        R::Future: Send,
    {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (stop, mut stopped) = oneshot::channel::<()>();
        let path: Arc<str> = path.into();
        let connections = Arc::new(Semaphore::new(DEFAULT_MAX_CONNECTIONS));
        let slots = connections.clone();
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
                // Past the cap the connection is closed at once: slow or idle clients cannot
                // make the process hold more sockets and tasks than this.
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    drop(stream);
                    continue;
                };
                let endpoint = endpoint.clone();
                let path = path.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            if req.uri().path() == &*path {
                                endpoint.respond(&req)
                            } else {
                                EndpointFuture::ready(plain(StatusCode::NOT_FOUND, "not found\n"))
                            }
                        });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
                });
            }
        });
        Ok(Self {
            local_addr,
            connections,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The connections open now (at most [`DEFAULT_MAX_CONNECTIONS`]).
    pub fn open_connections(&self) -> usize {
        DEFAULT_MAX_CONNECTIONS - self.connections.available_permits()
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
