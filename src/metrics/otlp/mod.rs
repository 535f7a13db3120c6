//! [`OtlpMetricsPush`]: every family of a [`MetricsRegistry`] pushed to an OpenTelemetry
//! collector over OTLP (http/protobuf or gRPC) every interval, beside the Prometheus endpoint.
//!
//! With `metric.otlp` (see [`config`](crate::config) for its keys and the
//! `OTEL_EXPORTER_OTLP_METRICS_*` variables), every family of the registry (the layer's, the
//! integrations', and the service's own `counter!`/`histogram!` calls) is also pushed to an
//! OpenTelemetry collector every `interval_secs`, with the Prometheus names (Harbor's default
//! summaries keep their quantiles). The resource is `trace:`'s (`service.name`,
//! `service.namespace`, `attributes`), also when tracing is off. The Prometheus endpoint keeps
//! serving unless `metric.enabled: false`; then requests are measured and pushed only.
//!
//! Each push reads the registry as a scrape does (render hooks run first), converts the
//! families with their Prometheus names to OTLP metrics (opentelemetry-proto's messages, what
//! opentelemetry-otlp sends): counters as monotonic sums, gauges as gauges, histograms with
//! their buckets, summaries as OTLP summaries with their quantiles. `_seconds` families have
//! unit `s`, `_bytes` families `By`. With [`Temporality::Delta`], counters and histograms are
//! the change since the last push the collector accepted (a failed push is covered by the next
//! one); summaries stay cumulative, as OTLP defines them. With `metric.naming: otel`, the
//! semantic conventions' families go out under their OpenTelemetry names, units and attribute
//! keys (`http.server.request.duration`, `s`, `http.request.method`, `http.response.status_code`
//! as an integer, `http.server.active_requests` as a non-monotonic sum, ...), as an
//! OpenTelemetry SDK would send them.
//!
//! Why not through opentelemetry-otlp's `MetricExporter`: it exports only what an
//! OpenTelemetry SDK `MeterProvider` aggregated (`ResourceMetrics` cannot be built outside the
//! SDK in 0.33), so every observation would be recorded a second time on the request path, the
//! OpenTelemetry API has no summary instrument for Harbor's default durations, and its
//! histograms could not keep the registry's buckets per family. Converting the registry's own
//! state costs the request path nothing.
//!
//! Pushes run on a thread of their own and never block requests; their outcome is counted in
//! `{prefix}metric_points_exported_total{exporter="otlp"}` and `..._failed_total` (served
//! under `?comp=otlp`). The push logs where it sends at start-up (`info`); the first failure
//! of a streak at `warn`, with its cause (the connection error, or the collector's status and
//! the start of its answer), the URL and what to change; the others at `debug`; the first
//! success after failures at `info`. [`shutdown`](OtlpMetricsPush::shutdown) (also run on
//! drop, and by [`Telemetry::shutdown`](crate::Telemetry::shutdown)) pushes once more.

mod encode;
mod exponential;
mod transport;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc, Mutex, PoisonError,
    },
    thread,
    time::{Duration, SystemTime},
};

use metrics::{Counter, Key, Label, Level, Metadata};
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;

pub(crate) use self::transport::TransportOptions;
use self::{
    encode::{Encoded, Encoder},
    transport::Transport,
};
use super::{MetricNaming, MetricsRegistry};
use crate::export_log::{ExportLog, Exported};

/// The `?comp=` component of the push's own counters.
pub const OTLP_COMPONENT: &str = "otlp";

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// What the values of a push are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temporality {
    /// Totals since the push started.
    Cumulative,
    /// Changes since the last push the collector accepted.
    Delta,
}

/// What a push needs besides the registry (built from `metric.otlp` by the configuration).
#[derive(Debug, Clone)]
pub struct OtlpPushOptions {
    pub(crate) transport: TransportOptions,
    pub(crate) interval: Duration,
    pub(crate) temporality: Temporality,
    pub(crate) resource: Vec<(String, String)>,
    pub(crate) prefix: String,
    pub(crate) naming: MetricNaming,
}

/// Why a push could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtlpPushError {
    /// The client for `metric.otlp` could not be built (the message names the setting).
    #[error("cannot build the OTLP metrics exporter (check metric.otlp): {0}")]
    Transport(String),
    /// The push thread could not be spawned.
    #[error("cannot start the OTLP metrics push thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Points delivered and failed.
#[derive(Debug)]
struct PushStats {
    exported: Counter,
    failed: Counter,
    exported_n: AtomicU64,
    failed_n: AtomicU64,
}

/// A running push; stops (with a last push) on [`shutdown`](Self::shutdown) or when dropped.
#[derive(Debug)]
pub struct OtlpMetricsPush {
    stop: Mutex<Option<mpsc::Sender<()>>>,
    done: Mutex<Option<mpsc::Receiver<()>>>,
    stats: Arc<PushStats>,
    log: Arc<ExportLog>,
    /// How long a shutdown waits for the last push.
    timeout: Duration,
}

impl OtlpMetricsPush {
    /// Starts pushing `registry` with `options`; fails when the client cannot be built.
    pub fn start(
        registry: MetricsRegistry,
        options: OtlpPushOptions,
    ) -> Result<Self, OtlpPushError> {
        let stats = Arc::new(PushStats::new(&registry, &options.prefix));
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let timeout = options.transport.timeout;
        let thread_stats = stats.clone();
        let protocol = if options.transport.grpc {
            "OTLP gRPC"
        } else {
            "OTLP http/protobuf"
        };
        let log = Arc::new(ExportLog::new(
            Exported::OtlpMetrics,
            options.transport.url.clone(),
            protocol,
        ));
        let thread_log = log.clone();
        thread::Builder::new()
            .name("towerscope-otlp-metrics".into())
            .spawn(move || {
                // Built here: reqwest's blocking client must not live on an async worker.
                let transport = match Transport::build(&options.transport) {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                thread_log.announce();
                let _ = ready_tx.send(Ok(()));
                run(
                    registry,
                    options,
                    transport,
                    &thread_stats,
                    &thread_log,
                    &stop_rx,
                );
                let _ = done_tx.send(());
            })
            .map_err(OtlpPushError::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                stop: Mutex::new(Some(stop_tx)),
                done: Mutex::new(Some(done_rx)),
                stats,
                log,
                timeout,
            }),
            Ok(Err(e)) => Err(OtlpPushError::Transport(e)),
            Err(_) => Err(OtlpPushError::Transport("the push thread ended".into())),
        }
    }

    /// Logs at `info` where the push goes and how (done at start; again when a subscriber is
    /// installed later).
    pub(crate) fn announce(&self) {
        self.log.announce();
    }

    /// Data points the collector accepted so far.
    pub fn exported(&self) -> u64 {
        self.stats.exported_n.load(Ordering::Relaxed)
    }

    /// Data points in pushes that failed so far.
    pub fn failed(&self) -> u64 {
        self.stats.failed_n.load(Ordering::Relaxed)
    }

    /// Pushes once more and stops, waiting at most the push timeout (plus a second); returns
    /// whether the last push finished in that time. Later calls return `true` at once.
    pub fn shutdown(&self) -> bool {
        let stop = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(stop);
        let done = self
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match done {
            Some(done) => !matches!(
                done.recv_timeout(self.timeout + Duration::from_secs(1)),
                Err(mpsc::RecvTimeoutError::Timeout)
            ),
            None => true,
        }
    }
}

impl Drop for OtlpMetricsPush {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl PushStats {
    fn new(registry: &MetricsRegistry, prefix: &str) -> Self {
        let recorder = registry.recorder();
        let counter = |what: &str, help: &'static str| {
            let name = format!("{prefix}metric_points_{what}_total");
            recorder.describe_counter(name.clone().into(), None, help.into());
            recorder.register_counter(
                &Key::from_parts(name, vec![Label::new("exporter", "otlp")]),
                &METADATA,
            )
        };
        registry.register_component(
            OTLP_COMPONENT,
            ["exported", "failed"].map(|w| format!("{prefix}metric_points_{w}_total")),
        );
        Self {
            exported: counter(
                "exported",
                "Metric data points the OTLP collector accepted.",
            ),
            failed: counter(
                "failed",
                "Metric data points in OTLP pushes that failed (collector down, refused, slow).",
            ),
            exported_n: AtomicU64::new(0),
            failed_n: AtomicU64::new(0),
        }
    }
}

fn proto_resource(attributes: &[(String, String)]) -> ProtoResource {
    ProtoResource {
        attributes: attributes
            .iter()
            .map(|(k, v)| encode::string_attribute(k, v))
            .collect(),
        ..ProtoResource::default()
    }
}

/// The push loop: one push per interval until `stop` is dropped, then a last one.
fn run(
    registry: MetricsRegistry,
    options: OtlpPushOptions,
    mut transport: Transport,
    stats: &PushStats,
    log: &ExportLog,
    stop: &mpsc::Receiver<()>,
) {
    let mut encoder = Encoder::new(
        options.temporality,
        proto_resource(&options.resource),
        SystemTime::now(),
    )
    .with_naming(options.naming);
    loop {
        let last = !matches!(
            stop.recv_timeout(options.interval),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        let families = registry.snapshot();
        let Encoded { request, delivery } = encoder.encode(&families, SystemTime::now());
        let points = delivery.points;
        if points > 0 {
            match transport.send(request) {
                Ok(()) => {
                    stats.exported.increment(points);
                    stats.exported_n.fetch_add(points, Ordering::Relaxed);
                    encoder.delivered(delivery);
                    log.succeeded();
                }
                Err(error) => {
                    stats.failed.increment(points);
                    stats.failed_n.fetch_add(points, Ordering::Relaxed);
                    log.failed(&error, points);
                }
            }
        }
        if last {
            return;
        }
    }
}
