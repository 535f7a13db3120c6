//! The process-wide rustls crypto provider: a leaf every HTTPS client of the crate calls.

/// Installs rustls' ring provider as the process default unless one is installed already:
/// reqwest (OTLP/HTTP, the Jaeger collector, the Pushgateway client) is built without a
/// provider of its own. An application that installed its own provider keeps it.
pub(crate) fn ensure_tls_provider() {
    // rustls 0.23.48 deprecates ring's provider because ring has no post-quantum key exchange;
    // ring is kept because it builds with a C compiler alone (aws-lc-rs needs cmake and
    // doubles the build). An application that wants post-quantum key exchange installs
    // aws-lc-rs's provider before `Telemetry::init`, and it is kept.
    #[cfg(feature = "tls")]
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
}
