//! [`MetricsLayer`], its service and its response future.

use std::{
    fmt,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use http::{Method, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::{
    names::{MetricNames, MetricNaming},
    registry::MetricsRegistry,
    request::RequestMetrics,
    store::SpanIds,
    tables::{Table, TableSpec, Tables},
    toolkit::{RecorderRef, SettleBody, SettleFuture, SettleGuard},
    user_labels::MetricLabel,
};
use crate::{
    labels::{MethodTable, STANDARD_METHODS},
    operation::{default_resolver, matched_path, OperationId, OperationResolver, RequestRef},
};

/// The default cap on distinct `operation` label values per family.
pub const DEFAULT_MAX_OPERATIONS: usize = 1000;

/// The `?comp=` component [`MetricsLayer::new`] serves its families under.
pub const DEFAULT_COMPONENT: &str = "core";

/// Response body of [`MetricsService`]: ends the request's measurement when the inner body
/// ends, fails or is dropped.
pub type ResponseBody<B> = SettleBody<B, RequestMetrics>;

/// Layer that records Harbor's HTTP request metrics; see the [module docs](super).
///
/// The `with_*` setters only store their value. The series table is built, and the families
/// described and registered under their `?comp=` components, once, when the layer first wraps
/// a service; the clones of a layer share that table.
#[derive(Clone)]
pub struct MetricsLayer {
    recorder: RecorderRef,
    names: MetricNames,
    methods: Arc<[Method]>,
    max_operations: usize,
    resolver: Arc<dyn OperationResolver>,
    enabled: bool,
    naming: MetricNaming,
    body_sizes: bool,
    time_to_first_byte: bool,
    /// Labels of the user's own.
    labels: Vec<MetricLabel>,
    /// The registry and components the families are served under.
    served: Option<(MetricsRegistry, Vec<String>)>,
    table: Arc<OnceLock<Tables>>,
}

impl fmt::Debug for MetricsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsLayer")
            .field("names", &self.names)
            .field("naming", &self.naming)
            .field("body_sizes", &self.body_sizes)
            .field("time_to_first_byte", &self.time_to_first_byte)
            .field("labels", &self.labels)
            .field("methods", &self.methods)
            .field("max_operations", &self.max_operations)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl MetricsLayer {
    /// A layer recording into `registry`, with Harbor's names without a prefix, the standard
    /// methods, a cap of 1000 operations and the default resolver (axum's `MatchedPath` with the
    /// `axum` feature, nothing otherwise). Its families are served under the `core` component.
    pub fn new(registry: &MetricsRegistry) -> Self {
        Self::with_recorder_ref(RecorderRef::from(registry))
            .with_component(registry, DEFAULT_COMPONENT)
    }

    /// A layer recording through the global `metrics` recorder, whatever it is (a
    /// [`MetricsRegistry`] installed with
    /// [`install_global`](MetricsRegistry::install_global), or any other exporter).
    pub fn with_global_recorder() -> Self {
        Self::with_recorder_ref(RecorderRef::Global)
    }

    /// A layer recording into `recorder`: for tests with `metrics_util`'s `DebuggingRecorder`,
    /// or for other exporters.
    pub fn with_recorder(recorder: Arc<dyn metrics::Recorder + Send + Sync>) -> Self {
        Self::with_recorder_ref(RecorderRef::Shared(recorder))
    }

    /// A layer recording into `registry` whose families are served under no component yet.
    pub(crate) fn new_unserved(registry: &MetricsRegistry) -> Self {
        Self::with_recorder_ref(RecorderRef::from(registry))
    }

    fn with_recorder_ref(recorder: RecorderRef) -> Self {
        Self {
            recorder,
            names: MetricNames::default(),
            methods: STANDARD_METHODS.to_vec().into(),
            max_operations: DEFAULT_MAX_OPERATIONS,
            resolver: default_resolver(),
            enabled: true,
            naming: MetricNaming::Harbor,
            body_sizes: false,
            time_to_first_byte: false,
            labels: Vec::new(),
            served: None,
            table: Arc::default(),
        }
    }

    /// A setter changed what the table is built from: the next service gets a new one.
    fn changed(mut self) -> Self {
        self.table = Arc::default();
        self
    }

    /// Also serves this layer's families under `component` in `registry`, so that
    /// `?comp=component` returns them. [`new`](Self::new) serves them under `core`,
    /// [`from_config`](Self::from_config) under `metric.component`.
    pub fn with_component(mut self, registry: &MetricsRegistry, component: &str) -> Self {
        match &mut self.served {
            Some((_, components)) => components.push(component.to_owned()),
            None => self.served = Some((registry.clone(), vec![component.to_owned()])),
        }
        self.changed()
    }

    /// Uses `names` for the families. Defaults to Harbor's names without a prefix.
    pub fn with_names(mut self, names: MetricNames) -> Self {
        self.names = names;
        self.changed()
    }

    /// Records the families of `naming`: Harbor's or the OpenTelemetry semantic conventions'
    /// ([`semconv`](super::semconv)). With `Otel`, the [`names`](Self::with_names) give only
    /// the overflow counter's name, and [`max_operations`](Self::with_max_operations) caps the
    /// distinct routes. Defaults to [`MetricNaming::Harbor`].
    pub fn with_naming(mut self, naming: MetricNaming) -> Self {
        self.naming = naming;
        self.changed()
    }

    /// With [`MetricNaming::Otel`], also records the request and response body sizes
    /// (`http_server_request_body_size_bytes` from `Content-Length`,
    /// `http_server_response_body_size_bytes` counted as the body passes). Defaults to `false`;
    /// no effect with Harbor's naming.
    pub fn with_body_sizes(mut self, body_sizes: bool) -> Self {
        self.body_sizes = body_sizes;
        self.changed()
    }

    /// Also records the time to the response head (time to first byte), beside the duration
    /// to the end of the body: `{prefix}http_request_time_to_first_byte_seconds` (Harbor's
    /// naming) or `http_server_time_to_first_byte_seconds` (`naming: otel`, with the
    /// duration's labels), kept like the durations (summary or histogram as configured).
    /// Defaults to `false` (`metric.time_to_first_byte`).
    pub fn with_time_to_first_byte(mut self, on: bool) -> Self {
        self.time_to_first_byte = on;
        self.changed()
    }

    /// Adds `label`, a label of the user's own valued from each request's head, on every
    /// series of the request families (not on the overflow counters); a label of the same
    /// name is replaced. At most [`MAX_METRIC_LABELS`](super::MAX_METRIC_LABELS) labels: later ones are ignored, with an
    /// error logged when the layer is built. See [`MetricLabel`] for the cap on values.
    /// Defaults to none (`metric.labels`).
    pub fn with_label(mut self, label: MetricLabel) -> Self {
        match self.labels.iter_mut().find(|l| l.name() == label.name()) {
            Some(same) => *same = label,
            None => self.labels.push(label),
        }
        self.changed()
    }

    /// Methods kept as label values; others are counted as `_OTHER`. Defaults to the eight
    /// RFC 9110 methods and PATCH.
    pub fn with_methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self.changed()
    }

    /// Caps the distinct operation label values; requests of further operations are labelled
    /// `_overflow` and counted in the overflow counter. `unknown` is always allowed. Defaults
    /// to 1000.
    pub fn with_max_operations(mut self, max: usize) -> Self {
        self.max_operations = max;
        self.changed()
    }

    /// Resolves operations with `resolver` (when no outer stage put an [`OperationId`] in the
    /// request extensions). Defaults to axum's `MatchedPath` (feature `axum`), or to nothing
    /// (`unknown`) without it.
    pub fn with_resolver(self, resolver: impl OperationResolver) -> Self {
        self.with_shared_resolver(Arc::new(resolver))
    }

    pub(crate) fn with_shared_resolver(mut self, resolver: Arc<dyn OperationResolver>) -> Self {
        self.resolver = resolver;
        self
    }

    /// Turns the layer into a pass-through that records nothing. Defaults to enabled.
    pub fn disabled(mut self) -> Self {
        self.enabled = false;
        self
    }

    /// The series tables, built on first use.
    fn table(&self) -> Option<Tables> {
        if !self.enabled {
            return None;
        }
        let table = self.table.get_or_init(|| {
            let (registry, components) = match &self.served {
                Some((registry, components)) => (Some(registry), components.as_slice()),
                None => (None, &[][..]),
            };
            let spec = TableSpec {
                recorder: self.recorder.clone(),
                names: self.names.clone(),
                methods: MethodTable::new(&self.methods),
                max_operations: self.max_operations,
                naming: self.naming,
                body_sizes: self.body_sizes,
                time_to_first_byte: self.time_to_first_byte,
            };
            spec.declare(registry, components, !self.labels.is_empty());
            spec.tables(&self.labels)
        });
        Some(table.clone())
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            stage: self.stage(),
        }
    }
}

impl MetricsLayer {
    /// What a service built now records with: the table (built on first use) and resolver.
    pub(crate) fn stage(&self) -> MetricsStage {
        MetricsStage {
            table: self.table(),
            resolver: self.resolver.clone(),
        }
    }
}

/// The request-path part of a [`MetricsLayer`]: the series table (none when disabled) and the
/// resolver used when no [`OperationId`] is in the request extensions. Shared by
/// [`MetricsService`] and [`ObservabilityLayer`](crate::ObservabilityLayer)'s service.
#[derive(Clone)]
pub(crate) struct MetricsStage {
    table: Option<Tables>,
    resolver: Arc<dyn OperationResolver>,
}

impl MetricsStage {
    /// Whether requests are measured.
    pub(crate) fn enabled(&self) -> bool {
        self.table.is_some()
    }

    /// Counts `req` in flight in its series and returns its state, to settle when its
    /// response body ends; `None` when disabled.
    pub(crate) fn start<B>(
        &self,
        req: &Request<B>,
        exemplar: Option<SpanIds>,
    ) -> Option<RequestMetrics> {
        Some(match self.table.as_ref()? {
            Tables::One(table) => self.start_in(table, req, exemplar),
            Tables::Labeled(tables) => {
                tables.with(req, |table| self.start_in(table, req, exemplar))
            }
        })
    }

    /// [`start`](Self::start) in `table`.
    fn start_in<B>(
        &self,
        table: &Table,
        req: &Request<B>,
        exemplar: Option<SpanIds>,
    ) -> RequestMetrics {
        match table {
            Table::Harbor(table) => {
                let method_index = table.method_index(req.method());
                let series = match req.extensions().get::<OperationId>() {
                    Some(op) => table.series(op, method_index),
                    None => match self.resolver.resolve(&RequestRef::from(req)) {
                        Some(op) => table.series(&op, method_index),
                        None => table.unknown_series(method_index),
                    },
                };
                RequestMetrics::start(series, exemplar)
            }
            Table::Otel(table) => {
                let resolved;
                let op = match req.extensions().get::<OperationId>() {
                    Some(op) => Some(op),
                    None => {
                        resolved = self.resolver.resolve(&RequestRef::from(req));
                        resolved.as_ref()
                    }
                };
                let route = op
                    .and_then(|op| self.resolver.route(op))
                    .or_else(|| matched_path(req.extensions()));
                let request_size = table.body_sizes().then(|| content_length(req)).flatten();
                RequestMetrics::start_otel(table.series(route, req), exemplar, request_size)
            }
        }
    }
}

/// Service that records request metrics; built by [`MetricsLayer`].
#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    stage: MetricsStage,
}

impl<S: fmt::Debug> fmt::Debug for MetricsService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsService")
            .field("inner", &self.inner)
            .field("enabled", &self.stage.enabled())
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
        // The exemplar: ids put in the request, else the span current around this call (a
        // trace layer's, outside this one).
        let exemplar = req
            .extensions()
            .get::<SpanIds>()
            .copied()
            .or_else(SpanIds::current);
        let Some(state) = self.stage.start(&req, exemplar) else {
            return SettleFuture::new(self.inner.call(req), None);
        };
        let head = req.method() == Method::HEAD;
        SettleFuture::new(self.inner.call(req), Some(SettleGuard::new(state))).head(head)
    }
}

/// The `Content-Length` of `req`, when it has one valid value.
fn content_length<B>(req: &Request<B>) -> Option<u64> {
    let mut values = req.headers().get_all(http::header::CONTENT_LENGTH).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()?.parse().ok()
}

/// Response future of [`MetricsService`].
pub type ResponseFuture<F> = SettleFuture<F, RequestMetrics>;
