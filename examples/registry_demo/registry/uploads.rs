//! Blob uploads: monolithic (`POST ?digest=`), `POST` then `PUT`, chunked `PATCH`es closed by a
//! `PUT`, their status and cancel, and cross-repository mounts.

use axum::{
    extract::Request,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

use super::{header_value, internal, oci_error, query_param};
use crate::{
    digest::{Algorithm, Digest},
    storage::UploadError,
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

/// A `Content-Range: <first>-<last>` of a PATCH (Distribution's form, without `bytes `).
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
            Ok(size) => state.db.put_blob(digest.as_str(), size).await,
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

/// A chunk, written to disk as it arrives. With a `Content-Range`, it must start where the
/// upload ends and be as long as it says; otherwise it is refused (416, with the upload's
/// `Range`) and nothing of it is kept.
pub(super) async fn patch(state: &AppState, name: &str, uuid: &str, req: Request) -> Response {
    let range = match content_range(req.headers()) {
        Some(Ok(range)) => Some(range),
        Some(Err(())) => {
            return oci_error(
                StatusCode::BAD_REQUEST,
                "BLOB_UPLOAD_INVALID",
                "invalid Content-Range",
            )
        }
        None => None,
    };
    let mut upload = match state.storage.upload(uuid).await {
        Ok(upload) => upload,
        Err(e) => return upload_error(name, uuid, e),
    };
    let start = upload.len();
    if let Some((first, _)) = range {
        if first != start {
            return upload_error(name, uuid, UploadError::RangeInvalid { len: start });
        }
    }
    if let Err(e) = upload.write_body(req.into_body()).await {
        return upload_error(name, uuid, e);
    }
    if let Some((first, last)) = range {
        if upload.len() != last + 1 {
            tracing::info!(%uuid, first, last, received = upload.len() - start, "chunk length differs from its Content-Range");
            return match upload.rollback().await {
                Ok(()) => upload_error(name, uuid, UploadError::RangeInvalid { len: start }),
                Err(e) => internal(e),
            };
        }
    }
    match upload.commit().await {
        Ok(len) => upload_accepted(StatusCode::ACCEPTED, name, uuid, len),
        Err(e) => internal(e),
    }
}

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
    complete(state, name, uuid, req, &digest).await
}

/// Writes the request's body (the last chunk, maybe empty) to the upload, checks the digest
/// and stores the blob (`tx-putBlob`). A failed body is rolled back and the session kept; a
/// digest mismatch discards it.
async fn complete(
    state: &AppState,
    name: &str,
    uuid: &str,
    req: Request,
    digest: &Digest,
) -> Response {
    let mut upload = match state.storage.upload(uuid).await {
        Ok(upload) => upload,
        Err(e) => return upload_error(name, uuid, e),
    };
    if let Err(e) = upload.write_body(req.into_body()).await {
        return upload_error(name, uuid, e);
    }
    let size = match upload.finish(digest).await {
        Ok(size) => size,
        Err(e) => return upload_error(name, uuid, e),
    };
    match state.db.put_blob(digest.as_str(), size).await {
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
