//! tonic / gRPC: metrics and server spans per call, trace context and request id on calls out.
//!
//! [`GrpcLayer`] goes on a tonic server (`Server::builder().layer(..)`). Per call it
//!
//! - resolves the operation once, `package.Service/Method` from the request path
//!   `/package.Service/Method` (`grpc.health.v1.Health/Check`); a path that is not a gRPC
//!   path is `unknown`, and distinct operations are capped (default 1000, then `_overflow`)
//!   because the path is chosen by the client;
//! - reads `grpc-status` from the response headers (a trailers-only response, tonic's shape
//!   for an error before any message) or else from the trailers at the end of the response
//!   stream, `UNKNOWN` when unparsable;
//! - keeps the call in flight until the response stream ends; a stream dropped before its
//!   end (client cancelled, deadline passed, connection lost) is counted with `code="499"`
//!   and `grpc_code="CANCELLED"` (the table below has every case);
//! - records, with handles resolved once per operation and code
//!   ([`GrpcMetricNames`] has the table):
//!   `{prefix}grpc_inflight_requests{operation}`,
//!   `{prefix}grpc_request_duration_seconds{operation}` and
//!   `{prefix}grpc_request_total{code, grpc_code, operation}`, where `code` is the HTTP status
//!   and `grpc_code` the canonical name (`OK`, `NOT_FOUND`, ...); or go-grpc-prometheus' names
//!   with [`GrpcMetricNames::go_grpc_prometheus`], whose `grpc_code` is grpc-go's spelling
//!   (`OK`, `NotFound`, `Canceled`: [`go_code_name`]) as go-grpc-prometheus writes it;
//! - counts the messages received (request body) and sent (response body) as each one's
//!   last byte passes, from the gRPC length-prefixed framing read across HTTP/2 frames
//!   without buffering: `{prefix}grpc_messages_received_total{operation}` and
//!   `{prefix}grpc_messages_sent_total{operation}`, or go-grpc-prometheus'
//!   `grpc_server_msg_received_total` / `grpc_server_msg_sent_total`. A partial message (the
//!   body ended, failed or was dropped inside it, whatever length its prefix announced)
//!   counts nothing; a compression flag other than 0 or 1 is not gRPC framing and stops the
//!   count for that body. The request body reaches the service as a [`RequestBody`];
//! - when asked ([`GrpcLayer::with_time_to_first_byte`], `metric.time_to_first_byte`),
//!   records the time from the call to the response head it sends, beside the duration to
//!   the end of the stream ([`GrpcMetricNames::time_to_first_byte`]:
//!   `{prefix}grpc_request_time_to_first_byte_seconds{operation}`, ...), and marks the head
//!   on the sampled span with the event [`RESPONSE_HEAD_EVENT`] (`rpc.response.head`);
//! - treats calls as a [`RequestFilter`](crate::filter::RequestFilter) says
//!   ([`GrpcLayer::with_filter`], `filters:` with `from_telemetry`): skipped (no metrics, no
//!   span: health checks), metrics only, or new traces sampled at a rate of their own;
//! - opens a server span (target `towerscope::grpc`) ending with the stream:
//!
//! | field | value |
//! |---|---|
//! | name (`otel.name`) | `package.Service/Method`, or `unknown` |
//! | `otel.kind` | `server` |
//! | `rpc.system` | `grpc` |
//! | `rpc.service`, `rpc.method` | `package.Service`, `Method` |
//! | `rpc.grpc.status_code` | the status code as an integer (1 for a cancelled call) |
//! | `rpc.message.received.count`, `rpc.message.sent.count` | the messages of the request and of the response when the call settles (towerscope's names, in the `rpc.message` namespace of the conventions' per-message events, which are not recorded) |
//! | `otel.status_code` | `ERROR` for `UNKNOWN`, `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS` (with `grpc-message` as the description) |
//! | `request_id` | the [`RequestId`](crate::RequestId) of a [`RequestIdLayer`](crate::RequestIdLayer) before this layer, else a valid `x-request-id` |
//!
//! How a call is settled, exactly once:
//!
//! | what happened | `code` | `grpc_code` |
//! |---|---|---|
//! | trailers, or the end of a trailers-only response, with `grpc-status` | the HTTP status | from `grpc-status` (`UNKNOWN` if unparsable) |
//! | the stream ended without any `grpc-status` | the HTTP status | from the HTTP status as the gRPC spec maps it ([`code_from_http`]; `UNKNOWN` for 200) |
//! | the response body failed mid-stream | the HTTP status | `grpc-status` of the headers, else `UNKNOWN` |
//! | the service returned an error | 500 | `UNKNOWN` |
//! | the future or body was dropped early | 499 | `CANCELLED` |
//! | the service panicked through the layer | 500 | `UNKNOWN` |
//!
//! The span's parent is read from the request metadata with the configured propagators
//! ([`GrpcLayer::with_propagators`], or [`GrpcLayer::from_telemetry`]).
//!
//! [`GrpcClientLayer`] goes on a tonic `Channel`: it writes the current span's trace context
//! and the current request's id ([`request_id::current`](crate::request_id::current)) on every
//! call, so the server's span joins the caller's trace; with a registry
//! ([`GrpcClientLayer::with_metrics`], or `from_telemetry`) it measures each call like the
//! server does, under [`GrpcMetricNames::client_with_prefix`]'s names
//! (`{prefix}grpc_client_request_total`, ...) or [`GrpcMetricNames::otel_client`]'s
//! (`rpc_client_call_duration_seconds`), the time to the response head it receives too with
//! [`GrpcClientLayer::with_time_to_first_byte`]; [`GrpcClientLayer::with_filter`] leaves the
//! calls a filter skips out of its metrics (their context and request id are still sent).
//!
//! # Limitations
//!
//! - `grpc_type` (go-grpc-prometheus scheme) is `unary` unless declared per method with
//!   [`GrpcLayer::with_grpc_type`]: unary and streaming calls look the same on the wire.
//! - gRPC-Web carries the status inside the response body: put this layer inside tonic-web's
//!   layer, where calls are plain gRPC.
//! - The client layer opens no client span of its own (the caller's current span is the
//!   parent), so the message counts and the response head of a call out are on its metrics
//!   only, and a filter's metrics-only or sampling treatment changes nothing there.
//!
//! # Example
//!
//! ```
//! use http::{Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use towerscope::{
//!     config::MetricConfig,
//!     grpc::{GrpcLayer, RequestBody},
//!     metrics::MetricsRegistry,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(GrpcLayer::new(&registry))
//!     .service(service_fn(|_req: Request<RequestBody<()>>| async {
//!         // A trailers-only response, as tonic sends `Status::not_found(..)`.
//!         let res = Response::builder()
//!             .header("content-type", "application/grpc")
//!             .header("grpc-status", "5")
//!             .body(http_body_util::Empty::<bytes::Bytes>::new())
//!             .unwrap();
//!         Ok::<_, std::convert::Infallible>(res)
//!     }));
//! let req = Request::post("/grpc.health.v1.Health/Check").body(()).unwrap();
//! drop(svc.oneshot(req).await.unwrap()); // hyper drops an empty body unread
//!
//! let text = registry.render_components(&["grpc"]).unwrap();
//! assert!(text.contains(
//!     r#"grpc_request_total{code="200",grpc_code="NOT_FOUND",operation="grpc.health.v1.Health/Check"} 1"#
//! ));
//! assert!(text.contains(r#"grpc_inflight_requests{operation="grpc.health.v1.Health/Check"} 0"#));
//! # }
//! ```
//!
//! On a tonic server, with a [`Telemetry`](super::Telemetry). Put
//! [`RequestIdLayer::from_telemetry`](crate::RequestIdLayer::from_telemetry) in front of
//! `GrpcLayer` for the `request_id:` block's header and `trust_incoming` (over HTTP,
//! `Telemetry::layer` sets the id itself):
//!
//! ```no_run
//! # async fn doc(telemetry: towerscope::Telemetry) -> Result<(), tonic::transport::Error> {
//! use towerscope::{grpc::GrpcLayer, RequestIdLayer};
//!
//! let (_reporter, health) = tonic_health::server::health_reporter();
//! tonic::transport::Server::builder()
//!     .layer(RequestIdLayer::from_telemetry(&telemetry))
//!     .layer(GrpcLayer::from_telemetry(&telemetry))
//!     .add_service(health)
//!     .serve("127.0.0.1:50051".parse().unwrap())
//!     .await
//! # }
//! ```
//!
//! See [`examples/grpc.rs`](https://github.com/towerscope/towerscope/blob/main/examples/grpc.rs)
//! (`cargo run --example grpc`): a tonic-health service behind `GrpcLayer`, called once
//! through `GrpcClientLayer`, and its `grpc_*` series. The application depends on tonic 0.14
//! (and tonic-health 0.14 for the health service), as towerscope's `tonic` feature does.

mod body;
mod client;
mod frames;
mod layer;
mod names;
mod request;
mod series;
mod status;

pub use body::{GrpcCall, ResponseBody, RESPONSE_HEAD_EVENT};
pub use client::{GrpcClientLayer, GrpcClientService, GRPC_CLIENT_COMPONENT};
pub use layer::{GrpcLayer, GrpcService, ResponseFuture, GRPC_COMPONENT};
pub use names::{GrpcMetricNames, GrpcType};
pub use request::RequestBody;
pub use status::{
    code_from_http, code_name, go_code_name, is_server_error, status_in, GrpcOperation,
    GRPC_MESSAGE, GRPC_STATUS, MAX_OPERATION_LEN,
};
