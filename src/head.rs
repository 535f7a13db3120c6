//! The request and response heads that [`filter`](crate::filter) predicates and span
//! attribute hooks ([`trace::SpanAttributes`](crate::trace::SpanAttributes)) read.

use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};

use crate::operation::OperationId;

/// The parts of a request that filters and span hooks read: method, URI, headers and the
/// resolved operation.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    operation: Option<&'a str>,
}

impl<'a> RequestHead<'a> {
    /// The head of `req` (its operation, when one was resolved into its extensions).
    pub fn of<B>(req: &'a Request<B>) -> Self {
        Self {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            operation: req
                .extensions()
                .get::<OperationId>()
                .map(OperationId::as_str),
        }
    }

    /// A head of its parts (an outgoing call's, whose request is not an `http::Request`).
    #[cfg(feature = "reqwest")]
    pub(crate) fn from_parts(
        method: &'a Method,
        uri: &'a Uri,
        headers: &'a HeaderMap,
        operation: Option<&'a str>,
    ) -> Self {
        Self {
            method,
            uri,
            headers,
            operation,
        }
    }

    /// The head of `req` with `operation` as its operation: a gRPC layer's
    /// `package.Service/Method`, read from the path rather than resolved into the extensions.
    #[cfg(feature = "tonic")]
    pub(crate) fn with_operation<B>(req: &'a Request<B>, operation: Option<&'a str>) -> Self {
        Self {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            operation,
        }
    }

    /// The request's method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The request's URI.
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The request's path, as it arrived (no decoding).
    pub fn path(&self) -> &'a str {
        self.uri.path()
    }

    /// The request's headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The operation the layer resolved (the metrics' `operation` label before its cap), if
    /// any: the OpenAPI operationId or axum's matched route over HTTP, `package.Service/Method`
    /// behind the gRPC layers.
    pub fn operation(&self) -> Option<&'a str> {
        self.operation
    }
}

/// The parts of a response that span hooks read: status and headers.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHead<'a> {
    status: StatusCode,
    headers: &'a HeaderMap,
}

impl<'a> ResponseHead<'a> {
    /// The head of `res`.
    pub fn of<B>(res: &'a Response<B>) -> Self {
        Self {
            status: res.status(),
            headers: res.headers(),
        }
    }

    /// The response's status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response's headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }
}
