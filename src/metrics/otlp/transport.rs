//! Where a push goes: OTLP over http/protobuf (reqwest's blocking client) or, with the
//! `otlp-grpc` feature, gRPC (tonic, on a runtime of its own). Both are built and used on the
//! push thread only.

use std::{collections::BTreeMap, io::Write as _, time::Duration};

#[cfg(feature = "otlp-grpc")]
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message as _;

use crate::export_log::{error_chain, refusal};

/// How a push is sent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TransportOptions {
    /// The full URL (for HTTP with the signal path).
    pub(crate) url: String,
    pub(crate) grpc: bool,
    pub(crate) timeout: Duration,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) gzip: bool,
}

// One value per push thread, built once: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Transport {
    Http {
        client: reqwest::blocking::Client,
        url: String,
        headers: reqwest::header::HeaderMap,
        gzip: bool,
    },
    #[cfg(feature = "otlp-grpc")]
    Grpc {
        runtime: tokio::runtime::Runtime,
        client: MetricsServiceClient<tonic::transport::Channel>,
        metadata: tonic::metadata::MetadataMap,
        timeout: Duration,
    },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http { url, gzip, .. } => f
                .debug_struct("Http")
                .field("url", url)
                .field("gzip", gzip)
                .finish_non_exhaustive(),
            #[cfg(feature = "otlp-grpc")]
            Self::Grpc { timeout, .. } => f
                .debug_struct("Grpc")
                .field("timeout", timeout)
                .finish_non_exhaustive(),
        }
    }
}

impl Transport {
    /// Builds the client of `options`; no connection is made yet.
    pub(crate) fn build(options: &TransportOptions) -> Result<Self, String> {
        crate::tls::ensure_tls_provider();
        if options.grpc {
            #[cfg(feature = "otlp-grpc")]
            return Self::grpc(options);
            #[cfg(not(feature = "otlp-grpc"))]
            return Err("protocol: grpc needs towerscope's `otlp-grpc` feature".to_owned());
        }
        Self::http(options)
    }

    fn http(options: &TransportOptions) -> Result<Self, String> {
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &options.headers {
            let name = reqwest::header::HeaderName::try_from(k.as_str())
                .map_err(|e| format!("header {k:?}: {e}"))?;
            let value = reqwest::header::HeaderValue::try_from(v.as_str())
                .map_err(|e| format!("header {k:?}: {e}"))?;
            headers.insert(name, value);
        }
        let client = reqwest::blocking::Client::builder()
            .timeout(options.timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self::Http {
            client,
            url: options.url.clone(),
            headers,
            gzip: options.gzip,
        })
    }

    #[cfg(feature = "otlp-grpc")]
    fn grpc(options: &TransportOptions) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime for OTLP/gRPC: {e}"))?;
        let endpoint = tonic::transport::Channel::from_shared(options.url.clone())
            .map_err(|e| format!("invalid endpoint {:?}: {e}", options.url))?
            .timeout(options.timeout)
            .connect_timeout(options.timeout);
        #[cfg(feature = "tls")]
        let endpoint = if options.url.starts_with("https://") {
            endpoint
                .tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots())
                .map_err(|e| format!("TLS: {e}"))?
        } else {
            endpoint
        };
        let channel = {
            let _guard = runtime.enter();
            endpoint.connect_lazy()
        };
        let mut client = MetricsServiceClient::new(channel);
        if options.gzip {
            client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
        }
        let mut metadata = tonic::metadata::MetadataMap::new();
        for (k, v) in &options.headers {
            let key = k
                .parse::<tonic::metadata::MetadataKey<_>>()
                .map_err(|e| format!("header {k:?}: {e}"))?;
            let value = v.parse().map_err(|e| format!("header {k:?}: {e}"))?;
            metadata.insert(key, value);
        }
        Ok(Self::Grpc {
            runtime,
            client,
            metadata,
            timeout: options.timeout,
        })
    }

    /// Sends one request; an error says why it was not accepted.
    pub(crate) fn send(&mut self, request: ExportMetricsServiceRequest) -> Result<(), String> {
        match self {
            Self::Http {
                client,
                url,
                headers,
                gzip,
            } => {
                let mut body = request.encode_to_vec();
                let mut call = client
                    .post(url.as_str())
                    .headers(headers.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
                if *gzip {
                    let mut encoder =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                    encoder.write_all(&body).map_err(|e| e.to_string())?;
                    body = encoder.finish().map_err(|e| e.to_string())?;
                    call = call.header(reqwest::header::CONTENT_ENCODING, "gzip");
                }
                let response = call.body(body).send().map_err(|e| error_chain(&e))?;
                let status = response.status();
                if status.is_success() {
                    Ok(())
                } else {
                    // The body is read within the client's timeout; it only adds detail.
                    Err(refusal(status, &response.bytes().unwrap_or_default()))
                }
            }
            #[cfg(feature = "otlp-grpc")]
            Self::Grpc {
                runtime,
                client,
                metadata,
                timeout,
            } => {
                let mut call = tonic::Request::new(request);
                *call.metadata_mut() = metadata.clone();
                let timeout = *timeout;
                runtime.block_on(async {
                    match tokio::time::timeout(timeout, client.export(call)).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(status)) => {
                            Err(format!("the collector answered {}", error_chain(&status)))
                        }
                        Err(_) => Err(format!("no answer within {timeout:?}")),
                    }
                })
            }
        }
    }
}
