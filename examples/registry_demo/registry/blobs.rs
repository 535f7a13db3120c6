//! Blobs: downloads (`GET`, with a single `Range`, and `HEAD`), streamed from disk or, in
//! proxy-cache mode, from the upstream on a miss; and `DELETE`.

use axum::{
    body::Body,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

use super::{header_value, internal, oci_error, upstream_error};
use crate::{db::BlobDeletion, digest::Digest, AppState};

/// A single `bytes=first-last` (or `first-`, or `-suffix`) range of a `size`-byte blob, as
/// inclusive offsets; `Err(())` when it cannot be satisfied. Multiple ranges are not supported
/// and get the whole blob (`Ok(None)`), which RFC 9110 allows.
fn byte_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (first, last) = spec.split_once('-').ok_or(())?;
    let (first, last) = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            (size.saturating_sub(n), size.checked_sub(1).ok_or(())?)
        }
        (first, "") => (
            first.parse().map_err(|_| ())?,
            size.checked_sub(1).ok_or(())?,
        ),
        (first, last) => {
            let last: u64 = last.parse().map_err(|_| ())?;
            (
                first.parse().map_err(|_| ())?,
                last.min(size.saturating_sub(1)),
            )
        }
    };
    if first > last || first >= size {
        return Err(());
    }
    Ok(Some((first, last)))
}

pub(super) async fn get(
    state: &AppState,
    name: &str,
    digest: &str,
    head: bool,
    headers: &HeaderMap,
) -> Response {
    let Some(digest) = Digest::parse(digest) else {
        return oci_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "invalid digest");
    };
    let unknown = || {
        oci_error(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            "blob unknown to registry",
        )
    };
    let size = match state.db.blob_size(digest.as_str()).await {
        Ok(Some(size)) => size.max(0) as u64,
        Ok(None) => {
            return match &state.proxy {
                // Not cached: streamed from the upstream to the client and to disk at once
                // (a Range is not honoured on this first fetch: the whole blob is sent).
                Some(proxy) => match proxy.stream_blob(state, name, &digest, head).await {
                    Ok(Some(response)) => blob_headers(response, &digest),
                    Ok(None) => unknown(),
                    Err(err) => upstream_error(err),
                },
                None => unknown(),
            };
        }
        Err(e) => return internal(e),
    };
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(value) => match byte_range(value, size) {
            Ok(range) => range,
            Err(()) => {
                let mut response = oci_error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "BLOB_UNKNOWN",
                    "requested range not satisfiable",
                );
                response.headers_mut().insert(
                    header::CONTENT_RANGE,
                    header_value(format!("bytes */{size}")),
                );
                return response;
            }
        },
        None => None,
    };
    let (first, last) = range.unwrap_or((0, size.saturating_sub(1)));
    let length = if size == 0 { 0 } else { last - first + 1 };
    let body = if head {
        Body::empty()
    } else {
        match state.storage.open_blob(&digest, range).await {
            Ok(Some(blob)) => Body::new(blob),
            Ok(None) => return unknown(),
            Err(e) => return internal(e),
        }
    };
    let mut response = Response::new(body);
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        response.headers_mut().insert(
            header::CONTENT_RANGE,
            header_value(format!("bytes {first}-{last}/{size}")),
        );
    }
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    blob_headers(response, &digest)
}

/// The headers of every blob answer.
pub(super) fn blob_headers(mut response: Response, digest: &Digest) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert("docker-content-digest", header_value(digest.as_str()));
    headers.insert(header::ETAG, header_value(format!("\"{digest}\"")));
    response
}

/// Deletes a blob (`202`), unless a manifest refers to it: then it is kept and the answer
/// is `405 DENIED` (the spec's answer when deletion is not allowed), naming that manifest;
/// delete the manifests first. Blobs are global here (a mount of any known blob succeeds), so
/// a blob deleted through any repository is gone from all of them. The row goes first, then
/// the file, with the digest locked against a concurrent push of the same content.
pub(super) async fn delete(state: &AppState, name: &str, digest: &str) -> Response {
    let Some(digest) = Digest::parse(digest) else {
        return oci_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "invalid digest");
    };
    let _lock = state.storage.lock_blob(&digest).await;
    match state.db.delete_unreferenced_blob(digest.as_str()).await {
        Ok(BlobDeletion::Deleted { size }) => match state.storage.delete(&digest).await {
            Ok(_) => {
                tracing::info!(%name, %digest, size, "blob deleted");
                let mut response = StatusCode::ACCEPTED.into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                response
            }
            Err(e) => internal(e),
        },
        Ok(BlobDeletion::Unknown) => oci_error(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            "blob unknown to registry",
        ),
        Ok(BlobDeletion::Referenced {
            repository,
            manifest,
        }) => {
            let message = format!(
                "blob {digest} is referenced by manifest {repository}@{manifest}; \
                 delete the manifests that refer to it first"
            );
            let mut response = oci_error(StatusCode::METHOD_NOT_ALLOWED, "DENIED", message);
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        }
        Err(e) => internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::test_support::TestRegistry;
    use axum::http::Method;

    #[tokio::test]
    async fn a_deleted_blob_is_gone_from_every_repository_at_once() {
        let registry = TestRegistry::new().await;
        let digest = Digest::of(b"layer");
        registry.push_blob("a/repo", &digest, &b"layer"[..]).await;
        let mount = format!("/v2/b/repo/blobs/uploads/?mount={digest}&from=a/repo");
        let mounted = registry.send(Method::POST, &mount, ()).await;
        assert_eq!(mounted.status, StatusCode::CREATED);

        let uri = format!("/v2/a/repo/blobs/{digest}");
        let deleted = registry.send(Method::DELETE, &uri, ()).await;
        assert_eq!(deleted.status, StatusCode::ACCEPTED, "{deleted:?}");
        for repo in ["a/repo", "b/repo"] {
            let uri = format!("/v2/{repo}/blobs/{digest}");
            for method in [Method::HEAD, Method::GET, Method::DELETE] {
                let answer = registry.send(method.clone(), &uri, ()).await;
                assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method} {uri}");
            }
        }
        let storage = &registry.state.storage;
        assert!(storage.open_blob(&digest, None).await.unwrap().is_none());
        // Pushed again, it is back.
        registry.push_blob("a/repo", &digest, &b"layer"[..]).await;
        let got = registry.send(Method::GET, &uri, ()).await;
        assert_eq!(&got.body[..], b"layer");

        let invalid = registry
            .send(Method::DELETE, "/v2/a/repo/blobs/sha256:abc", ())
            .await;
        assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
        assert_eq!(invalid.error_code().as_deref(), Some("DIGEST_INVALID"));
    }

    #[tokio::test]
    async fn a_blob_a_manifest_refers_to_is_not_deleted_until_the_manifest_is() {
        let registry = TestRegistry::new().await;
        let config = Digest::of(b"{}");
        registry.push_blob("r", &config, &b"{}"[..]).await;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config.as_str(), "size": 2},
            "layers": [],
        }))
        .unwrap();
        let manifest_digest = Digest::of(&manifest);
        let put = registry
            .send(Method::PUT, "/v2/other/manifests/v1", manifest)
            .await;
        assert_eq!(put.status, StatusCode::CREATED);

        // Referenced from another repository: blobs are global, so that counts too.
        let uri = format!("/v2/r/blobs/{config}");
        let refused = registry.send(Method::DELETE, &uri, ()).await;
        assert_eq!(refused.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(refused.error_code().as_deref(), Some("DENIED"));
        assert_eq!(refused.header("allow"), Some("GET, HEAD"));
        let message = String::from_utf8_lossy(&refused.body);
        assert!(
            message.contains(&format!("other@{manifest_digest}")),
            "{message}"
        );
        // Still there, for pulls and for the project's quota usage (which counts stored blobs).
        let got = registry.send(Method::GET, &uri, ()).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(
            registry.state.db.blob_size(config.as_str()).await.unwrap(),
            Some(2)
        );

        let manifest_uri = format!("/v2/other/manifests/{manifest_digest}");
        let gone = registry.send(Method::DELETE, &manifest_uri, ()).await;
        assert_eq!(gone.status, StatusCode::ACCEPTED);
        let deleted = registry.send(Method::DELETE, &uri, ()).await;
        assert_eq!(deleted.status, StatusCode::ACCEPTED);
        assert_eq!(
            registry.send(Method::HEAD, &uri, ()).await.status,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn byte_ranges_follow_rfc_9110() {
        assert_eq!(byte_range("bytes=0-4", 10), Ok(Some((0, 4))));
        assert_eq!(byte_range("bytes=5-", 10), Ok(Some((5, 9))));
        assert_eq!(byte_range("bytes=-3", 10), Ok(Some((7, 9))));
        assert_eq!(byte_range("bytes=8-100", 10), Ok(Some((8, 9))));
        assert_eq!(byte_range("bytes=10-", 10), Err(()));
        assert_eq!(byte_range("bytes=4-2", 10), Err(()));
        assert_eq!(byte_range("bytes=0-1,4-5", 10), Ok(None));
        assert_eq!(byte_range("items=0-1", 10), Ok(None));
    }
}
