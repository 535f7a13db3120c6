//! The HTTP server families of `metric.naming: otel`: a table of the series of each
//! (route, method, scheme, protocol version), each holding its duration histograms by
//! (status, failure), and the in-flight gauges by (method, scheme).

use std::{
    sync::{Arc, OnceLock},
    time::Instant,
};

use metrics::{Gauge, Histogram, Key, Label, SharedString, Unit};

use super::{
    scheme_index, sorted, version_index, Failure, HTTP_SERVER_ACTIVE_REQUESTS,
    HTTP_SERVER_REQUEST_BODY_SIZE, HTTP_SERVER_REQUEST_DURATION, HTTP_SERVER_RESPONSE_BODY_SIZE,
    HTTP_SERVER_TIME_TO_FIRST_BYTE, SCHEMES, VERSIONS,
};
use crate::{
    labels::MethodTable,
    metrics::{
        names::MetricNames,
        store::{with_exemplar_at, SpanIds},
        toolkit::{
            http_slot, status_label, Family, FamilyKind, LabelTable, Outcome, RecorderRef,
            StatusHandles, HTTP_SLOTS,
        },
    },
};

/// The families of the HTTP server with `metric.naming: otel`: the conventions' two (four with
/// `body_sizes`), and towerscope's counter of requests whose route went to `_overflow`
/// (`names.overflow`).
pub(crate) fn families(names: &MetricNames, body_sizes: bool, first_byte: bool) -> Vec<Family> {
    let first_byte = first_byte.then(|| {
        Family::seconds(
            HTTP_SERVER_TIME_TO_FIRST_BYTE,
            "Duration of HTTP server requests until the response head (time to first byte; towerscope's, in the conventions' style).",
        )
    });
    let sizes = body_sizes.then(|| {
        [
            Family::new(
                HTTP_SERVER_REQUEST_BODY_SIZE,
                FamilyKind::Histogram,
                Some(Unit::Bytes),
                "Size of HTTP server request bodies from Content-Length (OpenTelemetry http.server.request.body.size).",
            ),
            Family::new(
                HTTP_SERVER_RESPONSE_BODY_SIZE,
                FamilyKind::Histogram,
                Some(Unit::Bytes),
                "Bytes of HTTP server response bodies sent (OpenTelemetry http.server.response.body.size).",
            ),
        ]
    });
    let families = [
        Family::seconds(
            HTTP_SERVER_REQUEST_DURATION,
            "Duration of HTTP server requests until the response body ended (OpenTelemetry http.server.request.duration).",
        ),
        Family::gauge(
            HTTP_SERVER_ACTIVE_REQUESTS,
            "Number of active HTTP server requests (OpenTelemetry http.server.active_requests).",
        ),
        Family::counter(
            names.overflow.clone(),
            "Requests labelled http_route=\"_overflow\" because the cap on distinct routes was reached.",
        ),
    ];
    families
        .into_iter()
        .chain(sizes.into_iter().flatten())
        .chain(first_byte)
        .collect()
}

/// Handles by (status, failure): one histogram of a [`ServerSeries`] per outcome.
type ByOutcome = StatusHandles<(u16, Failure), Histogram, HTTP_SLOTS>;

/// The series of one (route, method, scheme, protocol version).
#[derive(Debug)]
pub(crate) struct ServerSeries {
    /// `http_request_method`, `http_route` (when known), `network_protocol_version`,
    /// `url_scheme`.
    labels: Vec<Label>,
    active: Gauge,
    durations: ByOutcome,
    /// The request and response body sizes (`metric.body_sizes`).
    sizes: Option<Box<[ByOutcome; 2]>>,
    /// The time to the response head (`metric.time_to_first_byte`).
    first_byte: Option<Box<ByOutcome>>,
    recorder: RecorderRef,
}

/// What one request observed, recorded when it settles.
#[derive(Debug, Clone, Copy)]
struct Observed {
    seconds: f64,
    /// The request's `Content-Length`, the bytes of the response body.
    sizes: (Option<u64>, u64),
}

impl ServerSeries {
    /// Records one request with its status (0: no response) and failure.
    fn record(&self, status: u16, failure: Failure, observed: Observed) {
        self.observe(
            &self.durations,
            HTTP_SERVER_REQUEST_DURATION,
            status,
            failure,
            observed.seconds,
        );
        if let Some([request, response]) = self.sizes.as_deref() {
            let (request_size, response_size) = observed.sizes;
            if let Some(size) = request_size {
                self.observe(
                    request,
                    HTTP_SERVER_REQUEST_BODY_SIZE,
                    status,
                    failure,
                    size as f64,
                );
            }
            let size = response_size as f64;
            self.observe(
                response,
                HTTP_SERVER_RESPONSE_BODY_SIZE,
                status,
                failure,
                size,
            );
        }
    }

    /// Records `value` in the histogram of family `name` for (status, failure).
    fn observe(
        &self,
        handles: &ByOutcome,
        name: &'static str,
        status: u16,
        failure: Failure,
        value: f64,
    ) {
        // A success or a 5xx is told by its status alone: the common codes have a slot.
        let slot = match failure {
            Failure::None | Failure::Status if status > 0 => http_slot(status),
            _ => None,
        };
        let register = |(status, failure): (u16, Failure)| {
            let mut labels = self.labels.clone();
            if status > 0 {
                labels.push(Label::new(
                    "http_response_status_code",
                    status_label(status),
                ));
            }
            if let Some(error) = failure.label(status) {
                labels.push(Label::new("error_type", error));
            }
            let key = Key::from_parts(name, sorted(labels));
            self.recorder.histogram(&key)
        };
        handles.with((status, failure), slot, register, |h| h.record(value));
    }
}

/// The series of one route label, by (method, scheme, version).
#[derive(Debug)]
struct RouteSeries {
    label: Option<SharedString>,
    by_variant: Box<[OnceLock<Arc<ServerSeries>>]>,
}

/// The per-layer cache of the server series, with the cap on distinct routes.
#[derive(Debug)]
pub(crate) struct ServerTable {
    recorder: RecorderRef,
    methods: MethodTable,
    routes: LabelTable<RouteSeries>,
    /// Requests whose route is not known.
    no_route: RouteSeries,
    /// `http_server_active_requests` by (method, scheme).
    active: Box<[OnceLock<Gauge>]>,
    body_sizes: bool,
    first_byte: bool,
    /// Labels of the user's own on every series of this table.
    extra: Arc<[Label]>,
}

/// The (scheme, version) combinations per method.
const VARIANTS: usize = SCHEMES.len() * VERSIONS.len();

impl ServerTable {
    /// An empty table; the families are described by the caller.
    pub(crate) fn new(
        recorder: RecorderRef,
        names: &MetricNames,
        methods: MethodTable,
        max_routes: usize,
        body_sizes: bool,
        first_byte: bool,
        extra: Arc<[Label]>,
    ) -> Arc<Self> {
        let routes = LabelTable::new(max_routes)
            .with_overflow_counter(recorder.clone(), names.overflow.clone());
        let methods_len = methods.len() + 1;
        Arc::new(Self {
            no_route: Self::route_series(None, methods_len),
            active: (0..methods_len * SCHEMES.len())
                .map(|_| OnceLock::new())
                .collect(),
            recorder,
            methods,
            routes,
            body_sizes,
            first_byte,
            extra,
        })
    }

    /// Whether the body sizes are recorded.
    pub(crate) fn body_sizes(&self) -> bool {
        self.body_sizes
    }

    fn route_series(label: Option<SharedString>, methods: usize) -> RouteSeries {
        RouteSeries {
            label,
            by_variant: (0..methods * VARIANTS).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The series of a request: `route` (its template, if known), method, URI scheme and
    /// protocol version.
    pub(crate) fn series<B>(
        &self,
        route: Option<&str>,
        request: &http::Request<B>,
    ) -> Arc<ServerSeries> {
        let method = self.methods.index(request.method());
        let scheme = scheme_index(request.uri());
        let version = version_index(request.version());
        let index = (method * SCHEMES.len() + scheme) * VERSIONS.len() + version;
        let methods_len = self.methods.len() + 1;
        let make = |route: &RouteSeries| {
            route.by_variant[index]
                .get_or_init(|| {
                    let mut labels = vec![
                        Label::new("http_request_method", self.methods.label(method)),
                        Label::new("network_protocol_version", VERSIONS[version]),
                        Label::new("url_scheme", SCHEMES[scheme]),
                    ];
                    if let Some(route) = &route.label {
                        labels.push(Label::new("http_route", route.clone()));
                    }
                    labels.extend(self.extra.iter().cloned());
                    Arc::new(ServerSeries {
                        labels: sorted(labels),
                        active: self.active(method, scheme).clone(),
                        durations: StatusHandles::new(),
                        sizes: self
                            .body_sizes
                            .then(|| Box::new([StatusHandles::new(), StatusHandles::new()])),
                        first_byte: self.first_byte.then(|| Box::new(StatusHandles::new())),
                        recorder: self.recorder.clone(),
                    })
                })
                .clone()
        };
        match route {
            Some(route) => self.routes.with(
                route,
                |label| Self::route_series(Some(label), methods_len),
                make,
            ),
            None => make(&self.no_route),
        }
    }

    /// The active-requests gauge of (method, scheme).
    fn active(&self, method: usize, scheme: usize) -> &Gauge {
        self.active[method * SCHEMES.len() + scheme].get_or_init(|| {
            let mut labels = vec![
                Label::new("http_request_method", self.methods.label(method)),
                Label::new("url_scheme", SCHEMES[scheme]),
            ];
            labels.extend(self.extra.iter().cloned());
            self.recorder
                .gauge(&Key::from_parts(HTTP_SERVER_ACTIVE_REQUESTS, labels))
        })
    }
}

/// What one request records when it settles, with `metric.naming: otel`.
#[derive(Debug)]
pub(crate) struct ServerRequest {
    series: Arc<ServerSeries>,
    start: Instant,
    /// The response status, once the response head was seen.
    status: Option<u16>,
    exemplar: Option<SpanIds>,
    /// The request's `Content-Length`; the bytes of the response body so far.
    sizes: (Option<u64>, u64),
}

impl ServerRequest {
    /// Counts the request as active in `series`; `request_size` is its `Content-Length`.
    pub(crate) fn start(
        series: Arc<ServerSeries>,
        exemplar: Option<SpanIds>,
        request_size: Option<u64>,
    ) -> Self {
        series.active.increment(1.0);
        Self {
            series,
            start: Instant::now(),
            status: None,
            exemplar,
            sizes: (request_size, 0),
        }
    }

    /// Counts `len` bytes of the response body.
    pub(crate) fn on_data(&mut self, len: usize) {
        self.sizes.1 = self.sizes.1.saturating_add(len as u64);
    }

    /// Notes the response status, and records the time to the response head when asked.
    pub(crate) fn on_status(&mut self, status: u16) {
        self.status = Some(status);
        if let Some(first_byte) = self.series.first_byte.as_deref() {
            let failure = match status {
                500.. => Failure::Status,
                _ => Failure::None,
            };
            let seconds = self.start.elapsed().as_secs_f64();
            let series = &self.series;
            with_exemplar_at(self.exemplar, None, || {
                series.observe(
                    first_byte,
                    HTTP_SERVER_TIME_TO_FIRST_BYTE,
                    status,
                    failure,
                    seconds,
                )
            });
        }
    }

    /// Whether the duration keeps an exemplar (the request has a sampled span).
    pub(crate) fn has_exemplar(&self) -> bool {
        self.exemplar.is_some()
    }

    /// Records the duration with the status and failure `outcome` says; `now`, when given, is
    /// the exemplar's time.
    pub(crate) fn settle(&mut self, outcome: Outcome, now: Option<std::time::SystemTime>) {
        let elapsed = self.start.elapsed().as_secs_f64();
        self.series.active.decrement(1.0);
        let status = self.status.unwrap_or(0);
        let failure = match (outcome, self.status) {
            (Outcome::Complete, Some(code)) if code >= 500 => Failure::Status,
            (Outcome::Complete, _) => Failure::None,
            (Outcome::Error, Some(_)) => Failure::BodyError,
            (Outcome::Error, None) => Failure::ServiceError,
            (Outcome::Cancelled, _) => Failure::Cancelled,
            (Outcome::Panicked, _) => Failure::Panic,
        };
        let series = &self.series;
        let observed = Observed {
            seconds: elapsed,
            sizes: self.sizes,
        };
        with_exemplar_at(self.exemplar, now, || {
            series.record(status, failure, observed)
        });
    }
}
