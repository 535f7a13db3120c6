//! [`TracePipeline`]: the tracer provider built from `trace:` — resource, sampler, bounded
//! batch export through exactly one exporter, and its health counters.
//!
//! Its constructors from the configuration ([`TracePipeline::new`],
//! [`TracePipeline::with_exporter`]) are defined in `config`, which maps the
//! `trace:` block onto the settings this module takes.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use opentelemetry::{trace::TracerProvider as _, InstrumentationScope};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{
        BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
        SpanExporter, SpanProcessor,
    },
    Resource,
};

use super::{
    build::{self, ExporterSpec},
    direct::DirectTracer,
    exporter::{BoundedProcessor, ExportStats, ExporterError, MeteredExporter, SharedProcessor},
};
use crate::{
    export_log::{ExportLog, Exported},
    metrics::MetricsRegistry,
};

/// The instrumentation scope of every span of the pipeline.
const SCOPE: &str = "towerscope";

/// The `?comp=` component the exporter health families are served under.
pub const TRACE_COMPONENT: &str = "trace";

/// What happened to the spans of a pipeline, reported by [`TracePipeline::shutdown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Sampled spans that ended: each is in exactly one of the other counts.
    pub ended: u64,
    /// Spans delivered to the collector.
    pub exported: u64,
    /// Spans in exports that failed.
    pub failed: u64,
    /// Spans dropped before export (queue full, too large).
    pub dropped: u64,
    /// Spans still queued, or in an export that had not returned, when the shutdown timeout ran
    /// out.
    pub unexported: u64,
    /// Whether the shutdown finished within its timeout.
    pub completed: bool,
}

impl ShutdownReport {
    /// Spans that did not reach the collector.
    pub fn lost(&self) -> u64 {
        self.failed + self.dropped + self.unexported
    }
}

/// What a pipeline is made of besides its exporter, in trace's own terms (`config` builds it
/// from `trace:`).
#[derive(Debug, Clone)]
pub(crate) struct PipelineSettings {
    /// The resource every span is reported with.
    pub(crate) resource: Resource,
    /// Ratio of new traces sampled; children follow their parent.
    pub(crate) sample_rate: f64,
    /// Spans waiting for export at most (at least 1 is used).
    pub(crate) max_queue_size: usize,
    /// The longest a span waits for its batch.
    pub(crate) schedule_delay: Duration,
    /// Spans per export at most (1 to `max_queue_size` is used).
    pub(crate) max_export_batch_size: usize,
    /// How long `shutdown` waits for the last export.
    pub(crate) shutdown_timeout: Duration,
}

/// The running span pipeline of a service.
#[derive(Debug)]
pub struct TracePipeline {
    provider: SdkTracerProvider,
    /// The same processor, for the spans the server layers build themselves.
    direct: DirectTracer,
    stats: Arc<ExportStats>,
    /// Where the spans go, and how the exports fare.
    log: Arc<ExportLog>,
    shutdown_timeout: Duration,
    /// Whether a shutdown has logged its losses (once, not again when dropped).
    warned: AtomicBool,
}

// `TracePipeline::new` and `with_exporter`, which take the `trace:` block, are defined in
// `config`: trace knows nothing of the configuration.
impl TracePipeline {
    /// Builds the pipeline of `settings`, exporting through the exporter of `spec`, counting
    /// into `registry` with metric name `prefix`.
    pub(crate) fn build(
        settings: PipelineSettings,
        spec: ExporterSpec,
        registry: &MetricsRegistry,
        prefix: &str,
    ) -> Result<Self, ExporterError> {
        let stats = Arc::new(ExportStats::new(
            &*registry.recorder(),
            prefix,
            spec.label(),
        ));
        let (endpoint, protocol) = spec.describe();
        let log = Arc::new(ExportLog::new(Exported::Spans, endpoint, protocol));
        let exporter = build::build(spec, &stats, &log)?;
        log.announce();
        Ok(Self::assemble(
            settings, exporter, stats, log, registry, prefix,
        ))
    }

    /// Builds a pipeline around any exporter, labelled `name`.
    pub(crate) fn build_with_exporter<E: SpanExporter + 'static>(
        settings: PipelineSettings,
        exporter: E,
        name: &'static str,
        registry: &MetricsRegistry,
        prefix: &str,
    ) -> Self {
        let stats = Arc::new(ExportStats::new(&*registry.recorder(), prefix, name));
        let log = Arc::new(ExportLog::new(
            Exported::Spans,
            format!("the `{name}` exporter"),
            "its own transport",
        ));
        Self::assemble(settings, exporter, stats, log, registry, prefix)
    }

    fn assemble<E: SpanExporter + 'static>(
        settings: PipelineSettings,
        exporter: E,
        stats: Arc<ExportStats>,
        log: Arc<ExportLog>,
        registry: &MetricsRegistry,
        prefix: &str,
    ) -> Self {
        registry.register_component(TRACE_COMPONENT, ExportStats::families(prefix));
        let max_queue = settings.max_queue_size.max(1);
        let batch = BatchConfigBuilder::default()
            // Our BoundedProcessor admits `max_queue` spans; the SDK's queue has room for them
            // plus a batch in flight, so it never drops silently.
            .with_max_queue_size(max_queue + 512)
            .with_max_export_batch_size(settings.max_export_batch_size.clamp(1, max_queue))
            .with_scheduled_delay(settings.schedule_delay)
            .build();
        let batch =
            BatchSpanProcessor::builder(MeteredExporter::new(exporter, stats.clone(), log.clone()))
                .with_batch_config(batch)
                .build();
        let mut processor = BoundedProcessor::new(batch, stats.clone(), max_queue);
        // The provider cannot reach the shared processor mutably: the resource is set here.
        processor.set_resource(&settings.resource);
        let processor: Arc<dyn SpanProcessor> = Arc::new(processor);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(SharedProcessor::new(processor.clone()))
            // Parent-based, trace-id ratio for new traces: the rule the server layers apply
            // themselves to the spans they build (see `sampling`).
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_rate,
            ))))
            .with_resource(settings.resource)
            .build();
        let direct = DirectTracer::new(processor, InstrumentationScope::builder(SCOPE).build());
        Self {
            provider,
            direct,
            stats,
            log,
            shutdown_timeout: settings.shutdown_timeout,
            warned: AtomicBool::new(false),
        }
    }

    /// A tracer of this pipeline.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer(SCOPE)
    }

    /// The tracer of the spans the server layers build themselves.
    pub(crate) fn direct_tracer(&self) -> DirectTracer {
        self.direct.clone()
    }

    /// The tracer provider.
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// The export counters.
    pub fn stats(&self) -> &ExportStats {
        &self.stats
    }

    /// Logs at `info` where the spans go and how (done at build; again when a subscriber is
    /// installed later).
    pub(crate) fn announce(&self) {
        self.log.announce();
    }

    /// Exports what is queued and waits at most the shutdown timeout.
    pub fn force_flush(&self) -> OTelSdkResult {
        self.provider.force_flush()
    }

    /// Flushes and stops export, waiting at most `trace.shutdown_timeout_secs`; reports what
    /// was exported and what was lost. Later calls report the same counts.
    pub fn shutdown(&self) -> ShutdownReport {
        self.direct.shut_down();
        let completed = match self.provider.shutdown_with_timeout(self.shutdown_timeout) {
            Ok(()) => true,
            Err(opentelemetry_sdk::error::OTelSdkError::AlreadyShutdown) => true,
            Err(_) => false,
        };
        // An export that returns while this is read moves its spans from `exporting` to
        // `exported` or `failed` (outcome first): reading the pipeline first, the outcomes
        // last, a span is never in no count (at worst in two, if an export returns meanwhile).
        let unexported = (self.stats.pending() + self.stats.exporting()) as u64;
        let report = ShutdownReport {
            ended: self.stats.ended(),
            exported: self.stats.exported(),
            failed: self.stats.failed(),
            dropped: self.stats.dropped(),
            unexported,
            completed,
        };
        if (report.lost() > 0 || !completed) && !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(target: "towerscope::trace", ended = report.ended, exported = report.exported, failed = report.failed, dropped = report.dropped, unexported = report.unexported, completed, "spans were lost at shutdown");
        }
        report
    }
}

impl Drop for TracePipeline {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
