//! Distribution's own metric names for `/v2/` requests, under `?comp=registry`:
//! `registry_http_requests_total{code,handler,method}`,
//! `registry_http_request_duration_seconds{handler,method}`,
//! `registry_http_in_flight_requests{handler}`, and
//! `registry_http_request_size_bytes{handler}` / `registry_http_response_size_bytes{handler}`.
//!
//! The handler label reuses the registry's path parser ([`Route::parse`]); other paths pass
//! through untouched. Handles are resolved once per label set with towerscope's metrics
//! toolkit: fixed arrays for the per-handler and per-(handler, method) families, and a
//! [`CodeCounters`] per (handler, method) for the counters by status code.
//!
//! The duration and size families are Prometheus histograms (Distribution's default buckets for
//! durations; set through `metric.family_buckets` at start, see [`HISTOGRAMS`]).

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    body::Body,
    extract::Request,
    http::{header, HeaderMap, Method},
    response::Response,
};
use http_body::Body as _;
use metrics::{Gauge, Histogram, Key, Label};
use tower_layer::Layer;
use tower_service::Service;
use towerscope::metrics::{
    toolkit::{
        http_slot, CodeCounters, Family, FamilyKind, Outcome, RecorderRef, Settle, SettleFuture,
        SettleGuard, HTTP_SLOTS,
    },
    MetricsRegistry, CLIENT_CLOSED_REQUEST,
};

use crate::{
    gauges::PullCounter,
    registry::{Route, HANDLERS},
};

/// The `?comp=` component of these families.
pub(crate) const COMPONENT: &str = "registry";

const REQUESTS: &str = "registry_http_requests_total";
const DURATION: &str = "registry_http_request_duration_seconds";

/// Families rendered as histograms: durations with Distribution's default buckets (seconds),
/// sizes with powers of four from 128 bytes to 256 MiB.
pub(crate) const HISTOGRAMS: &[(&str, &[f64])] = &[
    (
        DURATION,
        &[
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ],
    ),
    (REQUEST_SIZE, SIZE_BUCKETS),
    (RESPONSE_SIZE, SIZE_BUCKETS),
];

const SIZE_BUCKETS: &[f64] = &[
    128.0,
    512.0,
    2048.0,
    8192.0,
    32768.0,
    131072.0,
    524288.0,
    2097152.0,
    8388608.0,
    33554432.0,
    134217728.0,
    268435456.0,
];
const IN_FLIGHT: &str = "registry_http_in_flight_requests";
const REQUEST_SIZE: &str = "registry_http_request_size_bytes";
const RESPONSE_SIZE: &str = "registry_http_response_size_bytes";

/// The methods with their own series; others are counted as `_OTHER`.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "_OTHER"];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::DELETE => 5,
        _ => 6,
    }
}

/// The families with their HELP texts; the histograms have no unit, as in Distribution.
fn families() -> [Family; 5] {
    let histogram = |name: &'static str, help: &'static str| {
        Family::new(name, FamilyKind::Histogram, None, help)
    };
    [
        Family::counter(
            REQUESTS,
            "The number of requests received, by status code, handler and method.",
        ),
        histogram(
            DURATION,
            "The latency of the HTTP requests in seconds, by handler and method.",
        ),
        Family::gauge(IN_FLIGHT, "The in-flight HTTP requests, by handler."),
        histogram(REQUEST_SIZE, "The HTTP request sizes in bytes, by handler."),
        histogram(
            RESPONSE_SIZE,
            "The HTTP response sizes in bytes, by handler.",
        ),
    ]
}

/// Per-handler handles, registered at start.
#[derive(Debug)]
struct HandlerSeries {
    in_flight: Gauge,
    request_size: Histogram,
    response_size: Histogram,
    /// By method, registered on first use.
    duration: [OnceLock<Histogram>; METHODS.len()],
    /// By method, the request counters by status code, each registered on first use.
    requests: [CodeCounters<u16, HTTP_SLOTS>; METHODS.len()],
}

#[derive(Debug)]
struct Shared {
    recorder: RecorderRef,
    handlers: [HandlerSeries; HANDLERS.len()],
    pulls: Option<PullCounter>,
}

impl Shared {
    fn duration(&self, handler: usize, method: usize) -> &Histogram {
        self.handlers[handler].duration[method].get_or_init(|| {
            let key = Key::from_parts(
                DURATION,
                vec![
                    Label::new("handler", HANDLERS[handler]),
                    Label::new("method", METHODS[method]),
                ],
            );
            self.recorder.histogram(&key)
        })
    }

    /// Counts one request of (handler, method) answered with `code`.
    fn count_request(&self, handler: usize, method: usize, code: u16) {
        self.handlers[handler].requests[method].increment(code, http_slot(code), |code| {
            let key = Key::from_parts(
                REQUESTS,
                vec![
                    Label::new("code", code.to_string()),
                    Label::new("handler", HANDLERS[handler]),
                    Label::new("method", METHODS[method]),
                ],
            );
            self.recorder.counter(&key)
        });
    }
}

/// Registers the families (with their HELP text) under `?comp=registry` and builds the layer.
/// Manifest GETs answered 200 are counted as pulls by `pulls`.
pub(crate) fn layer(registry: &MetricsRegistry, pulls: Option<PullCounter>) -> DistributionLayer {
    let recorder = RecorderRef::from(registry);
    let families = families();
    for family in &families {
        recorder.describe(family);
    }
    registry.register_component(COMPONENT, families.iter().map(|f| f.name.as_ref()));
    let handlers = HANDLERS.map(|handler| {
        let key = |name: &'static str| Key::from_parts(name, vec![Label::new("handler", handler)]);
        HandlerSeries {
            in_flight: recorder.gauge(&key(IN_FLIGHT)),
            request_size: recorder.histogram(&key(REQUEST_SIZE)),
            response_size: recorder.histogram(&key(RESPONSE_SIZE)),
            duration: Default::default(),
            requests: Default::default(),
        }
    });
    DistributionLayer {
        shared: Arc::new(Shared {
            recorder,
            handlers,
            pulls,
        }),
    }
}

/// The layer recording Distribution's metrics for `/v2/` requests.
#[derive(Debug, Clone)]
pub(crate) struct DistributionLayer {
    shared: Arc<Shared>,
}

impl<S> Layer<S> for DistributionLayer {
    type Service = DistributionMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DistributionMetrics {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of [`DistributionLayer`].
#[derive(Debug, Clone)]
pub(crate) struct DistributionMetrics<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// One `/v2/` request in flight, settled once by towerscope's toolkit when its response body
/// ends (the duration runs to the last frame handed to the server), fails, or is dropped
/// early (the client went away: `code="499"`).
struct InFlightRequest {
    shared: Arc<Shared>,
    handler: usize,
    method: usize,
    start: Instant,
    /// The response status, once the handler answered.
    status: Option<u16>,
    /// The repository of a manifest GET, counted as a pull when it succeeds.
    pulled: Option<String>,
}

impl Settle for InFlightRequest {
    fn on_response<B>(&mut self, response: &axum::http::Response<B>) {
        self.status = Some(response.status().as_u16());
        let size = content_length(response.headers()).unwrap_or(0);
        self.shared.handlers[self.handler]
            .response_size
            .record(size as f64);
    }

    fn settle(&mut self, outcome: Outcome) {
        let series = &self.shared.handlers[self.handler];
        series.in_flight.decrement(1.0);
        self.shared
            .duration(self.handler, self.method)
            .record(self.start.elapsed().as_secs_f64());
        let code = match (outcome, self.status) {
            (Outcome::Cancelled, _) => CLIENT_CLOSED_REQUEST,
            (Outcome::Complete | Outcome::Error, Some(status)) => status,
            _ => 500,
        };
        self.shared.count_request(self.handler, self.method, code);
        if let (Some(name), Some(pulls), true) = (
            self.pulled.take(),
            &self.shared.pulls,
            outcome == Outcome::Complete && (200..300).contains(&code),
        ) {
            pulls.record(name);
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

impl<S> Service<Request> for DistributionMetrics<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let route = Route::parse(req.uri().path());
        let Some(route) = route else {
            let fut = self.inner.call(req);
            return Box::pin(fut);
        };
        let handler = route.handler();
        let pulled = match (route, req.method()) {
            (Route::Manifest { name, .. }, &Method::GET) => Some(name.to_owned()),
            _ => None,
        };
        let method = method_index(req.method());
        let series = &self.shared.handlers[handler];
        let request_size = content_length(req.headers())
            .or_else(|| req.body().size_hint().exact())
            .unwrap_or(0);
        series.request_size.record(request_size as f64);
        series.in_flight.increment(1.0);
        let guard = SettleGuard::new(InFlightRequest {
            shared: self.shared.clone(),
            handler,
            method,
            start: Instant::now(),
            status: None,
            pulled,
        });
        let head = req.method() == Method::HEAD;
        let fut = SettleFuture::new(self.inner.call(req), Some(guard)).head(head);
        Box::pin(async move { Ok(fut.await?.map(Body::new)) })
    }
}
