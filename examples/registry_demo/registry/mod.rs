//! The registry component: the OCI distribution API under `/v2/`.
//!
//! Repository names contain slashes (`library/nginx`) and are followed by a suffix
//! (`/manifests/v1`), which a router cannot express, so `/v2/` requests reach one handler
//! that parses the path itself ([`Route::parse`]). The same parser labels the requests'
//! metrics and spans ([`RegistryResolver`]), with Distribution's handler names.
//!
//! The handlers are split by role: [`lists`] (`_catalog`, `tags/list`, referrers),
//! [`manifests`], [`blobs`] (downloads) and [`uploads`] (pushes of blobs).

mod blobs;
mod lists;
mod manifests;
#[cfg(test)]
pub(crate) mod test_support;
mod uploads;

use axum::{
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use percent_encoding::percent_decode_str;
use serde_json::json;
use towerscope::{
    operation::{OperationResolver, RequestRef},
    OperationId,
};

pub(crate) use manifests::{referenced_blobs, ManifestMeta};

use crate::{AppState, Json};

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

/// One query parameter (its first value), percent-decoded.
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query_params(query, key).next()
}

/// Every value of a query parameter, in order, percent-decoded.
fn query_params<'q>(query: Option<&'q str>, key: &'q str) -> impl Iterator<Item = String> + 'q {
    let pairs = query.unwrap_or("").split('&');
    pairs.filter_map(move |pair| {
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
        (Route::Catalog, &Method::GET) => lists::catalog(&state, req.uri().query()).await,
        (Route::Tags { name }, &Method::GET) => lists::tags(&state, name, req.uri().query()).await,
        (Route::Referrers { name, digest }, &Method::GET) => {
            lists::referrers(&state, name, digest, req.uri().query()).await
        }
        (Route::Manifest { name, reference }, &Method::GET | &Method::HEAD) => {
            manifests::get(&state, name, reference, method == Method::HEAD).await
        }
        (Route::Manifest { name, reference }, &Method::PUT) => {
            manifests::put(&state, name, reference, req).await
        }
        (Route::Manifest { name, reference }, &Method::DELETE) => {
            manifests::delete(&state, name, reference).await
        }
        (Route::Blob { name, digest }, &Method::GET | &Method::HEAD) => {
            blobs::get(&state, name, digest, method == Method::HEAD, req.headers()).await
        }
        (Route::Blob { name, digest }, &Method::DELETE) => {
            blobs::delete(&state, name, digest).await
        }
        (Route::UploadStart { name }, &Method::POST) => uploads::start(&state, name, req).await,
        (Route::Upload { name, uuid }, &Method::PATCH) => {
            uploads::patch(&state, name, uuid, req).await
        }
        (Route::Upload { name, uuid }, &Method::PUT) => {
            uploads::finish(&state, name, uuid, req).await
        }
        (Route::Upload { name, uuid }, &Method::GET) => uploads::status(&state, name, uuid).await,
        (Route::Upload { uuid, .. }, &Method::DELETE) => uploads::cancel(&state, uuid).await,
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

/// The answer to a failed upstream call in proxy-cache mode.
fn upstream_error(err: crate::proxy::ProxyError) -> Response {
    tracing::warn!(error = %err, "proxy cache: upstream call failed");
    oci_error(StatusCode::BAD_GATEWAY, "UNKNOWN", err.to_string())
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
    fn parse_rejects_invalid_names() {
        assert_eq!(Route::parse("/v2/Library/tags/list"), None);
        assert_eq!(Route::parse("/v2/a//b/tags/list"), None);
        assert_eq!(Route::parse("/v2/../x/tags/list"), None);
        assert_eq!(Route::parse("/api/v2.0/health"), None);
    }
}
