//! The lists: `_catalog`, `tags/list` (both paginated with `n`/`last` and a `Link` header) and
//! the OCI 1.1 referrers.

use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{header_value, internal, oci_error, query_param, OCI_INDEX};
use crate::{digest::Digest, AppState, Json};

pub(super) async fn catalog(state: &AppState, query: Option<&str>) -> Response {
    let (n, last) = page(query);
    match state.db.catalog(n as i64, last.as_deref()).await {
        Ok(names) => {
            let mut headers = HeaderMap::new();
            next_page(&mut headers, "/v2/_catalog", n, &names);
            (headers, Json(json!({ "repositories": names }))).into_response()
        }
        Err(e) => internal(e),
    }
}

/// `n` and `last` of a paginated list (`_catalog`, `tags/list`): at most 1000 per page, 100 by
/// default.
fn page(query: Option<&str>) -> (usize, Option<String>) {
    let n = query_param(query, "n")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(100)
        .min(1000);
    (n, query_param(query, "last"))
}

/// The `Link` header to the next page when this one is full.
fn next_page(headers: &mut HeaderMap, path: &str, n: usize, names: &[String]) {
    if n > 0 && names.len() == n {
        if let Some(last) = names.last() {
            headers.insert(
                header::LINK,
                header_value(format!("<{path}?last={last}&n={n}>; rel=\"next\"")),
            );
        }
    }
}

pub(super) async fn tags(state: &AppState, name: &str, query: Option<&str>) -> Response {
    let (n, last) = page(query);
    match state.db.tag_names(name).await {
        Ok(Some(tags)) => {
            let tags: Vec<String> = tags
                .into_iter()
                .filter(|tag| last.as_deref().is_none_or(|last| tag.as_str() > last))
                .take(n)
                .collect();
            let mut headers = HeaderMap::new();
            next_page(&mut headers, &format!("/v2/{name}/tags/list"), n, &tags);
            (headers, Json(json!({ "name": name, "tags": tags }))).into_response()
        }
        Ok(None) => oci_error(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("repository {name} not known"),
        ),
        Err(e) => internal(e),
    }
}

/// The OCI 1.1 referrers of `digest` in `name`: an image index of the manifests whose
/// `subject` it is, filtered by `?artifactType=` when given (said in `OCI-Filters-Applied`).
/// An unknown subject has no referrers (an empty index, not a 404, as the spec asks).
pub(super) async fn referrers(
    state: &AppState,
    name: &str,
    digest: &str,
    query: Option<&str>,
) -> Response {
    let Some(digest) = Digest::parse(digest) else {
        return oci_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "invalid digest");
    };
    let filter = query_param(query, "artifactType").filter(|t| !t.is_empty());
    let found = match state.db.referrers(name, digest.as_str()).await {
        Ok(found) => found,
        Err(e) => return internal(e),
    };
    let manifests: Vec<serde_json::Value> = found
        .into_iter()
        .filter(|r| filter.is_none() || r.artifact_type == filter)
        .map(|r| {
            let mut entry = json!({
                "mediaType": r.media_type,
                "digest": r.digest,
                "size": r.size,
            });
            if let Some(artifact_type) = r.artifact_type {
                entry["artifactType"] = json!(artifact_type);
            }
            if let Some(annotations) = annotations(&r.content) {
                entry["annotations"] = annotations;
            }
            entry
        })
        .collect();
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let mut response = Json(index).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(OCI_INDEX));
    if filter.is_some() {
        headers.insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    response
}

/// A manifest's `annotations` object, if it has one.
fn annotations(content: &[u8]) -> Option<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_slice(content).ok()?;
    value.get("annotations").filter(|a| a.is_object()).cloned()
}
