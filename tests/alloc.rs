//! Allocations per request, counted by a global allocator (deterministic, not timed).
//!
//! Its own test binary with one test: the counting allocator sees every thread of the process,
//! so nothing else may run beside the measured loop.

use std::{
    alloc::System,
    convert::Infallible,
    future::{ready, Future},
    pin::pin,
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use metrics::{Key, Label, Level, Metadata};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{SpanData, SpanExporter},
};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::{service_fn, Layer, Service};
use towerscope::{
    config::{Config, MetricConfig},
    filter::{FilterRule, PathPattern, RequestFilter},
    grpc::{GrpcLayer, RequestBody},
    metrics::{HistogramMode, MetricLabel, MetricNaming, MetricsLayer, MetricsRegistry},
    operation::{OperationId, OperationResolver, RequestRef},
    trace::TracePipeline,
    Telemetry,
};
use tracing_subscriber::layer::SubscriberExt;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

static META: Metadata<'static> = Metadata::new("alloc", Level::INFO, None);

const WARM_UP: usize = 200;
const MEASURED: usize = 1_000;

/// Calls `svc` once with `req` and reads the response to its end, with a no-op waker (every
/// service here is immediately ready).
fn round_trip<S, B>(svc: &mut S, req: Request<()>)
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    B: Body,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let fut = pin!(svc.call(req));
    let Poll::Ready(Ok(res)) = fut.poll(&mut cx) else {
        panic!("the service is immediately ready")
    };
    let mut body = pin!(res.into_body());
    while let Poll::Ready(Some(_)) = body.as_mut().poll_frame(&mut cx) {}
}

/// Allocations made by `MEASURED` requests through `svc`, after `WARM_UP` requests; the
/// requests are built before counting starts.
fn allocations_of<S, B>(svc: &mut S) -> usize
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    B: Body,
{
    allocations_with(svc, || Request::get("/api/v2.0/users/42").body(()).unwrap())
}

/// [`allocations_of`] with the requests `request` builds.
fn allocations_with<S, B>(svc: &mut S, request: impl Fn() -> Request<()>) -> usize
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    B: Body,
{
    for _ in 0..WARM_UP {
        round_trip(svc, request());
    }
    let requests: Vec<_> = (0..MEASURED).map(|_| request()).collect();
    // The counter sees every thread: give the registry's upkeep thread, spawned a moment ago,
    // time to finish starting (its start allocates) before counting.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let region = Region::new(GLOBAL);
    for req in requests {
        round_trip(svc, req);
    }
    region.change().allocations
}

/// The inner service: allocates nothing.
fn inner() -> impl Service<Request<()>, Response = Response<Full<Bytes>>, Error = Infallible> {
    service_fn(|_req: Request<()>| {
        ready(Ok::<_, Infallible>(Response::new(Full::new(
            Bytes::from_static(b"{}"),
        ))))
    })
}

/// A metrics layer whose resolver returns a clone of one `OperationId`, or (`fresh`) builds a
/// new one per request, which allocates: the control that shows the counting works.
fn metered(config: &MetricConfig, fresh: bool) -> (MetricsRegistry, usize) {
    let registry = MetricsRegistry::new(config).unwrap();
    let operation = OperationId::from("getUser");
    let layer = MetricsLayer::new(&registry).with_resolver(move |_: &RequestRef<'_>| {
        Some(if fresh {
            OperationId::from("getUser")
        } else {
            operation.clone()
        })
    });
    let mut svc = layer.layer(inner());
    // A summary allocates one page per power of two a duration falls in, once. Touch them all
    // now, so that a request descheduled for a while cannot land in a new one while counting.
    let duration = Key::from_parts(
        "http_request_duration_seconds",
        vec![
            Label::new("method", "GET"),
            Label::new("operation", "getUser"),
        ],
    );
    let histogram = registry.recorder().register_histogram(&duration, &META);
    for exp in -31..=35 {
        histogram.record(2f64.powi(exp));
    }
    let allocations = allocations_of(&mut svc);
    (registry, allocations)
}

/// A label of the user's own from a header, on series that exist: no allocation.
fn labelled_allocations() {
    let config = MetricConfig {
        buckets: Some(vec![0.005, 0.05, 0.5, 5.0]),
        ..MetricConfig::default()
    };
    let registry = MetricsRegistry::new(&config).unwrap();
    let layer = MetricsLayer::new(&registry)
        .with_resolver(Users(OperationId::from("getUser")))
        .with_label(MetricLabel::from_header("tenant", "x-tenant-id").unwrap());
    let mut svc = layer.layer(inner());
    let request = || {
        Request::get("/api/v2.0/users/42")
            .header("x-tenant-id", "acme")
            .body(())
            .unwrap()
    };
    let allocations = allocations_with(&mut svc, request);
    let total = format!(
        "http_request_total{{method=\"GET\",code=\"200\",operation=\"getUser\",tenant=\"acme\"}} {}",
        WARM_UP + MEASURED
    );
    let text = registry.render();
    assert!(text.contains(&total), "the requests were counted:\n{text}");
    assert_eq!(allocations, 0, "allocations over {MEASURED} requests");
}

/// A resolver that knows one operation and its route template, as an OpenAPI one does.
struct Users(OperationId);

impl OperationResolver for Users {
    fn resolve(&self, _: &RequestRef<'_>) -> Option<OperationId> {
        Some(self.0.clone())
    }

    fn route(&self, _: &OperationId) -> Option<&str> {
        Some("/users/{id}")
    }
}

/// `metered` with `metric.naming: otel` (histograms with the advised buckets).
fn metered_otel() -> (MetricsRegistry, usize) {
    let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
    let layer = MetricsLayer::new(&registry)
        .with_naming(MetricNaming::Otel)
        .with_resolver(Users(OperationId::from("getUser")));
    let mut svc = layer.layer(inner());
    let allocations = allocations_of(&mut svc);
    (registry, allocations)
}

#[test]
fn the_metrics_path_allocates_nothing_once_its_series_exist() {
    let (registry, summary) = metered(&MetricConfig::default(), false);
    let text = registry.render();
    let total = format!(
        "http_request_total{{method=\"GET\",code=\"200\",operation=\"getUser\"}} {}",
        WARM_UP + MEASURED
    );
    assert!(text.contains(&total), "the requests were counted:\n{text}");

    let histogram = MetricConfig {
        buckets: Some(vec![0.005, 0.05, 0.5, 5.0]),
        ..MetricConfig::default()
    };
    let (_, buckets) = metered(&histogram, false);
    // Native histograms (and both): a page per power of two a duration falls in, allocated on
    // its first value, like the summary's.
    let native = MetricConfig {
        histogram: HistogramMode::Native,
        ..MetricConfig::default()
    };
    let (registry, natives) = metered(&native, false);
    assert!(
        registry.render().contains(&format!(
            "http_request_duration_seconds_count{{method=\"GET\",operation=\"getUser\"}} {}",
            WARM_UP + MEASURED + 67
        )),
        "the native histogram recorded every request:\n{}",
        registry.render()
    );
    let both = MetricConfig {
        histogram: HistogramMode::Both,
        ..histogram.clone()
    };
    let (_, boths) = metered(&both, false);
    assert_eq!(
        (summary, buckets, natives, boths),
        (0, 0, 0, 0),
        "allocations over {MEASURED} requests (summary, histogram, native, both)"
    );

    labelled_allocations();

    let (registry, otel) = metered_otel();
    let count = format!(
        "http_server_request_duration_seconds_count{{http_request_method=\"GET\",http_response_status_code=\"200\",http_route=\"/users/{{id}}\",network_protocol_version=\"1.1\",url_scheme=\"http\"}} {}",
        WARM_UP + MEASURED
    );
    assert!(
        registry.render().contains(&count),
        "the requests were recorded:\n{}",
        registry.render()
    );
    assert_eq!(
        otel, 0,
        "allocations over {MEASURED} requests (metric.naming: otel)"
    );

    let (registry, grpc) = grpc_allocations(|layer| layer);
    let sent = format!(
        "grpc_messages_sent_total{{operation=\"unknown\"}} {}",
        2 * (WARM_UP + MEASURED)
    );
    let text = registry.render();
    assert!(text.contains(&sent), "the messages were counted:\n{text}");
    // Nothing per call; 1 to 3 stray allocations per run were seen (1 without messages in the
    // body), not yet traced to their thread: the guard is on per-call allocation.
    assert!(
        grpc < MEASURED / 100,
        "{grpc} allocations over {MEASURED} gRPC calls (GrpcLayer, messages counted)"
    );

    grpc_options_allocate_nothing();

    let (_, control) = metered(&MetricConfig::default(), true);
    assert!(
        control >= MEASURED,
        "a resolver allocating per request must be seen: {control}"
    );

    let traced = traced_allocations("1");
    let sampled_out = traced_allocations("0");
    eprintln!(
        "allocations per request: metrics path 0; request id + span + metrics: sampled in (to an exporter that drops) {:.1}, sampled out {:.1}",
        traced as f64 / MEASURED as f64,
        sampled_out as f64 / MEASURED as f64
    );
    // Regression guards on the whole traced path (15 and 13 per request since the layer
    // builds its span itself; 22 through tracing-opentelemetry): a sampled span's name,
    // attribute list and strings, its box and context, and its export are where allocations
    // remain; a request the layer samples out builds no span at all (what is left: the request
    // id, the request's extension map, the non-sampled context made current, and in it the
    // note that its trace id is random, 3 of the 13: W3C level 2's `random` flag goes on from
    // the spans the SDK drops with empty flags). The export thread's allocations fall in the
    // count too, hence the margin.
    assert!(
        traced <= 19 * MEASURED,
        "{traced} allocations over {MEASURED} traced requests"
    );
    assert!(
        sampled_out <= 15 * MEASURED,
        "{sampled_out} allocations over {MEASURED} sampled-out requests"
    );
}

/// The gRPC layer's options on the request path: the time to first byte recorded beside
/// three filter rules that do not match the call, and a rule that skips it.
fn grpc_options_allocate_nothing() {
    let unmatched = RequestFilter::new()
        .rule(FilterRule::path(PathPattern::new("/internal/**").unwrap()).metrics_only())
        .rule(FilterRule::operation("grpc.health.v1.Health/Check"))
        .rule(FilterRule::path(PathPattern::new("/healthz").unwrap()));
    let (registry, options) =
        grpc_allocations(|layer| layer.with_time_to_first_byte(true).with_filter(unmatched));
    let heads = format!(
        "grpc_request_time_to_first_byte_seconds_count{{operation=\"unknown\"}} {}",
        WARM_UP + MEASURED
    );
    let text = registry.render();
    assert!(text.contains(&heads), "every head was recorded:\n{text}");
    let skip = RequestFilter::new().rule(FilterRule::path(PathPattern::new("/api/**").unwrap()));
    let (registry, skipped) = grpc_allocations(|layer| layer.with_filter(skip));
    let text = registry.render();
    assert!(
        !text.contains("operation=\"unknown\""),
        "nothing recorded:\n{text}"
    );
    // The same bound as the gRPC path without options, for the same stray allocations.
    assert!(
        options < MEASURED / 100 && skipped < MEASURED / 100,
        "{options} allocations over {MEASURED} gRPC calls with first byte and filters, {skipped} skipped"
    );
}

/// A `GrpcLayer` (as `options` make it) over a service answering two length-prefixed
/// messages in one frame: the response path, message counting included.
fn grpc_allocations(options: impl FnOnce(GrpcLayer) -> GrpcLayer) -> (MetricsRegistry, usize) {
    let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
    let inner = service_fn(|_req: Request<RequestBody<()>>| {
        let messages = Bytes::from_static(&[0, 0, 0, 0, 1, 7, 0, 0, 0, 0, 0]);
        ready(Ok::<_, Infallible>(Response::new(Full::new(messages))))
    });
    let mut svc = options(GrpcLayer::new(&registry)).layer(inner);
    let allocations = allocations_of(&mut svc);
    (registry, allocations)
}

/// Drops every batch: the export thread's own work is still counted (the counter is global).
#[derive(Debug)]
struct Drop;

impl SpanExporter for Drop {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        Ok(())
    }
}

/// Allocations of `MEASURED` requests through the whole layer of a `Telemetry` sampling at
/// `sample_rate`, under its own tracing layer.
fn traced_allocations(sample_rate: &str) -> usize {
    let config = Config::from_yaml_str(&format!(
        "trace: {{ enabled: true, sample_rate: {sample_rate}, otel: {{ endpoint: '127.0.0.1:1' }} }}"
    ))
    .unwrap();
    let registry = MetricsRegistry::new(&config.metric).unwrap();
    let pipeline = TracePipeline::with_exporter(
        &config.trace,
        Drop,
        "drop",
        &registry,
        &config.metric.prefix(),
    );
    let telemetry = Telemetry::with_pipeline(&config, registry, pipeline).unwrap();
    let subscriber = tracing_subscriber::registry().with(telemetry.tracing_layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut svc = telemetry.layer().layer(inner());
    let allocations = allocations_of(&mut svc);
    telemetry.shutdown();
    allocations
}
