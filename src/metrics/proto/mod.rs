//! The Prometheus protobuf exposition format: Prometheus' own `io.prometheus.client` messages
//! and the length-delimited stream of `MetricFamily` messages a scrape gets.
//!
//! The messages are generated from Prometheus' `metrics.proto` by prost-build
//! (`tools/proto-gen`) and committed, so that building towerscope needs no `protoc`;
//! `.ci/run` regenerates them and fails if the committed file differs. They are the contract
//! the render is tested against: the render itself (`store::protobuf`) writes the same fields
//! straight into the answer, which is four times faster than building these structs and
//! encoding them, and the tests decode every answer with them.

#[cfg(test)]
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    rustdoc::invalid_html_tags,
    rustdoc::bare_urls,
    rustdoc::broken_intra_doc_links
)]
pub(crate) mod client {
    include!("io.prometheus.client.rs");
}

#[cfg(test)]
/// `google.protobuf.Timestamp`, which the messages use for exemplars' times: the two fields
/// of the well-known type, without prost-types.
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub(crate) struct Timestamp {
    /// Seconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub(crate) seconds: i64,
    /// Nanoseconds within the second.
    #[prost(int32, tag = "2")]
    pub(crate) nanos: i32,
}

/// The `Content-Type` of a protobuf answer.
pub const PROTOBUF_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";
