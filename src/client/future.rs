//! The future of one call, which records its outcome on the span and in the metrics, and the
//! classification of calls that got no response.

use std::{
    error::Error as StdError,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use reqwest::Response;
use tracing::Span;

use super::metrics::{Code, InFlight};

pub(super) type BoxFuture<'a> =
    Pin<Box<dyn Future<Output = reqwest_middleware::Result<Response>> + Send + 'a>>;

/// The future of one call: polls the rest of the stack inside the span, then records the
/// outcome and ends the span.
pub(super) struct ResponseFuture<'a> {
    pub(super) inner: BoxFuture<'a>,
    pub(super) span: Option<Span>,
    pub(super) metrics: Option<InFlight>,
}

impl Future for ResponseFuture<'_> {
    type Output = reqwest_middleware::Result<Response>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let result = {
            let _entered = this.span.as_ref().map(Span::enter);
            ready!(this.inner.as_mut().poll(cx))
        };
        let failure = result.as_ref().err().map(Failure::of);
        if let Some(mut metrics) = this.metrics.take() {
            metrics.finish(match (&result, failure) {
                (Ok(res), _) => Code::Status(res.status().as_u16()),
                (Err(_), Some(Failure::Timeout)) => Code::Timeout,
                (Err(_), Some(Failure::Connect)) => Code::Connect,
                (Err(_), _) => Code::Error,
            });
        }
        // Dropping the span here ends it when the headers arrived.
        if let Some(span) = this.span.take() {
            match &result {
                Ok(res) => {
                    let status = res.status();
                    span.record("http.response.status_code", i64::from(status.as_u16()));
                    span.record("network.protocol.version", protocol_version(res.version()));
                    if status.is_client_error() || status.is_server_error() {
                        span.record("error.type", status.as_str());
                    }
                    if status.is_server_error() {
                        span.record("otel.status_code", "ERROR");
                    }
                }
                Err(err) => {
                    span.record("error.type", failure.map_or("_OTHER", Failure::error_type));
                    span.record("otel.status_code", "ERROR");
                    if let Some(cause) = cause(err) {
                        span.record("otel.status_description", cause);
                    }
                }
            }
        }
        Poll::Ready(result)
    }
}

fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// How a call without a response failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Timeout,
    Connect,
    Request,
    Other,
}

impl Failure {
    fn of(err: &reqwest_middleware::Error) -> Self {
        let reqwest = match err {
            reqwest_middleware::Error::Reqwest(e) => Some(e),
            // Another middleware (a retry) may wrap reqwest's error.
            reqwest_middleware::Error::Middleware(e) => {
                e.chain().find_map(|e| e.downcast_ref::<reqwest::Error>())
            }
        };
        match reqwest {
            Some(e) if e.is_timeout() => Self::Timeout,
            Some(e) if e.is_connect() => Self::Connect,
            Some(_) => Self::Request,
            None => Self::Other,
        }
    }

    /// The span's `error.type`.
    fn error_type(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Request => "request",
            Self::Other => "_OTHER",
        }
    }
}

/// The deepest cause of `err`: the one that says what went wrong ("Connection refused"),
/// without the URL reqwest's own message carries.
fn cause(err: &reqwest_middleware::Error) -> Option<String> {
    let mut source = err.source()?;
    while let Some(next) = source.source() {
        source = next;
    }
    Some(source.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::metrics::known_method;
    use http::Method;

    #[test]
    fn failures_are_classified() {
        let err = reqwest_middleware::Error::Middleware(std::io::Error::other("boom").into());
        assert_eq!(Failure::of(&err), Failure::Other);
        assert_eq!(known_method(&Method::PATCH), Some((8, "PATCH")));
        assert_eq!(known_method(&Method::from_bytes(b"PURGE").unwrap()), None);
    }
}
