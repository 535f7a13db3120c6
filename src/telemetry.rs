//! [`Telemetry`]: everything a service needs, started from one [`Config`].
#![doc = include_str!("docs/telemetry.md")]

#[cfg(feature = "reqwest")]
mod client;
#[cfg(feature = "sqlx")]
mod db;
#[cfg(feature = "tonic")]
mod grpc;
mod jobs;
mod request_id;

use std::{io, sync::Arc};

use opentelemetry_sdk::trace::SdkTracer;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::{registry::LookupSpan, Layer};

use crate::{
    config::{Config, ConfigError},
    layer::ObservabilityLayer,
    metrics::{MetricsEndpoint, MetricsError, MetricsRegistry, MetricsServer},
    trace::{
        exporter::ExporterError,
        propagation::{self, IncomingContext},
        ShutdownReport, TraceLayer, TracePipeline,
    },
};

/// Errors of [`Telemetry::init`].
///
/// `{:?}` prints the message as `{}` does, with its causes (so an error returned from `main`
/// reads as sentences); `{:#?}` prints the structure.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// The configuration is invalid; the message lists every problem with its field.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Metrics could not be set up.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The span exporter could not be built.
    #[error(transparent)]
    Exporter(#[from] ExporterError),
    /// A global `tracing` subscriber is already installed, so
    /// [`init_subscriber`](Telemetry::init_subscriber) could not install its own: call it once,
    /// or add [`tracing_layer`](Telemetry::tracing_layer) to the subscriber you install.
    #[error(
        "a global tracing subscriber is already installed (call init_subscriber once, or add \
         Telemetry::tracing_layer to your own subscriber): {0}"
    )]
    Subscriber(#[source] tracing_subscriber::util::TryInitError),
    /// The OTLP metrics push of `metric.otlp` could not start.
    #[cfg(feature = "otlp")]
    #[error(transparent)]
    MetricsPush(#[from] crate::metrics::otlp::OtlpPushError),
}

impl std::fmt::Debug for TelemetryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if f.alternate() {
            return match self {
                Self::Config(e) => f.debug_tuple("Config").field(e).finish(),
                Self::Metrics(e) => f.debug_tuple("Metrics").field(e).finish(),
                Self::Exporter(e) => f.debug_tuple("Exporter").field(e).finish(),
                Self::Subscriber(e) => f.debug_tuple("Subscriber").field(e).finish(),
                #[cfg(feature = "otlp")]
                Self::MetricsPush(e) => f.debug_tuple("MetricsPush").field(e).finish(),
            };
        }
        std::fmt::Display::fmt(self, f)?;
        // Causes a transparent variant's message does not already carry.
        let mut source = std::error::Error::source(self);
        let mut shown = self.to_string();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !shown.contains(&text) {
                write!(f, ": {text}")?;
                shown.push_str(&text);
            }
            source = cause.source();
        }
        Ok(())
    }
}

/// The log filter of [`Telemetry::init_subscriber`] from `RUST_LOG`: `target=level`
/// directives and a bare default level, comma-separated (tracing-subscriber's `Targets`, which
/// needs no regular expressions; `info` when unset); `info` and the parse error when it cannot
/// be read.
fn log_filter(
    rust_log: Option<&str>,
) -> (
    tracing_subscriber::filter::Targets,
    Option<tracing_subscriber::filter::ParseError>,
) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    let info = || Targets::new().with_default(LevelFilter::INFO);
    match rust_log.map(str::trim).filter(|v| !v.is_empty()) {
        None => (info(), None),
        Some(value) => match value.parse::<Targets>() {
            // A bare target (`my_app`) means every level, as with RUST_LOG's usual reader.
            Ok(targets) => (targets, None),
            Err(error) => (info(), Some(error)),
        },
    }
}

/// The running telemetry of a service: its metrics registry, its span pipeline (when
/// `trace.enabled`), and the layer built from the configuration.
///
/// Cloning is cheap and shares everything. Spans are flushed when
/// [`shutdown`](Self::shutdown) is called or the last clone is dropped, within
/// `trace.shutdown_timeout_secs`; both block while they flush, so from async code call
/// `shutdown` through `tokio::task::spawn_blocking` (see [Shutdown](crate::telemetry#shutdown)).
///
/// ```
/// use towerscope::{Config, Telemetry};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut config = Config::default();
/// config.metric.port = 0; // any free port
/// let telemetry = Telemetry::init_local(&config).unwrap();
/// let server = telemetry.serve_metrics().await.unwrap().expect("metrics are enabled");
/// println!("metrics on http://{}/metrics", server.local_addr());
/// let _layer = telemetry.layer(); // add to the router: .layer(telemetry.layer())
/// server.shutdown().await;
/// # }
/// ```
#[derive(Clone)]
pub struct Telemetry {
    config: Config,
    registry: MetricsRegistry,
    trace: Option<Arc<TracePipeline>>,
    propagator: Option<IncomingContext>,
    /// The `metric.otlp` push, when configured.
    #[cfg(feature = "otlp")]
    metrics_push: Option<Arc<crate::metrics::otlp::OtlpMetricsPush>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("config", &self.config)
            .field("registry", &self.registry)
            .field("trace", &self.trace)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Applies the `OTEL_*` environment variables over `config`, validates it, builds the
    /// metrics registry and (with `trace.enabled`) the span pipeline, and installs them as the
    /// process-wide `metrics` recorder, OpenTelemetry tracer provider and propagator.
    ///
    /// The server spans of [`layer`](Self::layer) are exported by the layer itself; add
    /// [`tracing_layer`](Self::tracing_layer) to your subscriber, or call
    /// [`init_subscriber`](Self::init_subscriber), for the `tracing` spans (the client,
    /// database and job spans, your own) to be exported too.
    ///
    /// Fails if the configuration is invalid, an exporter cannot be built, or a global
    /// recorder is already installed.
    pub fn init(config: &Config) -> Result<Self, TelemetryError> {
        let mut config = config.clone();
        config.apply_process_env()?;
        let telemetry = Self::init_local(&config)?;
        telemetry.registry.install_global()?;
        if let Some(trace) = &telemetry.trace {
            opentelemetry::global::set_tracer_provider(trace.provider().clone());
            opentelemetry::global::set_text_map_propagator(propagation::composite(
                &config.trace.propagators,
            ));
        }
        Ok(telemetry)
    }

    /// Like [`init`](Self::init) but reads no environment variable and installs nothing
    /// global: for tests, and for several services in one process.
    pub fn init_local(config: &Config) -> Result<Self, TelemetryError> {
        config.validate()?;
        let registry = MetricsRegistry::new(&config.metric)?;
        let (trace, propagator) = if config.trace.enabled {
            let pipeline = TracePipeline::new(&config.trace, &registry, &config.metric.prefix())?;
            let propagator = IncomingContext::configured(&config.trace.propagators);
            (Some(Arc::new(pipeline)), Some(propagator))
        } else {
            (None, None)
        };
        Ok(Self {
            config: config.clone(),
            #[cfg(feature = "otlp")]
            metrics_push: Self::start_push(config, &registry)?,
            registry,
            trace,
            propagator,
        })
    }

    /// The push of `metric.otlp`, started; `None` when it is not configured.
    #[cfg(feature = "otlp")]
    fn start_push(
        config: &Config,
        registry: &MetricsRegistry,
    ) -> Result<Option<Arc<crate::metrics::otlp::OtlpMetricsPush>>, TelemetryError> {
        Ok(crate::metrics::otlp::OtlpMetricsPush::from_config(config, registry)?.map(Arc::new))
    }

    /// Like [`init_local`](Self::init_local), exporting spans through `pipeline` (e.g. one
    /// built with [`TracePipeline::with_exporter`] and an in-memory exporter in tests).
    pub fn with_pipeline(
        config: &Config,
        registry: MetricsRegistry,
        pipeline: TracePipeline,
    ) -> Result<Self, TelemetryError> {
        config.validate()?;
        Ok(Self {
            config: config.clone(),
            #[cfg(feature = "otlp")]
            metrics_push: Self::start_push(config, &registry)?,
            registry,
            trace: Some(Arc::new(pipeline)),
            propagator: Some(IncomingContext::configured(&config.trace.propagators)),
        })
    }

    /// The configuration this telemetry was started with (after `OTEL_*` overrides).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The metrics registry.
    pub fn registry(&self) -> &MetricsRegistry {
        &self.registry
    }

    /// The span pipeline, when tracing is enabled.
    pub fn trace_pipeline(&self) -> Option<&TracePipeline> {
        self.trace.as_deref()
    }

    /// The [`ObservabilityLayer`] for the service: request id, a server span whose parent is
    /// read with the configured propagators, and the request metrics.
    ///
    /// With tracing enabled the layer exports the server spans itself, into the pipeline: it
    /// decides sampling with the pipeline's rule before it builds anything, builds a sampled
    /// request's OpenTelemetry span directly (no `tracing-opentelemetry` span behind it) and
    /// makes it current, as an OpenTelemetry context, while the request is polled: spans opened
    /// inside become its children, and [`current_context`](crate::trace::current_context)
    /// reaches it. No `tracing` span is opened for the request: an OpenTelemetry layer of the
    /// application's own (`tracing_opentelemetry::layer()` with its provider) sees none to
    /// export a second time, and its spans inside the request become children of the server
    /// span, sampled with it. Log lines get the request's `request_id` and `operation` from
    /// [`log::RequestFields`](crate::log::RequestFields); `trace.log_span: true` opens a
    /// `tracing` span with the server span's fields for them instead (target
    /// [`LOG_SPAN_TARGET`](crate::trace::LOG_SPAN_TARGET), which another OpenTelemetry layer
    /// must then leave out). Pair the layer with [`tracing_layer`](Self::tracing_layer), which
    /// adds the events logged inside a request to its span. With tracing disabled, the layer
    /// opens a `tracing` span (target `towerscope::http`) that an OpenTelemetry layer of the
    /// subscriber exports, as a [`TraceLayer`] on its own does.
    pub fn layer(&self) -> ObservabilityLayer {
        let trace = TraceLayer::new()
            .with_incoming(self.propagator.clone())
            .echo_traceparent(self.config.trace.echo_traceparent)
            .with_exemplar_ids(self.config.metric.records() && self.config.metric.exemplars)
            .with_attributes(self.config.trace.span_attributes())
            .with_response_head_event(self.config.metric.time_to_first_byte);
        let trace = match &self.trace {
            Some(pipeline) => trace.export_direct(
                pipeline.direct_tracer(),
                self.config.trace.sample_rate,
                self.config.trace.log_span,
            ),
            None => trace,
        };
        ObservabilityLayer::from_config(&self.config, &self.registry).with_trace(trace)
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans of this pipeline; `None`
    /// when tracing is disabled. Source locations, thread ids, targets and busy/idle times
    /// are not recorded as attributes.
    ///
    /// It leaves out the log-only spans of [`layer`](Self::layer) and
    /// `GrpcLayer::from_telemetry` (targets [`LOG_SPAN_TARGET`](crate::trace::LOG_SPAN_TARGET)
    /// and [`GRPC_LOG_SPAN_TARGET`](crate::trace::GRPC_LOG_SPAN_TARGET)): those layers export
    /// their server spans themselves. An event logged inside a request outside any span of its
    /// own is added to the request's server span, as `tracing-opentelemetry` adds events to
    /// the spans it exports.
    pub fn tracing_layer<S>(&self) -> Option<impl Layer<S>>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        self.trace.as_ref().map(|t| {
            // Source locations, thread ids and busy/idle times are noise on HTTP spans.
            let otel: OpenTelemetryLayer<S, SdkTracer> = tracing_opentelemetry::layer()
                .with_tracer(t.tracer())
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_target(false);
            // The log-only spans are left out per callsite (`never`). Every other callsite is
            // `sometimes`, not `always`: tracing-subscriber leaves a per-layer filter's
            // "disabled" mark in place after a span or event that every layer disabled (a
            // log-only span with no log layer, when two threads first reach its callsite at
            // once), and the next `always` callsite, which skips the filters, would be
            // dropped by this layer. A `sometimes` callsite asks the filters, resetting it.
            let exported =
                |meta: &tracing::Metadata<'_>, _: &tracing_subscriber::layer::Context<'_, S>| {
                    !crate::trace::is_log_only(meta.target())
                };
            let filter = tracing_subscriber::filter::dynamic_filter_fn(exported)
                .with_callsite_filter(|meta| {
                    if crate::trace::is_log_only(meta.target()) {
                        tracing::subscriber::Interest::never()
                    } else {
                        tracing::subscriber::Interest::sometimes()
                    }
                });
            otel.and_then(crate::trace::events::DirectSpanEvents)
                .with_filter(filter)
        })
    }

    /// Installs a global `tracing` subscriber: log lines on stderr filtered by `RUST_LOG`
    /// (`target=level` directives, default `info`), each line logged inside a request ending
    /// with its `request_id` and `operation` ([`log::RequestFields`](crate::log::RequestFields)),
    /// in colour only when stderr is a terminal (then logs, at `info`, where each exporter
    /// sends, as it did when it was built); and the OpenTelemetry layer, which `RUST_LOG` does not filter: whether a
    /// span is exported is decided by `trace.enabled` and the sampler, so `RUST_LOG=warn` in
    /// production keeps every span. The OpenTelemetry layer takes spans and events at `info`
    /// and above (towerscope's spans are `info`; libraries' `debug` and `trace` spans are not
    /// exported).
    pub fn init_subscriber(&self) -> Result<(), TelemetryError> {
        use std::io::IsTerminal;
        use tracing_subscriber::{
            filter::LevelFilter, layer::SubscriberExt, util::SubscriberInitExt,
        };
        let rust_log = std::env::var("RUST_LOG").ok();
        let (logs, refused) = log_filter(rust_log.as_deref());
        let ansi = io::stderr().is_terminal();
        // The request's id and operation at the end of each line logged inside it.
        let format =
            crate::log::RequestFields::new(tracing_subscriber::fmt::format().with_ansi(ansi));
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(io::stderr)
            .with_ansi(ansi)
            .event_format(format)
            .with_filter(logs);
        // Filtered inside the `Option`: a filtered `None` would still say it wants `info`
        // spans, and with tracing off every request would build a `tracing` span nothing uses.
        let otel = self
            .tracing_layer()
            .map(|layer| layer.with_filter(LevelFilter::INFO));
        tracing_subscriber::registry()
            .with(fmt)
            .with(otel)
            .try_init()
            .map_err(TelemetryError::Subscriber)?;
        if let Some(error) = refused {
            tracing::warn!(target: "towerscope", rust_log = ?rust_log, %error,
                "RUST_LOG not understood: logging at info (directives are target=level, comma-separated; span and field filters are not read)");
        }
        // The exporters said where they send when they were built, before this subscriber
        // existed: say it again where it can be read.
        if let Some(pipeline) = &self.trace {
            pipeline.announce();
        }
        #[cfg(feature = "otlp")]
        if let Some(push) = &self.metrics_push {
            push.announce();
        }
        Ok(())
    }

    /// The metrics endpoint, to mount on the service's own router.
    pub fn metrics_endpoint(&self) -> MetricsEndpoint {
        MetricsEndpoint::from_config(&self.config.metric, self.registry.clone())
    }

    /// Starts the standalone metrics server on `metric.host:metric.port`; `None` when
    /// `metric.enabled` is false.
    pub async fn serve_metrics(&self) -> io::Result<Option<MetricsServer>> {
        if !self.config.metric.enabled {
            return Ok(None);
        }
        MetricsServer::bind(&self.config.metric, self.registry.clone())
            .await
            .map(Some)
    }

    /// The `metric.otlp` push, when configured.
    #[cfg(feature = "otlp")]
    pub fn metrics_push(&self) -> Option<&crate::metrics::otlp::OtlpMetricsPush> {
        self.metrics_push.as_deref()
    }

    /// Flushes spans and stops export within `trace.shutdown_timeout_secs`, then pushes the
    /// metrics once more when `metric.otlp` is set (within its timeout); reports what was
    /// exported and lost of the spans. `None` when tracing is disabled.
    ///
    /// Blocks the calling thread meanwhile: from async code, call it through
    /// `tokio::task::spawn_blocking(move || telemetry.shutdown())` (see
    /// [Shutdown](crate::telemetry#shutdown)).
    pub fn shutdown(&self) -> Option<ShutdownReport> {
        let report = self.trace.as_ref().map(|t| t.shutdown());
        #[cfg(feature = "otlp")]
        if let Some(push) = &self.metrics_push {
            push.shutdown();
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::{log_filter, TelemetryError};
    use crate::Config;

    #[test]
    fn an_error_returned_from_main_reads_as_sentences() {
        let error = Config::from_yaml_str("metric: { path: metrics }").unwrap_err();
        let telemetry = TelemetryError::from(error);
        assert_eq!(
            format!("{telemetry:?}"),
            "invalid configuration:\n  metric.path: must start with '/' (got \"metrics\")"
        );
        assert!(format!("{telemetry:#?}").starts_with("Config(\n    ConfigError {"));
    }

    #[test]
    fn rust_log_is_read_as_targets_and_levels() {
        let (filter, refused) = log_filter(Some("warn,towerscope=debug"));
        assert!(refused.is_none());
        assert!(filter.would_enable("hyper", &Level::WARN));
        assert!(!filter.would_enable("hyper", &Level::INFO));
        assert!(filter.would_enable("towerscope::trace", &Level::DEBUG));
        // Unset or empty: info.
        for unset in [None, Some(""), Some("  ")] {
            let (filter, refused) = log_filter(unset);
            assert!(refused.is_none());
            assert!(filter.would_enable("app", &Level::INFO));
            assert!(!filter.would_enable("app", &Level::DEBUG));
        }
        // A span filter is not read: info, and the error for the warning.
        let (filter, refused) = log_filter(Some("app[request{id=1}]=debug"));
        assert!(refused.is_some());
        assert!(filter.would_enable("app", &Level::INFO));
        assert!(!filter.would_enable("app", &Level::DEBUG));
    }
}
