//! The process-wide rustls crypto provider: a leaf every HTTPS client of the crate calls.

/// Installs rustls' ring provider as the process default unless one is installed already:
/// reqwest (OTLP/HTTP, the Jaeger collector, the Pushgateway client) is built without a
/// provider of its own. An application that installed its own provider keeps it.
pub(crate) fn ensure_tls_provider() {
    #[cfg(feature = "tls")]
    let _ = rustls::crypto::ring::default_provider().install_default();
}
