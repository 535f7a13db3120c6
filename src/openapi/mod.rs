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

use std::{
    borrow::{Borrow, Cow},
    collections::{BTreeMap, HashSet},
    fmt, fs, io,
    path::{Path, PathBuf},
};

use http::Method;
use matchit::{InsertError, Router};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

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
const GET: usize = 0;
const HEAD: usize = 5;

/// Characters of a template literal that a client sends percent-encoded: the WHATWG path
/// percent-encode set without the braces (which delimit parameters); non-ASCII is encoded too.
const LITERAL_ENCODE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`');

/// An error building an [`OpenApiResolver`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenApiError {
    /// The document file could not be read: check the path, its permissions, and that it is
    /// UTF-8.
    #[error("cannot read the OpenAPI document `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The document is not valid YAML, or a field the resolver reads has the wrong type.
    #[error("invalid YAML OpenAPI document{}: {source}", At(at))]
    Yaml {
        /// Where in the document, e.g. `paths./users.get.operationId` (`.` is the top level).
        at: String,
        /// The parser's error (with its line and column).
        #[source]
        source: serde_norway::Error,
    },
    /// The document is not valid JSON, or a field the resolver reads has the wrong type.
    #[error("invalid JSON OpenAPI document{}: {source}", At(at))]
    Json {
        /// Where in the document, e.g. `paths./users.get.operationId` (`.` is the top level).
        at: String,
        /// The parser's error (with its line and column).
        #[source]
        source: serde_json::Error,
    },
    /// The document has neither a `swagger` nor an `openapi` field at its top level.
    #[error(
        "not an OpenAPI document: the top level has neither `swagger: \"2.0\"` nor `openapi: 3.x`"
    )]
    NotOpenApi,
    /// The document declares a version other than Swagger 2.0 or OpenAPI 3.x.
    #[error("unsupported `{field}: {version}`: expected `swagger: \"2.0\"` or `openapi: 3.x`")]
    UnsupportedVersion {
        /// `swagger` or `openapi`.
        field: &'static str,
        /// The declared version.
        version: String,
    },
    /// The path of a URL in the top-level `servers` cannot be determined.
    #[error("invalid server URL `{url}` in `servers`: {reason}")]
    InvalidServerUrl {
        /// The URL, as written in the document.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A path template that cannot be routed, e.g. `/{name}.json` (a parameter followed by
    /// static text in its segment) or one with an unclosed `{`.
    #[error("invalid path template `{path}` of the {method} operation: {reason}")]
    InvalidTemplate {
        /// The method of the first operation with an `operationId` under the template.
        method: Method,
        /// The template, as written in the document.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Formats the location of a parse error, unless it is the top level.
struct At<'a>(&'a str);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            "" | "." => Ok(()),
            at => write!(f, " at `{at}`"),
        }
    }
}

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
    duplicates: usize,
}

#[derive(Clone)]
struct Operation {
    method: Method,
    template: Box<str>,
    id: OperationId,
}

impl OpenApiResolver {
    /// Builds a resolver from a YAML (or JSON, a subset of YAML) document.
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

    /// Reads a document from a file: JSON when the name ends in `.json`, YAML otherwise.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, OpenApiError> {
        let path = path.as_ref();
        let text = fs::read_to_string(path).map_err(|source| OpenApiError::Io {
            path: path.to_owned(),
            source,
        })?;
        let is_json = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
        if is_json {
            Self::from_json_str(&text)
        } else {
            Self::from_yaml_str(&text)
        }
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

    fn lookup(&self, index: usize, path: &str) -> Option<&OperationId> {
        let at = |index: usize| {
            let router: &Router<OperationId> = self.routers.get(index)?;
            let matched = router.at(path).ok()?;
            // matchit lets a parameter match an empty segment before a `/` (`/projects//logs`)
            // but not at the end; an empty value is rejected everywhere, for consistency.
            let empty_parameter = matched.params.iter().any(|(_, value)| value.is_empty());
            (!empty_parameter).then_some(matched.value)
        };
        at(index).or_else(|| if index == HEAD { at(GET) } else { None })
    }

    fn from_document(document: RawDocument) -> Result<Self, OpenApiError> {
        let base_paths = match document.spec()? {
            Spec::Swagger2 => vec![normalize_base_path(
                document.base_path.as_deref().unwrap_or("/"),
            )],
            Spec::OpenApi3 => document
                .servers
                .iter()
                .flatten()
                .map(|server| server_base_path(&server.url.0, server.variables.as_ref()))
                .collect::<Result<_, _>>()?,
        };
        let mut resolver = Self {
            routers: std::array::from_fn(|_| Router::new()),
            base_paths: sorted_base_paths(base_paths),
            operations: Vec::new(),
            duplicates: 0,
        };
        let mut seen = HashSet::new();
        for (Text(template), item) in document.paths.map(|paths| paths.0).unwrap_or_default() {
            if template.starts_with("x-") {
                continue;
            }
            let operations: Vec<(usize, String)> = item
                .map(|item| item.0)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(index, operation)| Some((index, operation.operation_id?.0)))
                .filter(|(_, id)| !id.is_empty())
                .collect();
            let Some(&(first, _)) = operations.first() else {
                continue;
            };
            let invalid = |index: usize, reason| OpenApiError::InvalidTemplate {
                method: METHODS[index].clone(),
                path: template.clone(),
                reason,
            };
            let route = route_for_template(&template).map_err(|reason| invalid(first, reason))?;
            for (index, id) in operations {
                if !seen.insert((index, route.clone())) {
                    resolver.duplicates += 1;
                    continue;
                }
                let id = OperationId::from(id);
                resolver.routers[index]
                    .insert(route.clone(), id.clone())
                    .map_err(|err| invalid(index, insert_error_reason(err)))?;
                resolver.operations.push(Operation {
                    method: METHODS[index].clone(),
                    template: template.as_str().into(),
                    id,
                });
            }
        }
        Ok(resolver)
    }
}

impl OperationResolver for OpenApiResolver {
    fn resolve(&self, request: &RequestRef<'_>) -> Option<OperationId> {
        self.resolve_path(request.method, request.uri.path())
            .cloned()
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

/// Strips `base` (normalized, `""` for the root) from `path` at a segment boundary.
fn strip_base_path<'p>(path: &'p str, base: &str) -> Option<&'p str> {
    match path.strip_prefix(base)? {
        "" => Some("/"),
        rest if rest.starts_with('/') => Some(rest),
        _ => None,
    }
}

/// Drops one trailing `/`, except from the root.
fn strip_trailing_slash(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(stripped) if !stripped.is_empty() => stripped,
        _ => path,
    }
}

/// Decodes the percent-escapes of unreserved characters (RFC 3986 §6.2.2.2), leaving every
/// other escape, and any malformed one, as is. Borrows when nothing changes.
fn normalize_percent(path: &str) -> Cow<'_, str> {
    let bytes = path.as_bytes();
    if !bytes.contains(&b'%') {
        return Cow::Borrowed(path);
    }
    let mut normalized = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let decoded = match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(&high), Some(&low)) => hex(high).zip(hex(low)).map(|(h, l)| h << 4 | l),
                _ => None,
            };
            if let Some(byte) = decoded.filter(|&byte| is_unreserved(byte)) {
                // `copied` follows an escape and `i` is at a `%`: both are char boundaries.
                normalized.push_str(&path[copied..i]);
                normalized.push(char::from(byte));
                i += 3;
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    if copied == 0 {
        return Cow::Borrowed(path);
    }
    normalized.push_str(&path[copied..]);
    Cow::Owned(normalized)
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Normalizes a literal path the way request paths are: percent-encodes what a client would,
/// then decodes escaped unreserved characters.
fn normalize_literal(literal: &str) -> String {
    let encoded: Cow<'_, str> = utf8_percent_encode(literal, LITERAL_ENCODE).into();
    normalize_percent(&encoded).into_owned()
}

/// A base path in the form [`strip_base_path`] expects: a leading `/` and no trailing one.
fn normalize_base_path(base_path: &str) -> String {
    let trimmed = base_path.trim_end_matches('/');
    let mut normalized = String::with_capacity(trimmed.len() + 1);
    if !trimmed.is_empty() && !trimmed.starts_with('/') {
        normalized.push('/');
    }
    normalized.push_str(&normalize_literal(trimmed));
    normalized
}

/// Deduplicates base paths and puts the longest first, so `/v1` is tried before `/`.
fn sorted_base_paths(mut base_paths: Vec<String>) -> Vec<Box<str>> {
    if base_paths.is_empty() {
        base_paths.push(String::new());
    }
    base_paths.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    base_paths.dedup();
    base_paths.into_iter().map(String::into_boxed_str).collect()
}

/// The base path of an OpenAPI 3 server URL: the path of an absolute URL, or the relative
/// URL itself, after substituting the server variables' defaults.
fn server_base_path(
    url: &str,
    variables: Option<&BTreeMap<Text, RawServerVariable>>,
) -> Result<String, OpenApiError> {
    let substituted = substitute_variables(url, variables);
    let without_query = substituted.split(['?', '#']).next().unwrap_or_default();
    let path = match strip_scheme_and_authority(without_query) {
        Some(path) => path,
        // A relative URL; `.` and `./v1` are relative to the root.
        None => without_query
            .strip_prefix('.')
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            .unwrap_or(without_query),
    };
    if path.contains(['{', '}']) {
        return Err(OpenApiError::InvalidServerUrl {
            url: url.to_owned(),
            reason: format!(
                "its path `{path}` uses a variable that `variables` does not define with a `default`"
            ),
        });
    }
    Ok(normalize_base_path(path))
}

/// The path of an absolute (`scheme://authority/path`) or network-path (`//authority/path`)
/// URL; `None` for a relative path.
fn strip_scheme_and_authority(url: &str) -> Option<&str> {
    let after_scheme = url.strip_prefix("//").or_else(|| {
        let (scheme, rest) = url.split_once("://")?;
        let mut chars = scheme.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        valid.then_some(rest)
    })?;
    Some(after_scheme.find('/').map_or("", |i| &after_scheme[i..]))
}

/// Replaces each `{name}` with the `default` of the server variable `name`; undefined ones
/// are left in place.
fn substitute_variables<'a>(
    url: &'a str,
    variables: Option<&BTreeMap<Text, RawServerVariable>>,
) -> Cow<'a, str> {
    if !url.contains('{') {
        return Cow::Borrowed(url);
    }
    let mut substituted = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(open) = rest.find('{') {
        substituted.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            rest = &rest[open..];
            break;
        };
        let name = &after[..close];
        let default = variables
            .and_then(|variables| variables.get(name))
            .and_then(|variable| variable.default.as_ref());
        match default {
            Some(Text(default)) => substituted.push_str(default),
            None => substituted.push_str(&rest[open..open + close + 2]),
        }
        rest = &after[close + 1..];
    }
    substituted.push_str(rest);
    Cow::Owned(substituted)
}

/// Turns an OpenAPI path template into a matchit route: the n-th parameter (from the left)
/// becomes `{p<n>}`, so templates differing only in parameter names agree; literals are
/// normalized like request paths and one trailing slash is dropped.
fn route_for_template(template: &str) -> Result<String, String> {
    if !template.starts_with('/') {
        return Err("a path template must start with `/`".to_owned());
    }
    let mut rest = strip_trailing_slash(template);
    let mut route = String::with_capacity(rest.len() + 8);
    let mut parameters = 0;
    while let Some(open) = rest.find('{') {
        push_literal(&mut route, &rest[..open]);
        let after = &rest[open + 1..];
        let name = after
            .find('}')
            .map(|close| &after[..close])
            .filter(|name| !name.contains(['{', '/']))
            .ok_or_else(|| "a `{` without its `}` in the same path segment".to_owned())?;
        if name.is_empty() {
            return Err("a parameter without a name (`{}`)".to_owned());
        }
        parameters += 1;
        route.push_str(&format!("{{p{parameters}}}"));
        rest = &after[name.len() + 1..];
    }
    push_literal(&mut route, rest);
    Ok(route)
}

/// Appends a normalized template literal to a matchit route, escaping `}` (a `{` cannot
/// occur: it opens a parameter).
fn push_literal(route: &mut String, literal: &str) {
    for c in normalize_literal(literal).chars() {
        if c == '}' {
            route.push_str("}}");
        } else {
            route.push(c);
        }
    }
}

fn insert_error_reason(err: InsertError) -> String {
    match err {
        InsertError::InvalidParamSegment => "a path segment may hold one parameter, after an \
             optional static prefix (`/v{version}`), but no static suffix (`/{name}.json`) \
             nor a second parameter"
            .to_owned(),
        InsertError::Conflict { with } => {
            format!("it conflicts with the route `{with}` (parameters renamed p1, p2, ...)")
        }
        err => err.to_string(),
    }
}

// What the resolver reads from a document. Hand-written visitors keep document order, ignore
// everything else without building it, and accept non-string YAML scalars where a string is
// expected (`openapi: 3.0`, `default: 8080`).

enum Spec {
    Swagger2,
    OpenApi3,
}

#[derive(Default)]
struct RawDocument {
    swagger: Option<Text>,
    openapi: Option<Text>,
    base_path: Option<String>,
    servers: Option<Vec<RawServer>>,
    paths: Option<RawPaths>,
}

impl RawDocument {
    fn spec(&self) -> Result<Spec, OpenApiError> {
        if let Some(Text(version)) = &self.openapi {
            if version == "3" || version.starts_with("3.") {
                return Ok(Spec::OpenApi3);
            }
            return Err(OpenApiError::UnsupportedVersion {
                field: "openapi",
                version: version.clone(),
            });
        }
        if let Some(Text(version)) = &self.swagger {
            // `swagger: 2.0` unquoted is the YAML float 2.
            if version == "2.0" || version == "2" {
                return Ok(Spec::Swagger2);
            }
            return Err(OpenApiError::UnsupportedVersion {
                field: "swagger",
                version: version.clone(),
            });
        }
        Err(OpenApiError::NotOpenApi)
    }
}

impl<'de> Deserialize<'de> for RawDocument {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DocumentVisitor)
    }
}

struct DocumentVisitor;

/// Anything but a mapping is a document without `swagger` or `openapi`: that error says more
/// than a type error.
macro_rules! not_a_document {
    ($($method:ident($ty:ty)),*) => {$(
        fn $method<E: de::Error>(self, _: $ty) -> Result<RawDocument, E> {
            Ok(RawDocument::default())
        }
    )*};
}

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = RawDocument;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an OpenAPI document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawDocument, A::Error> {
        let mut document = RawDocument::default();
        while let Some(Text(key)) = map.next_key()? {
            match key.as_str() {
                "swagger" => document.swagger = map.next_value()?,
                "openapi" => document.openapi = map.next_value()?,
                "basePath" => document.base_path = map.next_value::<Option<Text>>()?.map(|t| t.0),
                "servers" => document.servers = map.next_value()?,
                "paths" => document.paths = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(document)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawDocument, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(RawDocument::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<RawDocument, E> {
        Ok(RawDocument::default())
    }

    fn visit_none<E: de::Error>(self) -> Result<RawDocument, E> {
        Ok(RawDocument::default())
    }

    not_a_document!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64),
        visit_str(&str)
    );
}

#[derive(serde::Deserialize)]
#[serde(expecting = "a server object")]
struct RawServer {
    url: Text,
    #[serde(default)]
    variables: Option<BTreeMap<Text, RawServerVariable>>,
}

#[derive(serde::Deserialize)]
#[serde(expecting = "a server variable object")]
struct RawServerVariable {
    #[serde(default)]
    default: Option<Text>,
}

/// `paths`, in document order.
struct RawPaths(Vec<(Text, Option<RawPathItem>)>);

/// The operations of a path item: index in [`METHODS`] and operation, in document order.
struct RawPathItem(Vec<(usize, RawOperation)>);

#[derive(serde::Deserialize)]
#[serde(expecting = "an operation object")]
struct RawOperation {
    #[serde(default, rename = "operationId")]
    operation_id: Option<Text>,
}

impl<'de> Deserialize<'de> for RawPaths {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PathsVisitor;
        impl<'de> Visitor<'de> for PathsVisitor {
            type Value = RawPaths;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a paths object (a mapping of path templates)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPaths, A::Error> {
                let mut paths = Vec::new();
                while let Some(template) = map.next_key()? {
                    paths.push((template, map.next_value()?));
                }
                Ok(RawPaths(paths))
            }
        }
        deserializer.deserialize_map(PathsVisitor)
    }
}

impl<'de> Deserialize<'de> for RawPathItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PathItemVisitor;
        impl<'de> Visitor<'de> for PathItemVisitor {
            type Value = RawPathItem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path item object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPathItem, A::Error> {
                let mut operations = Vec::new();
                while let Some(Text(key)) = map.next_key()? {
                    match METHOD_KEYS.iter().position(|method| *method == key) {
                        Some(index) => {
                            if let Some(operation) = map.next_value()? {
                                operations.push((index, operation));
                            }
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(RawPathItem(operations))
            }
        }
        deserializer.deserialize_map(PathItemVisitor)
    }
}

/// A string, or a number or boolean taken as the YAML text it came from, more or less
/// (`3.0` reads as `3`). Also used for mapping keys, which YAML does not restrict to strings.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Text(String);

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl Visitor<'_> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(TextVisitor)
    }
}

#[cfg(test)]
mod tests;
