//! Request filters: which requests the server layers measure and trace, and how.
//!
//! A [`RequestFilter`] gives each request a [`Treatment`]: observed as usual, metrics only (no
//! span), a sampling rate of its own for new traces, or skipped (neither metrics nor span).
//! Rules match by path pattern ([`PathPattern`]: `/healthz`, `/internal/**`,
//! `/v2/{name}/blobs/{digest}`), by resolved operation (the `operation` label: the OpenAPI
//! operationId, or axum's matched route with the default resolver) and optionally by method;
//! a predicate can decide from the whole request head first. The first rule that matches
//! decides; a request no rule matches is observed. With no rule and no predicate the layer
//! does exactly what it did without a filter (one branch per request).
//!
//! The request id is set and echoed on every request, skipped ones included: it is not a
//! measurement, and handlers and logs rely on it.
//!
//! The layers that take a filter: the HTTP server layer
//! ([`ObservabilityLayer::with_filter`](crate::ObservabilityLayer::with_filter), and
//! `filters:` through [`Telemetry::layer`](crate::Telemetry::layer)), the gRPC server layer
//! (`GrpcLayer::with_filter`, and `filters:` through `GrpcLayer::from_telemetry`: the one list
//! serves both servers) and the gRPC client layer (`GrpcClientLayer::with_filter`, where
//! [`Treatment::Skip`] leaves a call out of the metrics, its trace context and request id
//! still sent, and the other treatments measure it as usual: the client opens no span).
//! Behind the gRPC layers a path pattern matches the request path
//! (`/grpc.health.v1.Health/Check`), an operation rule the gRPC operation
//! (`grpc.health.v1.Health/Check`), and every call's method is `POST`: a rule naming a gRPC
//! method matches gRPC calls only, one naming an HTTP route HTTP requests only.
//!
//! ```
//! use http::{Method, Request};
//! use towerscope::filter::{FilterRule, PathPattern, RequestFilter, Treatment};
//!
//! let filter = RequestFilter::new()
//!     .rule(FilterRule::path(PathPattern::new("/healthz").unwrap()).skip())
//!     .rule(FilterRule::path(PathPattern::new("/internal/**").unwrap()).metrics_only())
//!     .rule(FilterRule::operation("GetBlob").methods([Method::GET]).sample_rate(0.01))
//!     .predicate(|head| {
//!         head.headers().contains_key("x-synthetic-probe").then_some(Treatment::Skip)
//!     });
//!
//! let req = |path: &str| Request::get(path).body(()).unwrap();
//! assert_eq!(filter.treat(&req("/healthz")), Treatment::Skip);
//! assert_eq!(filter.treat(&req("/internal/cache/stats")), Treatment::MetricsOnly);
//! assert_eq!(filter.treat(&req("/v2/")), Treatment::Observe);
//! ```

mod pattern;

use std::{fmt, sync::Arc};

use http::{Method, Request};

pub use crate::head::RequestHead;
pub use pattern::{PathPattern, PatternError};

/// What a layer does with a request.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Treatment {
    /// Metrics and a span, sampled at the configured rate: the default.
    Observe,
    /// Metrics, no span (nothing exported, and no trace context for the handler's own spans
    /// and outgoing calls).
    MetricsOnly,
    /// Metrics and a span, a new trace sampled at this rate (0 to 1) instead of the configured
    /// one; a request whose caller sent a parent follows the parent, as always. Applies when
    /// the layer exports its spans itself ([`Telemetry::layer`](crate::Telemetry::layer));
    /// spans exported through `tracing` follow the subscriber's sampler.
    SampleRate(f64),
    /// Neither metrics nor span.
    Skip,
}

/// What a rule matches: a path pattern or an operation, and optionally methods.
#[derive(Debug, Clone)]
enum Matcher {
    Path(PathPattern),
    Operation(Box<str>),
}

/// One rule of a [`RequestFilter`]: what it matches and the [`Treatment`] it gives.
#[derive(Debug, Clone)]
pub struct FilterRule {
    matcher: Matcher,
    /// Empty: any method.
    methods: Vec<Method>,
    treatment: Treatment,
}

impl FilterRule {
    /// Matches requests whose path matches `pattern`; skips them unless told otherwise.
    pub fn path(pattern: PathPattern) -> Self {
        Self::matching(Matcher::Path(pattern))
    }

    /// Matches requests resolved to `operation` (exactly); skips them unless told otherwise.
    pub fn operation(operation: impl Into<String>) -> Self {
        Self::matching(Matcher::Operation(operation.into().into()))
    }

    fn matching(matcher: Matcher) -> Self {
        Self {
            matcher,
            methods: Vec::new(),
            treatment: Treatment::Skip,
        }
    }

    /// Only requests with one of `methods`.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// Gives matching requests `treatment` (a [`Treatment::SampleRate`] is clamped to 0–1,
    /// a NaN rate is 0).
    pub fn treat(mut self, treatment: Treatment) -> Self {
        self.treatment = match treatment {
            Treatment::SampleRate(rate) if rate.is_nan() => Treatment::SampleRate(0.0),
            Treatment::SampleRate(rate) => Treatment::SampleRate(rate.clamp(0.0, 1.0)),
            other => other,
        };
        self
    }

    /// [`Treatment::Skip`].
    pub fn skip(self) -> Self {
        self.treat(Treatment::Skip)
    }

    /// [`Treatment::MetricsOnly`].
    pub fn metrics_only(self) -> Self {
        self.treat(Treatment::MetricsOnly)
    }

    /// [`Treatment::SampleRate`].
    pub fn sample_rate(self, rate: f64) -> Self {
        self.treat(Treatment::SampleRate(rate))
    }

    /// [`Treatment::Observe`]: measured as usual (an exception ahead of a broader rule).
    pub fn observe(self) -> Self {
        self.treat(Treatment::Observe)
    }

    fn matches(&self, head: &RequestHead<'_>) -> bool {
        (self.methods.is_empty() || self.methods.contains(head.method()))
            && match &self.matcher {
                Matcher::Path(pattern) => pattern.matches(head.path()),
                Matcher::Operation(operation) => head.operation() == Some(&**operation),
            }
    }
}

type Predicate = dyn Fn(&RequestHead<'_>) -> Option<Treatment> + Send + Sync;

/// Which requests a layer measures and traces, and how; see the
/// [module](self). Cheap to clone.
#[derive(Clone, Default)]
pub struct RequestFilter {
    rules: Arc<[FilterRule]>,
    predicate: Option<Arc<Predicate>>,
}

impl fmt::Debug for RequestFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestFilter")
            .field("rules", &self.rules)
            .field("predicate", &self.predicate.is_some())
            .finish()
    }
}

impl RequestFilter {
    /// No rule: every request observed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `rule` after the rules already there.
    pub fn rule(mut self, rule: FilterRule) -> Self {
        let mut rules = self.rules.to_vec();
        rules.push(rule);
        self.rules = rules.into();
        self
    }

    /// Asks `predicate` first: its `Some(treatment)` decides, `None` leaves it to the rules.
    /// It runs on every request, after the operation is resolved: keep it cheap.
    pub fn predicate(
        mut self,
        predicate: impl Fn(&RequestHead<'_>) -> Option<Treatment> + Send + Sync + 'static,
    ) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// Whether there is neither a rule nor a predicate (every request observed).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.predicate.is_none()
    }

    /// The treatment of `req`.
    pub fn treat<B>(&self, req: &Request<B>) -> Treatment {
        self.treat_head(&RequestHead::of(req))
    }

    /// The treatment of a request with this head.
    pub fn treat_head(&self, head: &RequestHead<'_>) -> Treatment {
        if let Some(treatment) = self.predicate.as_ref().and_then(|p| p(head)) {
            return treatment;
        }
        self.rules
            .iter()
            .find(|rule| rule.matches(head))
            .map_or(Treatment::Observe, |rule| rule.treatment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OperationId;

    fn req(method: Method, path: &str, operation: Option<&str>) -> Request<()> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        if let Some(operation) = operation {
            req.extensions_mut().insert(OperationId::new(operation));
        }
        req
    }

    #[test]
    fn the_first_matching_rule_decides_and_the_predicate_comes_first() {
        let filter = RequestFilter::new()
            .rule(FilterRule::path(PathPattern::new("/internal/public").unwrap()).observe())
            .rule(FilterRule::path(PathPattern::new("/internal/**").unwrap()).metrics_only())
            .rule(
                FilterRule::operation("GetBlob")
                    .methods([Method::GET, Method::HEAD])
                    .sample_rate(0.25),
            )
            .rule(FilterRule::path(PathPattern::new("/healthz").unwrap()));
        let treat = |m, p, o| filter.treat(&req(m, p, o));
        assert_eq!(
            treat(Method::GET, "/internal/public", None),
            Treatment::Observe
        );
        assert_eq!(
            treat(Method::GET, "/internal/x", None),
            Treatment::MetricsOnly
        );
        assert_eq!(
            treat(Method::HEAD, "/v2/a/blobs/b", Some("GetBlob")),
            Treatment::SampleRate(0.25)
        );
        assert_eq!(
            treat(Method::DELETE, "/v2/a/blobs/b", Some("GetBlob")),
            Treatment::Observe
        );
        // A rule made without a treatment skips.
        assert_eq!(treat(Method::GET, "/healthz", None), Treatment::Skip);
        assert_eq!(treat(Method::GET, "/healthz?x=1", None), Treatment::Skip);
        assert_eq!(treat(Method::GET, "/v2/", None), Treatment::Observe);

        let filter = filter.predicate(|head| {
            (head.headers().contains_key("x-probe") || head.operation() == Some("Ping"))
                .then_some(Treatment::Skip)
        });
        let mut probe = req(Method::GET, "/internal/public", None);
        probe.headers_mut().insert("x-probe", "1".parse().unwrap());
        assert_eq!(filter.treat(&probe), Treatment::Skip);
        assert_eq!(
            filter.treat(&req(Method::GET, "/x", Some("Ping"))),
            Treatment::Skip
        );
        assert_eq!(
            filter.treat(&req(Method::GET, "/internal/x", None)),
            Treatment::MetricsOnly
        );
    }

    #[test]
    fn rates_are_clamped_and_an_empty_filter_observes_everything() {
        let rule = |rate| FilterRule::operation("a").sample_rate(rate).treatment;
        assert_eq!(rule(1.5), Treatment::SampleRate(1.0));
        assert_eq!(rule(-1.0), Treatment::SampleRate(0.0));
        assert_eq!(rule(f64::NAN), Treatment::SampleRate(0.0));
        let empty = RequestFilter::new();
        assert!(empty.is_empty());
        assert_eq!(
            empty.treat(&req(Method::GET, "/healthz", None)),
            Treatment::Observe
        );
    }
}
