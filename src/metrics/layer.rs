//! [`MetricsLayer`], its service and its response future.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use http::{Method, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{
    body::{RequestGuard, ResponseBody},
    names::MetricNames,
    registry::MetricsRegistry,
    series::{RecorderRef, SeriesTable},
};
use crate::{
    config::{MetricConfig, DEFAULT_METHODS},
    operation::{OperationId, OperationResolver, RequestRef},
};

/// The default cap on distinct `operation` label values per family.
pub const DEFAULT_MAX_OPERATIONS: usize = 1000;

/// Layer that records Harbor's HTTP request metrics; see the [module docs](super).
#[derive(Clone)]
pub struct MetricsLayer {
    recorder: RecorderRef,
    names: MetricNames,
    methods: Arc<[Method]>,
    max_operations: usize,
    resolver: Arc<dyn OperationResolver>,
    table: Option<Arc<SeriesTable>>,
}

impl fmt::Debug for MetricsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsLayer")
            .field("names", &self.names)
            .field("methods", &self.methods)
            .field("max_operations", &self.max_operations)
            .field("enabled", &self.table.is_some())
            .finish_non_exhaustive()
    }
}

impl MetricsLayer {
    /// A layer recording into `registry`, with Harbor's names without a prefix, the standard
    /// methods, a cap of 1000 operations and the default resolver (axum's `MatchedPath` with the
    /// `axum` feature, nothing otherwise). Its families are served under the `core` component.
    pub fn new(registry: &MetricsRegistry) -> Self {
        Self::build(
            RecorderRef::Shared(registry.recorder()),
            MetricNames::default(),
            DEFAULT_METHODS.to_vec().into(),
            DEFAULT_MAX_OPERATIONS,
            default_resolver(),
        )
        .registered_in(registry, "core")
    }

    /// A layer recording through the global `metrics` recorder, whatever it is (a
    /// [`MetricsRegistry`] installed with
    /// [`install_global`](MetricsRegistry::install_global), or any other exporter).
    pub fn with_global_recorder() -> Self {
        Self::build(
            RecorderRef::Global,
            MetricNames::default(),
            DEFAULT_METHODS.to_vec().into(),
            DEFAULT_MAX_OPERATIONS,
            default_resolver(),
        )
    }

    /// A layer recording into `recorder`: for tests with `metrics_util`'s `DebuggingRecorder`,
    /// or for other exporters.
    pub fn with_recorder(recorder: Arc<dyn metrics::Recorder + Send + Sync>) -> Self {
        Self::build(
            RecorderRef::Shared(recorder),
            MetricNames::default(),
            DEFAULT_METHODS.to_vec().into(),
            DEFAULT_MAX_OPERATIONS,
            default_resolver(),
        )
    }

    /// A layer built from the `metric:` configuration: names from `namespace`/`subsystem`,
    /// `methods`, `max_operations`, registered under `component`; disabled (a pass-through)
    /// when `enabled` is false.
    pub fn from_config(config: &MetricConfig, registry: &MetricsRegistry) -> Self {
        let layer = Self::build(
            RecorderRef::Shared(registry.recorder()),
            MetricNames::with_prefix(&config.prefix()),
            config.methods.clone().into(),
            config.max_operations,
            default_resolver(),
        );
        let layer = layer.registered_in(registry, &config.component);
        if config.enabled {
            layer
        } else {
            layer.disabled()
        }
    }

    fn build(
        recorder: RecorderRef,
        names: MetricNames,
        methods: Arc<[Method]>,
        max_operations: usize,
        resolver: Arc<dyn OperationResolver>,
    ) -> Self {
        let mut layer = Self {
            recorder,
            names,
            methods,
            max_operations,
            resolver,
            table: None,
        };
        layer.rebuild();
        layer
    }

    fn rebuild(&mut self) {
        self.table = Some(SeriesTable::new(
            self.recorder.clone(),
            self.names.clone(),
            &self.methods,
            self.max_operations,
        ));
    }

    fn registered_in(self, registry: &MetricsRegistry, component: &str) -> Self {
        registry.register_component(component, self.names.families());
        self
    }

    /// Registers this layer's families under `component` in `registry`, so that
    /// `?comp=component` serves them. [`new`](Self::new) and [`from_config`](Self::from_config)
    /// do this already (component `core`, or `metric.component`).
    pub fn with_component(self, registry: &MetricsRegistry, component: &str) -> Self {
        self.registered_in(registry, component)
    }

    /// Uses `names` for the families. Defaults to Harbor's names without a prefix.
    ///
    /// Register the new names with [`with_component`](Self::with_component) if the layer is
    /// served by component.
    pub fn with_names(mut self, names: MetricNames) -> Self {
        self.names = names;
        self.rebuild();
        self
    }

    /// Methods kept as label values; others are counted as `_OTHER`. Defaults to the eight
    /// RFC 9110 methods and PATCH.
    pub fn with_methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self.rebuild();
        self
    }

    /// Caps the distinct operation label values; requests of further operations are labelled
    /// `_overflow` and counted in the overflow counter. `unknown` is always allowed. Defaults
    /// to 1000.
    pub fn with_max_operations(mut self, max: usize) -> Self {
        self.max_operations = max;
        self.rebuild();
        self
    }

    /// Resolves operations with `resolver`. Defaults to axum's `MatchedPath` (feature `axum`),
    /// or to nothing (`unknown`) without it.
    pub fn with_resolver(mut self, resolver: impl OperationResolver) -> Self {
        self.resolver = Arc::new(resolver);
        self
    }

    pub(crate) fn with_shared_resolver(mut self, resolver: Arc<dyn OperationResolver>) -> Self {
        self.resolver = resolver;
        self
    }

    /// Turns the layer into a pass-through that records nothing.
    pub fn disabled(mut self) -> Self {
        self.table = None;
        self
    }
}

/// The resolver layers use unless told otherwise.
pub(crate) fn default_resolver() -> Arc<dyn OperationResolver> {
    #[cfg(feature = "axum")]
    {
        Arc::new(crate::operation::MatchedPathResolver::new())
    }
    #[cfg(not(feature = "axum"))]
    {
        Arc::new(())
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            table: self.table.clone(),
            resolver: self.resolver.clone(),
        }
    }
}

/// Service that records request metrics; built by [`MetricsLayer`].
#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    table: Option<Arc<SeriesTable>>,
    resolver: Arc<dyn OperationResolver>,
}

impl<S: fmt::Debug> fmt::Debug for MetricsService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsService")
            .field("inner", &self.inner)
            .field("enabled", &self.table.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MetricsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(table) = &self.table else {
            return ResponseFuture {
                inner: self.inner.call(req),
                state: None,
            };
        };
        let method_index = table.method_index(req.method());
        let series = match req.extensions().get::<OperationId>() {
            Some(op) => table.series(op, method_index),
            None => match self.resolver.resolve(&RequestRef::from(&req)) {
                Some(op) => table.series(&op, method_index),
                None => table.unknown_series(method_index),
            },
        };
        let guard = RequestGuard::start(series);
        ResponseFuture {
            inner: self.inner.call(req),
            state: Some(guard),
        }
    }
}

pin_project! {
    /// Response future of [`MetricsService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        state: Option<RequestGuard>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(guard) = this.state.as_mut() {
            guard.set_polling(true);
        }
        let polled = this.inner.poll(cx);
        if let Some(guard) = this.state.as_mut() {
            guard.set_polling(false);
        }
        let result = ready!(polled);
        let Some(mut guard) = this.state.take() else {
            return Poll::Ready(result.map(|res| res.map(|b| ResponseBody::new(b, None))));
        };
        match result {
            Ok(res) => {
                guard.set_status(res.status().as_u16());
                if let Some(op) = res.extensions().get::<OperationId>() {
                    guard.settle_on_operation(op);
                }
                Poll::Ready(Ok(res.map(|b| ResponseBody::new(b, Some(guard)))))
            }
            Err(err) => {
                guard.finish(500);
                Poll::Ready(Err(err))
            }
        }
    }
}
