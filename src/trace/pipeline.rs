//! [`TracePipeline`]: the tracer provider built from `trace:` — resource, sampler, bounded
//! batch export through exactly one exporter, and its health counters.

use std::{sync::Arc, time::Duration};

use opentelemetry::{trace::TracerProvider as _, KeyValue};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{
        BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
        SpanExporter,
    },
    Resource,
};

use super::exporter::{BoundedProcessor, ExportStats, ExporterError, MeteredExporter};
use crate::{config::TraceConfig, metrics::MetricsRegistry};

/// The `?comp=` component the exporter health families are served under.
pub const TRACE_COMPONENT: &str = "trace";

/// What happened to the spans of a pipeline, reported by [`TracePipeline::shutdown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Spans delivered to the collector.
    pub exported: u64,
    /// Spans in exports that failed.
    pub failed: u64,
    /// Spans dropped before export (queue full, too large).
    pub dropped: u64,
    /// Spans still waiting when the shutdown timeout ran out.
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

/// The configured exporter.
#[derive(Debug)]
enum AnyExporter {
    #[cfg(feature = "otlp")]
    OtlpHttp(opentelemetry_otlp::SpanExporter),
    #[cfg(feature = "otlp")]
    OtlpGrpc(super::exporter::OnRuntime<opentelemetry_otlp::SpanExporter>),
    #[cfg(feature = "jaeger")]
    Jaeger(super::jaeger::JaegerExporter),
}

// With no exporter feature the enum is empty and the parameters go unused.
#[allow(unused_variables)]
impl SpanExporter for AnyExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        match self {
            #[cfg(feature = "otlp")]
            Self::OtlpHttp(e) => e.export(batch).await,
            #[cfg(feature = "otlp")]
            Self::OtlpGrpc(e) => e.export(batch).await,
            #[cfg(feature = "jaeger")]
            Self::Jaeger(e) => e.export(batch).await,
            #[allow(unreachable_patterns)]
            _ => {
                let _ = batch;
                Ok(())
            }
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        match self {
            #[cfg(feature = "otlp")]
            Self::OtlpHttp(e) => e.shutdown_with_timeout(timeout),
            #[cfg(feature = "otlp")]
            Self::OtlpGrpc(e) => e.shutdown_with_timeout(timeout),
            #[cfg(feature = "jaeger")]
            Self::Jaeger(e) => e.shutdown_with_timeout(timeout),
            #[allow(unreachable_patterns)]
            _ => Ok(()),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        match self {
            #[cfg(feature = "otlp")]
            Self::OtlpHttp(e) => e.set_resource(resource),
            #[cfg(feature = "otlp")]
            Self::OtlpGrpc(e) => e.set_resource(resource),
            #[cfg(feature = "jaeger")]
            Self::Jaeger(e) => e.set_resource(resource),
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
}

fn build_exporter(
    config: &TraceConfig,
    stats: &Arc<ExportStats>,
) -> Result<AnyExporter, ExporterError> {
    let _ = stats;
    // An application that installed its own rustls provider keeps it.
    crate::tls::ensure_tls_provider();
    if let Some(otel) = &config.otel {
        #[cfg(feature = "otlp")]
        {
            use opentelemetry_otlp::{
                Compression, WithExportConfig, WithHttpConfig, WithTonicConfig,
            };
            let timeout = Duration::from_secs(otel.timeout);
            let url = otel.url();
            return match otel.protocol {
                crate::config::OtlpProtocol::Http => {
                    let mut builder = opentelemetry_otlp::SpanExporter::builder()
                        .with_http()
                        .with_endpoint(url)
                        .with_timeout(timeout)
                        .with_headers(otel.headers.clone().into_iter().collect());
                    if otel.compression {
                        builder = builder.with_compression(Compression::Gzip);
                    }
                    builder
                        .build()
                        .map(AnyExporter::OtlpHttp)
                        .map_err(|e| ExporterError::Otlp(e.to_string()))
                }
                crate::config::OtlpProtocol::Grpc => {
                    let headers = otel.headers.clone();
                    let compression = otel.compression;
                    super::exporter::OnRuntime::build(timeout, move || {
                        let mut metadata = tonic::metadata::MetadataMap::new();
                        for (k, v) in &headers {
                            if let (Ok(k), Ok(v)) =
                                (k.parse::<tonic::metadata::MetadataKey<_>>(), v.parse())
                            {
                                metadata.insert(k, v);
                            }
                        }
                        let tls = url.starts_with("https://");
                        let mut builder = opentelemetry_otlp::SpanExporter::builder()
                            .with_tonic()
                            .with_endpoint(url)
                            .with_timeout(timeout)
                            .with_metadata(metadata);
                        #[cfg(feature = "tls")]
                        if tls {
                            builder = builder.with_tls_config(
                                tonic::transport::ClientTlsConfig::new().with_native_roots(),
                            );
                        }
                        #[cfg(not(feature = "tls"))]
                        let _ = tls;
                        if compression {
                            builder = builder.with_compression(Compression::Gzip);
                        }
                        builder.build()
                    })
                    .map(AnyExporter::OtlpGrpc)
                }
            };
        }
        #[cfg(not(feature = "otlp"))]
        {
            let _ = otel;
            return Err(ExporterError::FeatureDisabled {
                exporter: "otel",
                feature: "otlp",
            });
        }
    }
    if let Some(jaeger) = &config.jaeger {
        #[cfg(feature = "jaeger")]
        {
            use super::jaeger::{AgentOptions, CollectorOptions, JaegerExporter};
            let exporter = match (&jaeger.endpoint, &jaeger.agent_host) {
                (Some(endpoint), _) => JaegerExporter::collector(CollectorOptions {
                    endpoint: endpoint.clone(),
                    username: jaeger.username.clone(),
                    password: jaeger.password.clone(),
                    timeout: Duration::from_secs(jaeger.timeout.unwrap_or(10)),
                }),
                (None, Some(host)) => JaegerExporter::agent(AgentOptions {
                    host: host.clone(),
                    port: jaeger
                        .agent_port
                        .unwrap_or(crate::config::DEFAULT_JAEGER_AGENT_PORT),
                    ..AgentOptions::default()
                }),
                (None, None) => return Err(ExporterError::NoExporter),
            }
            .map_err(|e| ExporterError::Jaeger(e.to_string()))?;
            let dropped =
                metrics::Counter::from_arc(Arc::new(super::exporter::DroppedSpans(stats.clone())));
            return Ok(AnyExporter::Jaeger(exporter.with_dropped_counter(dropped)));
        }
        #[cfg(not(feature = "jaeger"))]
        {
            let _ = jaeger;
            return Err(ExporterError::FeatureDisabled {
                exporter: "jaeger",
                feature: "jaeger",
            });
        }
    }
    Err(ExporterError::NoExporter)
}

fn exporter_label(config: &TraceConfig) -> &'static str {
    if config.jaeger.is_some() {
        "jaeger"
    } else {
        "otlp"
    }
}

/// The running span pipeline of a service.
#[derive(Debug)]
pub struct TracePipeline {
    provider: SdkTracerProvider,
    stats: Arc<ExportStats>,
    shutdown_timeout: Duration,
}

impl TracePipeline {
    /// Builds the pipeline of `config` (which must be valid and enabled), counting into
    /// `registry` with metric name `prefix`.
    pub fn new(
        config: &TraceConfig,
        registry: &MetricsRegistry,
        prefix: &str,
    ) -> Result<Self, ExporterError> {
        let stats = Arc::new(ExportStats::new(
            &*registry.recorder(),
            prefix,
            exporter_label(config),
        ));
        let exporter = build_exporter(config, &stats)?;
        Ok(Self::assemble(config, exporter, stats, registry, prefix))
    }

    /// Builds a pipeline around any exporter (an in-memory one in tests), labelled `name`.
    pub fn with_exporter<E: SpanExporter + 'static>(
        config: &TraceConfig,
        exporter: E,
        name: &'static str,
        registry: &MetricsRegistry,
        prefix: &str,
    ) -> Self {
        let stats = Arc::new(ExportStats::new(&*registry.recorder(), prefix, name));
        Self::assemble(config, exporter, stats, registry, prefix)
    }

    fn assemble<E: SpanExporter + 'static>(
        config: &TraceConfig,
        exporter: E,
        stats: Arc<ExportStats>,
        registry: &MetricsRegistry,
        prefix: &str,
    ) -> Self {
        registry.register_component(TRACE_COMPONENT, ExportStats::families(prefix));
        let max_queue = config.max_queue_size.max(1);
        let batch = BatchConfigBuilder::default()
            // Our BoundedProcessor admits `max_queue` spans; the SDK's queue has room for them
            // plus a batch in flight, so it never drops silently.
            .with_max_queue_size(max_queue + 512)
            .with_max_export_batch_size(max_queue.min(512))
            .build();
        let processor = BatchSpanProcessor::builder(MeteredExporter::new(exporter, stats.clone()))
            .with_batch_config(batch)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BoundedProcessor::new(processor, stats.clone(), max_queue))
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_rate,
            ))))
            .with_resource(resource(config))
            .build();
        Self {
            provider,
            stats,
            shutdown_timeout: Duration::from_secs(config.shutdown_timeout_secs.max(1)),
        }
    }

    /// A tracer of this pipeline.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer("towerscope")
    }

    /// The tracer provider.
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// The export counters.
    pub fn stats(&self) -> &ExportStats {
        &self.stats
    }

    /// Exports what is queued and waits at most the shutdown timeout.
    pub fn force_flush(&self) -> OTelSdkResult {
        self.provider.force_flush()
    }

    /// Flushes and stops export, waiting at most `trace.shutdown_timeout_secs`; reports what
    /// was exported and what was lost. Later calls report the same counts.
    pub fn shutdown(&self) -> ShutdownReport {
        let completed = match self.provider.shutdown_with_timeout(self.shutdown_timeout) {
            Ok(()) => true,
            Err(opentelemetry_sdk::error::OTelSdkError::AlreadyShutdown) => true,
            Err(_) => false,
        };
        let report = ShutdownReport {
            exported: self.stats.exported(),
            failed: self.stats.failed(),
            dropped: self.stats.dropped(),
            unexported: self.stats.pending() as u64,
            completed,
        };
        if report.lost() > 0 || !completed {
            tracing::warn!(target: "towerscope::trace", exported = report.exported, failed = report.failed, dropped = report.dropped, unexported = report.unexported, completed, "spans were lost at shutdown");
        }
        report
    }
}

impl Drop for TracePipeline {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn resource(config: &TraceConfig) -> Resource {
    let mut builder = Resource::builder().with_service_name(
        config
            .service_name
            .clone()
            .unwrap_or_else(|| "unknown_service".to_owned()),
    );
    if let Some(ns) = &config.namespace {
        builder = builder.with_attribute(KeyValue::new("service.namespace", ns.clone()));
    }
    if let Some(version) = &config.service_version {
        builder = builder.with_attribute(KeyValue::new("service.version", version.clone()));
    }
    builder
        .with_attributes(
            config
                .attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build()
}
