//! Tracing: server spans, context propagation, and span export over OTLP or Jaeger.
#![doc = include_str!("../docs/tracing.md")]

mod attributes;
mod build;
mod direct;
pub(crate) mod events;
pub mod exporter;
mod fields;
#[cfg(feature = "jaeger")]
pub mod jaeger;
mod layer;
#[cfg(feature = "otlp")]
mod otlp_http;
pub mod pipeline;
pub mod propagation;
mod sampling;
mod server;

pub use attributes::SpanAttributes;
pub(crate) use build::{ExporterSpec, OtlpOptions};
#[cfg(feature = "tonic")]
pub(crate) use direct::SpanStart;
pub(crate) use layer::on_response;
pub use layer::{
    ResponseBody, ResponseFuture, TraceLayer, TraceService, MAX_PATH_ATTRIBUTE,
    MAX_USER_AGENT_ATTRIBUTE,
};
pub(crate) use pipeline::PipelineSettings;
pub use pipeline::{ShutdownReport, TracePipeline, TRACE_COMPONENT};
#[cfg(feature = "tonic")]
pub(crate) use server::SpanExport;
pub(crate) use server::{is_log_only, ServerSpan};
pub use server::{GRPC_LOG_SPAN_TARGET, LOG_SPAN_TARGET, RESPONSE_HEAD_EVENT};

/// The OpenTelemetry context of the code running now: the current `tracing` span's, else the
/// current OpenTelemetry context (the one a layer made current for its request: the server
/// span behind [`Telemetry::layer`](crate::Telemetry::layer), or a non-sampled context for a
/// request it sampled out; or one attached by the application).
///
/// Behind `Telemetry::layer` this, not `tracing::Span::current().context()`, is how a handler
/// reaches its server span (`current_context().span().set_attribute(..)`): the layer exports
/// that span itself, and the request's `tracing` span is for log lines only.
///
/// Hand it to work that leaves the request's task, so that spans opened there join the
/// request's trace (or follow its sampled-out decision): `tokio::spawn(work.with_context(cx)
/// .instrument(tracing::Span::current()))`, with `opentelemetry::trace::FutureExt` and
/// `tracing::Instrument`.
pub fn current_context() -> opentelemetry::Context {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        cx
    } else {
        opentelemetry::Context::current()
    }
}

/// `service.name` of a resource that names none (OpenTelemetry's default).
pub(crate) const UNKNOWN_SERVICE: &str = "unknown_service";
