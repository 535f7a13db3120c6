//! Tracing: server spans, context propagation, and span export over OTLP or Jaeger.

#[cfg(feature = "jaeger")]
pub mod jaeger;
pub mod exporter;
mod layer;
pub mod pipeline;
pub mod propagation;

pub use layer::{ResponseBody, ResponseFuture, TraceLayer, TraceService, MAX_PATH_ATTRIBUTE, MAX_USER_AGENT_ATTRIBUTE};
pub use pipeline::{ShutdownReport, TracePipeline, TRACE_COMPONENT};
