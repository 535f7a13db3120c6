//! Tracing: server spans, context propagation, and span export over OTLP or Jaeger.

pub mod exporter;
#[cfg(feature = "jaeger")]
pub mod jaeger;
mod layer;
pub mod pipeline;
pub mod propagation;

pub use layer::{
    ResponseBody, ResponseFuture, TraceLayer, TraceService, MAX_PATH_ATTRIBUTE,
    MAX_USER_AGENT_ATTRIBUTE,
};
pub use pipeline::{ShutdownReport, TracePipeline, TRACE_COMPONENT};

/// Installs rustls' ring provider as the process default unless one is installed already:
/// reqwest (OTLP/HTTP, the Jaeger collector) is built without a provider of its own.
pub(crate) fn ensure_tls_provider() {
    #[cfg(feature = "tls")]
    let _ = rustls::crypto::ring::default_provider().install_default();
}
