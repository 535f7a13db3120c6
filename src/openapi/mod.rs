//! Resolves a request's operation to its `operationId`, using an OpenAPI 3.x or Swagger 2.0 document.
//!
//! # Example
//!
//! ```
//! use http::Request;
//! use towerscope::openapi::OpenApiResolver;
//! use towerscope::operation::{OperationResolver, RequestRef};
//!
//! let resolver = OpenApiResolver::from_yaml_str(
//!     r#"
//! swagger: "2.0"
//! basePath: /api/v2.0
//! paths:
//!   /users/{user_id}:
//!     get:
//!       operationId: getUser
//!   /users/current:
//!     get:
//!       operationId: getCurrentUserInfo
//! "#,
//! )?;
//!
//! let resolve = |path: &str| {
//!     let request = Request::get(path).body(()).unwrap();
//!     resolver.resolve(&RequestRef::from(&request)).map(|id| id.to_string())
//! };
//! assert_eq!(resolve("/api/v2.0/users/42").as_deref(), Some("getUser"));
//! assert_eq!(resolve("/api/v2.0/users/current").as_deref(), Some("getCurrentUserInfo"));
//! assert_eq!(resolve("/users/42"), None); // outside the base path
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
//!
//! # What the document provides
//!
//! - **Operations.** Every operation (`get`, `put`, `post`, `delete`, `options`, `head`, `patch`,
//!   `trace`) that has a non-empty `operationId` is registered under its method and path
//!   template. Operations without one are skipped, as are the other keys of a path item
//!   (`parameters`, `summary`, `servers`, `x-...`, and `$ref`: referenced path items are not
//!   followed) and `x-...` keys of `paths`.
//! - **Base paths.** Swagger 2.0 uses `basePath` (default `/`). OpenAPI 3.x uses the path part
//!   of each entry of the top-level `servers` (an absolute URL or a relative path, with each
//!   `{variable}` replaced by its `default`); every distinct one is accepted, and no `servers`
//!   means `/`. `servers` of path items and operations are not read.
//!   [`with_base_path`](OpenApiResolver::with_base_path) overrides them, e.g. behind a proxy
//!   that strips a prefix.
//! - **Parameters.** `{name}` matches one whole, non-empty path segment, or the non-empty rest
//!   of a segment after a static prefix (`/v{version}`); a parameter followed by static text in the same segment
//!   (`/{name}.json`) is not supported by the router and is reported as
//!   [`OpenApiError::InvalidTemplate`]. Parameter names do not matter for matching, so
//!   `/projects/{project_name}/logs` and `/projects/{project_name_or_id}` live side by side.
//! - **Priority.** A static segment beats a parameter: `/users/current` is not `/users/{id}`.
//! - **Duplicates.** Two operations with the same method and the same template once parameter
//!   names and a trailing slash are ignored: the first in document order wins and the others
//!   are counted by [`duplicates`](OpenApiResolver::duplicates).
//!
//! # How a request is matched
//!
//! - The path is taken from the request URI as received: percent-encoding is **not** decoded,
//!   so `%2F` and `%25` stay inside their segment (Harbor double-encodes the `/` of repository
//!   names as `%252F`). Only escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`,
//!   RFC 3986 §6.2.2.2) are decoded, so `/users/%63urrent` is `/users/current`; a path without
//!   `%` is not copied. (The router allocates only for a route with more than three
//!   parameters, or to backtrack from a static segment to a parameter.)
//! - The path must start with one of the base paths, at a segment boundary; otherwise the
//!   request does not resolve. One trailing slash is ignored (`/projects/` is `/projects`).
//!   Dot segments (`..`) are ordinary segments, as in the routers of axum and matchit.
//! - The method must be one of the eight above. A `HEAD` request for a path without a `head`
//!   operation resolves to the `get` operation, the handler most servers answer it with.
//!   Other methods resolve to `None`.

mod document;
mod error;
mod matcher;
mod percent;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, HashSet},
    fmt, fs,
    path::Path,
};

use http::Method;
use matchit::Router;

pub use self::error::OpenApiError;
use self::{
    document::RawDocument,
    matcher::{normalize_base_path, sorted_base_paths, strip_base_path, strip_trailing_slash},
    percent::normalize_percent,
};
use crate::operation::{OperationId, OperationResolver, RequestRef};

/// The methods of a path item, in the order of [`OpenApiResolver::routers`].
const METHODS: [Method; 8] = [
    Method::GET,
    Method::PUT,
    Method::POST,
    Method::DELETE,
    Method::OPTIONS,
    Method::HEAD,
    Method::PATCH,
    Method::TRACE,
];
/// The path item keys of [`METHODS`].
const METHOD_KEYS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// An [`OperationResolver`] that maps a request's method and path to the `operationId` of the
/// matching operation of an OpenAPI 3.x or Swagger 2.0 document.
///
/// Build it once at startup; resolving is a lookup in a prefix tree per method. The module
/// docs describe [how the document is read](self#what-the-document-provides) and
/// [how a request is matched](self#how-a-request-is-matched).
#[derive(Clone)]
pub struct OpenApiResolver {
    /// One router per entry of [`METHODS`].
    routers: [Router<OperationId>; 8],
    /// Normalized base paths, longest first, without trailing `/`; the root is `""`.
    base_paths: Vec<Box<str>>,
    /// The registered operations, in document order.
    operations: Vec<Operation>,
    /// Operation id -> index in `operations` of its first operation: its route template.
    by_id: HashMap<OperationId, usize>,
    duplicates: usize,
}

#[derive(Clone)]
struct Operation {
    method: Method,
    template: Box<str>,
    id: OperationId,
}

impl OpenApiResolver {
    /// Builds a resolver from a YAML (or JSON, a subset of YAML) document (feature `yaml`, on
    /// by default; [`from_json_str`](Self::from_json_str) needs none).
    #[cfg(feature = "yaml")]
    pub fn from_yaml_str(yaml: &str) -> Result<Self, OpenApiError> {
        let document = serde_path_to_error::deserialize(serde_norway::Deserializer::from_str(yaml))
            .map_err(|err| OpenApiError::Yaml {
                at: err.path().to_string(),
                source: err.into_inner(),
            })?;
        Self::from_document(document)
    }

    /// Builds a resolver from a JSON document.
    pub fn from_json_str(json: &str) -> Result<Self, OpenApiError> {
        let json_error = |at: String, source| OpenApiError::Json { at, source };
        let mut deserializer = serde_json::Deserializer::from_str(json);
        let document = serde_path_to_error::deserialize(&mut deserializer)
            .map_err(|err| json_error(err.path().to_string(), err.into_inner()))?;
        // Trailing characters after the document.
        deserializer
            .end()
            .map_err(|err| json_error(String::new(), err))?;
        Self::from_document(document)
    }

    /// Builds a resolver from a document already parsed as JSON.
    pub fn from_value(value: serde_json::Value) -> Result<Self, OpenApiError> {
        let document =
            serde_path_to_error::deserialize(value).map_err(|err| OpenApiError::Json {
                at: err.path().to_string(),
                source: err.into_inner(),
            })?;
        Self::from_document(document)
    }

    /// Reads a document from a file: JSON when the name ends in `.json`, YAML otherwise
    /// (without the `yaml` feature, every file is read as JSON).
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, OpenApiError> {
        let path = path.as_ref();
        let text = fs::read_to_string(path).map_err(|source| OpenApiError::Io {
            path: path.to_owned(),
            source,
        })?;
        let is_json = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
        #[cfg(feature = "yaml")]
        if !is_json {
            return Self::from_yaml_str(&text);
        }
        let _ = is_json;
        Self::from_json_str(&text)
    }

    /// Replaces the base paths with `base_path`, e.g. `/api/v2.0`, or `/` for none.
    ///
    /// A missing leading `/` is added and trailing ones are dropped. By default, the base
    /// paths come from the document (`basePath` or `servers`).
    pub fn with_base_path(self, base_path: &str) -> Self {
        self.with_base_paths([base_path])
    }

    /// Replaces the base paths with `base_paths`; a request may use any of them. No base paths
    /// at all means `/`.
    ///
    /// Normalized as in [`with_base_path`](Self::with_base_path). By default, the base paths
    /// come from the document (`basePath` or `servers`).
    pub fn with_base_paths<I>(mut self, base_paths: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let normalized = base_paths
            .into_iter()
            .map(|base| normalize_base_path(base.as_ref()))
            .collect();
        self.base_paths = sorted_base_paths(normalized);
        self
    }

    /// The accepted base paths, longest first, e.g. `["/api/v2.0"]`; the root is `"/"`.
    pub fn base_paths(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.base_paths
            .iter()
            .map(|base| if base.is_empty() { "/" } else { base })
    }

    /// The number of registered operations (operations with an `operationId`, less
    /// [duplicates](Self::duplicates)).
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// Whether no operation is registered.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// The number of operations skipped because an earlier one has the same method and the
    /// same template, ignoring parameter names and a trailing slash.
    pub fn duplicates(&self) -> usize {
        self.duplicates
    }

    /// The registered operations in document order: method, template as written in the
    /// document (without base path), and operation id.
    ///
    /// Handy to register every metric label set up front.
    pub fn operations(&self) -> impl ExactSizeIterator<Item = (&Method, &str, &OperationId)> + '_ {
        self.operations
            .iter()
            .map(|op| (&op.method, &*op.template, &op.id))
    }

    /// Resolves a method and a raw request path (percent-encoding intact, no query), as
    /// [`resolve`](OperationResolver::resolve) does for a request.
    pub fn resolve_path(&self, method: &Method, path: &str) -> Option<&OperationId> {
        let index = METHODS.iter().position(|m| m == method)?;
        if !path.starts_with('/') {
            return None;
        }
        let path = normalize_percent(path);
        self.base_paths.iter().find_map(|base| {
            let rest = strip_base_path(&path, base)?;
            self.lookup(index, strip_trailing_slash(rest))
        })
    }

    /// Builds the resolver: base paths from the document, then its operations in order.
    fn from_document(document: RawDocument) -> Result<Self, OpenApiError> {
        // Base paths first: a bad server URL is reported before a bad template.
        let base_paths = document.base_paths()?;
        let mut resolver = Self {
            routers: std::array::from_fn(|_| Router::new()),
            base_paths: sorted_base_paths(base_paths),
            operations: Vec::new(),
            by_id: HashMap::new(),
            duplicates: 0,
        };
        let mut seen = HashSet::new();
        for (template, operations) in document.into_operations() {
            resolver.register(&template, operations, &mut seen)?;
        }
        for (index, op) in resolver.operations.iter().enumerate() {
            resolver.by_id.entry(op.id.clone()).or_insert(index);
        }
        Ok(resolver)
    }
}

impl OperationResolver for OpenApiResolver {
    fn resolve(&self, request: &RequestRef<'_>) -> Option<OperationId> {
        self.resolve_path(request.method, request.uri.path())
            .cloned()
    }

    /// The path template of the operation, as written in the document (without base path):
    /// `/projects/{project_name}`. An `operationId` used twice (the document is then invalid)
    /// has the template of its first operation.
    fn route(&self, operation: &OperationId) -> Option<&str> {
        let index = *self.by_id.get(operation)?;
        Some(&self.operations[index].template)
    }
}

impl fmt::Debug for OpenApiResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenApiResolver")
            .field("base_paths", &self.base_paths().collect::<Vec<_>>())
            .field("operations", &self.len())
            .field("duplicates", &self.duplicates)
            .finish_non_exhaustive()
    }
}
