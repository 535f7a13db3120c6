//! Proxy-cache mode: with `upstream: URL` set, a manifest or blob that is not found locally is
//! fetched from the upstream registry's `/v2/` API, verified, stored like a pushed one and
//! served; the next request for it is answered from the local copy without contacting the
//! upstream (a cached tag is not revalidated).
//!
//! The calls go through towerscope's instrumented reqwest client: each is a client span, child
//! of the request's server span, with the trace context passed on (so the upstream's server
//! span joins the same trace), and is counted in `http_client_request_total` under the peer
//! `proxyGetManifest` or `proxyGetBlob`.
//!
//! Only anonymous upstream access is supported: an upstream answering 401 (a token challenge)
//! is reported as a failure (502), like an unreachable one. Upstream 404s become
//! `MANIFEST_UNKNOWN` / `BLOB_UNKNOWN`.

use std::time::Duration;

use axum::http::{header, StatusCode};
use reqwest_middleware::ClientWithMiddleware;
use towerscope::{client::ClientOperation, Telemetry};

use crate::{storage::Digest, AppState};

/// The manifest media types asked for.
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// The largest manifest fetched.
const MAX_MANIFEST: usize = 4 << 20;

/// Why the upstream could not provide an object (other than "it does not exist").
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    /// No response: connection refused, timeout, ...
    #[error("upstream {url} unreachable: {message}")]
    Unreachable { url: String, message: String },
    /// A response other than 200 or 404.
    #[error("upstream {url} answered {status}")]
    Status { url: String, status: StatusCode },
    /// The content does not match its digest.
    #[error("upstream {url} sent content with digest {actual}, expected {expected}")]
    DigestMismatch {
        url: String,
        actual: Digest,
        expected: String,
    },
    /// The manifest is too large or not JSON.
    #[error("upstream {url} sent an invalid manifest: {message}")]
    Invalid { url: String, message: String },
    /// The local store failed.
    #[error("cannot store {what} from upstream: {message}")]
    Store { what: String, message: String },
}

/// The upstream registry and the instrumented client to reach it.
#[derive(Debug, Clone)]
pub(crate) struct Proxy {
    base: String,
    client: ClientWithMiddleware,
}

/// Checks an `upstream:` value: an `http://` or `https://` URL with a host and no query.
pub(crate) fn validate_upstream(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains('@') || rest.contains(['?', '#']) {
        return Err(format!(
            "{url:?} must be a URL like http://HOST:PORT (no credentials, query or fragment)"
        ));
    }
    Ok(())
}

impl Proxy {
    /// A proxy of `upstream` (validated by [`validate_upstream`]), calling it through the
    /// telemetry's instrumented client.
    pub(crate) fn new(upstream: &str, telemetry: &Telemetry) -> Result<Self, String> {
        validate_upstream(upstream)?;
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(300));
        let client = towerscope::client::instrumented_client_with(builder, telemetry)
            .map_err(|e| format!("cannot build the upstream client: {e}"))?;
        Ok(Self {
            base: upstream.trim_end_matches('/').to_owned(),
            client,
        })
    }

    /// GETs `path` under the upstream's `/v2/`; `Ok(None)` on 404.
    async fn get(
        &self,
        path: &str,
        operation: &'static str,
        accept: Option<&str>,
    ) -> Result<Option<(reqwest::Response, String)>, ProxyError> {
        let url = format!("{}/v2/{path}", self.base);
        let mut request = self
            .client
            .get(&url)
            .with_extension(ClientOperation::new(operation));
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        let response = request.send().await.map_err(|e| ProxyError::Unreachable {
            url: url.clone(),
            message: error_chain(&e),
        })?;
        match response.status() {
            StatusCode::OK => Ok(Some((response, url))),
            StatusCode::NOT_FOUND => Ok(None),
            status => Err(ProxyError::Status { url, status }),
        }
    }

    /// Fetches the manifest `name:reference` from the upstream, verifies it and stores it (with
    /// its tag); `Ok(false)` if the upstream does not know it.
    pub(crate) async fn fetch_manifest(
        &self,
        state: &AppState,
        name: &str,
        reference: &str,
    ) -> Result<bool, ProxyError> {
        let Some((response, url)) = self
            .get(
                &format!("{name}/manifests/{reference}"),
                "proxyGetManifest",
                Some(ACCEPT),
            )
            .await?
        else {
            return Ok(false);
        };
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let media_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_limited(response, &url, MAX_MANIFEST).await?;
        let digest = Digest::of(&body);
        // By digest, the content must have that digest; by tag, the upstream's
        // Docker-Content-Digest (when sent) must match the content.
        let (expected, tag) = if reference.contains(':') {
            (Some(reference.to_owned()), None)
        } else {
            (header_digest, Some(reference))
        };
        if let Some(expected) = expected {
            if expected != digest.as_str() {
                return Err(ProxyError::DigestMismatch {
                    url,
                    actual: digest,
                    expected,
                });
            }
        }
        let parsed: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| ProxyError::Invalid {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let media_type = media_type
            .filter(|t| !t.is_empty() && t != "application/json")
            .or_else(|| parsed.get("mediaType")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_owned());
        state
            .db
            .put_manifest(name, digest.as_str(), &media_type, &body, tag)
            .await
            .map_err(|e| ProxyError::Store {
                what: format!("manifest {name}@{digest}"),
                message: e.to_string(),
            })?;
        tracing::info!(%name, %reference, %digest, "manifest cached from upstream");
        Ok(true)
    }

    /// Fetches the blob `digest` of repository `name` from the upstream, verifies it and stores
    /// it; `Ok(false)` if the upstream does not know it.
    pub(crate) async fn fetch_blob(
        &self,
        state: &AppState,
        name: &str,
        digest: &Digest,
    ) -> Result<bool, ProxyError> {
        let Some((response, url)) = self
            .get(&format!("{name}/blobs/{digest}"), "proxyGetBlob", None)
            .await?
        else {
            return Ok(false);
        };
        let body = response
            .bytes()
            .await
            .map_err(|e| ProxyError::Unreachable {
                url: url.clone(),
                message: error_chain(&e),
            })?;
        let actual = Digest::of(&body);
        if &actual != digest {
            return Err(ProxyError::DigestMismatch {
                url,
                actual,
                expected: digest.to_string(),
            });
        }
        let store_error = |message: String| ProxyError::Store {
            what: format!("blob {digest}"),
            message,
        };
        let size = state
            .storage
            .put(&body, digest)
            .await
            .map_err(|e| store_error(e.to_string()))?;
        state
            .db
            .put_blob(digest.as_str(), size)
            .await
            .map_err(|e| store_error(e.to_string()))?;
        tracing::info!(%name, %digest, size, "blob cached from upstream");
        Ok(true)
    }
}

/// Reads a response body of at most `limit` bytes.
async fn read_limited(
    mut response: reqwest::Response,
    url: &str,
    limit: usize,
) -> Result<Vec<u8>, ProxyError> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(ProxyError::Invalid {
                        url: url.to_owned(),
                        message: format!("larger than {limit} bytes"),
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(ProxyError::Unreachable {
                    url: url.to_owned(),
                    message: error_chain(&e),
                })
            }
        }
    }
}

/// An error with its sources, `a: b: c`.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_are_checked() {
        assert!(validate_upstream("http://127.0.0.1:5001").is_ok());
        assert!(validate_upstream("https://registry.example/").is_ok());
        assert!(validate_upstream("127.0.0.1:5001").is_err());
        assert!(validate_upstream("http://").is_err());
        assert!(validate_upstream("http://user:pw@host").is_err());
        assert!(validate_upstream("http://host/?x=1").is_err());
    }
}
