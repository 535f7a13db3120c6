//! The registry component: the OCI distribution API under `/v2/`.
//!
//! Repository names contain slashes (`library/nginx`) and are followed by a suffix
//! (`/manifests/v1`), which a router cannot express, so `/v2/` requests reach one handler
//! that parses the path itself ([`Route::parse`]). The same parser labels the requests'
//! metrics and spans ([`RegistryResolver`]), with Distribution's handler names.

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use percent_encoding::percent_decode_str;
use serde_json::json;
use towerscope::{
    operation::{OperationResolver, RequestRef},
    OperationId,
};

use crate::{
    storage::{Digest, UploadError},
    AppState, Json,
};

/// The largest manifest accepted.
const MAX_MANIFEST: usize = 4 << 20;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A parsed `/v2/` path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags { name: &'a str },
    /// `/v2/<name>/manifests/<reference>`
    Manifest { name: &'a str, reference: &'a str },
    /// `/v2/<name>/blobs/<digest>`
    Blob { name: &'a str, digest: &'a str },
    /// `/v2/<name>/blobs/uploads/`
    UploadStart { name: &'a str },
    /// `/v2/<name>/blobs/uploads/<uuid>`
    Upload { name: &'a str, uuid: &'a str },
    /// `/v2/<name>/referrers/<digest>` (OCI 1.1)
    Referrers { name: &'a str, digest: &'a str },
}

/// The handler names, the operation label of `/v2/` requests ([`Route::handler`] indexes
/// them): Distribution's, and `referrers`, which Distribution does not have.
pub(crate) const HANDLERS: [&str; 8] = [
    "base",
    "catalog",
    "tags",
    "manifest",
    "blob",
    "blob_upload",
    "blob_upload_chunk",
    "referrers",
];

/// The route template of each of [`HANDLERS`], the `http_route` of `metric.naming: otel`
/// (the Distribution specification's endpoint names).
const ROUTES: [&str; HANDLERS.len()] = [
    "/v2/",
    "/v2/_catalog",
    "/v2/{name}/tags/list",
    "/v2/{name}/manifests/{reference}",
    "/v2/{name}/blobs/{digest}",
    "/v2/{name}/blobs/uploads/",
    "/v2/{name}/blobs/uploads/{uuid}",
    "/v2/{name}/referrers/{digest}",
];

/// Whether `name` is a valid repository name: `/`-separated components of lowercase
/// letters and digits, separated inside a component by `.`, `_`, `__` or dashes.
fn valid_name(name: &str) -> bool {
    name.len() <= 255
        && name.split('/').all(|component| {
            let bytes = component.as_bytes();
            !bytes.is_empty()
                && bytes[0].is_ascii_alphanumeric()
                && bytes[bytes.len() - 1].is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b))
        })
}

impl<'a> Route<'a> {
    /// Parses a request path (not percent-decoded; valid names need no encoding).
    pub(crate) fn parse(path: &'a str) -> Option<Self> {
        let rest = path.strip_prefix("/v2")?;
        if rest.is_empty() || rest == "/" {
            return Some(Self::Base);
        }
        let rest = rest.strip_prefix('/')?;
        if rest == "_catalog" {
            return Some(Self::Catalog);
        }
        let named = |name: &'a str| valid_name(name).then_some(name);
        if let Some(name) = rest.strip_suffix("/tags/list") {
            return named(name).map(|name| Self::Tags { name });
        }
        if let Some((name, digest)) = rest.rsplit_once("/referrers/") {
            if !digest.is_empty() && !digest.contains('/') {
                return named(name).map(|name| Self::Referrers { name, digest });
            }
        }
        if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
            if reference.is_empty() || reference.contains('/') {
                return None;
            }
            return named(name).map(|name| Self::Manifest { name, reference });
        }
        if let Some((name, uuid)) = rest.rsplit_once("/blobs/uploads/") {
            let name = named(name)?;
            return Some(if uuid.is_empty() {
                Self::UploadStart { name }
            } else if uuid.contains('/') {
                return None;
            } else {
                Self::Upload { name, uuid }
            });
        }
        if let Some(name) = rest.strip_suffix("/blobs/uploads") {
            return named(name).map(|name| Self::UploadStart { name });
        }
        if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
            if digest.is_empty() || digest.contains('/') {
                return None;
            }
            return named(name).map(|name| Self::Blob { name, digest });
        }
        None
    }

    /// The index of the handler name in [`HANDLERS`].
    pub(crate) fn handler(self) -> usize {
        match self {
            Self::Base => 0,
            Self::Catalog => 1,
            Self::Tags { .. } => 2,
            Self::Manifest { .. } => 3,
            Self::Blob { .. } => 4,
            Self::UploadStart { .. } => 5,
            Self::Upload { .. } => 6,
            Self::Referrers { .. } => 7,
        }
    }
}

/// Labels `/v2/` requests with their handler, one of [`HANDLERS`] (a bounded set, built once).
#[derive(Debug, Clone)]
pub(crate) struct RegistryResolver {
    ids: [OperationId; HANDLERS.len()],
}

impl RegistryResolver {
    pub(crate) fn new() -> Self {
        Self {
            ids: HANDLERS.map(OperationId::new),
        }
    }
}

impl OperationResolver for RegistryResolver {
    fn resolve(&self, request: &RequestRef<'_>) -> Option<OperationId> {
        Route::parse(request.uri.path()).map(|route| self.ids[route.handler()].clone())
    }

    fn route(&self, operation: &OperationId) -> Option<&str> {
        let index = self.ids.iter().position(|id| id == operation)?;
        Some(ROUTES[index])
    }
}

/// An OCI error response.
pub(crate) fn oci_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "errors": [{ "code": code, "message": message.into(), "detail": null }] });
    (status, Json(body)).into_response()
}

fn internal(err: impl std::fmt::Display) -> Response {
    tracing::error!(error = %err, "registry request failed");
    oci_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "UNKNOWN",
        "internal error",
    )
}

/// One query parameter, percent-decoded.
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| {
            percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn header_value(value: impl AsRef<str>) -> HeaderValue {
    HeaderValue::from_str(value.as_ref()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn read_body(req: Request, limit: usize) -> Result<bytes::Bytes, Response> {
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| {
            oci_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "SIZE_INVALID",
                "request body too large or interrupted",
            )
        })
}

/// The `/v2/` handler (the router's fallback for paths under `/v2`).
pub(crate) async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let Some(route) = Route::parse(&path) else {
        return oci_error(
            StatusCode::NOT_FOUND,
            "NAME_INVALID",
            "invalid repository name or path",
        );
    };
    let method = req.method().clone();
    let mut response = match (route, &method) {
        (Route::Base, &Method::GET | &Method::HEAD) => {
            (StatusCode::OK, Json(json!({}))).into_response()
        }
        (Route::Catalog, &Method::GET) => catalog(&state, req.uri().query()).await,
        (Route::Tags { name }, &Method::GET) => tags(&state, name, req.uri().query()).await,
        (Route::Referrers { name, digest }, &Method::GET) => {
            referrers(&state, name, digest, req.uri().query()).await
        }
        (Route::Manifest { name, reference }, &Method::GET | &Method::HEAD) => {
            get_manifest(&state, name, reference, method == Method::HEAD).await
        }
        (Route::Manifest { name, reference }, &Method::PUT) => {
            put_manifest(&state, name, reference, req).await
        }
        (Route::Manifest { name, reference }, &Method::DELETE) => {
            delete_manifest(&state, name, reference).await
        }
        (Route::Blob { name, digest }, &Method::GET | &Method::HEAD) => {
            get_blob(&state, name, digest, method == Method::HEAD, req.headers()).await
        }
        (Route::UploadStart { name }, &Method::POST) => start_upload(&state, name, req).await,
        (Route::Upload { name, uuid }, &Method::PATCH) => {
            patch_upload(&state, name, uuid, req).await
        }
        (Route::Upload { name, uuid }, &Method::PUT) => {
            finish_upload(&state, name, uuid, req).await
        }
        (Route::Upload { name, uuid }, &Method::GET) => upload_status(&state, name, uuid).await,
        (Route::Upload { uuid, .. }, &Method::DELETE) => {
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
        (Route::Blob { .. }, &Method::DELETE) => oci_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "blobs are deleted by garbage collection",
        ),
        _ => oci_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "method not allowed here",
        ),
    };
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    response
}

async fn catalog(state: &AppState, query: Option<&str>) -> Response {
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

async fn tags(state: &AppState, name: &str, query: Option<&str>) -> Response {
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
async fn referrers(state: &AppState, name: &str, digest: &str, query: Option<&str>) -> Response {
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

/// What a pushed manifest says about itself: its `subject` (OCI 1.1 referrers) and its
/// artifact type (`artifactType`, else the config's media type, as the spec defines it for
/// the referrers list).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ManifestMeta {
    pub(crate) media_type: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) artifact_type: Option<String>,
}

impl ManifestMeta {
    pub(crate) fn of(content: &[u8]) -> Self {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(content) else {
            return Self::default();
        };
        let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_owned);
        Self {
            media_type: text(value.get("mediaType")),
            subject: text(value.get("subject").and_then(|s| s.get("digest"))),
            artifact_type: text(value.get("artifactType"))
                .or_else(|| text(value.get("config").and_then(|c| c.get("mediaType")))),
        }
    }
}

/// The answer to a failed upstream call in proxy-cache mode.
fn upstream_error(err: crate::proxy::ProxyError) -> Response {
    tracing::warn!(error = %err, "proxy cache: upstream call failed");
    oci_error(StatusCode::BAD_GATEWAY, "UNKNOWN", err.to_string())
}

async fn get_manifest(state: &AppState, name: &str, reference: &str, head: bool) -> Response {
    let mut found = state.db.manifest(name, reference).await;
    if let (Ok(None), Some(proxy)) = (&found, &state.proxy) {
        let valid = if reference.contains(':') {
            Digest::parse(reference).is_some()
        } else {
            valid_tag(reference)
        };
        if valid {
            match proxy.fetch_manifest(state, name, reference).await {
                Ok(true) => found = state.db.manifest(name, reference).await,
                Ok(false) => {}
                Err(err) => return upstream_error(err),
            }
        }
    }
    match found {
        Ok(Some((digest, media_type, content))) => {
            let mut response = if head {
                Response::new(Body::empty())
            } else {
                Response::new(Body::from(content.clone()))
            };
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, header_value(&media_type));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(content.len()));
            headers.insert("docker-content-digest", header_value(&digest));
            headers.insert(header::ETAG, header_value(format!("\"{digest}\"")));
            response
        }
        Ok(None) => oci_error(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("manifest unknown: {name}:{reference}"),
        ),
        Err(e) => internal(e),
    }
}

/// The digests of the blobs an image manifest refers to (config and layers); empty for an
/// index, whose entries are manifests. `None` if the JSON is not a manifest.
pub(crate) fn referenced_blobs(content: &[u8]) -> Option<Vec<String>> {
    let value: serde_json::Value = serde_json::from_slice(content).ok()?;
    let object = value.as_object()?;
    let mut digests = Vec::new();
    if let Some(config) = object.get("config") {
        digests.push(config.get("digest")?.as_str()?.to_owned());
    }
    for key in ["layers", "blobs"] {
        if let Some(layers) = object.get(key) {
            for layer in layers.as_array()? {
                digests.push(layer.get("digest")?.as_str()?.to_owned());
            }
        }
    }
    Some(digests)
}

fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(b))
}

async fn put_manifest(state: &AppState, name: &str, reference: &str, req: Request) -> Response {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match read_body(req, MAX_MANIFEST).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let digest = Digest::of(&body);
    let tag = if reference.starts_with("sha256:") || reference.contains(':') {
        if reference != digest.as_str() {
            return oci_error(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                format!("manifest digest is {digest}, not {reference}"),
            );
        }
        None
    } else if valid_tag(reference) {
        Some(reference)
    } else {
        return oci_error(StatusCode::BAD_REQUEST, "TAG_INVALID", "invalid tag");
    };
    let Some(blobs) = referenced_blobs(&body) else {
        return oci_error(
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
            "manifest is not valid JSON",
        );
    };
    let meta = ManifestMeta::of(&body);
    let media_type = content_type
        .or_else(|| meta.media_type.clone())
        .unwrap_or_else(|| OCI_MANIFEST.to_owned());
    for blob in &blobs {
        match state.db.blob_size(blob).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return oci_error(
                    StatusCode::BAD_REQUEST,
                    "MANIFEST_BLOB_UNKNOWN",
                    format!("blob unknown to registry: {blob}"),
                )
            }
            Err(e) => return internal(e),
        }
    }
    let stored = crate::db::NewManifest {
        repository: name,
        digest: digest.as_str(),
        media_type: &media_type,
        content: &body,
        tag,
        subject: meta.subject.as_deref(),
        artifact_type: meta.artifact_type.as_deref(),
    };
    if let Err(e) = state.db.put_manifest(&stored).await {
        return internal(e);
    }
    let mut response = StatusCode::CREATED.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        header_value(format!("/v2/{name}/manifests/{digest}")),
    );
    headers.insert("docker-content-digest", header_value(digest.as_str()));
    // The subject is indexed for the referrers API (OCI 1.1), whether or not it is stored.
    if let Some(subject) = &meta.subject {
        headers.insert("oci-subject", header_value(subject));
    }
    response
}

async fn delete_manifest(state: &AppState, name: &str, reference: &str) -> Response {
    let by_digest = reference.contains(':');
    match state.db.delete_manifest(name, reference, by_digest).await {
        Ok(true) => StatusCode::ACCEPTED.into_response(),
        Ok(false) => oci_error(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            "manifest unknown",
        ),
        Err(e) => internal(e),
    }
}

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

async fn get_blob(
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
fn blob_headers(mut response: Response, digest: &Digest) -> Response {
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

async fn start_upload(state: &AppState, name: &str, req: Request) -> Response {
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
    match state.storage.start_upload().await {
        Ok(uuid) => upload_accepted(StatusCode::ACCEPTED, name, &uuid, 0),
        Err(e) => internal(e),
    }
}

/// A chunk, written to disk as it arrives. With a `Content-Range`, it must start where the
/// upload ends and be as long as it says; otherwise it is refused (416, with the upload's
/// `Range`) and nothing of it is kept.
async fn patch_upload(state: &AppState, name: &str, uuid: &str, req: Request) -> Response {
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

async fn finish_upload(state: &AppState, name: &str, uuid: &str, req: Request) -> Response {
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
    finish(state, name, uuid, req, &digest).await
}

/// Writes the request's body (the last chunk, maybe empty) to the upload, checks the digest
/// and stores the blob (`tx-putBlob`). A failed body is rolled back and the session kept; a
/// digest mismatch discards it.
async fn finish(
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

async fn upload_status(state: &AppState, name: &str, uuid: &str) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_routes_with_slashes_in_names() {
        assert_eq!(Route::parse("/v2/"), Some(Route::Base));
        assert_eq!(Route::parse("/v2"), Some(Route::Base));
        assert_eq!(Route::parse("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(
            Route::parse("/v2/library/nginx/tags/list"),
            Some(Route::Tags {
                name: "library/nginx"
            })
        );
        assert_eq!(
            Route::parse("/v2/a/b/c/manifests/v1.0"),
            Some(Route::Manifest {
                name: "a/b/c",
                reference: "v1.0"
            })
        );
        // A component named like a suffix does not confuse the parser.
        assert_eq!(
            Route::parse("/v2/x/manifests/blobs/manifests/sha256:ab"),
            Some(Route::Manifest {
                name: "x/manifests/blobs",
                reference: "sha256:ab"
            })
        );
        assert_eq!(
            Route::parse("/v2/x/manifests/a/b"),
            None,
            "references have no slash"
        );
        assert_eq!(
            Route::parse("/v2/blobs/manifests/latest"),
            Some(Route::Manifest {
                name: "blobs",
                reference: "latest"
            })
        );
        assert_eq!(
            Route::parse("/v2/library/hello/blobs/uploads/"),
            Some(Route::UploadStart {
                name: "library/hello"
            })
        );
        assert_eq!(
            Route::parse("/v2/library/hello/blobs/uploads/1234"),
            Some(Route::Upload {
                name: "library/hello",
                uuid: "1234"
            })
        );
        assert_eq!(
            Route::parse("/v2/library/hello/blobs/sha256:00"),
            Some(Route::Blob {
                name: "library/hello",
                digest: "sha256:00"
            })
        );
    }

    #[test]
    fn parse_referrers_before_manifests() {
        assert_eq!(
            Route::parse("/v2/library/hello/referrers/sha256:ab"),
            Some(Route::Referrers {
                name: "library/hello",
                digest: "sha256:ab"
            })
        );
        // A repository named `referrers` still has manifests.
        assert_eq!(
            Route::parse("/v2/x/referrers/manifests/v1"),
            Some(Route::Manifest {
                name: "x/referrers",
                reference: "v1"
            })
        );
        assert_eq!(Route::parse("/v2/x/referrers/").map(Route::handler), None);
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

    #[test]
    fn manifest_meta_reads_subject_and_artifact_type() {
        let with_type = br#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/x-sig","config":{"mediaType":"application/vnd.oci.empty.v1+json"},"subject":{"digest":"sha256:s"}}"#;
        assert_eq!(
            ManifestMeta::of(with_type),
            ManifestMeta {
                media_type: Some(OCI_MANIFEST.to_owned()),
                subject: Some("sha256:s".to_owned()),
                artifact_type: Some("application/x-sig".to_owned()),
            }
        );
        let from_config = br#"{"config":{"mediaType":"application/x-sbom"}}"#;
        assert_eq!(
            ManifestMeta::of(from_config).artifact_type.as_deref(),
            Some("application/x-sbom")
        );
        assert_eq!(ManifestMeta::of(b"not json"), ManifestMeta::default());
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

    #[test]
    fn parse_rejects_invalid_names() {
        assert_eq!(Route::parse("/v2/Library/tags/list"), None);
        assert_eq!(Route::parse("/v2/a//b/tags/list"), None);
        assert_eq!(Route::parse("/v2/../x/tags/list"), None);
        assert_eq!(Route::parse("/api/v2.0/health"), None);
    }

    #[test]
    fn referenced_blobs_reads_config_and_layers() {
        let manifest = br#"{"schemaVersion":2,"config":{"digest":"sha256:c"},"layers":[{"digest":"sha256:l1"},{"digest":"sha256:l2"}]}"#;
        assert_eq!(
            referenced_blobs(manifest).unwrap(),
            ["sha256:c", "sha256:l1", "sha256:l2"]
        );
        let index = br#"{"schemaVersion":2,"manifests":[{"digest":"sha256:m"}]}"#;
        assert!(referenced_blobs(index).unwrap().is_empty());
        assert!(referenced_blobs(b"not json").is_none());
    }
}
