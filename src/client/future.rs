//! The future of one call, which records its outcome on the span and in the metrics, and the
//! classification of calls that got no response.

use std::{
    error::Error as StdError,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::Instant,
};

use reqwest::Response;
use tracing::Span;

use super::metrics::{Code, Series};
use crate::metrics::{
    semconv::{version_index, VERSIONS},
    toolkit::{Outcome, Settle, SettleGuard},
    with_exemplar, SpanIds,
};

pub(super) type BoxFuture<'a> =
    Pin<Box<dyn Future<Output = reqwest_middleware::Result<Response>> + Send + 'a>>;

/// A call in flight: its span, and its series when metrics are recorded. Settled once, when
/// the response headers arrive or the call fails (its code), when the caller drops the call
/// (`cancelled`), or when a middleware below panics (`error`).
pub(super) struct InFlight {
    span: Span,
    metrics: Option<(Arc<Series>, Instant)>,
    /// The code of the response or failure, counted when the call settles.
    code: Code,
    /// The response's protocol version (index in [`VERSIONS`]).
    version: usize,
}

impl InFlight {
    /// Counts the call in flight in `series`, if any; `span` ends when the call settles.
    pub(super) fn start(span: Span, series: Option<Arc<Series>>) -> Self {
        let metrics = series.map(|series| {
            series.start();
            (series, Instant::now())
        });
        Self {
            span,
            metrics,
            code: Code::Error,
            version: version_index(http::Version::HTTP_11),
        }
    }

    /// Notes the outcome of the call on its span, and the code it is counted with.
    fn on_result(&mut self, result: &reqwest_middleware::Result<Response>) {
        let span = &self.span;
        match result {
            Ok(res) => {
                let status = res.status();
                self.code = Code::Status(status.as_u16());
                self.version = version_index(res.version());
                span.record("http.response.status_code", i64::from(status.as_u16()));
                span.record("network.protocol.version", VERSIONS[self.version]);
                if status.is_client_error() || status.is_server_error() {
                    span.record("error.type", status.as_str());
                }
                if status.is_server_error() {
                    span.record("otel.status_code", "ERROR");
                }
            }
            Err(err) => {
                let failure = Failure::of(err);
                self.code = match failure {
                    Failure::Timeout => Code::Timeout,
                    Failure::Connect => Code::Connect,
                    Failure::Request | Failure::Other => Code::Error,
                };
                span.record("error.type", failure.error_type());
                span.record("otel.status_code", "ERROR");
                if let Some(cause) = cause(err) {
                    span.record("otel.status_description", cause);
                }
            }
        }
    }
}

impl Settle for InFlight {
    fn settle(&mut self, outcome: Outcome) {
        let code = match outcome {
            Outcome::Complete | Outcome::Error => self.code,
            Outcome::Cancelled => Code::Cancelled,
            Outcome::Panicked => {
                self.span.record("error.type", Failure::Other.error_type());
                self.span.record("otel.status_code", "ERROR");
                Code::Error
            }
        };
        if let Some((series, start)) = &self.metrics {
            with_exemplar(SpanIds::of(&self.span), || {
                series.finish(start.elapsed(), code, self.version);
            });
        }
        // The span is dropped with this state: it ends when the headers arrived.
    }

    fn span(&self) -> Option<&Span> {
        Some(&self.span)
    }
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight")
            .field("code", &self.code)
            .field("metrics", &self.metrics.is_some())
            .finish_non_exhaustive()
    }
}

/// The future of one call: polls the rest of the stack inside the span, then records the
/// outcome and ends the span.
pub(super) struct ResponseFuture<'a> {
    pub(super) inner: BoxFuture<'a>,
    pub(super) guard: Option<SettleGuard<InFlight>>,
}

impl Future for ResponseFuture<'_> {
    type Output = reqwest_middleware::Result<Response>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(guard) = this.guard.as_mut() else {
            return this.inner.as_mut().poll(cx);
        };
        let result = ready!(guard.poll(|| this.inner.as_mut().poll(cx)));
        if let Some(call) = guard.state() {
            call.on_result(&result);
        }
        guard.settle(match result {
            Ok(_) => Outcome::Complete,
            Err(_) => Outcome::Error,
        });
        this.guard = None;
        Poll::Ready(result)
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
    use crate::labels::{standard_method, MethodTable, OTHER_METHOD};
    use http::Method;

    #[test]
    fn failures_are_classified() {
        let err = reqwest_middleware::Error::Middleware(std::io::Error::other("boom").into());
        assert_eq!(Failure::of(&err), Failure::Other);
        // The client's methods: PATCH at index 8 with its name, PURGE without index or name.
        let methods = MethodTable::standard();
        assert_eq!(methods.index(&Method::PATCH), 8);
        assert_eq!(methods.label(8).as_ref(), "PATCH");
        assert_eq!(standard_method(&Method::PATCH), Some("PATCH"));
        let purge = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(methods.index(&purge), methods.len());
        assert_eq!(methods.label(methods.len()).as_ref(), OTHER_METHOD);
        assert_eq!(standard_method(&purge), None);
    }
}
