//! Operation resolution: which API operation a request belongs to.
//!
//! Every request is labelled with an operation, the OpenAPI `operationId` (or an axum route
//! template, or a gRPC method), resolved once per request and shared by the metrics and the span.
//! When nothing resolves, the operation is [`OperationId::UNKNOWN`] (`"unknown"`, Harbor's word).
//!
//! # Example
//!
//! ```
//! use http::{Method, Request};
//! use towerscope::operation::{OperationId, OperationResolver, OperationResolverExt, RequestRef};
//!
//! // A closure is a resolver; `or` chains resolvers, first match wins.
//! let health = |req: &RequestRef<'_>| {
//!     (req.uri.path() == "/health").then(|| OperationId::from("getHealth"))
//! };
//! let ping = |req: &RequestRef<'_>| {
//!     (req.method == Method::GET && req.uri.path() == "/ping").then(|| OperationId::from("ping"))
//! };
//! let resolver = health.or(ping);
//!
//! let req = Request::get("/ping").body(()).unwrap();
//! assert_eq!(resolver.resolve(&RequestRef::from(&req)).unwrap().as_str(), "ping");
//! ```
//!
//! Resolution order inside [`MetricsLayer`](crate::metrics::MetricsLayer) and
//! [`TraceLayer`](crate::trace::TraceLayer): an [`OperationId`] already present in the request
//! extensions (set by an outer layer or a router), then the layer's resolver, then `unknown`.
//! [`ObservabilityLayer`](crate::ObservabilityLayer) resolves once, in its
//! [`ResolveOperationLayer`] stage, before the span and the metrics, so both read the same
//! operation whatever the subscriber. A handler may also put an [`OperationId`] in the
//! *response* extensions, Harbor-style, to override the operation of the request total, the
//! duration and the span's `operation` field.
#![doc = include_str!("docs/operations.md")]

use std::{borrow::Borrow, cell::Cell, fmt, sync::Arc};

#[cfg(feature = "axum")]
use std::collections::HashMap;

use http::{Extensions, HeaderMap, Method, Request, Uri};

mod stage;

pub(crate) use stage::{default_resolver, operation_of};
pub use stage::{ResolveOperation, ResolveOperationLayer};

/// The operation a request belongs to; the value of the `operation` metric label.
///
/// Cheap to clone (a reference-counted string). Insert it into the request or response
/// extensions to set the operation explicitly.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperationId(Arc<str>);

impl OperationId {
    /// The label value of a request whose operation did not resolve: `"unknown"`.
    pub const UNKNOWN: &'static str = "unknown";

    /// Creates an operation id.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The `unknown` operation (shared; cloning it does not allocate).
    pub fn unknown() -> Self {
        static UNKNOWN: std::sync::LazyLock<OperationId> =
            std::sync::LazyLock::new(|| OperationId::from(OperationId::UNKNOWN));
        UNKNOWN.clone()
    }

    /// The operation id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string (a span attribute takes it without a copy).
    pub(crate) fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl fmt::Debug for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for OperationId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for OperationId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for OperationId {
    fn from(id: &str) -> Self {
        Self(Arc::from(id))
    }
}

impl From<String> for OperationId {
    fn from(id: String) -> Self {
        Self(Arc::from(id))
    }
}

thread_local! {
    /// The operation of the request whose future this thread is polling.
    static CURRENT: Cell<Option<OperationId>> = const { Cell::new(None) };
}

/// Runs `f` (one poll of a request's future) with the operation in `slot` as [`current`].
pub(crate) fn scope<R>(slot: &mut Option<OperationId>, f: impl FnOnce() -> R) -> R {
    crate::current::scope(&CURRENT, slot, f)
}

/// The operation of the request whose handler is running on this task, if any.
///
/// Set while the [`ObservabilityLayer`](crate::ObservabilityLayer)'s response future is
/// polled (so by [`Telemetry::layer`](crate::Telemetry::layer)), for log lines
/// ([`log::RequestFields`](crate::log::RequestFields)). Tasks the handler spawns do not inherit
/// it.
pub fn current() -> Option<OperationId> {
    crate::current::get(&CURRENT)
}

/// A borrowed view of the parts of a request a resolver may look at.
///
/// Resolvers see the request before the service does; they get no body.
#[derive(Debug, Clone, Copy)]
pub struct RequestRef<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request URI (as received: percent-encoding intact).
    pub uri: &'a Uri,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The request extensions (axum's `MatchedPath` lives here).
    pub extensions: &'a Extensions,
}

impl<'a, B> From<&'a Request<B>> for RequestRef<'a> {
    fn from(req: &'a Request<B>) -> Self {
        Self {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            extensions: req.extensions(),
        }
    }
}

/// Maps a request to its operation.
///
/// Implemented by closures `Fn(&RequestRef<'_>) -> Option<OperationId>`, by `()` (resolves
/// nothing), by [`OpenApiResolver`](crate::openapi::OpenApiResolver), by
/// [`MatchedPathResolver`] (feature `axum`) and by [`Or`] chains.
///
/// A resolver must return values from a bounded set: its result becomes a metric label.
/// The metrics layer enforces a cap all the same (see
/// [`MetricsLayer::with_max_operations`](crate::metrics::MetricsLayer::with_max_operations)).
///
#[cfg_attr(feature = "axum", doc = "[`MatchedPathResolver`]: MatchedPathResolver")]
#[cfg_attr(
    not(feature = "axum"),
    doc = "[`MatchedPathResolver`]: https://docs.rs/towerscope/latest/towerscope/operation/struct.MatchedPathResolver.html"
)]
pub trait OperationResolver: Send + Sync + 'static {
    /// Returns the request's operation, or `None` when this resolver does not know it.
    fn resolve(&self, request: &RequestRef<'_>) -> Option<OperationId>;

    /// The route template of `operation` (`/users/{id}`), when this resolver knows it: the
    /// `http.route` label of `metric.naming: otel`. Defaults to `None`; the
    /// [`OpenApiResolver`](crate::openapi::OpenApiResolver) returns the path template of the
    /// operation. (axum's `MatchedPath` is read by the metrics layer itself when no resolver
    /// knows the route.)
    fn route(&self, operation: &OperationId) -> Option<&str> {
        let _ = operation;
        None
    }
}

impl<F> OperationResolver for F
where
    F: Fn(&RequestRef<'_>) -> Option<OperationId> + Send + Sync + 'static,
{
    fn resolve(&self, request: &RequestRef<'_>) -> Option<OperationId> {
        self(request)
    }
}

impl OperationResolver for () {
    fn resolve(&self, _: &RequestRef<'_>) -> Option<OperationId> {
        None
    }
}

impl<R: OperationResolver + ?Sized> OperationResolver for Arc<R> {
    fn resolve(&self, request: &RequestRef<'_>) -> Option<OperationId> {
        (**self).resolve(request)
    }

    fn route(&self, operation: &OperationId) -> Option<&str> {
        (**self).route(operation)
    }
}

/// axum's route template of a request (`MatchedPath`, set by the router), if any: what
/// [`MatchedPathResolver`] resolves, the span's `http.route`, and the OpenTelemetry naming's
/// `http_route` when no resolver knows the route.
pub(crate) fn matched_path(extensions: &Extensions) -> Option<&str> {
    #[cfg(feature = "axum")]
    {
        extensions
            .get::<axum::extract::MatchedPath>()
            .map(|path| path.as_str())
    }
    #[cfg(not(feature = "axum"))]
    {
        let _ = extensions;
        None
    }
}

/// Combinators for resolvers.
pub trait OperationResolverExt: OperationResolver + Sized {
    /// Tries `self` first, then `other`.
    fn or<R: OperationResolver>(self, other: R) -> Or<Self, R> {
        Or {
            first: self,
            second: other,
        }
    }
}

impl<R: OperationResolver> OperationResolverExt for R {}

/// Two resolvers tried in order; built by [`OperationResolverExt::or`].
#[derive(Debug, Clone)]
pub struct Or<A, B> {
    first: A,
    second: B,
}

impl<A: OperationResolver, B: OperationResolver> OperationResolver for Or<A, B> {
    fn resolve(&self, request: &RequestRef<'_>) -> Option<OperationId> {
        self.first
            .resolve(request)
            .or_else(|| self.second.resolve(request))
    }

    fn route(&self, operation: &OperationId) -> Option<&str> {
        self.first
            .route(operation)
            .or_else(|| self.second.route(operation))
    }
}

/// Resolves the operation from axum's [`MatchedPath`](axum::extract::MatchedPath), the route
/// template the request matched (e.g. `/users/{id}`), optionally mapped to an operationId.
///
/// Route templates are a bounded set fixed at build time, so they are safe label values.
/// axum sets `MatchedPath` for layers added with `Router::layer` and `Router::route_layer`;
/// requests that hit the fallback have none and resolve to `None`.
///
/// ```
/// use towerscope::operation::MatchedPathResolver;
///
/// let resolver = MatchedPathResolver::new()
///     .with_operation("/users/{id}", "getUser")
///     .with_operation("/users", "listUsers");
/// # let _ = resolver;
/// ```
#[cfg(feature = "axum")]
#[derive(Debug, Clone, Default)]
pub struct MatchedPathResolver {
    operations: HashMap<Box<str>, OperationId>,
    only_mapped: bool,
    /// Unmapped templates seen so far, so that each request does not allocate its label.
    /// Bounded by the router's routes.
    interned: Arc<std::sync::RwLock<HashMap<Box<str>, OperationId>>>,
}

#[cfg(feature = "axum")]
impl MatchedPathResolver {
    /// A resolver that uses the route template itself as the operation.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps the route `template` to `operation`.
    ///
    /// Templates without a mapping resolve to the template itself, unless
    /// [`only_mapped`](Self::only_mapped) is set.
    pub fn with_operation(mut self, template: &str, operation: impl Into<OperationId>) -> Self {
        self.operations.insert(template.into(), operation.into());
        self
    }

    /// When `true`, templates without a mapping resolve to `None` (so a later resolver, or
    /// `unknown`, applies). Defaults to `false`.
    pub fn only_mapped(mut self, only_mapped: bool) -> Self {
        self.only_mapped = only_mapped;
        self
    }
}

#[cfg(feature = "axum")]
impl OperationResolver for MatchedPathResolver {
    fn resolve(&self, request: &RequestRef<'_>) -> Option<OperationId> {
        let template = matched_path(request.extensions)?;
        if let Some(op) = self.operations.get(template) {
            return Some(op.clone());
        }
        if self.only_mapped {
            return None;
        }
        use std::sync::PoisonError;
        if let Some(op) = self
            .interned
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(template)
        {
            return Some(op.clone());
        }
        let op = OperationId::from(template);
        self.interned
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(template.into(), op.clone());
        Some(op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    #[test]
    fn or_tries_in_order() {
        let a = |r: &RequestRef<'_>| (r.uri.path() == "/a").then(|| OperationId::from("a"));
        let b = |_: &RequestRef<'_>| Some(OperationId::from("b"));
        let chain = a.or(b);
        assert_eq!(chain.resolve(&(&get("/a")).into()).unwrap().as_str(), "a");
        assert_eq!(chain.resolve(&(&get("/x")).into()).unwrap().as_str(), "b");
        assert!(().resolve(&(&get("/a")).into()).is_none());
    }

    #[cfg(feature = "axum")]
    #[test]
    fn matched_path_maps_templates() {
        use axum::extract::MatchedPath;
        // MatchedPath has no public constructor: obtain one through a real router.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let captured = rt.block_on(async {
            use tower::ServiceExt;
            let (tx, rx) = std::sync::mpsc::channel();
            let app = axum::Router::new().route(
                "/users/{id}",
                axum::routing::get(move |p: MatchedPath| {
                    let tx = tx.clone();
                    async move {
                        tx.send(p).unwrap();
                    }
                }),
            );
            app.oneshot(get("/users/7").map(|()| axum::body::Body::empty()))
                .await
                .unwrap();
            rx.recv().unwrap()
        });
        let mut req = get("/users/7");
        req.extensions_mut().insert(captured);
        let plain = MatchedPathResolver::new();
        assert_eq!(
            plain.resolve(&(&req).into()).unwrap().as_str(),
            "/users/{id}"
        );
        let mapped = MatchedPathResolver::new().with_operation("/users/{id}", "getUser");
        assert_eq!(mapped.resolve(&(&req).into()).unwrap().as_str(), "getUser");
        let only = MatchedPathResolver::new()
            .with_operation("/other", "x")
            .only_mapped(true);
        assert!(only.resolve(&(&req).into()).is_none());
        assert!(plain.resolve(&(&get("/users/7")).into()).is_none());
    }
}
