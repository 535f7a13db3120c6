//! Blob uploads: monolithic (`POST ?digest=`), `POST` then `PUT`, chunked `PATCH`es closed by a
//! `PUT`, their status and cancel, and cross-repository mounts.

use axum::{
    body::Body,
    extract::Request,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

use super::{header_value, internal, oci_error, query_param};
use crate::{
    digest::{Algorithm, Digest},
    storage::{Upload, UploadError},
    AppState,
};

fn upload_accepted(status: StatusCode, name: &str, uuid: &str, len: u64) -> Response {
    let mut response = status.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        header_value(format!("/v2/{name}/blobs/uploads/{uuid}")),
    );
    headers.insert("docker-upload-uuid", header_value(uuid));
    // The last byte received, inclusive; `0-0` before any (as Distribution answers).
    headers.insert(
        header::RANGE,
        header_value(format!("0-{}", len.saturating_sub(1))),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    response
}

fn blob_created(name: &str, digest: &Digest) -> Response {
    let mut response = StatusCode::CREATED.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        header_value(format!("/v2/{name}/blobs/{digest}")),
    );
    headers.insert("docker-content-digest", header_value(digest.as_str()));
    response
}

fn upload_error(name: &str, uuid: &str, err: UploadError) -> Response {
    match err {
        UploadError::Unknown => oci_error(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            "upload unknown",
        ),
        UploadError::DigestMismatch { actual } => oci_error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("provided digest did not match uploaded content (content is {actual})"),
        ),
        // Where the upload really ends, so that the client can resume from there.
        UploadError::RangeInvalid { len } => {
            upload_accepted(StatusCode::RANGE_NOT_SATISFIABLE, name, uuid, len)
        }
        UploadError::Body(message) => {
            tracing::info!(%uuid, %message, "upload chunk interrupted, rolled back");
            oci_error(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", message)
        }
        UploadError::Io(e) => internal(e),
    }
}

/// A `Content-Range: <first>-<last>` of a chunk (Distribution's form, without `bytes `).
fn content_range(headers: &HeaderMap) -> Option<Result<(u64, u64), ()>> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().map_err(|_| ());
    Some(value.and_then(|value| {
        let value = value.trim();
        let value = value.strip_prefix("bytes ").unwrap_or(value);
        let (first, last) = value.split_once('-').ok_or(())?;
        let first = first.trim().parse().map_err(|_| ())?;
        let last = last.trim().parse().map_err(|_| ())?;
        if first > last {
            return Err(());
        }
        Ok((first, last))
    }))
}

pub(super) async fn start(state: &AppState, name: &str, req: Request) -> Response {
    let query = req.uri().query().map(str::to_owned);
    let query = query.as_deref();
    // Cross-repository mount: blobs are global here, so a blob known to the registry is
    // mounted at once whatever `from` names; an unknown one starts an upload session (202), as
    // the spec asks.
    if let Some(mount) = query_param(query, "mount") {
        if let Some(digest) = Digest::parse(&mount) {
            match state.db.blob_size(digest.as_str()).await {
                Ok(Some(_)) => return blob_created(name, &digest),
                Ok(None) => {}
                Err(e) => return internal(e),
            }
        }
    }
    if let Some(digest) = query_param(query, "digest") {
        let Some(digest) = Digest::parse(&digest) else {
            return oci_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "invalid digest");
        };
        let stored = match state.storage.put_body(req.into_body(), &digest).await {
            // Recorded with the blob still locked (see `Storage::lock_blob`).
            Ok(stored) => state.db.put_blob(digest.as_str(), stored.size).await,
            Err(e) => return upload_error(name, "", e),
        };
        return match stored {
            Ok(()) => blob_created(name, &digest),
            Err(e) => internal(e),
        };
    }
    // The algorithm the session is hashed with as it goes (the spec's `digest-algorithm`);
    // closing it with a digest of the other one costs a second read of the upload.
    let algorithm = match query_param(query, "digest-algorithm") {
        None => Algorithm::Sha256,
        Some(name) => match Algorithm::parse(&name) {
            Some(algorithm) => algorithm,
            None => {
                return oci_error(
                    StatusCode::BAD_REQUEST,
                    "DIGEST_INVALID",
                    format!("unsupported digest algorithm {name:?} (sha256 and sha512 are)"),
                )
            }
        },
    };
    match state.storage.start_upload(algorithm).await {
        Ok(uuid) => upload_accepted(StatusCode::ACCEPTED, name, &uuid, 0),
        Err(e) => internal(e),
    }
}

/// The `Content-Range` of a chunk (`PATCH`, or the closing `PUT`): `Ok(None)` without one.
fn chunk_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, ()> {
    content_range(headers).transpose()
}

/// Appends the request's `body` to `upload`, written to disk as it arrives. With a
/// `Content-Range`, the chunk must start where the upload ends and be as long as the range
/// says; otherwise it is refused ([`UploadError::RangeInvalid`], a 416 with the upload's
/// `Range`) and nothing of it is kept, so the client can resume from there.
async fn append(
    mut upload: Upload,
    uuid: &str,
    range: Option<(u64, u64)>,
    body: Body,
) -> Result<Upload, UploadError> {
    let start = upload.len();
    if range.is_some_and(|(first, _)| first != start) {
        upload.rollback().await?;
        return Err(UploadError::RangeInvalid { len: start });
    }
    upload.write_body(body).await?;
    if let Some((first, last)) = range {
        if upload.len() != last + 1 {
            tracing::info!(%uuid, first, last, received = upload.len() - start, "chunk length differs from its Content-Range");
            upload.rollback().await?;
            return Err(UploadError::RangeInvalid { len: start });
        }
    }
    Ok(upload)
}

fn invalid_range() -> Response {
    oci_error(
        StatusCode::BAD_REQUEST,
        "BLOB_UPLOAD_INVALID",
        "invalid Content-Range",
    )
}

/// A chunk (see [`append`]).
pub(super) async fn patch(state: &AppState, name: &str, uuid: &str, req: Request) -> Response {
    let Ok(range) = chunk_range(req.headers()) else {
        return invalid_range();
    };
    let upload = match state.storage.upload(uuid).await {
        Ok(upload) => upload,
        Err(e) => return upload_error(name, uuid, e),
    };
    let upload = match append(upload, uuid, range, req.into_body()).await {
        Ok(upload) => upload,
        Err(e) => return upload_error(name, uuid, e),
    };
    match upload.commit().await {
        Ok(len) => upload_accepted(StatusCode::ACCEPTED, name, uuid, len),
        Err(e) => internal(e),
    }
}

/// The closing `PUT ?digest=`, with the last chunk or none.
pub(super) async fn finish(state: &AppState, name: &str, uuid: &str, req: Request) -> Response {
    let Some(digest) = query_param(req.uri().query(), "digest") else {
        return oci_error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "digest parameter missing",
        );
    };
    let Some(digest) = Digest::parse(&digest) else {
        return oci_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "invalid digest");
    };
    let Ok(range) = chunk_range(req.headers()) else {
        return invalid_range();
    };
    complete(state, name, uuid, range, req, &digest).await
}

/// Appends the request's body (the last chunk, maybe empty; refused with a 416 like a `PATCH`
/// if its `Content-Range` does not follow on) to the upload, checks the digest and stores the
/// blob (`tx-putBlob`). A failed body is rolled back and the session kept; a digest mismatch
/// discards it.
async fn complete(
    state: &AppState,
    name: &str,
    uuid: &str,
    range: Option<(u64, u64)>,
    req: Request,
    digest: &Digest,
) -> Response {
    let upload = match state.storage.upload(uuid).await {
        Ok(upload) => upload,
        Err(e) => return upload_error(name, uuid, e),
    };
    let upload = match append(upload, uuid, range, req.into_body()).await {
        Ok(upload) => upload,
        Err(e) => return upload_error(name, uuid, e),
    };
    let stored = match upload.finish(digest).await {
        Ok(stored) => stored,
        Err(e) => return upload_error(name, uuid, e),
    };
    // Recorded with the blob still locked (see `Storage::lock_blob`).
    match state.db.put_blob(digest.as_str(), stored.size).await {
        Ok(()) => blob_created(name, digest),
        Err(e) => internal(e),
    }
}

pub(super) async fn status(state: &AppState, name: &str, uuid: &str) -> Response {
    match state.storage.upload_len(uuid).await {
        Ok(Some(len)) => upload_accepted(StatusCode::NO_CONTENT, name, uuid, len),
        Ok(None) => oci_error(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            "upload unknown",
        ),
        Err(e) => internal(e),
    }
}

/// Discards an upload session (`DELETE` of its location).
pub(super) async fn cancel(state: &AppState, uuid: &str) -> Response {
    match state.storage.cancel_upload(uuid).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => oci_error(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            "upload unknown",
        ),
        Err(e) => internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::test_support::TestRegistry;
    use axum::http::Method;

    /// Starts an upload session in `r`; returns its location.
    async fn start_session(registry: &TestRegistry) -> String {
        let started = registry
            .send(Method::POST, "/v2/r/blobs/uploads/", ())
            .await;
        assert_eq!(started.status, StatusCode::ACCEPTED);
        started.header("location").unwrap().to_owned()
    }

    #[tokio::test]
    async fn an_out_of_order_closing_put_is_416_and_the_session_resumes() {
        let registry = TestRegistry::new().await;
        let location = start_session(&registry).await;
        let content = b"0123456789";
        let digest = Digest::of(content);
        let chunk = |method: Method, uri: String, range: &'static str, body: &'static [u8]| {
            let registry = &registry;
            async move {
                let headers = [("content-range", range)];
                registry.send_with(method, &uri, &headers, body).await
            }
        };
        let first = chunk(Method::PATCH, location.clone(), "0-3", &content[..4]).await;
        assert_eq!(first.status, StatusCode::ACCEPTED);
        assert_eq!(first.header("range"), Some("0-3"));

        // The last chunk sent ahead of the middle one, in the closing PUT: refused, kept out.
        let closing = format!("{location}?digest={digest}");
        let ahead = chunk(Method::PUT, closing.clone(), "7-9", &content[7..]).await;
        assert_eq!(ahead.status, StatusCode::RANGE_NOT_SATISFIABLE, "{ahead:?}");
        assert_eq!(ahead.header("range"), Some("0-3"));
        assert_eq!(ahead.header("location"), Some(location.as_str()));
        // A closing chunk shorter than its range: refused too, nothing of it kept.
        let short = chunk(Method::PUT, closing.clone(), "4-9", &content[4..8]).await;
        assert_eq!(short.status, StatusCode::RANGE_NOT_SATISFIABLE, "{short:?}");
        let status = registry.send(Method::GET, &location, ()).await;
        assert_eq!(status.status, StatusCode::NO_CONTENT);
        assert_eq!(status.header("range"), Some("0-3"));
        // An out-of-order PATCH is answered the same way.
        let patch = chunk(Method::PATCH, location.clone(), "5-9", &content[5..]).await;
        assert_eq!(patch.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(patch.header("range"), Some("0-3"));

        let rest = chunk(Method::PUT, closing, "4-9", &content[4..]).await;
        assert_eq!(rest.status, StatusCode::CREATED, "{rest:?}");
        let blob = registry
            .send(Method::GET, &format!("/v2/r/blobs/{digest}"), ())
            .await;
        assert_eq!(&blob.body[..], content);
    }

    #[test]
    fn content_ranges_of_chunks() {
        let range = |v: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_RANGE, HeaderValue::from_str(v).unwrap());
            content_range(&headers)
        };
        assert_eq!(range("0-99"), Some(Ok((0, 99))));
        assert_eq!(range("bytes 100-199"), Some(Ok((100, 199))));
        assert_eq!(range("5-4"), Some(Err(())));
        assert_eq!(range("a-b"), Some(Err(())));
        assert_eq!(content_range(&HeaderMap::new()), None);
    }
}
