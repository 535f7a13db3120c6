//! `X-Request-ID` on every request and response: validated, generated when missing.
//!
//! [`RequestIdLayer`] keeps an incoming id only when it is 1–128 characters of
//! `A-Z a-z 0-9 - _ . : + / = @` (and the layer trusts incoming ids); otherwise it makes a new
//! UUID v4. The id is then set on the request headers (so the service and the calls it makes
//! downstream see it), in the request extensions as a [`RequestId`] (an axum extractor with the
//! `axum` feature), and on the response. It is never used as a metric label.
//!
//! # Example
//!
//! ```
//! use http::{Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use towerscope::request_id::{RequestId, RequestIdLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), std::convert::Infallible> {
//! let svc = ServiceBuilder::new()
//!     .layer(RequestIdLayer::new())
//!     .service(service_fn(|req: Request<()>| async move {
//!         let id = req.extensions().get::<RequestId>().unwrap().as_str().to_owned();
//!         Ok::<_, std::convert::Infallible>(Response::new(id))
//!     }));
//!
//! // A valid incoming id is kept and echoed.
//! let req = Request::get("/").header("x-request-id", "abc-123").body(()).unwrap();
//! let res = svc.clone().oneshot(req).await?;
//! assert_eq!(res.headers()["x-request-id"], "abc-123");
//! assert_eq!(res.body(), "abc-123");
//!
//! // A hostile one is replaced by a fresh UUID.
//! let req = Request::get("/").header("x-request-id", "{\"json\":").body(()).unwrap();
//! let res = svc.oneshot(req).await?;
//! assert_eq!(res.headers()["x-request-id"].len(), 36);
//! # Ok(())
//! # }
//! ```

use std::{
    cell::Cell,
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};

use http::{HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// The default request id header, `x-request-id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest incoming request id that is kept, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// A request's id, as it was set on the request and response headers.
///
/// Found in the request extensions behind [`RequestIdLayer`]. With the `axum` feature it is an
/// extractor (`RequestId` or `Option<RequestId>` as a handler argument).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// Wraps a header value. Values set by [`RequestIdLayer`] are always valid ids.
    pub fn new(value: HeaderValue) -> Self {
        Self(value)
    }

    /// The id as a string. The layer only ever stores ASCII ids; anything else reads as `""`.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }

    /// The id as a header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// Consumes the id, returning its header value.
    pub fn into_header_value(self) -> HeaderValue {
        self.0
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RequestId").field(&self.as_str()).finish()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const fn allowed_bytes() -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'_' | b'.' | b':' | b'+' | b'/' | b'=' | b'@');
        b += 1;
    }
    table
}

static ALLOWED: [bool; 256] = allowed_bytes();

thread_local! {
    /// The id of the request whose future this thread is polling.
    static CURRENT: Cell<Option<RequestId>> = const { Cell::new(None) };
}

/// Runs `f` (one poll of a request's future) with the id in `slot` as [`current`] (see
/// `crate::current`).
pub(crate) fn scope<R>(slot: &mut Option<RequestId>, f: impl FnOnce() -> R) -> R {
    crate::current::scope(&CURRENT, slot, f)
}

/// The id of the request whose handler is running on this task, if any.
///
/// Set while [`RequestIdLayer`]'s response future is polled, so code called from a handler
/// (an instrumented HTTP client, a job being enqueued) can forward it. Tasks the handler spawns
/// do not inherit it: pass the [`RequestId`] along explicitly.
pub fn current() -> Option<RequestId> {
    crate::current::get(&CURRENT)
}

/// Whether `value` is an acceptable request id: 1–128 bytes of `A-Z a-z 0-9 - _ . : + / = @`.
pub fn is_valid_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value.iter().all(|&b| ALLOWED[b as usize])
}

/// A new random request id: a lowercase hyphenated UUID v4 (RFC 9562), from the thread's
/// cryptographically secure generator (rand's `ThreadRng`, ChaCha12 reseeded from the
/// operating system: what uuid's `fast-rng` uses, without a second rand in the build).
pub fn generate_request_id() -> HeaderValue {
    use rand::Rng as _;
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes);
    // One allocation, shared by every clone (request header, extension, response header).
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(uuid_v4(bytes)))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid-uuid"))
}

/// `bytes` as a UUID v4 in its lowercase hyphenated form: the version nibble set to 4 and the
/// variant bits to `10`, the rest random.
fn uuid_v4(mut bytes: [u8; 16]) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1; // the hyphen
        }
        out[at] = HEX[usize::from(b >> 4)];
        out[at + 1] = HEX[usize::from(b & 0x0f)];
        at += 2;
    }
    out
}

/// Layer that validates or makes the request id; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct RequestIdLayer {
    header: HeaderName,
    trust_incoming: bool,
}

impl Default for RequestIdLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestIdLayer {
    /// A layer using `x-request-id` that keeps valid incoming ids.
    pub fn new() -> Self {
        Self {
            header: X_REQUEST_ID,
            trust_incoming: true,
        }
    }

    /// Uses `header` instead of `x-request-id`. Defaults to `x-request-id`.
    pub fn with_header(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }

    /// Whether valid incoming ids are kept; when `false`, every request gets a new id
    /// (for services exposed to clients that must not choose ids). Defaults to `true`.
    pub fn trust_incoming(mut self, trust: bool) -> Self {
        self.trust_incoming = trust;
        self
    }
}

impl<S> Layer<S> for RequestIdLayer {
    type Service = SetRequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetRequestId {
            inner,
            layer: self.clone(),
        }
    }
}

/// Service that sets the request id; built by [`RequestIdLayer`].
#[derive(Debug, Clone)]
pub struct SetRequestId<S> {
    inner: S,
    layer: RequestIdLayer,
}

impl RequestIdLayer {
    /// The header the id is read from and written to.
    pub(crate) fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Validates or makes the id of `req` and stores it on the request (its header and its
    /// [`RequestId`] extension); returns it.
    pub(crate) fn apply<B>(&self, req: &mut Request<B>) -> HeaderValue {
        let headers = req.headers_mut();
        let mut incoming = headers.get_all(&self.header).iter();
        let kept = match (incoming.next(), incoming.next()) {
            // Exactly one value, valid, and trusted: keep it as it is.
            (Some(value), None) if self.trust_incoming && is_valid_request_id(value.as_bytes()) => {
                Some(value.clone())
            }
            _ => None,
        };
        let id = match kept {
            Some(id) => id,
            None => {
                let id = generate_request_id();
                headers.insert(self.header.clone(), id.clone());
                id
            }
        };
        req.extensions_mut().insert(RequestId(id.clone()));
        id
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SetRequestId<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let id = self.layer.apply(&mut req);
        // `current()` is set while the future is polled, where handlers run; not around `call`,
        // which for most services only builds the future (and would cost a move of the request).
        ResponseFuture {
            inner: self.inner.call(req),
            request_id: Some(RequestId(id.clone())),
            header: Some((self.layer.header.clone(), id)),
        }
    }
}

pin_project! {
    /// Response future of [`SetRequestId`]: puts the id on the response.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // `None` only while the inner future is polled (the id is then `current`).
        request_id: Option<RequestId>,
        header: Option<(HeaderName, HeaderValue)>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let inner = this.inner;
        let mut res = ready!(scope(this.request_id, || inner.poll(cx)))?;
        if let Some((name, value)) = this.header.take() {
            // The response always carries the request's id, even if the handler set another.
            res.headers_mut().insert(name, value);
        }
        Poll::Ready(Ok(res))
    }
}

#[cfg(feature = "axum")]
mod extract {
    use axum::{
        extract::{FromRequestParts, OptionalFromRequestParts},
        response::{IntoResponse, Response},
    };
    use http::{request::Parts, StatusCode};

    use super::RequestId;

    /// Rejection of the [`RequestId`] extractor: the router has no [`RequestIdLayer`](super::RequestIdLayer).
    #[derive(Debug, Clone, Copy)]
    pub struct MissingRequestId;

    impl IntoResponse for MissingRequestId {
        fn into_response(self) -> Response {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "missing request id: add towerscope's RequestIdLayer or ObservabilityLayer to the router",
            )
                .into_response()
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for RequestId {
        type Rejection = MissingRequestId;

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
            parts
                .extensions
                .get::<RequestId>()
                .cloned()
                .ok_or(MissingRequestId)
        }
    }

    impl<S: Send + Sync> OptionalFromRequestParts<S> for RequestId {
        type Rejection = std::convert::Infallible;

        async fn from_request_parts(
            parts: &mut Parts,
            _: &S,
        ) -> Result<Option<Self>, Self::Rejection> {
            Ok(parts.extensions.get::<RequestId>().cloned())
        }
    }
}

#[cfg(feature = "axum")]
pub use extract::MissingRequestId;

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{service_fn, ServiceBuilder, ServiceExt};

    async fn echo(req: Request<()>) -> Result<Response<String>, Infallible> {
        let seen = req.headers()[X_REQUEST_ID].to_str().unwrap().to_owned();
        let ext = req
            .extensions()
            .get::<RequestId>()
            .unwrap()
            .as_str()
            .to_owned();
        assert_eq!(seen, ext, "header and extension carry the same id");
        Ok(Response::new(seen))
    }

    async fn roundtrip(layer: RequestIdLayer, incoming: Option<HeaderValue>) -> Response<String> {
        let svc = ServiceBuilder::new().layer(layer).service(service_fn(echo));
        let mut req = Request::get("/").body(()).unwrap();
        if let Some(v) = incoming {
            req.headers_mut().insert(X_REQUEST_ID, v);
        }
        svc.oneshot(req).await.unwrap()
    }

    fn is_uuid(v: &HeaderValue) -> bool {
        uuid::Uuid::parse_str(v.to_str().unwrap()).is_ok()
    }

    #[test]
    fn generated_ids_are_random_uuid_v4_by_the_uuid_crate() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = generate_request_id();
            let text = id.to_str().unwrap();
            let parsed = uuid::Uuid::parse_str(text).unwrap();
            assert_eq!(parsed.get_version_num(), 4, "{text}");
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{text}");
            assert_eq!(
                parsed.hyphenated().to_string(),
                text,
                "lowercase, hyphenated"
            );
            assert!(seen.insert(parsed), "a repeated id: {text}");
        }
        // Every bit outside version and variant is the input's.
        let all = uuid_v4([0xff; 16]);
        assert_eq!(&all, b"ffffffff-ffff-4fff-bfff-ffffffffffff");
        let none = uuid_v4([0; 16]);
        assert_eq!(&none, b"00000000-0000-4000-8000-000000000000");
    }

    #[tokio::test]
    async fn valid_ids_are_echoed() {
        for id in [
            "a",
            "abc-123",
            "0123456789abcdef0123456789abcdef",
            "user@host:8080/path+x=y_z.w",
            &"x".repeat(128),
        ] {
            let res = roundtrip(
                RequestIdLayer::new(),
                Some(HeaderValue::from_str(id).unwrap()),
            )
            .await;
            assert_eq!(res.headers()[X_REQUEST_ID], id);
            assert_eq!(res.body(), id);
        }
    }

    #[tokio::test]
    async fn hostile_ids_are_replaced() {
        let long = "a".repeat(10 * 1024);
        let hostile: Vec<HeaderValue> = vec![
            HeaderValue::from_static("a\tb"),
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
            HeaderValue::from_bytes(b"\x80\xff").unwrap(),
            HeaderValue::from_str(&long).unwrap(),
            HeaderValue::from_str(&"x".repeat(129)).unwrap(),
            HeaderValue::from_static("{\"json\":"),
            HeaderValue::from_static(""),
            HeaderValue::from_static("a b"),
            HeaderValue::from_static("<script>"),
        ];
        for value in hostile {
            let res = roundtrip(RequestIdLayer::new(), Some(value.clone())).await;
            let got = &res.headers()[X_REQUEST_ID];
            assert_ne!(got, &value);
            assert!(is_uuid(got), "{value:?} replaced by a uuid, got {got:?}");
            assert_eq!(res.body(), got.to_str().unwrap());
        }
    }

    #[tokio::test]
    async fn missing_id_is_generated_and_untrusted_ids_replaced() {
        let res = roundtrip(RequestIdLayer::new(), None).await;
        assert!(is_uuid(&res.headers()[X_REQUEST_ID]));

        let layer = RequestIdLayer::new().trust_incoming(false);
        let res = roundtrip(layer, Some(HeaderValue::from_static("abc"))).await;
        assert!(is_uuid(&res.headers()[X_REQUEST_ID]));
    }

    #[tokio::test]
    async fn duplicate_incoming_ids_are_replaced_by_one() {
        let svc = ServiceBuilder::new()
            .layer(RequestIdLayer::new())
            .service(service_fn(|req: Request<()>| async move {
                assert_eq!(req.headers().get_all(X_REQUEST_ID).iter().count(), 1);
                Ok::<_, Infallible>(Response::new(String::new()))
            }));
        let req = Request::get("/")
            .header(X_REQUEST_ID, "a")
            .header(X_REQUEST_ID, "b")
            .body(())
            .unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert!(is_uuid(&res.headers()[X_REQUEST_ID]));
    }

    #[tokio::test]
    async fn current_id_is_visible_inside_the_handler_only() {
        let svc = ServiceBuilder::new()
            .layer(RequestIdLayer::new())
            .service(service_fn(|_req: Request<()>| async move {
                tokio::task::yield_now().await;
                let id = current().expect("set while the handler runs");
                Ok::<_, Infallible>(Response::new(id.as_str().to_owned()))
            }));
        let req = Request::get("/")
            .header(X_REQUEST_ID, "inside-1")
            .body(())
            .unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.body(), "inside-1");
        assert!(current().is_none());
    }

    #[tokio::test]
    async fn custom_header_is_used() {
        let name = HeaderName::from_static("x-correlation-id");
        let svc = ServiceBuilder::new()
            .layer(RequestIdLayer::new().with_header(name.clone()))
            .service(service_fn(|req: Request<()>| async move {
                assert!(req.headers().get(X_REQUEST_ID).is_none());
                Ok::<_, Infallible>(Response::new(()))
            }));
        let req = Request::get("/").header(&name, "corr-1").body(()).unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.headers()[&name], "corr-1");
    }

    #[test]
    fn validation_table() {
        assert!(is_valid_request_id(b"A-Za-z0-9-_.:+/=@"));
        assert!(!is_valid_request_id(b""));
        assert!(!is_valid_request_id(b"a,b"));
        assert!(!is_valid_request_id(b"a\"b"));
        assert!(!is_valid_request_id(b"a\\b"));
        assert!(!is_valid_request_id(&[b'a'; 129]));
        assert!(is_valid_request_id(&[b'a'; 128]));
    }
}
