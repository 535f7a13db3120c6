//! The span exporter of a pipeline, built from an [`ExporterSpec`]: one builder per exporter
//! (OTLP over http/protobuf, OTLP over gRPC, Jaeger agent, Jaeger collector).
//!
//! The spec is trace's own description of the exporter; `config` turns `trace.otel` or
//! `trace.jaeger` into one. An exporter whose cargo feature is off fails to build with
//! [`ExporterError::FeatureDisabled`].

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{SpanData, SpanExporter},
    Resource,
};

use super::exporter::{ExportStats, ExporterError};
use crate::export_log::ExportLog;

/// Where and how OTLP export requests go.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OtlpOptions {
    /// The full URL (scheme, host, port, and for HTTP the signal path).
    pub(crate) url: String,
    /// The limit for one export.
    pub(crate) timeout: Duration,
    /// Headers (gRPC metadata) sent with every export.
    pub(crate) headers: BTreeMap<String, String>,
    /// gzip the export requests.
    pub(crate) compression: bool,
}

/// The one exporter a pipeline sends through. Unset Jaeger values take the exporter's own
/// defaults (agent port 6831, collector timeout 10 s).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ExporterSpec {
    /// OTLP over http/protobuf.
    OtlpHttp(OtlpOptions),
    /// OTLP over gRPC.
    OtlpGrpc(OtlpOptions),
    /// A Jaeger agent, compact Thrift over UDP.
    JaegerAgent { host: String, port: Option<u16> },
    /// A Jaeger collector, binary Thrift over HTTP.
    JaegerCollector {
        endpoint: String,
        username: Option<String>,
        password: Option<String>,
        timeout: Option<Duration>,
    },
}

impl ExporterSpec {
    /// Where the spans go (a URL; `udp://host:port` for an agent) and over what, for the
    /// start-up log line and the export failures.
    pub(crate) fn describe(&self) -> (String, &'static str) {
        match self {
            Self::OtlpHttp(o) => (o.url.clone(), "OTLP http/protobuf"),
            Self::OtlpGrpc(o) => (o.url.clone(), "OTLP gRPC"),
            Self::JaegerAgent { host, port } => (
                format!("udp://{host}:{}", port.unwrap_or(6831)),
                "Jaeger agent (compact Thrift over UDP)",
            ),
            Self::JaegerCollector { endpoint, .. } => (
                endpoint.clone(),
                "Jaeger collector (binary Thrift over HTTP)",
            ),
        }
    }

    /// The `exporter` label of the health counters.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::OtlpHttp(_) | Self::OtlpGrpc(_) => "otlp",
            Self::JaegerAgent { .. } | Self::JaegerCollector { .. } => "jaeger",
        }
    }
}

/// Builds the exporter of `spec`; spans a Jaeger agent drops for size are counted in `stats`,
/// and the OTLP/HTTP client notes why an export failed in `log`.
pub(crate) fn build(
    spec: ExporterSpec,
    stats: &Arc<ExportStats>,
    log: &Arc<ExportLog>,
) -> Result<AnyExporter, ExporterError> {
    // An application that installed its own rustls provider keeps it.
    crate::tls::ensure_tls_provider();
    match spec {
        ExporterSpec::OtlpHttp(options) => otlp::http(options, log),
        ExporterSpec::OtlpGrpc(options) => otlp::grpc(options),
        ExporterSpec::JaegerAgent { host, port } => jaeger::agent(host, port, stats),
        ExporterSpec::JaegerCollector {
            endpoint,
            username,
            password,
            timeout,
        } => jaeger::collector(endpoint, username, password, timeout, stats),
    }
}

/// The configured exporter.
// One value per pipeline, built once: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum AnyExporter {
    #[cfg(feature = "otlp")]
    OtlpHttp(opentelemetry_otlp::SpanExporter),
    #[cfg(feature = "otlp-grpc")]
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
            #[cfg(feature = "otlp-grpc")]
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
            #[cfg(feature = "otlp-grpc")]
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
            #[cfg(feature = "otlp-grpc")]
            Self::OtlpGrpc(e) => e.set_resource(resource),
            #[cfg(feature = "jaeger")]
            Self::Jaeger(e) => e.set_resource(resource),
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    #[cfg(feature = "otlp-grpc")]
    use opentelemetry_otlp::WithTonicConfig;
    use opentelemetry_otlp::{Compression, WithExportConfig, WithHttpConfig};

    use std::sync::Arc;

    use super::{AnyExporter, OtlpOptions};
    #[cfg(feature = "otlp-grpc")]
    use crate::trace::exporter::OnRuntime;
    use crate::{
        export_log::ExportLog,
        trace::{exporter::ExporterError, otlp_http::NotingClient},
    };

    /// OTLP over http/protobuf (reqwest's blocking client, driven by the batch thread, noting
    /// the cause of each failure in `log`).
    pub(super) fn http(
        options: OtlpOptions,
        log: &Arc<ExportLog>,
    ) -> Result<AnyExporter, ExporterError> {
        let client = NotingClient::build(options.timeout, log.clone()).map_err(|e| {
            ExporterError::Otlp(opentelemetry_otlp::ExporterBuildError::InternalFailure(e))
        })?;
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(options.url)
            .with_timeout(options.timeout)
            .with_headers(options.headers.into_iter().collect());
        if options.compression {
            builder = builder.with_compression(Compression::Gzip);
        }
        builder
            .build()
            .map(AnyExporter::OtlpHttp)
            .map_err(ExporterError::Otlp)
    }

    /// OTLP over gRPC (feature `otlp-grpc`): tonic needs a reactor, so the exporter runs on a
    /// runtime of its own, over a channel built here (TLS with the system's roots for https,
    /// through tonic's own TLS features rather than opentelemetry-otlp's, which would pull
    /// tonic into every build with `tls`).
    #[cfg(feature = "otlp-grpc")]
    pub(super) fn grpc(options: OtlpOptions) -> Result<AnyExporter, ExporterError> {
        let OtlpOptions {
            url,
            timeout,
            headers,
            compression,
        } = options;
        let invalid = |e: String| {
            ExporterError::Otlp(
                opentelemetry_otlp::ExporterBuildError::InvalidConfiguration(format!(
                    "endpoint {url:?}: {e}"
                )),
            )
        };
        let endpoint = tonic::transport::Channel::from_shared(url.clone())
            .map_err(|e| invalid(e.to_string()))?
            .timeout(timeout)
            .connect_timeout(timeout);
        #[cfg(feature = "tls")]
        let endpoint = if url.starts_with("https://") {
            endpoint
                .tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots())
                .map_err(|e| invalid(e.to_string()))?
        } else {
            endpoint
        };
        OnRuntime::build(timeout, move || {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_channel(endpoint.connect_lazy())
                .with_timeout(timeout)
                .with_metadata(metadata(&headers));
            if compression {
                builder = builder.with_compression(Compression::Gzip);
            }
            builder.build()
        })
        .map(AnyExporter::OtlpGrpc)
    }

    /// OTLP over gRPC without the `otlp-grpc` feature: an error naming it.
    #[cfg(not(feature = "otlp-grpc"))]
    pub(super) fn grpc(_: OtlpOptions) -> Result<AnyExporter, ExporterError> {
        Err(ExporterError::FeatureDisabled {
            exporter: "otel (protocol: grpc)",
            feature: "otlp-grpc",
        })
    }

    /// The headers as gRPC metadata; validation has refused names and values that do not fit.
    #[cfg(feature = "otlp-grpc")]
    fn metadata(
        headers: &std::collections::BTreeMap<String, String>,
    ) -> tonic::metadata::MetadataMap {
        let mut metadata = tonic::metadata::MetadataMap::new();
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (k.parse::<tonic::metadata::MetadataKey<_>>(), v.parse()) {
                metadata.insert(k, v);
            }
        }
        metadata
    }
}

#[cfg(not(feature = "otlp"))]
mod otlp {
    use super::{AnyExporter, OtlpOptions};
    use crate::trace::exporter::ExporterError;

    const DISABLED: ExporterError = ExporterError::FeatureDisabled {
        exporter: "otel",
        feature: "otlp",
    };

    pub(super) fn http(
        _: OtlpOptions,
        _: &std::sync::Arc<crate::export_log::ExportLog>,
    ) -> Result<AnyExporter, ExporterError> {
        Err(DISABLED)
    }

    pub(super) fn grpc(_: OtlpOptions) -> Result<AnyExporter, ExporterError> {
        Err(DISABLED)
    }
}

#[cfg(feature = "jaeger")]
mod jaeger {
    use std::{sync::Arc, time::Duration};

    use super::AnyExporter;
    use crate::trace::{
        exporter::{DroppedSpans, ExportStats, ExporterError},
        jaeger::{AgentOptions, CollectorOptions, JaegerExporter},
    };

    /// A Jaeger agent over UDP; `port` defaults to the agent's 6831.
    pub(super) fn agent(
        host: String,
        port: Option<u16>,
        stats: &Arc<ExportStats>,
    ) -> Result<AnyExporter, ExporterError> {
        let defaults = AgentOptions::default();
        let exporter = JaegerExporter::agent(AgentOptions {
            host,
            port: port.unwrap_or(defaults.port),
            ..defaults
        })
        .map_err(ExporterError::Jaeger)?;
        Ok(counted(exporter, stats))
    }

    /// A Jaeger collector over HTTP; `timeout` defaults to 10 s.
    pub(super) fn collector(
        endpoint: String,
        username: Option<String>,
        password: Option<String>,
        timeout: Option<Duration>,
        stats: &Arc<ExportStats>,
    ) -> Result<AnyExporter, ExporterError> {
        let exporter = JaegerExporter::collector(CollectorOptions {
            endpoint,
            username,
            password,
            timeout: timeout.unwrap_or(CollectorOptions::default().timeout),
        })
        .map_err(ExporterError::Jaeger)?;
        Ok(counted(exporter, stats))
    }

    /// Spans the exporter drops itself (too large for a datagram) count as dropped.
    fn counted(exporter: JaegerExporter, stats: &Arc<ExportStats>) -> AnyExporter {
        let dropped = metrics::Counter::from_arc(Arc::new(DroppedSpans(stats.clone())));
        AnyExporter::Jaeger(exporter.with_dropped_counter(dropped))
    }
}

#[cfg(not(feature = "jaeger"))]
mod jaeger {
    use std::{sync::Arc, time::Duration};

    use super::AnyExporter;
    use crate::trace::exporter::{ExportStats, ExporterError};

    const DISABLED: ExporterError = ExporterError::FeatureDisabled {
        exporter: "jaeger",
        feature: "jaeger",
    };

    pub(super) fn agent(
        _: String,
        _: Option<u16>,
        _: &Arc<ExportStats>,
    ) -> Result<AnyExporter, ExporterError> {
        Err(DISABLED)
    }

    pub(super) fn collector(
        _: String,
        _: Option<String>,
        _: Option<String>,
        _: Option<Duration>,
        _: &Arc<ExportStats>,
    ) -> Result<AnyExporter, ExporterError> {
        Err(DISABLED)
    }
}
