//! Blob downloads: `GET` (with a single `Range`) and `HEAD`, streamed from disk or, in
//! proxy-cache mode, from the upstream on a miss.

use axum::{
    body::Body,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::Response,
};

use super::{header_value, internal, oci_error, upstream_error};
use crate::{digest::Digest, AppState};

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

#[cfg(test)]
mod tests {
    use super::*;

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
