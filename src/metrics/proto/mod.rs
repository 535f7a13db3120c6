//! The Prometheus protobuf exposition format: Prometheus' own `io.prometheus.client` messages
//! and the length-delimited stream of `MetricFamily` messages a scrape gets.
//!
//! The messages are generated from Prometheus' `metrics.proto` by prost-build
//! (`tools/proto-gen`) and committed, so that building towerscope needs no `protoc`;
//! `.ci/run` regenerates them and fails if the committed file differs. prost, already the
//! encoder of the OTLP exports, encodes them.

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

impl Timestamp {
    /// The time `unix_seconds` (a float of seconds since the epoch).
    pub(crate) fn from_unix(unix_seconds: f64) -> Self {
        let seconds = unix_seconds.floor();
        Self {
            seconds: seconds as i64,
            nanos: ((unix_seconds - seconds) * 1e9).round().min(999_999_999.0) as i32,
        }
    }
}

/// The `Content-Type` of a protobuf answer.
pub const PROTOBUF_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";
