//! towerscope beside what users pick instead, each in one criterion group with the bare router,
//! so every ratio is read from one run.
//!
//! Run with (release, about two minutes):
//!
//! ```text
//! cargo bench --bench compare
//! ```
//!
//! On a shared machine, the pinned method (BENCHMARKS.md): every case in a process of its own
//! beside its own `bare`, under `taskset -c 1`, so that the export threads' work (the batch
//! processors', fastrace's collector) is counted in the requests' time:
//!
//! ```text
//! cargo bench --bench compare --no-run
//! python3 benches/ratios.py --group trace --cpu 1 --runs 7 \
//!     --isolate axum_tracing_opentelemetry,fastrace_axum,towerscope/sampled \
//!     --reference fastrace_axum,axum_tracing_opentelemetry
//! ```
//!
//! With `COMPARE_CLOCK=process_cpu` (`ratios.py --clock process_cpu`) criterion measures the
//! CPU time of the bench's whole process instead of wall time: every thread's (the export
//! threads' too), and none of the other jobs that share the pinned core.
//!
//! Every case is an axum [`Router`] with one route, `GET /api/v2.0/users/{id}`, answering a
//! small JSON body, finished with `with_state(())` as `axum::serve` does, called in process on
//! a current-thread tokio runtime: build the request
//! (`host`, `user-agent`, `accept`), `ready`, `call`, read the body to its end, drop. The
//! added cost of a layer is its time minus the group's `bare`.
//!
//! | group | cases |
//! |---|---|
//! | `metrics` | `bare`; `axum_prometheus` (`PrometheusMetricLayer`, its global recorder); `towerscope` (`MetricsLayer`, operation from `MatchedPath`, its own registry); `towerscope/histogram` (the same with histogram durations, and a request extension of another type inserted in front); `towerscope/histogram_exemplar` (the same with a sampled span's ids as that extension: the difference is the exemplar's cost) |
//! | `request_id` | `bare`; `tower_http` (`SetRequestIdLayer` + `PropagateRequestIdLayer`, UUIDs); `towerscope` (`RequestIdLayer`) |
//! | `trace` | under one subscriber each, a `tracing-opentelemetry` layer over an SDK tracer whose batch processor hands spans to an exporter that drops them: `bare`; `tower_http` (`TraceLayer::new_for_http`); `axum_tracing_opentelemetry` (`OtelAxumLayer`, AlwaysOn); `fastrace_axum` (fastrace-axum 0.2's `FastraceLayer`, not a `tracing` span: see below); `towerscope/sampled` (`Telemetry::layer`, `sample_rate: 1`, exemplars on by default); `towerscope/sampled_no_exemplars` (the same with `metric.exemplars: false`); `towerscope/sampled_out` (`sample_rate: 0`); `towerscope/tracing_off` (the same layer with `trace.enabled: false`: request id and metrics; the baseline of the sampled-out cost) |
//! | `observability` | `bare`; `tower_http+axum_prometheus` (request id pair and metrics layer); `towerscope` (`ObservabilityLayer`: request id, operation, span stage, metrics), no subscriber |
//!
//! `trace/fastrace_axum`, the lower anchor of the span path (a span only, from a library built
//! for low overhead): per request, fastrace-axum takes the parent from `traceparent` or, without
//! one (as here), makes a new root with `SpanContext::random()`, which is sampled, so every
//! request is recorded. It names the span `GET {route}` (`format!`, from `MatchedPath`), adds the
//! method, path and route as owned strings and the status code when the handler's future
//! completes; the span ends there (at the response head, not at the body's end as towerscope's
//! does). Its records go through the thread's lock-free ring to fastrace's collector thread,
//! which turns them into `SpanRecord`s and hands them, at least every second and sooner when a
//! thread's ring is half full (the default `Config`), to a reporter that counts and drops them.
//! That reporter is set only in a process that runs the case (fastrace's reporter is global);
//! after the group the bench checks one span reported per request, with its route and status.
//!
//! axum-prometheus installs the global `metrics` recorder; towerscope's cases record into their
//! own `MetricsRegistry`, so each counts only its own series.

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented `pub fn benches`"
)]

use std::{
    convert::Infallible,
    hint::black_box,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, Once, OnceLock,
    },
    time::Duration,
};

use axum::{routing::get, Router};
use bytes::Bytes;
use criterion::{
    criterion_group,
    measurement::{Measurement, ValueFormatter},
    BenchmarkGroup, Criterion, Throughput,
};
use http::{
    header::{ACCEPT, CONTENT_TYPE, HOST, USER_AGENT},
    HeaderValue, Request, Response,
};
use http_body::Body;
use http_body_util::BodyExt;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter},
};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};
use towerscope::{
    config::MetricConfig, trace::TracePipeline, Config, MetricsLayer, MetricsRegistry,
    ObservabilityLayer, RequestIdLayer, Telemetry,
};
use tracing_subscriber::layer::SubscriberExt;

const PATH: &str = "/api/v2.0/users/42";

async fn user() -> ([(http::HeaderName, &'static str); 1], &'static str) {
    (
        [(CONTENT_TYPE, "application/json")],
        "{\"id\":42,\"name\":\"alice\"}",
    )
}

fn router() -> Router {
    Router::new().route("/api/v2.0/users/{id}", get(user))
}

fn request() -> Request<axum::body::Body> {
    Request::get(PATH)
        .header(HOST, HeaderValue::from_static("registry.example:8080"))
        .header(USER_AGENT, HeaderValue::from_static("skopeo/1.13.3"))
        .header(ACCEPT, HeaderValue::from_static("application/json"))
        .body(axum::body::Body::empty())
        .expect("valid request")
}

/// One request: ready, call, the body read to its end, drop. Panics unless it is a 200.
async fn round_trip<S, B>(svc: &mut S)
where
    S: Service<Request<axum::body::Body>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let req = black_box(request());
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.expect("body");
    black_box(body);
}

/// Times `router` as `axum::serve` runs it: finished with `with_state(())`, which turns its
/// handlers into routes once (an unfinished `Router<()>` applies its layers on every call).
fn bench(
    group: &mut BenchmarkGroup<'_, impl Measurement>,
    rt: &Runtime,
    name: &str,
    router: Router,
) {
    let mut svc = router.with_state(());
    group.bench_function(name, |b| b.iter(|| rt.block_on(round_trip(&mut svc))));
}

fn configure(group: &mut BenchmarkGroup<'_, impl Measurement>) {
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(60);
}

/// One current-thread runtime for every group: axum-prometheus spawns its upkeep task on it,
/// and the task runs while the requests are driven.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// axum-prometheus's layer and its handle, made once: `pair` installs the global recorder.
fn axum_prometheus() -> &'static (
    axum_prometheus::PrometheusMetricLayer<'static>,
    metrics_exporter_prometheus::PrometheusHandle,
) {
    static PAIR: OnceLock<(
        axum_prometheus::PrometheusMetricLayer<'static>,
        metrics_exporter_prometheus::PrometheusHandle,
    )> = OnceLock::new();
    PAIR.get_or_init(|| {
        let _runtime = runtime().enter();
        axum_prometheus::PrometheusMetricLayer::pair()
    })
}

fn metrics<M: Measurement>(c: &mut Criterion<M>) {
    let rt = runtime();
    let registry = MetricsRegistry::new(&MetricConfig::default()).expect("registry");
    let (prometheus_layer, prometheus) = axum_prometheus();
    let mut group = c.benchmark_group("metrics");
    configure(&mut group);
    bench(&mut group, rt, "bare", router());
    bench(
        &mut group,
        rt,
        "axum_prometheus",
        router().layer(prometheus_layer.clone()),
    );
    bench(
        &mut group,
        rt,
        "towerscope",
        router().layer(MetricsLayer::new(&registry)),
    );
    // Histogram durations, without and with a sampled span's ids in the request (what
    // `TraceLayer` puts there): the difference is what an exemplar costs a request.
    let histograms = MetricsRegistry::new(
        &Config::from_yaml_str("metric: { buckets: [0.005, 0.05, 0.5, 5] }")
            .expect("config")
            .metric,
    )
    .expect("registry");
    // The same extension insert in both cases (the first one allocates the map): a value of
    // another type, then the ids.
    #[derive(Clone, Copy)]
    struct NotIds(#[allow(dead_code, reason = "only its size matters")] [u8; 24]);
    bench(
        &mut group,
        rt,
        "towerscope/histogram",
        router()
            .layer(MetricsLayer::new(&histograms))
            .layer(tower::util::MapRequestLayer::new(
                move |mut req: axum::http::Request<axum::body::Body>| {
                    req.extensions_mut().insert(NotIds([7; 24]));
                    req
                },
            )),
    );
    let ids = towerscope::metrics::SpanIds {
        trace_id: opentelemetry::trace::TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
        span_id: opentelemetry::trace::SpanId::from(0x00f0_67aa_0ba9_02b7),
    };
    bench(
        &mut group,
        rt,
        "towerscope/histogram_exemplar",
        router()
            .layer(MetricsLayer::new(&histograms))
            .layer(tower::util::MapRequestLayer::new(
                move |mut req: axum::http::Request<axum::body::Body>| {
                    req.extensions_mut().insert(ids);
                    req
                },
            )),
    );
    group.finish();

    // Both recorded the requests they served, under the route template.
    let ours = registry.render();
    let theirs = prometheus.render();
    if ours.contains("http_request_total{") {
        assert!(
            ours.contains(
                r#"http_request_total{method="GET",code="200",operation="/api/v2.0/users/{id}"}"#
            ) && !ours.contains(r#"code="499""#),
            "towerscope did not record the requests:\n{ours}"
        );
    }
    if theirs.contains("axum_http_requests_total") {
        assert!(
            theirs.contains(r#"endpoint="/api/v2.0/users/{id}""#),
            "axum-prometheus did not record the requests:\n{theirs}"
        );
    }
}

/// tower-http's request id pair as its docs wire it: a UUID set on the request (outer), and
/// propagated to the response.
fn tower_http_request_id(router: Router) -> Router {
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    router
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

fn request_id<M: Measurement>(c: &mut Criterion<M>) {
    let rt = runtime();
    let mut group = c.benchmark_group("request_id");
    configure(&mut group);
    bench(&mut group, rt, "bare", router());
    bench(
        &mut group,
        rt,
        "tower_http",
        tower_http_request_id(router()),
    );
    bench(
        &mut group,
        rt,
        "towerscope",
        router().layer(RequestIdLayer::new()),
    );
    group.finish();
}

/// Takes every batch and drops it: the export thread's work is real, nothing leaves the process.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

/// An SDK tracer provider sampling every span, batching to [`Discard`], as users wire
/// axum-tracing-opentelemetry or tower-http's `TraceLayer` to OpenTelemetry.
fn discarding_provider() -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_sampler(Sampler::AlwaysOn)
        .with_span_processor(BatchSpanProcessor::builder(Discard).build())
        .build()
}

/// fastrace's reporter for `trace/fastrace_axum`: counts the spans of each batch the global
/// collector hands it, keeps the first one to check, and drops them all (as [`Discard`] does
/// for the OpenTelemetry cases).
#[derive(Debug)]
struct DiscardFastrace;

/// Spans named as fastrace-axum names a request to the bench's route, reported so far.
static FASTRACE_REQUEST_SPANS: AtomicU64 = AtomicU64::new(0);
/// The first request span reported, checked after the group.
static FASTRACE_FIRST: Mutex<Option<fastrace::collector::SpanRecord>> = Mutex::new(None);
const FASTRACE_NAME: &str = "GET /api/v2.0/users/{id}";

impl fastrace::collector::Reporter for DiscardFastrace {
    fn report(&mut self, spans: Vec<fastrace::collector::SpanRecord>) {
        let ours = spans.iter().filter(|s| s.name == FASTRACE_NAME).count();
        if ours > 0 {
            let mut first = FASTRACE_FIRST.lock().expect("not poisoned");
            if first.is_none() {
                *first = spans.iter().find(|s| s.name == FASTRACE_NAME).cloned();
            }
        }
        FASTRACE_REQUEST_SPANS.fetch_add(ours as u64, Ordering::Relaxed);
        black_box(spans);
    }
}

/// Installs [`DiscardFastrace`] as fastrace's global reporter with the default collector
/// configuration (a report at least every second, sooner when a thread's queue is half full):
/// only in a process that runs `trace/fastrace_axum`, since before a reporter is set fastrace
/// sends nothing to its collector thread.
fn fastrace_reporter() {
    static SET: Once = Once::new();
    SET.call_once(|| {
        fastrace::set_reporter(DiscardFastrace, fastrace::collector::Config::default());
    });
}

/// Hands everything fastrace's collector has queued to the reporter until it has reported one
/// span per request served (`served`), or gives up after a few rounds. A root span's three
/// commands wait in the bench thread's queue when its ring is full; each new root span pushes
/// them on, so every round starts and ends one (named otherwise, not counted).
fn fastrace_drain(served: u64) -> u64 {
    for _ in 0..50 {
        drop(fastrace::Span::root(
            "drain",
            fastrace::collector::SpanContext::random(),
        ));
        fastrace::flush();
        let reported = FASTRACE_REQUEST_SPANS.load(Ordering::Relaxed);
        if reported >= served {
            return reported;
        }
    }
    FASTRACE_REQUEST_SPANS.load(Ordering::Relaxed)
}

fn towerscope_telemetry(sample_rate: &str) -> Telemetry {
    towerscope_telemetry_with(sample_rate, "{}")
}

/// With a `metric:` block (`{ exemplars: false }`).
fn towerscope_telemetry_with(sample_rate: &str, metric: &str) -> Telemetry {
    let config = Config::from_yaml_str(&format!(
        "metric: {metric}\ntrace: {{ enabled: true, sample_rate: {sample_rate}, otel: {{ endpoint: '127.0.0.1:1' }} }}"
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

fn trace<M: Measurement>(c: &mut Criterion<M>) {
    let rt = runtime();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = discarding_provider();
    let peer_subscriber = || {
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("compare")))
    };
    let sampled = towerscope_telemetry("1");
    let sampled_out = towerscope_telemetry("0");
    let tracing_off = {
        let config = Config::from_yaml_str("trace: { enabled: false }").expect("config");
        Telemetry::init_local(&config).expect("telemetry")
    };
    let sampled_no_exemplars = towerscope_telemetry_with("1", "{ exemplars: false }");

    let mut fastrace_served = 0_u64;

    let mut group = c.benchmark_group("trace");
    configure(&mut group);
    tracing::subscriber::with_default(peer_subscriber(), || {
        bench(&mut group, rt, "bare", router());
        bench(
            &mut group,
            rt,
            "tower_http",
            router().layer(tower_http::trace::TraceLayer::new_for_http()),
        );
        bench(
            &mut group,
            rt,
            "axum_tracing_opentelemetry",
            router().layer(axum_tracing_opentelemetry::middleware::OtelAxumLayer::default()),
        );
        // fastrace's span is not a `tracing` span: the subscriber sees nothing of it. The
        // requests carry no `traceparent`, so every one is a new sampled root.
        let mut svc = router()
            .layer(fastrace_axum::FastraceLayer::default())
            .with_state(());
        group.bench_function("fastrace_axum", |b| {
            fastrace_reporter();
            b.iter(|| {
                fastrace_served += 1;
                rt.block_on(round_trip(&mut svc));
            });
        });
    });
    for (name, telemetry) in [
        ("towerscope/sampled", &sampled),
        ("towerscope/sampled_no_exemplars", &sampled_no_exemplars),
        ("towerscope/sampled_out", &sampled_out),
    ] {
        let subscriber = tracing_subscriber::registry().with(telemetry.tracing_layer());
        tracing::subscriber::with_default(subscriber, || {
            bench(&mut group, rt, name, router().layer(telemetry.layer()));
        });
    }
    bench(
        &mut group,
        rt,
        "towerscope/tracing_off",
        router().layer(tracing_off.layer()),
    );
    group.finish();

    // The sampled case exported its spans (when it ran: a name filter may skip it), without
    // failures; the sampled-out case exported none.
    let sampled = sampled.shutdown().expect("tracing is on");
    let sampled_out = sampled_out.shutdown().expect("tracing is on");
    eprintln!("towerscope/sampled: {sampled:?}; towerscope/sampled_out: {sampled_out:?}");
    assert_eq!(sampled.failed, 0, "{sampled:?}");
    assert_eq!(
        sampled_out.exported + sampled_out.dropped,
        0,
        "{sampled_out:?}"
    );
    provider.shutdown().ok();

    // fastrace reported one span per request, named, with its attributes and the status.
    if fastrace_served > 0 {
        let reported = fastrace_drain(fastrace_served);
        eprintln!("fastrace_axum: {fastrace_served} requests, {reported} spans reported");
        assert_eq!(reported, fastrace_served, "fastrace lost spans");
        let first = FASTRACE_FIRST.lock().expect("not poisoned").take();
        let first = first.expect("a span");
        let property = |key: &str| {
            first
                .properties
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.to_string())
        };
        assert_eq!(
            property("http.route").as_deref(),
            Some("/api/v2.0/users/{id}")
        );
        assert_eq!(
            property("http.response.status_code").as_deref(),
            Some("200")
        );
    }
}

fn observability<M: Measurement>(c: &mut Criterion<M>) {
    let rt = runtime();
    let registry = MetricsRegistry::new(&MetricConfig::default()).expect("registry");
    let prometheus_layer = axum_prometheus().0.clone();
    let mut group = c.benchmark_group("observability");
    configure(&mut group);
    bench(&mut group, rt, "bare", router());
    bench(
        &mut group,
        rt,
        "tower_http+axum_prometheus",
        tower_http_request_id(router().layer(prometheus_layer)),
    );
    bench(
        &mut group,
        rt,
        "towerscope",
        router().layer(ObservabilityLayer::new(
            RequestIdLayer::new(),
            MetricsLayer::new(&registry),
        )),
    );
    group.finish();
}

/// The CPU time of the whole process: every thread's, the request thread's and the export
/// threads' (batch processors, fastrace's collector), and no other process's. With
/// `COMPARE_CLOCK=process_cpu` it replaces the wall clock, for a machine where other jobs share
/// the core the bench is pinned to: their time slices then count in no case.
#[derive(Debug)]
struct ProcessCpu;

fn process_cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).expect("after the epoch"),
        u32::try_from(t.tv_nsec).expect("below a second"),
    )
}

impl Measurement for ProcessCpu {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        process_cpu_now()
    }
    fn end(&self, start: Duration) -> Duration {
        process_cpu_now().saturating_sub(start)
    }
    fn add(&self, v1: &Duration, v2: &Duration) -> Duration {
        *v1 + *v2
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &Nanoseconds
    }
}

/// Prints every figure in ns (what `benches/ratios.py` reads, as it reads criterion's own).
struct Nanoseconds;

impl ValueFormatter for Nanoseconds {
    fn scale_values(&self, _typical: f64, _values: &mut [f64]) -> &'static str {
        "ns"
    }
    fn scale_throughputs(
        &self,
        _typical: f64,
        _: &Throughput,
        _values: &mut [f64],
    ) -> &'static str {
        "ns"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

criterion_group!(benches, metrics, request_id, trace, observability);
criterion_group! {
    name = benches_process_cpu;
    config = Criterion::default().with_measurement(ProcessCpu);
    targets = metrics, request_id, trace, observability
}

fn main() {
    match std::env::var("COMPARE_CLOCK").as_deref() {
        Ok("process_cpu") => benches_process_cpu(),
        Ok("wall") | Err(_) => benches(),
        Ok(other) => panic!("COMPARE_CLOCK: `wall` or `process_cpu`, not `{other}`"),
    }
    Criterion::default().configure_from_args().final_summary();
}
