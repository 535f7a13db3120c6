//! The `trace:` block turned into what trace builds from it: the pipeline settings, the
//! exporter spec, and the [`TracePipeline`] constructors that take the block.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::{trace::SpanExporter, Resource};

use super::{JaegerConfig, OtelConfig, OtlpProtocol, TraceConfig};
use crate::{
    metrics::MetricsRegistry,
    trace::{
        exporter::ExporterError, ExporterSpec, OtlpOptions, PipelineSettings, TracePipeline,
        UNKNOWN_SERVICE,
    },
};

// Defined here rather than in `trace::pipeline` so that trace knows nothing of the
// configuration: imports point from config down to the types it configures.
impl TracePipeline {
    /// Builds the pipeline of `config` (which must be valid and enabled), counting into
    /// `registry` with metric name `prefix`.
    pub fn new(
        config: &TraceConfig,
        registry: &MetricsRegistry,
        prefix: &str,
    ) -> Result<Self, ExporterError> {
        let spec = config.exporter_spec().ok_or(ExporterError::NoExporter)?;
        Self::build(config.pipeline_settings(), spec, registry, prefix)
    }

    /// Builds a pipeline around any exporter (an in-memory one in tests), labelled `name`.
    pub fn with_exporter<E: SpanExporter + 'static>(
        config: &TraceConfig,
        exporter: E,
        name: &'static str,
        registry: &MetricsRegistry,
        prefix: &str,
    ) -> Self {
        Self::build_with_exporter(config.pipeline_settings(), exporter, name, registry, prefix)
    }
}

impl TraceConfig {
    fn pipeline_settings(&self) -> PipelineSettings {
        PipelineSettings {
            resource: self.resource(),
            sample_rate: self.sample_rate,
            max_queue_size: self.max_queue_size,
            schedule_delay: Duration::from_millis(self.batch.schedule_delay_ms.max(1)),
            max_export_batch_size: self.export_batch_size(),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs.max(1)),
        }
    }

    /// `service.name` (`unknown_service` unless set), `service.namespace`, `service.version`
    /// and the extra `attributes`.
    pub(super) fn resource(&self) -> Resource {
        let service_name = self.service_name.as_deref().unwrap_or(UNKNOWN_SERVICE);
        let mut builder = Resource::builder().with_service_name(service_name.to_owned());
        if let Some(ns) = &self.namespace {
            builder = builder.with_attribute(KeyValue::new("service.namespace", ns.clone()));
        }
        if let Some(version) = &self.service_version {
            builder = builder.with_attribute(KeyValue::new("service.version", version.clone()));
        }
        builder
            .with_attributes(
                self.attributes
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .build()
    }

    /// The exporter of `trace.otel`, else of `trace.jaeger` (validation allows one of them);
    /// `None` when neither names a destination.
    fn exporter_spec(&self) -> Option<ExporterSpec> {
        if let Some(otel) = &self.otel {
            return Some(otel.exporter_spec());
        }
        self.jaeger.as_ref().and_then(JaegerConfig::exporter_spec)
    }
}

impl OtelConfig {
    fn exporter_spec(&self) -> ExporterSpec {
        let options = OtlpOptions {
            url: self.url(),
            timeout: Duration::from_secs(self.timeout),
            headers: self.headers.clone(),
            compression: self.compression,
        };
        match self.protocol {
            OtlpProtocol::Http => ExporterSpec::OtlpHttp(options),
            OtlpProtocol::Grpc => ExporterSpec::OtlpGrpc(options),
        }
    }
}

impl JaegerConfig {
    /// The collector when `endpoint` is set, else the agent at `agent_host`. Unset values
    /// keep the exporter's defaults.
    fn exporter_spec(&self) -> Option<ExporterSpec> {
        match (&self.endpoint, &self.agent_host) {
            (Some(endpoint), _) => Some(ExporterSpec::JaegerCollector {
                endpoint: endpoint.clone(),
                username: self.username.clone(),
                password: self.password.clone(),
                timeout: self.timeout.map(Duration::from_secs),
            }),
            (None, Some(host)) => Some(ExporterSpec::JaegerAgent {
                host: host.clone(),
                port: self.agent_port,
            }),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{config::Config, trace::ExporterSpec};

    fn spec(yaml: &str) -> Option<ExporterSpec> {
        Config::from_yaml_str(yaml).unwrap().trace.exporter_spec()
    }

    #[test]
    fn unset_jaeger_values_are_left_to_the_exporter_defaults() {
        assert_eq!(
            spec("trace: { jaeger: { agent_host: agent } }"),
            Some(ExporterSpec::JaegerAgent {
                host: "agent".into(),
                port: None
            })
        );
        assert_eq!(
            spec("trace: { jaeger: { endpoint: 'http://c:14268/api/traces', timeout: 3 } }"),
            Some(ExporterSpec::JaegerCollector {
                endpoint: "http://c:14268/api/traces".into(),
                username: None,
                password: None,
                timeout: Some(Duration::from_secs(3)),
            })
        );
        assert_eq!(spec("trace: { enabled: false }"), None);
    }

    #[test]
    fn otel_block_becomes_the_otlp_spec_of_its_protocol() {
        let Some(ExporterSpec::OtlpGrpc(options)) =
            spec("trace: { otel: { endpoint: 'c:4317', protocol: grpc, insecure: true } }")
        else {
            panic!("an OTLP/gRPC spec");
        };
        assert_eq!(options.url, "http://c:4317");
        assert_eq!(options.timeout, Duration::from_secs(10));
    }
}
