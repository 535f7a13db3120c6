//! Proxy-cache mode: with `upstream: URL` set, a manifest or blob that is not found locally is
//! fetched from the upstream registry's `/v2/` API, verified, stored like a pushed one and
//! served; the next request for it is answered from the local copy without contacting the
//! upstream (a cached tag is not revalidated).
//!
//! A blob is streamed: each chunk from the upstream is written to an upload session (hashed as
//! it goes) and forwarded to the client, one chunk behind, so the last chunk is only sent once
//! the digest matched and the blob was stored; on a mismatch the client's body fails instead
//! (the connection is cut: the client cannot take the blob for complete) and nothing is kept.
//! A client that goes away does not stop the fill: the blob is still cached. Memory per
//! transfer is bounded by [`CLIENT_FRAMES`] chunks.
//!
//! The calls go through towerscope's instrumented reqwest client: each is a client span, child
//! of the request's server span, with the trace context passed on (so the upstream's server
//! span joins the same trace), and is counted in `http_client_request_total` under the peer
//! `proxyGetManifest` or `proxyGetBlob`.
//!
//! Only anonymous upstream access is supported: an upstream answering 401 (a token challenge)
//! is reported as a failure (502), like an unreachable one. Upstream 404s become
//! `MANIFEST_UNKNOWN` / `BLOB_UNKNOWN`.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    http::{header, HeaderValue, StatusCode},
    response::Response,
};
use bytes::Bytes;
use http_body::Frame;
use opentelemetry::trace::FutureExt as _;
use reqwest_middleware::ClientWithMiddleware;
use tokio::sync::mpsc;
use towerscope::{client::ClientOperation, Telemetry};
use tracing::Instrument as _;

use crate::{
    db::NewManifest,
    digest::{Algorithm, Digest},
    registry::ManifestMeta,
    storage::{Upload, UploadError},
    AppState,
};

/// The manifest media types asked for.
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// The largest manifest fetched.
const MAX_MANIFEST: usize = 4 << 20;
/// Chunks buffered between the upstream and a slow client.
const CLIENT_FRAMES: usize = 8;

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
        Ok(Self::with_client(upstream, client))
    }

    /// A proxy of `upstream` calling it with `client`.
    fn with_client(upstream: &str, client: ClientWithMiddleware) -> Self {
        Self {
            base: upstream.trim_end_matches('/').to_owned(),
            client,
        }
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

    /// Fetches the manifest `name:reference` from the upstream and verifies it: by digest,
    /// the content must have that digest; by tag, the upstream's Docker-Content-Digest (when
    /// sent) must be the content's. `Ok(None)` if the upstream does not know it.
    async fn manifest(
        &self,
        name: &str,
        reference: &str,
    ) -> Result<Option<UpstreamManifest>, ProxyError> {
        let Some((response, url)) = self
            .get(
                &format!("{name}/manifests/{reference}"),
                "proxyGetManifest",
                Some(ACCEPT),
            )
            .await?
        else {
            return Ok(None);
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
        let expected = if reference.contains(':') {
            Some(reference.to_owned())
        } else {
            header_digest
        };
        // Hashed with the expected digest's algorithm (sha512 too), else the canonical one.
        let algorithm = expected
            .as_deref()
            .and_then(Digest::parse)
            .map_or(Algorithm::Sha256, |d| d.algorithm());
        let digest = algorithm.digest(&body);
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
        Ok(Some(UpstreamManifest {
            digest,
            media_type,
            body,
        }))
    }

    /// Fetches the manifest `name:reference` from the upstream, verifies it and stores it
    /// (with its tag, when `reference` is one) in a `tx-putManifest` transaction; `Ok(false)`
    /// if the upstream does not know it.
    pub(crate) async fn fetch_manifest(
        &self,
        state: &AppState,
        name: &str,
        reference: &str,
    ) -> Result<bool, ProxyError> {
        let Some(manifest) = self.manifest(name, reference).await? else {
            return Ok(false);
        };
        let tag = [reference];
        let tags = if reference.contains(':') {
            &[][..]
        } else {
            &tag[..]
        };
        let digest = &manifest.digest;
        let meta = ManifestMeta::of(&manifest.body);
        let stored = NewManifest {
            repository: name,
            digest: digest.as_str(),
            media_type: &manifest.media_type,
            content: &manifest.body,
            tags,
            subject: meta.subject.as_deref(),
            artifact_type: meta.artifact_type.as_deref(),
            // A cache stores a manifest before its blobs, fetched when they are asked for.
            blobs: &[],
        };
        state
            .db
            .put_manifest(&stored)
            .await
            .map_err(|e| ProxyError::Store {
                what: format!("manifest {name}@{digest}"),
                message: e.to_string(),
            })?;
        tracing::info!(%name, %reference, %digest, "manifest cached from upstream");
        Ok(true)
    }

    /// Streams the blob `digest` of repository `name` from the upstream to the client and to
    /// the local store at once (see the module's documentation); `Ok(None)` if the upstream
    /// does not know it. A HEAD waits for the blob to be stored and answers without a body.
    /// The fill runs in a task of its own, in the request's span and trace (its `tx-putBlob`
    /// is the request's child).
    pub(crate) async fn stream_blob(
        &self,
        state: &AppState,
        name: &str,
        digest: &Digest,
        head: bool,
    ) -> Result<Option<Response>, ProxyError> {
        let Some((response, url)) = self
            .get(&format!("{name}/blobs/{digest}"), "proxyGetBlob", None)
            .await?
        else {
            return Ok(None);
        };
        let length = response.content_length();
        let store_error = |e: &dyn std::fmt::Display| ProxyError::Store {
            what: format!("blob {digest}"),
            message: e.to_string(),
        };
        let uuid = state
            .storage
            .start_upload(digest.algorithm())
            .await
            .map_err(|e| store_error(&e))?;
        let upload = state
            .storage
            .upload(&uuid)
            .await
            .map_err(|e| store_error(&e))?;
        let (tx, rx) = mpsc::channel(CLIENT_FRAMES);
        let db = state.db.clone();
        let (blob, repository) = (digest.clone(), name.to_owned());
        let fill = async move {
            let stored = tee(
                response,
                &url,
                upload,
                &blob,
                (!head).then_some(tx),
                async |size| {
                    db.put_blob(blob.as_str(), size)
                        .await
                        .map_err(|e| e.to_string())
                },
            )
            .await;
            match &stored {
                Ok(size) => {
                    tracing::info!(name = %repository, digest = %blob, size, "blob cached from upstream")
                }
                Err(err) => tracing::warn!(error = %err, "proxy cache: blob not cached"),
            }
            stored
        };
        let task = tokio::spawn(
            fill.with_context(towerscope::trace::current_context())
                .instrument(tracing::Span::current()),
        );
        let mut answer = if head {
            let size = task.await.map_err(|e| store_error(&e))??;
            let mut answer = Response::new(Body::empty());
            answer
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            answer
        } else {
            Response::new(Body::new(ClientBody { rx }))
        };
        if let (Some(length), false) = (length, head) {
            answer
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        Ok(Some(answer))
    }
}

/// Copies the upstream's `response` into `upload` and, one chunk behind, to `client` (while
/// it listens); once the content matched `digest`, the blob is moved into place and `store`d
/// before the last chunk goes out. On any failure, the client's body fails and nothing is
/// kept. Returns the blob's size.
async fn tee(
    mut response: reqwest::Response,
    url: &str,
    mut upload: Upload,
    digest: &Digest,
    mut client: Option<mpsc::Sender<io::Result<Bytes>>>,
    store: impl AsyncFnOnce(u64) -> Result<(), String>,
) -> Result<u64, ProxyError> {
    let mut held: Option<Bytes> = None;
    let failed = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if let Err(e) = upload.write(&chunk).await {
                    break ProxyError::Store {
                        what: format!("blob {digest}"),
                        message: e.to_string(),
                    };
                }
                if let Some(previous) = held.replace(chunk) {
                    forward(&mut client, Ok(previous)).await;
                }
            }
            Ok(None) => match upload.finish(digest).await {
                Ok(stored) => {
                    let size = stored.size;
                    // Recorded with the blob still locked (see `Storage::lock_blob`), released
                    // before the last chunk waits for the client.
                    let recorded = store(size).await;
                    drop(stored);
                    match recorded {
                        Ok(()) => {
                            if let Some(last) = held {
                                forward(&mut client, Ok(last)).await;
                            }
                            return Ok(size);
                        }
                        Err(message) => {
                            forward(&mut client, Err(io::Error::other(message.clone()))).await;
                            return Err(ProxyError::Store {
                                what: format!("blob {digest}"),
                                message,
                            });
                        }
                    }
                }
                Err(UploadError::DigestMismatch { actual }) => {
                    forward(&mut client, Err(io::Error::other("digest mismatch"))).await;
                    return Err(ProxyError::DigestMismatch {
                        url: url.to_owned(),
                        actual,
                        expected: digest.to_string(),
                    });
                }
                Err(e) => {
                    forward(&mut client, Err(io::Error::other(e.to_string()))).await;
                    return Err(ProxyError::Store {
                        what: format!("blob {digest}"),
                        message: e.to_string(),
                    });
                }
            },
            Err(e) => {
                break ProxyError::Unreachable {
                    url: url.to_owned(),
                    message: error_chain(&e),
                }
            }
        }
    };
    upload.discard().await;
    forward(&mut client, Err(io::Error::other(failed.to_string()))).await;
    Err(failed)
}

/// Sends `frame` to the client, and stops sending once it went away.
async fn forward(client: &mut Option<mpsc::Sender<io::Result<Bytes>>>, frame: io::Result<Bytes>) {
    if let Some(tx) = client {
        if tx.send(frame).await.is_err() {
            tracing::debug!("proxy cache: the client went away; the blob is still cached");
            *client = None;
        }
    }
}

/// The client's side of [`tee`]: the chunks as they come, ending when the fill ends.
#[derive(Debug)]
struct ClientBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl http_body::Body for ClientBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|frame| frame.map(|result| result.map(Frame::data)))
    }
}

/// A manifest fetched from the upstream and verified.
#[derive(Debug)]
struct UpstreamManifest {
    digest: Digest,
    media_type: String,
    body: Vec<u8>,
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

    use axum::{extract::Request, response::IntoResponse, Router};
    use towerscope::{client::ClientMiddleware, config::MetricConfig, metrics::MetricsRegistry};

    const MANIFEST: &[u8] = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:c"},"layers":[]}"#;
    const BLOB: &[u8] = b"layer content";

    /// A fake upstream: `good` and the manifest's digest answer the manifest (`good` with its
    /// Docker-Content-Digest), `liar` announces another digest, the blob's digest answers the
    /// blob, the digest of `tampered` answers other bytes, `private` is 401, the rest 404.
    async fn upstream(req: Request) -> axum::response::Response {
        let manifest_digest = Digest::of(MANIFEST);
        let path = req.uri().path().to_owned();
        let Some(rest) = path.strip_prefix("/v2/r/") else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let manifest = |digest: String| {
            (
                [
                    (
                        header::CONTENT_TYPE,
                        "application/vnd.oci.image.manifest.v1+json".to_owned(),
                    ),
                    (
                        header::HeaderName::from_static("docker-content-digest"),
                        digest,
                    ),
                ],
                MANIFEST,
            )
                .into_response()
        };
        match rest {
            "manifests/good" => manifest(manifest_digest.to_string()),
            "manifests/liar" => manifest(Digest::of(b"other").to_string()),
            "manifests/private" => StatusCode::UNAUTHORIZED.into_response(),
            _ if rest == format!("manifests/{manifest_digest}") => {
                manifest(manifest_digest.to_string())
            }
            _ if rest == format!("blobs/{}", Digest::of(BLOB)) => BLOB.into_response(),
            _ if rest == format!("blobs/{}", Digest::of(b"tampered")) => BLOB.into_response(),
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }

    fn proxy_of(base: &str) -> Proxy {
        let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
        let client = ClientMiddleware::new(&registry)
            .build_client(reqwest::Client::builder())
            .unwrap();
        Proxy::with_client(base, client)
    }

    #[tokio::test]
    async fn upstream_content_is_verified_and_errors_are_classified() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, Router::new().fallback(upstream))
                .await
                .unwrap()
        });
        let proxy = proxy_of(&format!("http://{addr}/"));

        let by_tag = proxy.manifest("r", "good").await.unwrap().unwrap();
        assert_eq!(by_tag.digest, Digest::of(MANIFEST));
        assert_eq!(by_tag.body, MANIFEST);
        assert_eq!(
            by_tag.media_type,
            "application/vnd.oci.image.manifest.v1+json"
        );
        let digest = Digest::of(MANIFEST).to_string();
        assert!(proxy.manifest("r", &digest).await.unwrap().is_some());
        assert!(proxy.manifest("r", "missing").await.unwrap().is_none());
        let wrong = Digest::of(b"wrong").to_string();
        assert!(proxy.manifest("r", &wrong).await.unwrap().is_none());
        assert!(matches!(
            proxy.manifest("r", "liar").await,
            Err(ProxyError::DigestMismatch { .. })
        ));
        assert!(matches!(
            proxy.manifest("r", "private").await,
            Err(ProxyError::Status {
                status: StatusCode::UNAUTHORIZED,
                ..
            })
        ));

        // Blobs: teed to the client and the store; a tampered one fails the client's body and
        // is not kept.
        let dir =
            std::env::temp_dir().join(format!("registry_demo-proxy-{}", uuid::Uuid::new_v4()));
        let storage = crate::storage::Storage::open(&dir).await.unwrap();
        let teed = |digest: Digest| {
            let (proxy, storage) = (proxy.clone(), storage.clone());
            async move {
                let (response, url) = proxy
                    .get(&format!("r/blobs/{digest}"), "proxyGetBlob", None)
                    .await
                    .unwrap()
                    .unwrap();
                let uuid = storage.start_upload(digest.algorithm()).await.unwrap();
                let upload = storage.upload(&uuid).await.unwrap();
                let (tx, rx) = mpsc::channel(CLIENT_FRAMES);
                let stored = std::sync::Arc::new(std::sync::Mutex::new(None));
                let seen = stored.clone();
                let fill = tokio::spawn(async move {
                    tee(response, &url, upload, &digest, Some(tx), async |size| {
                        *seen.lock().unwrap() = Some(size);
                        Ok(())
                    })
                    .await
                });
                let client = http_body_util::BodyExt::collect(ClientBody { rx }).await;
                let result = fill.await.unwrap();
                let size = *stored.lock().unwrap();
                (client.map(|c| c.to_bytes()), result, size)
            }
        };
        let (client, result, stored) = teed(Digest::of(BLOB)).await;
        assert_eq!(client.unwrap(), BLOB);
        assert_eq!(result.unwrap(), BLOB.len() as u64);
        assert_eq!(stored, Some(BLOB.len() as u64));
        let kept = storage.open_blob(&Digest::of(BLOB), None).await.unwrap();
        assert!(kept.is_some());

        let (client, result, stored) = teed(Digest::of(b"tampered")).await;
        assert!(
            client.is_err(),
            "the client's body must fail on a digest mismatch"
        );
        assert!(matches!(result, Err(ProxyError::DigestMismatch { .. })));
        assert_eq!(stored, None);
        let kept = storage
            .open_blob(&Digest::of(b"tampered"), None)
            .await
            .unwrap();
        assert!(kept.is_none());
        assert!(proxy
            .get(
                &format!("r/blobs/{}", Digest::of(b"absent")),
                "proxyGetBlob",
                None
            )
            .await
            .unwrap()
            .is_none());
        let _ = std::fs::remove_dir_all(dir);

        // Nothing listens on a port just released: a connection failure, not a panic.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let err = proxy_of(&format!("http://{closed_addr}"))
            .manifest("r", "good")
            .await
            .unwrap_err();
        assert!(matches!(err, ProxyError::Unreachable { .. }), "{err}");
    }

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
