//! [`ResolveOperationLayer`]: the stage that resolves a request's operation, once.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use super::{OperationId, OperationResolver, RequestRef};

/// The resolver layers use unless told otherwise: axum's `MatchedPath` with the `axum`
/// feature, nothing (`unknown`) without it.
pub(crate) fn default_resolver() -> Arc<dyn OperationResolver> {
    #[cfg(feature = "axum")]
    {
        Arc::new(super::MatchedPathResolver::new())
    }
    #[cfg(not(feature = "axum"))]
    {
        Arc::new(())
    }
}

/// The operation of `req`: the [`OperationId`] in its extensions, else what `resolver` says,
/// else `unknown`.
pub(crate) fn operation_of<B>(req: &Request<B>, resolver: &dyn OperationResolver) -> OperationId {
    match req.extensions().get::<OperationId>() {
        Some(op) => op.clone(),
        None => resolver
            .resolve(&RequestRef::from(req))
            .unwrap_or_else(OperationId::unknown),
    }
}

/// Layer that resolves each request's operation exactly once and puts it in the request
/// extensions, where the span, the metrics and the handler read the same [`OperationId`].
///
/// It runs whatever the subscriber or the log level: a span that is disabled or filtered out
/// does not change the metrics' `operation` label. An [`OperationId`] already in the
/// extensions (set by an outer layer) is kept. [`ObservabilityLayer`](crate::ObservabilityLayer)
/// puts this stage between the request id and the span.
///
/// ```
/// use http::{Request, Response};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use towerscope::operation::{OperationId, RequestRef, ResolveOperationLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let svc = ServiceBuilder::new()
///     .layer(ResolveOperationLayer::new(|_: &RequestRef<'_>| Some(OperationId::from("ping"))))
///     .service(service_fn(|req: Request<()>| async move {
///         let op = req.extensions().get::<OperationId>().unwrap().clone();
///         Ok::<_, std::convert::Infallible>(Response::new(op.to_string()))
///     }));
/// let res = svc.oneshot(Request::get("/ping").body(()).unwrap()).await.unwrap();
/// assert_eq!(res.into_body(), "ping");
/// # }
/// ```
#[derive(Clone)]
pub struct ResolveOperationLayer {
    resolver: Arc<dyn OperationResolver>,
}

impl fmt::Debug for ResolveOperationLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolveOperationLayer")
            .finish_non_exhaustive()
    }
}

impl Default for ResolveOperationLayer {
    /// With the default resolver (axum's `MatchedPath` with the `axum` feature).
    fn default() -> Self {
        Self::shared(default_resolver())
    }
}

impl ResolveOperationLayer {
    /// A stage resolving with `resolver`.
    pub fn new(resolver: impl OperationResolver) -> Self {
        Self::shared(Arc::new(resolver))
    }

    pub(crate) fn shared(resolver: Arc<dyn OperationResolver>) -> Self {
        Self { resolver }
    }

    /// Resolves the operation of `req` into its extensions, unless one is there already.
    pub(crate) fn resolve_into<B>(&self, req: &mut Request<B>) {
        resolve_into(&*self.resolver, req);
    }
}

/// Puts the operation `resolver` finds for `req` (or `unknown`) into its extensions, unless
/// an [`OperationId`] is there already.
fn resolve_into<B>(resolver: &dyn OperationResolver, req: &mut Request<B>) {
    if req.extensions().get::<OperationId>().is_none() {
        let op = resolver
            .resolve(&RequestRef::from(&*req))
            .unwrap_or_else(OperationId::unknown);
        req.extensions_mut().insert(op);
    }
}

impl<S> Layer<S> for ResolveOperationLayer {
    type Service = ResolveOperation<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResolveOperation {
            inner,
            resolver: self.resolver.clone(),
        }
    }
}

/// Service that resolves the operation; built by [`ResolveOperationLayer`].
#[derive(Clone)]
pub struct ResolveOperation<S> {
    inner: S,
    resolver: Arc<dyn OperationResolver>,
}

impl<S: fmt::Debug> fmt::Debug for ResolveOperation<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolveOperation")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for ResolveOperation<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        resolve_into(&*self.resolver, &mut req);
        self.inner.call(req)
    }
}
