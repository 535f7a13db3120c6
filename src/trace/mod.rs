//! Tracing: server spans, context propagation, and span export over OTLP or Jaeger.

mod build;
pub mod exporter;
#[cfg(feature = "jaeger")]
pub mod jaeger;
mod layer;
pub mod pipeline;
pub mod propagation;
pub(crate) mod sampling;

pub(crate) use build::{ExporterSpec, OtlpOptions};
pub use layer::{
    ResponseBody, ResponseFuture, TraceLayer, TraceService, MAX_PATH_ATTRIBUTE,
    MAX_USER_AGENT_ATTRIBUTE,
};
pub(crate) use pipeline::PipelineSettings;
pub use pipeline::{ShutdownReport, TracePipeline, TRACE_COMPONENT};
pub use sampling::{GRPC_UNSAMPLED_TARGET, UNSAMPLED_TARGET};

/// `service.name` of a resource that names none (OpenTelemetry's default).
pub(crate) const UNKNOWN_SERVICE: &str = "unknown_service";
