//! Per-request overhead of towerscope's layers over a bare tower service.
//!
//! Run with:
//!
//! ```text
//! cargo bench --bench overhead
//! ```
//!
//! All cases are in one criterion group (`overhead`), so they run in the same process and can
//! be compared with each other. Every iteration does the same work around the service under
//! test: it builds `GET /api/v2.0/users/42` with `host`, `user-agent` and `accept` headers and an
//! empty body (plus an `x-request-id` header in
//! `bare/incoming_id` and `request_id/incoming`, with a static value: as cheap to clone as the
//! shared buffer slices hyper parses headers into), calls `poll_ready` and `call`, polls the
//! response future once with a no-op waker (no tokio runtime: every service here is immediately
//! ready, which is asserted), reads the response body to its end with the same no-op waker, and
//! drops the response.
//!
//! | case | service | what it measures |
//! |---|---|---|
//! | `bare` | `service_fn` returning a small static `Full<Bytes>` body with a `content-type` | the baseline: building the request, the call, the body, the drops |
//! | `bare/incoming_id` | the same, request with an `x-request-id` header | the baseline of `request_id/incoming` (the header costs the same without the layer) |
//! | `request_id/generated` | `RequestIdLayer` over it, no incoming id | generating a UUID v4, setting it on the request headers, extensions and response |
//! | `request_id/incoming` | `RequestIdLayer` over it, valid incoming `x-request-id` | validating and keeping the incoming id (no UUID) |
//! | `metrics` | `MetricsLayer` over it, a resolver returning a pre-built `OperationId` | series lookup, in-flight gauge, duration summary and total counter into a non-global `MetricsRegistry` (default `MetricConfig`), the wrapping response body |
//! | `metrics/first_byte` | `metrics` with `with_time_to_first_byte(true)` | the time to the response head recorded too (its own summary series) |
//! | `metrics/label` | `metrics` with a label of the user's own from the `user-agent` header (`MetricLabel::from_header`) | reading the header, the label's value table and the table of its combination |
//! | `trace` | `TraceLayer` over it, no `tracing` subscriber | the span layer when spans are not collected (the span is disabled, nothing is resolved or recorded) |
//! | `observability` | `ObservabilityLayer` (request id, trace, metrics), no incoming id, no `tracing` subscriber | the composed cost a service pays by adding the one layer when spans are not collected |
//! | `metrics/histogram` | `MetricsLayer` with histogram durations (four buckets), behind a layer inserting a request extension of another type | the baseline of `metrics/histogram_exemplar` |
//! | `metrics/histogram_exemplar` | the same, the extension being a sampled span's `SpanIds` (what `TraceLayer` inserts) | the difference is what an exemplar costs a request: the clock read, the thread-local, the counter's and the bucket's exemplar slots |
//! | `metrics/native` | `metrics/histogram` with `metric.histogram: native` (bucket factor 1.1) | a native histogram's recording against classic buckets' (issue 24's bound: 1.2× `metrics/histogram`'s added cost) |
//! | `metrics/both` | `metrics/histogram` with `metric.histogram: both` | native and classic buckets recorded together |
//! | `telemetry/tracing_off` | `Telemetry::layer` with `trace.enabled: false` (request id, operation, metrics), no subscriber | the baseline of the two below |
//! | `telemetry/sampled` | `Telemetry::layer`, `sample_rate: 1`, its pipeline batching to an exporter that drops the batch, no subscriber (the layer exports the server span itself) | the server span on the request's thread: built, made current while polled, ended into the batch processor |
//! | `telemetry/sampled_out` | the same at `sample_rate: 0` | the sampling decision and the non-sampled context |
//! | `telemetry/sampled_attributes` | `telemetry/sampled` with `SpanAttributes`: two captured request headers (`user-agent`, present; `x-tenant`, absent) and a hook adding one attribute | what the application's own attributes cost a sampled request (nothing configured: `telemetry/sampled`) |
//! | `telemetry/filters_unmatched` | `telemetry/sampled` with three `filters:` rules, none matching the request | what rules cost a request they do not select (nothing configured: `telemetry/sampled`) |
//! | `telemetry/filter_skip` | `telemetry/sampled` with a rule skipping the request's path | a skipped request: request id and operation only |
//! | `telemetry/filter_metrics_only` | the same rule, `action: metrics_only` | metrics, no span |
//! | `grpc/bare_unary` | a tonic-like `service_fn` over a gRPC call (below): reads the request body to its end, answers one message and `grpc-status: 0` trailers | the baseline of `grpc/unary` |
//! | `grpc/unary` | `GrpcLayer` (towerscope's names, metrics, no `tracing` subscriber) over it, one message each way | operation from the path, in-flight gauge, duration summary, total counter by code from the trailers, the request and response bodies' messages counted from their framing |
//! | `grpc/bare_stream` | the same service, four messages each way in three data frames (one message split across two frames) | the baseline of `grpc/stream` |
//! | `grpc/stream` | `GrpcLayer` over it | what each further message and frame adds to `grpc/unary` |
//! | `grpc/first_byte` | `grpc/unary` with `with_time_to_first_byte(true)` | the time to the response head recorded too (its own summary series) |
//! | `grpc/filters_unmatched` | `grpc/unary` with three filter rules (two paths, one operation), none matching the call | what rules cost a call they do not select (nothing configured: `grpc/unary`) |
//! | `grpc/filter_skip` | `grpc/unary` with an operation rule skipping the call | a skipped call: the operation parsed from the path and one rule, nothing recorded |
//! | `grpc/sampled` | `GrpcLayer::from_telemetry`, `sample_rate: 1`, its pipeline batching to an exporter that drops the batch | the server span of a call built, made current while polled, ended into the batch processor, with the metrics |
//! | `grpc/sampled_metrics_only` | `grpc/sampled` with `filters: [{ operation: towerscope.bench.Users/GetUser, action: metrics_only }]` | metrics, no span |
//! | `grpc/sampled_filter_skip` | the same entry, `action: skip` | a skipped call on a traced server |
//! | `grpc/client_bare` | the `grpc/bare_unary` service taking tonic's request body (`tonic::body::Body`, boxed per call as tonic does) | the baseline of the `grpc/client*` cases |
//! | `grpc/client` | `GrpcClientLayer::new().with_registry(..)` over it, no current span or request id | a call out measured: context injection (nothing to inject), series, the counting request body boxed into tonic's, in flight, duration, total, messages |
//! | `grpc/client_filter_skip` | `grpc/client` with a rule skipping the call | a skipped call out: propagation only |
//!
//! The `grpc/*` cases call `POST /towerscope.bench.Users/GetUser` with `host`, `user-agent`,
//! `content-type: application/grpc` and `te: trailers`, the request body's data frames as
//! static slices; everything else is as above (the response body is read to its end, its
//! trailers included; the trailer map is built per call, as tonic does).
//!
//! The group `record` times one observation into a duration series of a registry, without a
//! layer or a request: `summary` (the default), `classic` (Prometheus' 11 default buckets),
//! `native` (`metric.histogram: native`) and `both`.
//!
//! The added cost of a layer is its time minus `bare` (minus `bare/incoming_id` for
//! `request_id/incoming`, `grpc/bare_unary` for `grpc/unary` and the other server `grpc/*`
//! cases of one message, `grpc/bare_stream` for `grpc/stream`, `grpc/client_bare` for
//! `grpc/client*`). The duration summary's samples are drained by the registry's upkeep
//! thread (every 5 s by default), which runs concurrently.

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented `pub fn benches`"
)]

use std::{
    convert::Infallible,
    future::{poll_fn, ready, Future},
    hint::black_box,
    pin::{pin, Pin},
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use criterion::{
    criterion_group, criterion_main, measurement::WallTime, BenchmarkGroup, Criterion,
};
use http::{
    header::{ACCEPT, CONTENT_TYPE, HOST, TE, USER_AGENT},
    HeaderMap, HeaderValue, Request, Response,
};
use http_body::{Body, Frame};
use http_body_util::{Empty, Full};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{SpanData, SpanExporter},
};
use tower::{service_fn, util::MapRequestLayer, Layer, Service};
use towerscope::{
    config::{Config, MetricConfig},
    filter::{FilterRule, PathPattern, RequestFilter},
    grpc::{GrpcClientLayer, GrpcLayer},
    metrics::{HistogramMode, MetricLabel, MetricNaming, SpanIds},
    operation::{OperationId, OperationResolver, RequestRef},
    request_id::X_REQUEST_ID,
    trace::{TraceLayer, TracePipeline},
    MetricsLayer, MetricsRegistry, ObservabilityLayer, RequestIdLayer, Telemetry,
};

/// Takes every batch and drops it: the export thread's work is real, nothing leaves the process.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

type ReqBody = Empty<Bytes>;
type ResBody = Full<Bytes>;

const PATH: &str = "/api/v2.0/users/42";
const INCOMING_ID: &str = "0f9c2a6e-5b1d-4c3e-9a7f-2d8e4b6c1a03";
const BODY: &[u8] = b"{\"id\":42,\"name\":\"alice\"}";

/// The service under every layer: immediately ready, answers a small static body.
fn inner() -> impl Service<Request<ReqBody>, Response = Response<ResBody>, Error = Infallible> {
    service_fn(|_req: Request<ReqBody>| {
        let mut res = Response::new(Full::new(Bytes::from_static(BODY)));
        // Real handlers answer with headers (axum sets content-type), so the response header
        // map is already allocated when a layer adds to it.
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        ready(Ok::<_, Infallible>(res))
    })
}

fn request(incoming_id: bool) -> Request<ReqBody> {
    // The headers every client sends, as hyper hands them to the service.
    let mut builder = Request::get(PATH)
        .header(HOST, HeaderValue::from_static("registry.example:8080"))
        .header(USER_AGENT, HeaderValue::from_static("skopeo/1.13.3"))
        .header(ACCEPT, HeaderValue::from_static("application/json"));
    if incoming_id {
        builder = builder.header(X_REQUEST_ID, HeaderValue::from_static(INCOMING_ID));
    }
    builder.body(Empty::new()).expect("valid request")
}

/// One request through `svc`: ready, call, poll once, read the body to its end, drop.
fn round_trip<S, B>(svc: &mut S, incoming_id: bool)
where
    S: Service<Request<ReqBody>, Response = Response<B>, Error = Infallible>,
    B: Body,
{
    call_and_drain(svc, black_box(request(incoming_id)));
}

/// `req` through `svc`: ready, call, poll once, read the body to its end, drop.
fn call_and_drain<S, R, B>(svc: &mut S, req: R)
where
    S: Service<R, Response = Response<B>, Error = Infallible>,
    B: Body,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let mut fut = pin!(svc.call(req));
    let Poll::Ready(Ok(res)) = fut.as_mut().poll(&mut cx) else {
        panic!("the service is always immediately ready");
    };
    let mut body = pin!(res.into_body());
    loop {
        match body.as_mut().poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => {
                black_box(frame);
            }
            Poll::Ready(None) => break,
            Poll::Ready(Some(Err(_))) => panic!("the body does not fail"),
            Poll::Pending => panic!("the body is always immediately ready"),
        }
    }
}

/// The gRPC path of the `grpc/*` cases, and its operation.
const GRPC_PATH: &str = "/towerscope.bench.Users/GetUser";
const GRPC_OPERATION: &str = "towerscope.bench.Users/GetUser";

/// One length-prefixed message each way (a small protobuf request, a name in the answer).
const UNARY_REQUEST: &[&[u8]] = &[&[0, 0, 0, 0, 2, 0x08, 0x2a]];
const UNARY_RESPONSE: &[&[u8]] = &[&[0, 0, 0, 0, 7, 0x0a, 5, b'a', b'l', b'i', b'c', b'e']];
/// Four messages in three data frames: the second split across the first two frames, the
/// third with it in the second, the fourth in the last one, as HTTP/2 frames cut a stream.
const STREAM_REQUEST: &[&[u8]] = &[
    &[0, 0, 0, 0, 2, 0x08, 0x01, 0, 0, 0],
    &[0, 2, 0x08, 0x02, 0, 0, 0, 0, 2, 0x08, 0x03],
    &[0, 0, 0, 0, 2, 0x08, 0x04],
];
const STREAM_RESPONSE: &[&[u8]] = &[
    &[0, 0, 0, 0, 3, 0x0a, 1, b'a', 0, 0, 0],
    &[0, 3, 0x0a, 1, b'b', 0, 0, 0, 0, 3, 0x0a, 1, b'c'],
    &[0, 0, 0, 0, 3, 0x0a, 1, b'd'],
];

/// A gRPC body: static data frames, then `grpc-status: 0` trailers when `trailers`.
struct GrpcBody {
    frames: &'static [&'static [u8]],
    next: usize,
    trailers: bool,
}

impl GrpcBody {
    fn new(frames: &'static [&'static [u8]], trailers: bool) -> Self {
        Self {
            frames,
            next: 0,
            trailers,
        }
    }
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.frames.get(self.next) {
            self.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(data)))));
        }
        if std::mem::take(&mut self.trailers) {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.frames.len() && !self.trailers
    }
}

/// A gRPC call with `frames` as its request body, as tonic's server receives it.
fn grpc_request(frames: &'static [&'static [u8]]) -> Request<GrpcBody> {
    Request::post(GRPC_PATH)
        .header(HOST, HeaderValue::from_static("users.example:50051"))
        .header(USER_AGENT, HeaderValue::from_static("grpc-go/1.70.0"))
        .header(CONTENT_TYPE, HeaderValue::from_static("application/grpc"))
        .header(TE, HeaderValue::from_static("trailers"))
        .body(GrpcBody::new(frames, false))
        .expect("valid request")
}

/// A tonic-like service: reads the request body to its end (tonic decodes every message),
/// then answers `response` and `grpc-status: 0` trailers.
fn grpc_inner<B>(
    response: &'static [&'static [u8]],
) -> impl Service<Request<B>, Response = Response<GrpcBody>, Error = Infallible>
where
    B: Body,
{
    service_fn(move |req: Request<B>| async move {
        let mut body = pin!(req.into_body());
        while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            black_box(frame.is_ok());
        }
        let mut res = Response::new(GrpcBody::new(response, true));
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        Ok::<_, Infallible>(res)
    })
}

/// The `grpc/*` cases, in the `overhead` group: bare and behind `GrpcLayer`, unary and
/// streamed; every call must have ended complete, its messages counted.
fn grpc(c: &mut Criterion) {
    let registry = MetricsRegistry::new(&MetricConfig::default()).expect("metrics registry");
    let mut bare_unary = grpc_inner(UNARY_RESPONSE);
    let mut unary = GrpcLayer::new(&registry).layer(grpc_inner(UNARY_RESPONSE));
    let mut bare_stream = grpc_inner(STREAM_RESPONSE);
    let mut stream = GrpcLayer::new(&registry).layer(grpc_inner(STREAM_RESPONSE));
    // The options, measured next to `grpc/unary`: time to first byte, filters that match the
    // call or not (each in a registry of its own).
    let mut first_byte = GrpcLayer::new(&registry)
        .with_time_to_first_byte(true)
        .layer(grpc_inner(UNARY_RESPONSE));
    let path = |p: &str| FilterRule::path(PathPattern::new(p).expect("a pattern"));
    let (mut unmatched, unmatched_registry) = filtered_grpc(
        RequestFilter::new()
            .rule(path("/grpc.health.v1.Health/*").skip())
            .rule(path("/towerscope.bench.Admin/**").metrics_only())
            .rule(FilterRule::operation("towerscope.bench.Users/ListUsers").sample_rate(0.01)),
    );
    let (mut skip, skip_registry) =
        filtered_grpc(RequestFilter::new().rule(FilterRule::operation(GRPC_OPERATION).skip()));

    let mut group = overhead_group(c);
    let unary_call = || black_box(grpc_request(UNARY_REQUEST));
    group.bench_function("grpc/bare_unary", |b| {
        b.iter(|| call_and_drain(&mut bare_unary, unary_call()))
    });
    group.bench_function("grpc/unary", |b| {
        b.iter(|| call_and_drain(&mut unary, unary_call()))
    });
    group.bench_function("grpc/first_byte", |b| {
        b.iter(|| call_and_drain(&mut first_byte, unary_call()))
    });
    group.bench_function("grpc/filters_unmatched", |b| {
        b.iter(|| call_and_drain(&mut unmatched, unary_call()))
    });
    group.bench_function("grpc/filter_skip", |b| {
        b.iter(|| call_and_drain(&mut skip, unary_call()))
    });
    group.bench_function("grpc/bare_stream", |b| {
        b.iter(|| call_and_drain(&mut bare_stream, black_box(grpc_request(STREAM_REQUEST))))
    });
    group.bench_function("grpc/stream", |b| {
        b.iter(|| call_and_drain(&mut stream, black_box(grpc_request(STREAM_REQUEST))))
    });
    group.finish();

    // When a layered case ran, every call ended with its trailers (none cancelled, none in
    // flight) and its messages were counted: as many sent as received, four per streamed
    // call and one per unary call.
    let grpc = |r: &MetricsRegistry| r.render_components(&["grpc"]).expect("render");
    assert!(
        !grpc(&skip_registry).contains(GRPC_OPERATION)
            && !grpc(&unmatched_registry).contains("code=\"499\""),
        "skipped calls recorded, or calls cancelled"
    );
    let text = grpc(&registry);
    let value = |series: String| {
        text.lines().find_map(|line| {
            line.strip_prefix(series.as_str())?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    let op = format!(r#"{{operation="{GRPC_OPERATION}"}}"#);
    if let Some(calls) = value(format!(
        r#"grpc_request_total{{code="200",grpc_code="OK",operation="{GRPC_OPERATION}"}}"#
    )) {
        let received = value(format!("grpc_messages_received_total{op}"));
        let sent = value(format!("grpc_messages_sent_total{op}"));
        assert!(
            !text.contains(r#"grpc_code="CANCELLED""#)
                && value(format!("grpc_inflight_requests{op}")) == Some(0.0)
                && received.is_some_and(|n| n >= calls)
                && received == sent,
            "calls not recorded as complete, or messages not counted:\n{text}"
        );
    }
}

/// A `GrpcLayer` into a registry of its own (whose series the returned closure checks) with
/// `filter`, over the one-message service.
fn filtered_grpc(
    filter: RequestFilter,
) -> (
    impl Service<Request<GrpcBody>, Response = Response<impl Body>, Error = Infallible>,
    MetricsRegistry,
) {
    let registry = MetricsRegistry::new(&MetricConfig::default()).expect("metrics registry");
    let svc = GrpcLayer::new(&registry)
        .with_filter(filter)
        .layer(grpc_inner(UNARY_RESPONSE));
    (svc, registry)
}

/// `GrpcLayer::from_telemetry` sampling every call into a pipeline whose exporter drops the
/// batch, with `filters`.
fn sampled_grpc_telemetry(filters: &str) -> Telemetry {
    let config = Config::from_yaml_str(&format!(
        "trace: {{ enabled: true, sample_rate: 1, otel: {{ endpoint: '127.0.0.1:1' }} }}\n\
         filters: {filters}"
    ))
    .expect("config");
    let registry = MetricsRegistry::new(&config.metric).expect("registry");
    let pipeline = TracePipeline::with_exporter(
        &config.trace,
        Discard,
        "discard",
        &registry,
        &config.metric.prefix(),
    );
    Telemetry::with_pipeline(&config, registry, pipeline).expect("telemetry")
}

/// A gRPC call out of one message, its body boxed into tonic's as a tonic client sends it.
fn grpc_client_request() -> Request<tonic::body::Body> {
    grpc_request(UNARY_REQUEST).map(tonic::body::Body::new)
}

/// The `overhead` group, as every case here runs in it.
fn overhead_group(c: &mut Criterion) -> BenchmarkGroup<'_, WallTime> {
    let mut group = c.benchmark_group("overhead");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(60);
    group
}

/// The gRPC server exporting its spans, in the `overhead` group: every call sampled, then
/// `filters:` keeping the call's metrics only, or skipping it.
fn grpc_sampled(c: &mut Criterion) {
    let entry = |action: &str| format!("[{{ operation: '{GRPC_OPERATION}', action: {action} }}]");
    let sampled = sampled_grpc_telemetry("[]");
    let metrics_only = sampled_grpc_telemetry(&entry("metrics_only"));
    let skip = sampled_grpc_telemetry(&entry("skip"));
    let traced = |t: &Telemetry| GrpcLayer::from_telemetry(t).layer(grpc_inner(UNARY_RESPONSE));
    let (mut sampled_svc, mut metrics_only_svc, mut skip_svc) =
        (traced(&sampled), traced(&metrics_only), traced(&skip));

    let mut group = overhead_group(c);
    let unary = || black_box(grpc_request(UNARY_REQUEST));
    group.bench_function("grpc/sampled", |b| {
        b.iter(|| call_and_drain(&mut sampled_svc, unary()))
    });
    group.bench_function("grpc/sampled_metrics_only", |b| {
        b.iter(|| call_and_drain(&mut metrics_only_svc, unary()))
    });
    group.bench_function("grpc/sampled_filter_skip", |b| {
        b.iter(|| call_and_drain(&mut skip_svc, unary()))
    });
    group.finish();
    let skipped = skip
        .registry()
        .render_components(&["grpc"])
        .expect("render");
    assert!(!skipped.contains(GRPC_OPERATION), "{skipped}");
    for t in [sampled, metrics_only, skip] {
        let report = t.shutdown().expect("tracing is on");
        assert_eq!(report.failed, 0, "{report:?}");
    }
}

/// The gRPC client, in the `overhead` group: bare, measured, and a call its filter skips.
fn grpc_client(c: &mut Criterion) {
    let mut bare = grpc_inner(UNARY_RESPONSE);
    let registry = MetricsRegistry::new(&MetricConfig::default()).expect("registry");
    let layer = GrpcClientLayer::new().with_registry(&registry);
    let mut client = layer.clone().layer(grpc_inner(UNARY_RESPONSE));
    let skip_rule = RequestFilter::new().rule(FilterRule::operation(GRPC_OPERATION));
    let mut skip = layer
        .with_filter(skip_rule)
        .layer(grpc_inner(UNARY_RESPONSE));

    let mut group = overhead_group(c);
    let out = || black_box(grpc_client_request());
    group.bench_function("grpc/client_bare", |b| {
        b.iter(|| call_and_drain(&mut bare, out()))
    });
    group.bench_function("grpc/client", |b| {
        b.iter(|| call_and_drain(&mut client, out()))
    });
    group.bench_function("grpc/client_filter_skip", |b| {
        b.iter(|| call_and_drain(&mut skip, out()))
    });
    group.finish();

    // When the measured case ran, its calls ended complete.
    let text = registry.render_components(&["client"]).expect("render");
    let inflight = format!(r#"grpc_client_inflight_requests{{operation="{GRPC_OPERATION}"}}"#);
    assert!(
        !text.contains("code=\"499\"")
            && (!text.contains(&inflight) || text.contains(&format!("{inflight} 0"))),
        "{text}"
    );
}

/// A value of the size of `SpanIds`, of another type: the extension of the cases without ids.
#[derive(Clone, Copy)]
struct NotIds(#[allow(dead_code, reason = "only its size matters")] [u8; 24]);

/// A `MetricsLayer` into `registry` behind a layer inserting a request extension: a sampled
/// span's `ids` (what `TraceLayer` inserts), or a value of another type of the same size.
fn histogram_case(
    registry: &MetricsRegistry,
    ids: Option<SpanIds>,
) -> impl Service<Request<ReqBody>, Response = Response<impl Body>, Error = Infallible> {
    let op = OperationId::from("getUser");
    let metrics =
        MetricsLayer::new(registry).with_resolver(move |_: &RequestRef<'_>| Some(op.clone()));
    MapRequestLayer::new(move |mut req: Request<ReqBody>| {
        match ids {
            Some(ids) => req.extensions_mut().insert(ids).map(|_| ()),
            None => req.extensions_mut().insert(NotIds([7; 24])).map(|_| ()),
        };
        req
    })
    .layer(metrics.layer(inner()))
}

fn overhead(c: &mut Criterion) {
    let registry = MetricsRegistry::new(&MetricConfig::default()).expect("metrics registry");
    let op = OperationId::from("getUser");
    let resolver = move |_: &RequestRef<'_>| Some(op.clone());

    let mut bare = inner();
    let mut request_id = RequestIdLayer::new().layer(inner());
    let mut metrics = MetricsLayer::new(&registry)
        .with_resolver(resolver.clone())
        .layer(inner());
    let mut first_byte = MetricsLayer::new(&registry)
        .with_resolver(resolver.clone())
        .with_time_to_first_byte(true)
        .layer(inner());
    let mut labelled = MetricsLayer::new(&registry)
        .with_resolver(resolver.clone())
        .with_label(MetricLabel::from_header("client", "user-agent").expect("valid label"))
        .layer(inner());
    let mut trace = TraceLayer::new().layer(inner());
    let mut observability =
        ObservabilityLayer::new(RequestIdLayer::new(), MetricsLayer::new(&registry))
            .with_resolver(resolver)
            .layer(inner());

    // Histogram durations, without and with a sampled span's ids in the request: the same
    // extension insert in both (a value of another type, then the ids); and the same request
    // as the first into native histograms, and into both.
    let classic = MetricConfig {
        buckets: Some(vec![0.005, 0.05, 0.5, 5.0]),
        ..MetricConfig::default()
    };
    let histograms = MetricsRegistry::new(&classic).expect("histogram registry");
    let ids = SpanIds {
        trace_id: TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
        span_id: SpanId::from(0x00f0_67aa_0ba9_02b7),
    };
    let mut histogram = histogram_case(&histograms, None);
    let mut histogram_exemplar = histogram_case(&histograms, Some(ids));
    let natives = MetricsRegistry::new(&MetricConfig {
        histogram: HistogramMode::Native,
        ..MetricConfig::default()
    })
    .expect("native registry");
    let mut native = histogram_case(&natives, None);
    let boths = MetricsRegistry::new(&MetricConfig {
        histogram: HistogramMode::Both,
        ..classic.clone()
    })
    .expect("both registry");
    let mut both = histogram_case(&boths, None);

    // The same histograms under `metric.naming: otel`: the route from the resolver, the
    // duration keyed by (route, method, scheme, version, status), no counter.
    struct Users(OperationId);
    impl OperationResolver for Users {
        fn resolve(&self, _: &RequestRef<'_>) -> Option<OperationId> {
            Some(self.0.clone())
        }
        fn route(&self, _: &OperationId) -> Option<&str> {
            Some("/users/{id}")
        }
    }
    let mut otel = MapRequestLayer::new(|mut req: Request<ReqBody>| {
        req.extensions_mut().insert(NotIds([7; 24]));
        req
    })
    .layer(
        MetricsLayer::new(&histograms)
            .with_naming(MetricNaming::Otel)
            .with_resolver(Users(OperationId::from("getUser")))
            .layer(inner()),
    );

    // Telemetry::layer: tracing off, and spans exported by the layer itself to a pipeline
    // whose exporter drops the batch.
    let telemetry = |yaml: &str| {
        let config = Config::from_yaml_str(yaml).expect("config");
        let registry = MetricsRegistry::new(&config.metric).expect("registry");
        if !config.trace.enabled {
            return Telemetry::init_local(&config).expect("telemetry");
        }
        let pipeline = TracePipeline::with_exporter(
            &config.trace,
            Discard,
            "discard",
            &registry,
            &config.metric.prefix(),
        );
        Telemetry::with_pipeline(&config, registry, pipeline).expect("telemetry")
    };
    let traced = |rate: &str| {
        telemetry(&format!(
            "trace: {{ enabled: true, sample_rate: {rate}, otel: {{ endpoint: '127.0.0.1:1' }} }}"
        ))
    };
    let (tracing_off, sampled, sampled_out) = (
        telemetry("trace: { enabled: false }"),
        traced("1"),
        traced("0"),
    );
    let users = || {
        let op = OperationId::from("getUser");
        move |_: &RequestRef<'_>| Some(op.clone())
    };
    let mut telemetry_off = tracing_off.layer().with_resolver(users()).layer(inner());
    let mut telemetry_sampled = sampled.layer().with_resolver(users()).layer(inner());
    let mut telemetry_sampled_out = sampled_out.layer().with_resolver(users()).layer(inner());
    // Filters (`filters:`) on the sampled pipeline: three rules none of which matches the
    // request (what every other request pays once rules exist), and a rule matching it that
    // skips it or keeps its metrics only.
    let filtered = |rules: &str| {
        let config = Config::from_yaml_str(&format!(
            "trace: {{ enabled: true, sample_rate: 1, otel: {{ endpoint: '127.0.0.1:1' }} }}\n\
             filters: {rules}"
        ))
        .expect("config");
        let filter = towerscope::filter::RequestFilter::from_config(&config.filters);
        sampled
            .layer()
            .with_resolver(users())
            .with_filter(filter)
            .layer(inner())
    };
    let mut filters_unmatched = filtered(
        "[{ path: /healthz, action: skip }, { path: '/internal/**', action: metrics_only }, \
         { operation: listUsers, sample_rate: 0.01 }]",
    );
    // Span attributes on the sampled pipeline: two captured request headers (one present,
    // `user-agent`) and a hook adding one attribute.
    let mut sampled_attributes = sampled
        .layer()
        .with_resolver(users())
        .with_span_attributes(
            towerscope::trace::SpanAttributes::new()
                .capture_request_headers([USER_AGENT, "x-tenant".parse().expect("a name")])
                .on_request(|head, out| {
                    out.push(opentelemetry::KeyValue::new(
                        "app.secure",
                        head.uri().scheme().is_some(),
                    ));
                }),
        )
        .layer(inner());
    let mut filter_skip = filtered(&format!("[{{ path: '{PATH}', action: skip }}]"));
    let mut filter_metrics_only =
        filtered(&format!("[{{ path: '{PATH}', action: metrics_only }}]"));

    let mut group = c.benchmark_group("overhead");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(60);
    group.bench_function("bare", |b| b.iter(|| round_trip(&mut bare, false)));
    group.bench_function("bare/incoming_id", |b| {
        b.iter(|| round_trip(&mut bare, true))
    });
    group.bench_function("request_id/generated", |b| {
        b.iter(|| round_trip(&mut request_id, false))
    });
    group.bench_function("request_id/incoming", |b| {
        b.iter(|| round_trip(&mut request_id, true))
    });
    group.bench_function("metrics", |b| b.iter(|| round_trip(&mut metrics, false)));
    group.bench_function("metrics/first_byte", |b| {
        b.iter(|| round_trip(&mut first_byte, false))
    });
    group.bench_function("metrics/label", |b| {
        b.iter(|| round_trip(&mut labelled, false))
    });
    group.bench_function("trace", |b| b.iter(|| round_trip(&mut trace, false)));
    group.bench_function("observability", |b| {
        b.iter(|| round_trip(&mut observability, false))
    });
    group.bench_function("metrics/histogram", |b| {
        b.iter(|| round_trip(&mut histogram, false))
    });
    group.bench_function("metrics/histogram_exemplar", |b| {
        b.iter(|| round_trip(&mut histogram_exemplar, false))
    });
    group.bench_function("metrics/native", |b| {
        b.iter(|| round_trip(&mut native, false))
    });
    group.bench_function("metrics/both", |b| b.iter(|| round_trip(&mut both, false)));
    group.bench_function("metrics/otel", |b| b.iter(|| round_trip(&mut otel, false)));
    group.bench_function("telemetry/tracing_off", |b| {
        b.iter(|| round_trip(&mut telemetry_off, false))
    });
    group.bench_function("telemetry/sampled", |b| {
        b.iter(|| round_trip(&mut telemetry_sampled, false))
    });
    group.bench_function("telemetry/sampled_out", |b| {
        b.iter(|| round_trip(&mut telemetry_sampled_out, false))
    });
    group.bench_function("telemetry/sampled_attributes", |b| {
        b.iter(|| round_trip(&mut sampled_attributes, false))
    });
    group.bench_function("telemetry/filters_unmatched", |b| {
        b.iter(|| round_trip(&mut filters_unmatched, false))
    });
    group.bench_function("telemetry/filter_skip", |b| {
        b.iter(|| round_trip(&mut filter_skip, false))
    });
    group.bench_function("telemetry/filter_metrics_only", |b| {
        b.iter(|| round_trip(&mut filter_metrics_only, false))
    });
    group.finish();
    // Spans the batch processor could not take in time (its thread on a busy core) are
    // dropped and counted, never waited for: printed, not asserted.
    let report = sampled.shutdown().expect("tracing is on");
    eprintln!("telemetry/sampled: {report:?}");
    assert_eq!(report.failed, 0, "{report:?}");

    // When a metrics case ran (a name filter may skip them), every request ended with its
    // body: counted with its status, none as abandoned (499), none still in flight.
    let text = registry.render();
    if text.contains("http_request_total{") {
        assert!(
            text.contains(r#"http_request_total{method="GET",code="200",operation="getUser"}"#)
                && !text.contains(r#"code="499""#)
                && text.contains(r#"http_inflight_requests{method="GET",operation="getUser"} 0"#),
            "requests not recorded as complete:\n{text}"
        );
    }
}

/// One observation into a duration series (no layer, no request), as each histogram mode
/// records it: the recording cost alone, where the layer cases above add the request's.
/// Values cycle through 64 durations from 0.1 ms to 10 s, so every bucket path is taken.
fn record(c: &mut Criterion) {
    let values: Vec<f64> = (0..64)
        .map(|i| 1e-4 * 1e5_f64.powf(f64::from(i) / 63.0))
        .collect();
    let key = metrics::Key::from_parts(
        "http_request_duration_seconds",
        vec![metrics::Label::new("operation", "getUser")],
    );
    static META: metrics::Metadata<'static> =
        metrics::Metadata::new("bench", metrics::Level::INFO, None);
    let classic = MetricConfig {
        buckets: Some(vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]),
        ..MetricConfig::default()
    };
    let cases = [
        ("record/summary", MetricConfig::default()),
        ("record/classic", classic.clone()),
        (
            "record/native",
            MetricConfig {
                histogram: HistogramMode::Native,
                ..MetricConfig::default()
            },
        ),
        (
            "record/both",
            MetricConfig {
                histogram: HistogramMode::Both,
                ..classic
            },
        ),
    ];
    let mut group = c.benchmark_group("record");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(60);
    for (name, config) in cases {
        let registry = MetricsRegistry::new(&config).expect("registry");
        let histogram = registry.recorder().register_histogram(&key, &META);
        for v in &values {
            histogram.record(*v);
        }
        let mut i = 0;
        group.bench_function(name.trim_start_matches("record/"), |b| {
            b.iter(|| {
                i = (i + 1) & 63;
                histogram.record(black_box(values[i]));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, overhead, grpc, grpc_sampled, grpc_client, record);
criterion_main!(benches);
