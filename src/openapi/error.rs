//! The error of building an [`OpenApiResolver`](super::OpenApiResolver).

use std::{fmt, io, path::PathBuf};

use http::Method;

/// An error building an [`OpenApiResolver`](super::OpenApiResolver).
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
    #[cfg(feature = "yaml")]
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
