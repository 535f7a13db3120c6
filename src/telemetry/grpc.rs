//! [`GrpcLayer`] and [`GrpcClientLayer`] from a [`Telemetry`]: the integration itself does
//! not know the facade.

use crate::{
    filter::RequestFilter,
    grpc::{GrpcClientLayer, GrpcLayer, GrpcMetricNames},
    metrics::MetricNaming,
    trace::SpanExport,
    Telemetry,
};

impl GrpcLayer {
    /// The layer for a service started with [`Telemetry`]: the families of `metric.naming`,
    /// names under `metric.namespace`/`metric.subsystem`, `metric.max_operations`, the telemetry's
    /// registry (component `grpc`), parents read with `trace.propagators` (when
    /// `trace.enabled`), the request id read from `request_id.header`, the time to first byte
    /// when `metric.time_to_first_byte`, and the calls treated as `filters:` says; no metrics
    /// when `metric.enabled` is false and no `metric.otlp` push is set.
    ///
    /// The one `filters:` list serves the HTTP server layer and this one: a path pattern
    /// matches the gRPC path (`/grpc.health.v1.Health/Check`, `/grpc.health.v1.Health/**`), an
    /// `operation` entry matches the gRPC operation (`grpc.health.v1.Health/Check`), so an
    /// entry naming a gRPC method matches only gRPC calls and an entry naming an HTTP route
    /// only HTTP requests; `methods` other than `POST` never match a gRPC call.
    /// [`with_filter`](Self::with_filter) replaces the list.
    pub fn from_telemetry(telemetry: &Telemetry) -> Self {
        let config = telemetry.config();
        let prefix = config.metric.prefix();
        let names = match config.metric.naming {
            MetricNaming::Harbor => GrpcMetricNames::with_prefix(&prefix),
            MetricNaming::Otel => GrpcMetricNames::otel(&prefix),
        };
        let mut layer = Self::new(telemetry.registry())
            .with_names(names)
            .with_max_operations(config.metric.max_operations)
            .with_request_id_header(config.request_id.header.clone())
            .with_time_to_first_byte(config.metric.time_to_first_byte)
            .with_filter(RequestFilter::from_config(&config.filters));
        if config.trace.enabled {
            layer = layer.with_propagators(&config.trace.propagators);
        }
        // Spans exported by the layer itself, as `Telemetry::layer` does, when the pipeline
        // runs.
        if let Some(pipeline) = telemetry.trace_pipeline() {
            layer = layer.export_with(SpanExport::Direct {
                tracer: pipeline.direct_tracer(),
                rate: config.trace.sample_rate,
                log_span: config.trace.log_span,
            });
        }
        if !config.metric.records() {
            layer = layer.without_metrics();
        }
        layer
    }
}

impl GrpcClientLayer {
    /// A layer writing the formats of `trace.propagators` and the id under
    /// `request_id.header`, measuring the calls into the telemetry's registry (component
    /// `client`) with the families of `metric.naming` under the `metric` prefix, at most
    /// `metric.max_operations` operations, the time to first byte when
    /// `metric.time_to_first_byte`; no metrics when `metric.enabled` is false and no
    /// `metric.otlp` push is set. `filters:` does not apply (it is the servers' list: give a
    /// client its own with [`with_filter`](Self::with_filter)).
    pub fn from_telemetry(telemetry: &Telemetry) -> Self {
        let config = telemetry.config();
        let layer = Self::new()
            .with_propagators(&config.trace.propagators)
            .with_request_id_header(config.request_id.header.clone())
            .with_time_to_first_byte(config.metric.time_to_first_byte);
        if !config.metric.records() {
            return layer;
        }
        let prefix = config.metric.prefix();
        let names = match config.metric.naming {
            MetricNaming::Harbor => GrpcMetricNames::client_with_prefix(&prefix),
            MetricNaming::Otel => GrpcMetricNames::otel_client(&prefix),
        };
        layer.with_metrics(telemetry.registry(), names, config.metric.max_operations)
    }
}
