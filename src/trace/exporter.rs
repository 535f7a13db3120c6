//! Span export with bounded queueing and health metrics, and the errors of building an
//! exporter.
//!
//! - [`ExportStats`]: spans ended, exported, failed and dropped, as `metrics` counters
//!   (`{prefix}trace_spans_ended_total{exporter}`, `..._exported_total`, `..._failed_total`,
//!   `..._dropped_total`) and as numbers for the shutdown report
//!   ([`TracePipeline::stats`](super::TracePipeline::stats)). Every ended span is in exactly one
//!   place: exported, failed, dropped, or still in the pipeline (queued or in a running export),
//!   so `ended = exported + failed + dropped + in_pipeline` whenever no export is finishing.
//! - [`ExporterError`]: why the exporter of `trace:` could not be built.
//!
//! Inside the crate, `BoundedProcessor` admits a finished span only while fewer than
//! `max_queue_size` spans wait for export (the rest are dropped and counted, so the request
//! path never waits and memory stays bounded whatever the collector does), `MeteredExporter`
//! counts the outcome of every export, and `OnRuntime` drives an exporter that needs a tokio
//! reactor and bounds each export's duration.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use metrics::{Counter, Key, Label, Level, Metadata, Recorder};

use crate::export_log::ExportLog;
use opentelemetry::Context;
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{Span, SpanData, SpanExporter, SpanProcessor},
    Resource,
};

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Counts of what happened to finished spans.
#[derive(Debug)]
pub struct ExportStats {
    exporter: &'static str,
    ended: Counter,
    exported: Counter,
    failed: Counter,
    dropped: Counter,
    ended_n: AtomicU64,
    exported_n: AtomicU64,
    failed_n: AtomicU64,
    dropped_n: AtomicU64,
    /// Admitted, not yet handed to an export.
    pending: AtomicUsize,
    /// Handed to an export that has not returned.
    exporting: AtomicUsize,
}

impl ExportStats {
    /// Registers the counters for `exporter` (`otlp`, `jaeger`, ...) with `prefix` in
    /// `recorder`.
    pub(crate) fn new(recorder: &dyn Recorder, prefix: &str, exporter: &'static str) -> Self {
        let counter = |what: &str, help: &'static str| {
            let name = format!("{prefix}trace_spans_{what}_total");
            recorder.describe_counter(name.clone().into(), None, help.into());
            recorder.register_counter(
                &Key::from_parts(name, vec![Label::new("exporter", exporter)]),
                &METADATA,
            )
        };
        Self {
            exporter,
            ended: counter(
                "ended",
                "Sampled spans that ended and entered the export pipeline.",
            ),
            exported: counter("exported", "Spans the exporter delivered."),
            failed: counter(
                "failed",
                "Spans in exports that failed or timed out (collector down, refused, slow).",
            ),
            dropped: counter(
                "dropped",
                "Spans dropped before export: queue full, or too large to send.",
            ),
            ended_n: AtomicU64::new(0),
            exported_n: AtomicU64::new(0),
            failed_n: AtomicU64::new(0),
            dropped_n: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            exporting: AtomicUsize::new(0),
        }
    }

    /// The family names, for `?comp=` registration.
    pub(crate) fn families(prefix: &str) -> [String; 4] {
        ["ended", "exported", "failed", "dropped"].map(|w| format!("{prefix}trace_spans_{w}_total"))
    }

    /// The exporter label.
    pub fn exporter(&self) -> &'static str {
        self.exporter
    }

    /// Sampled spans that ended so far (each is then exported, failed, dropped, or still in
    /// the pipeline).
    pub fn ended(&self) -> u64 {
        self.ended_n.load(Ordering::Relaxed)
    }

    /// Spans delivered so far.
    pub fn exported(&self) -> u64 {
        self.exported_n.load(Ordering::Relaxed)
    }

    /// Spans whose export failed so far.
    pub fn failed(&self) -> u64 {
        self.failed_n.load(Ordering::Relaxed)
    }

    /// Spans dropped before export so far.
    pub fn dropped(&self) -> u64 {
        self.dropped_n.load(Ordering::Relaxed)
    }

    /// Spans admitted and not yet handed to the exporter.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Spans in an export that has not returned (a hung collector holds them here until the
    /// exporter's timeout).
    pub fn exporting(&self) -> usize {
        self.exporting.load(Ordering::Relaxed)
    }

    fn record_ended(&self) {
        self.ended.increment(1);
        self.ended_n.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` dropped spans.
    pub(crate) fn record_dropped(&self, n: u64) {
        self.dropped.increment(n);
        self.dropped_n.fetch_add(n, Ordering::Relaxed);
    }

    fn record_exported(&self, n: u64) {
        self.exported.increment(n);
        self.exported_n.fetch_add(n, Ordering::Relaxed);
    }

    fn record_failed(&self, n: u64) {
        self.failed.increment(n);
        self.failed_n.fetch_add(n, Ordering::Relaxed);
    }
}

/// Feeds spans an exporter drops itself (e.g. too large for a UDP datagram) into
/// [`ExportStats`], as a `metrics::Counter`.
#[cfg(feature = "jaeger")]
#[derive(Debug)]
pub(crate) struct DroppedSpans(pub(crate) Arc<ExportStats>);

#[cfg(feature = "jaeger")]
impl metrics::CounterFn for DroppedSpans {
    fn increment(&self, value: u64) {
        self.0.record_dropped(value);
    }

    fn absolute(&self, _value: u64) {}
}

/// A span processor that bounds the spans waiting for export, in front of the SDK's
/// `BatchSpanProcessor` (whose own queue must be larger: see
/// [`pipeline`](super::pipeline)).
#[derive(Debug)]
pub(crate) struct BoundedProcessor<P> {
    inner: P,
    stats: Arc<ExportStats>,
    max_pending: usize,
}

impl<P> BoundedProcessor<P> {
    /// Admits at most `max_pending` spans that no export has taken yet.
    pub(crate) fn new(inner: P, stats: Arc<ExportStats>, max_pending: usize) -> Self {
        Self {
            inner,
            stats,
            max_pending,
        }
    }
}

impl<P: SpanProcessor> SpanProcessor for BoundedProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        self.stats.record_ended();
        let admitted = self
            .stats
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_pending).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            self.inner.on_end(span);
        } else {
            self.stats.record_dropped(1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// A span processor shared by the tracer provider (the spans of `tracing-opentelemetry`) and
/// the server layers (their direct spans, see `direct`, which end into the processor itself).
/// The provider's spans have their repeated attributes folded here (a direct span replaces a
/// value in place, so its spans skip this). The resource is set on the processor before it is
/// shared: [`set_resource`](SpanProcessor::set_resource) here does nothing.
#[derive(Debug)]
pub(crate) struct SharedProcessor(Arc<dyn SpanProcessor>);

impl SharedProcessor {
    pub(crate) fn new(processor: Arc<dyn SpanProcessor>) -> Self {
        Self(processor)
    }
}

impl SpanProcessor for SharedProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.0.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        fold_repeated_attributes(&mut span);
        self.0.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
}

/// Wraps an exporter: releases the admitted spans of each batch, counts the outcome, and
/// fails an export that exceeds `timeout` (for exporters driven on a tokio runtime; blocking
/// exporters enforce their own timeout).
pub(crate) struct MeteredExporter<E> {
    inner: E,
    stats: Arc<ExportStats>,
    log: Arc<ExportLog>,
}

impl<E: fmt::Debug> fmt::Debug for MeteredExporter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeteredExporter")
            .field("inner", &self.inner)
            .field("exporter", &self.stats.exporter)
            .finish()
    }
}

impl<E> MeteredExporter<E> {
    /// Wraps `inner`, recording into `stats` and logging failures and recoveries in `log`.
    pub(crate) fn new(inner: E, stats: Arc<ExportStats>, log: Arc<ExportLog>) -> Self {
        Self { inner, stats, log }
    }
}

/// Keeps the last value of an attribute recorded more than once on `span` (a `tracing` field
/// recorded twice, as a `TraceLayer` on its own records a response's `operation` override), in
/// place of the first: OpenTelemetry's rule for a key set twice, which the SDK's span leaves to
/// exporters (it appends). A span without repeats is not touched.
fn fold_repeated_attributes(span: &mut SpanData) {
    let attributes = &mut span.attributes;
    // One pass over a cheap fingerprint of each key (length and last byte): no two alike
    // means no key repeats, and the pairwise check is skipped (as it is for every span the
    // server layers build: they replace a value in place).
    let mut seen = [0_u64; 4];
    let mut alike = false;
    for kv in attributes.iter() {
        let key = kv.key.as_str().as_bytes();
        let print = (key.len() * 31 + usize::from(key.last().copied().unwrap_or(0))) % 256;
        let (word, bit) = (print / 64, 1_u64 << (print % 64));
        alike |= seen[word] & bit != 0;
        seen[word] |= bit;
    }
    if !alike {
        return;
    }
    let repeated =
        (1..attributes.len()).any(|i| attributes[..i].iter().any(|kv| kv.key == attributes[i].key));
    if !repeated {
        return;
    }
    let mut kept: Vec<opentelemetry::KeyValue> = Vec::with_capacity(attributes.len());
    for kv in attributes.drain(..) {
        match kept.iter_mut().find(|k| k.key == kv.key) {
            Some(slot) => slot.value = kv.value,
            None => kept.push(kv),
        }
    }
    *attributes = kept;
}

impl<E: SpanExporter> SpanExporter for MeteredExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        // The spans have left the queue: admit new ones in their place. Until the export
        // returns they are counted as exporting, so no span is ever in no count.
        self.stats.exporting.fetch_add(n, Ordering::AcqRel);
        let _ = self
            .stats
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                Some(p.saturating_sub(n))
            });
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => {
                self.stats.record_exported(n as u64);
                self.log.succeeded();
            }
            Err(err) => {
                self.stats.record_failed(n as u64);
                self.log.failed(err, n as u64);
            }
        }
        self.stats.exporting.fetch_sub(n, Ordering::AcqRel);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Runs an exporter that needs a tokio reactor (tonic's gRPC channel) on a dedicated
/// one-worker runtime, since the SDK's batch processor drives `export` on a plain thread.
/// Each export is bounded by `timeout`.
#[cfg(feature = "otlp-grpc")]
pub(crate) struct OnRuntime<E> {
    inner: Arc<E>,
    runtime: Option<tokio::runtime::Runtime>,
    timeout: Duration,
}

#[cfg(feature = "otlp-grpc")]
impl<E: fmt::Debug> fmt::Debug for OnRuntime<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnRuntime")
            .field("inner", &self.inner)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "otlp-grpc")]
impl<E> OnRuntime<E> {
    /// Starts the runtime and builds the exporter inside it.
    pub(crate) fn build<B>(timeout: Duration, build: B) -> Result<Self, ExporterError>
    where
        B: FnOnce() -> Result<E, opentelemetry_otlp::ExporterBuildError>,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("towerscope-otlp")
            .enable_all()
            .build()
            .map_err(ExporterError::Runtime)?;
        let inner = {
            let _guard = runtime.enter();
            build().map_err(ExporterError::Otlp)?
        };
        Ok(Self {
            inner: Arc::new(inner),
            runtime: Some(runtime),
            timeout,
        })
    }
}

#[cfg(feature = "otlp-grpc")]
impl<E> Drop for OnRuntime<E> {
    fn drop(&mut self) {
        // Never blocks, so it is safe even inside another runtime.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(feature = "otlp-grpc")]
impl<E: SpanExporter + 'static> SpanExporter for OnRuntime<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let Some(rt) = &self.runtime else {
            return Err(opentelemetry_sdk::error::OTelSdkError::AlreadyShutdown);
        };
        let inner = self.inner.clone();
        let timeout = self.timeout;
        let task = rt.spawn(async move {
            match tokio::time::timeout(timeout, inner.export(batch)).await {
                Ok(result) => result,
                Err(_) => Err(opentelemetry_sdk::error::OTelSdkError::Timeout(timeout)),
            }
        });
        match task.await {
            Ok(result) => result,
            Err(e) => Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                format!("export task failed: {e}"),
            )),
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// Errors of building an exporter.
///
/// Each message names the `trace:` block to check; the source error, where there is one, says
/// which setting was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExporterError {
    /// opentelemetry-otlp refused the settings: check `trace.otel` (its endpoint must be a URL
    /// the transport can reach, its headers valid HTTP headers or gRPC metadata).
    #[cfg(feature = "otlp")]
    #[error("cannot build the OTLP exporter (check trace.otel): {0}")]
    Otlp(#[source] opentelemetry_otlp::ExporterBuildError),
    /// The Jaeger exporter refused the settings: check `trace.jaeger`; the [`JaegerError`]
    /// names the option.
    ///
    /// [`JaegerError`]: super::jaeger::JaegerError
    #[cfg(feature = "jaeger")]
    #[error("cannot build the Jaeger exporter (check trace.jaeger): {0}")]
    Jaeger(#[source] super::jaeger::JaegerError),
    /// The runtime that drives OTLP/gRPC export could not start, because its worker thread
    /// could not be spawned: check the process's thread and memory limits, or use
    /// `protocol: http`.
    #[cfg(feature = "otlp-grpc")]
    #[error(
        "cannot start the runtime for OTLP/gRPC export (check the process's thread and memory \
         limits, or use trace.otel.protocol: http): {0}"
    )]
    Runtime(#[source] std::io::Error),
    /// The configured exporter is not compiled in: enable the named cargo feature of
    /// towerscope, or configure another exporter.
    #[error(
        "trace.{exporter} is configured but towerscope was built without the `{feature}` \
         feature: enable it in Cargo.toml or configure another exporter"
    )]
    FeatureDisabled {
        /// `otel` or `jaeger`.
        exporter: &'static str,
        /// The cargo feature to enable.
        feature: &'static str,
    },
    /// Tracing is enabled with no exporter: set `trace.otel` or `trace.jaeger`
    /// ([`Config::validate`](crate::Config::validate) reports this first).
    #[error("tracing is enabled but no exporter is configured: set trace.otel or trace.jaeger")]
    NoExporter,
}

#[cfg(test)]
mod tests {
    use opentelemetry::{
        trace::{SpanContext, SpanId, SpanKind, Status},
        InstrumentationScope, KeyValue,
    };
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};

    use super::*;

    fn span(attributes: Vec<KeyValue>) -> SpanData {
        SpanData {
            span_context: SpanContext::empty_context(),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: "GET".into(),
            start_time: std::time::UNIX_EPOCH,
            end_time: std::time::UNIX_EPOCH,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("t").build(),
        }
    }

    #[test]
    fn a_key_recorded_twice_keeps_its_last_value_in_its_first_place() {
        let mut data = span(vec![
            KeyValue::new("operation", "a"),
            KeyValue::new("url.path", "/x"),
            KeyValue::new("http.response.status_code", 200),
            KeyValue::new("operation", "b"),
        ]);
        fold_repeated_attributes(&mut data);
        assert_eq!(
            data.attributes,
            [
                KeyValue::new("operation", "b"),
                KeyValue::new("url.path", "/x"),
                KeyValue::new("http.response.status_code", 200),
            ]
        );
    }

    #[test]
    fn distinct_keys_are_left_alone_even_when_their_fingerprints_meet() {
        // Same length, same last byte: the fingerprints meet, the keys differ.
        let attributes = vec![
            KeyValue::new("ab", 1),
            KeyValue::new("cb", 2),
            KeyValue::new("url.path", "/x"),
        ];
        let mut data = span(attributes.clone());
        fold_repeated_attributes(&mut data);
        assert_eq!(data.attributes, attributes);
    }
}
