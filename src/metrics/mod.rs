//! Prometheus metrics for every request, with Harbor's names.
//!
//! [`MetricsLayer`] records, per request:
//!
//! | family (after the `{namespace}_{subsystem}_` prefix) | type | labels |
//! |---|---|---|
//! | `http_inflight_requests` | gauge | `method`, `operation` |
//! | `http_request_duration_seconds` | summary (0.5, 0.9, 0.99) or histogram | `method`, `operation` |
//! | `http_request_total` | counter | `method`, `code`, `operation` |
//! | `http_operation_overflow_total` | counter | |
//! | `http_request_time_to_first_byte_seconds` (opt-in, `metric.time_to_first_byte`) | as the duration | `method`, `operation` |
//!
//! Methods outside the configured set are `_OTHER`; operations come from an
//! [`OperationResolver`](crate::operation) and are capped (default 1000 distinct values, the
//! rest `_overflow`). No label value is taken from a raw path, a header or any other
//! client-chosen string without a cap: labels of the user's own ([`MetricLabel`],
//! `metric.labels`) pass through a capped table per label, the same `_overflow` rule, counted
//! in `http_request_label_overflow_total{label}`.
//!
//! With [`MetricNaming::Otel`] (`metric.naming: otel`) the layer records the OpenTelemetry
//! semantic conventions' families instead: see [`semconv`].
//!
//! [`MetricsRegistry`] holds the series (towerscope's own recorder and exposition) and moves
//! the summary windows; [`MetricsEndpoint`]
//! serves it (with Harbor's `?comp=`), [`MetricsServer`] on its own port.
//!
//! # Example
//!
//! ```
//! use http::{Request, Response};
//! use http_body_util::BodyExt;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use towerscope::{
//!     config::MetricConfig,
//!     metrics::{MetricsLayer, MetricsRegistry},
//!     operation::{OperationId, RequestRef},
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(MetricsLayer::new(&registry).with_resolver(|_: &RequestRef<'_>| Some(OperationId::from("ping"))))
//!     .service(service_fn(|_req: Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(Response::new(String::from("pong")))
//!     }));
//! let res = svc.oneshot(Request::get("/ping").body(()).unwrap()).await.unwrap();
//! // The request ends with its body; a body dropped unread would count as code 499.
//! res.into_body().collect().await.unwrap();
//!
//! let text = registry.render();
//! assert!(text.contains(r#"http_request_total{method="GET",code="200",operation="ping"} 1"#));
//! assert!(text.contains(r#"http_inflight_requests{method="GET",operation="ping"} 0"#));
//! # }
//! ```
// `otlp` and `push` are behind features: linked to themselves when built, else to docs.rs.
#![cfg_attr(feature = "otlp", doc = "[`otlp`]: self::otlp")]
#![cfg_attr(
    not(feature = "otlp"),
    doc = "[`otlp`]: https://docs.rs/towerscope/latest/towerscope/metrics/otlp/index.html"
)]
#![cfg_attr(feature = "pushgateway", doc = "[`push`]: self::push")]
#![cfg_attr(
    not(feature = "pushgateway"),
    doc = "[`push`]: https://docs.rs/towerscope/latest/towerscope/metrics/push/index.html"
)]
#![doc = include_str!("../docs/metrics.md")]

mod endpoint;
mod layer;
mod names;
#[cfg(feature = "otlp")]
pub mod otlp;
#[cfg(feature = "protobuf")]
mod proto;
#[cfg(feature = "pushgateway")]
pub mod push;
mod registry;
mod request;
pub mod runtime;
pub mod semconv;
mod series;
pub(crate) mod store;
mod tables;
pub mod toolkit;
mod user_labels;

pub use endpoint::{
    EndpointFuture, MetricsEndpoint, MetricsServer, Refresh, CONNECTION_LIFETIME, CONTENT_TYPE,
    DEFAULT_MAX_CONCURRENT_RENDERS, DEFAULT_MAX_CONNECTIONS, HEADER_READ_TIMEOUT,
    OPENMETRICS_CONTENT_TYPE,
};
pub(crate) use layer::MetricsStage;
pub use layer::{
    MetricsLayer, MetricsService, ResponseBody, ResponseFuture, DEFAULT_COMPONENT,
    DEFAULT_MAX_OPERATIONS,
};
pub use names::{HistogramMode, MetricNames, MetricNaming};
#[cfg(feature = "protobuf")]
pub use proto::PROTOBUF_CONTENT_TYPE;
pub(crate) use registry::RenderHook;
pub use registry::{MetricsError, MetricsRegistry, UnknownComponent, DURATION_SUFFIX};
pub use request::{RequestMetrics, CLIENT_CLOSED_REQUEST};
pub use store::{with_exemplar, SpanIds, StoreStats};
pub use toolkit::RecorderRef;
pub(crate) use user_labels::check_label_name;
pub use user_labels::{
    MetricLabel, MetricLabelError, DEFAULT_MAX_LABEL_VALUES, MAX_LABEL_VALUE_LEN, MAX_METRIC_LABELS,
};

pub use crate::labels::OTHER_METHOD;
/// Label value of the operations beyond the cap.
pub use crate::labels::OVERFLOW_LABEL as OVERFLOW_OPERATION;
