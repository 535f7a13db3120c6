//! [`GrpcCall`]: what one call records when it settles, and the [`ResponseBody`] that carries
//! it to the end of the response stream.
//!
//! A call is in flight from the moment the service is called until its response stream ends.
//! The [`SettleGuard`](crate::metrics::toolkit::SettleGuard) holding its [`GrpcCall`] is
//! created in [`GrpcService::call`](super::GrpcService), moved into the response future, then
//! into the [`ResponseBody`]; it settles the call exactly once, however it ends.
//!
//! The cases and the codes they are counted with are in the [module docs](super).

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Instant,
};

use http::{HeaderMap, StatusCode};
use opentelemetry::KeyValue;
use tonic::Code;
use tracing::Span;

use crate::trace::ServerSpan;

use super::{
    frames::MessageFrames,
    series::OperationSeries,
    status::{code_from_http, is_server_error, status_in, GRPC_MESSAGE},
};
use crate::{
    metrics::{
        toolkit::{Outcome, Settle, SettleBody},
        with_exemplar, SpanIds, CLIENT_CLOSED_REQUEST,
    },
    text::capped,
};

/// Longest `grpc-message` recorded as a span's status description, in bytes.
const MAX_STATUS_DESCRIPTION: usize = 256;

/// The span attribute with the messages a call received (a server: the request's).
pub(super) const RECEIVED_COUNT: &str = "rpc.message.received.count";
/// The span attribute with the messages a call sent (a server: the response's).
pub(super) const SENT_COUNT: &str = "rpc.message.sent.count";

/// The event that marks the response head of a gRPC call on its sampled server span (its time
/// to first byte), with [`GrpcLayer::with_time_to_first_byte`](super::GrpcLayer::with_time_to_first_byte)
/// (`metric.time_to_first_byte`). Its attributes are `http.response.status_code` (200 unless
/// a proxy answered) and, for a trailers-only response (an error before any message, whose
/// head ends the call), `rpc.grpc.status_code`.
pub const RESPONSE_HEAD_EVENT: &str = "rpc.response.head";

/// A count as a span's integer attribute.
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Response body of [`GrpcService`](super::GrpcService): reads `grpc-status` from the
/// trailers and ends the call's measurement and span when the stream ends, fails or is
/// dropped.
pub type ResponseBody<B> = SettleBody<B, GrpcCall>;

/// The metrics and span of one gRPC call in flight, carried by the response future and body
/// of [`GrpcService`](super::GrpcService) until the call settles.
///
/// Opaque: it is only named as the state of [`ResponseBody`].
pub struct GrpcCall {
    series: Option<Arc<OperationSeries>>,
    span: Option<ServerSpan>,
    /// A call out: the ids of the caller's sampled span, the exemplar of its series.
    caller: Option<SpanIds>,
    start: Instant,
    /// The response's HTTP status; `None` until the response head.
    http_status: Option<u16>,
    code: Option<Code>,
    /// The decoded `grpc-message` of a server error, for the span.
    message: Option<String>,
    /// A call out (a [`GrpcClientLayer`](super::GrpcClientLayer)'s): a service error is the
    /// channel's (no connection), `UNAVAILABLE`, as tonic reports it to the caller.
    client: bool,
    /// The framing of the response body, when its messages are counted.
    frames: Option<MessageFrames>,
    /// The messages of the response body so far.
    response_messages: u64,
    /// The messages of the request body so far, counted by its
    /// [`RequestBody`](super::RequestBody), for the span.
    request_messages: Option<Arc<AtomicU64>>,
}

impl GrpcCall {
    /// Counts the call as started in `series`, if any; `span` is entered while the call is
    /// polled and ends when it settles.
    pub(super) fn start(series: Option<Arc<OperationSeries>>, span: Option<ServerSpan>) -> Self {
        if let Some(series) = &series {
            series.start();
        }
        let records = span.as_ref().is_some_and(ServerSpan::records);
        let counts = records
            || series
                .as_ref()
                .is_some_and(|s| s.response_messages.is_some());
        Self {
            frames: counts.then(MessageFrames::default),
            response_messages: 0,
            // Allocated only for a span that records something.
            request_messages: records.then(Arc::default),
            series,
            span,
            caller: None,
            start: Instant::now(),
            http_status: None,
            code: None,
            message: None,
            client: false,
        }
    }

    /// A call out through a [`GrpcClientLayer`](super::GrpcClientLayer): no span of its own;
    /// `caller`, the ids of the caller's sampled span, is the exemplar of its series.
    pub(super) fn client(series: Arc<OperationSeries>, caller: Option<SpanIds>) -> Self {
        Self {
            client: true,
            caller,
            ..Self::start(Some(series), None)
        }
    }

    /// Where the request body counts its messages for the span, if it has one that records.
    pub(super) fn request_tally(&self) -> Option<Arc<AtomicU64>> {
        self.request_messages.clone()
    }

    /// The ids of the call's exemplar: its server span's when sampled, a call out's caller's.
    fn exemplar_ids(&self) -> Option<SpanIds> {
        match &self.span {
            Some(span) => span.sampled_ids(),
            None => self.caller,
        }
    }

    /// Records the time to the response head (`http_status`) when asked for, and marks it on
    /// the span.
    fn on_head(&self, http_status: u16) {
        if let Some(series) = self.series.as_ref().filter(|s| s.records_first_byte()) {
            let seconds = self.start.elapsed().as_secs_f64();
            with_exemplar(self.exemplar_ids(), || series.first_byte(seconds));
        }
        if let Some(span) = &self.span {
            span.mark_head(RESPONSE_HEAD_EVENT, || {
                let mut attributes = Vec::with_capacity(2);
                attributes.push(KeyValue::new(
                    "http.response.status_code",
                    i64::from(http_status),
                ));
                if let Some(code) = self.code {
                    attributes.push(KeyValue::new("rpc.grpc.status_code", code as i64));
                }
                attributes
            });
        }
    }

    fn read_status(&mut self, headers: &HeaderMap) {
        let Some(code) = status_in(headers) else {
            return;
        };
        self.code = Some(code);
        if is_server_error(code) && self.span.is_some() {
            self.message = headers.get(GRPC_MESSAGE).map(|v| {
                let text = percent_encoding::percent_decode(v.as_bytes()).decode_utf8_lossy();
                capped(&text, MAX_STATUS_DESCRIPTION).to_owned()
            });
        }
    }

    /// Records the call as finished with `http_status` and `code`.
    fn finish(&mut self, http_status: u16, code: Code) {
        if let Some(series) = &self.series {
            with_exemplar(self.exemplar_ids(), || {
                series.finish(self.start.elapsed().as_secs_f64(), http_status, code);
            });
        }
        if let Some(span) = self.span.take() {
            span.record_i64("rpc.grpc.status_code", code as i64);
            // A server's span: it received the request's messages and sent the response's.
            let received = self
                .request_messages
                .as_ref()
                .map(|n| n.load(Ordering::Relaxed));
            if let Some(received) = received {
                span.record_i64(RECEIVED_COUNT, clamp(received));
                span.record_i64(SENT_COUNT, clamp(self.response_messages));
            }
            if is_server_error(code) {
                let message = self.message.take().filter(|message| !message.is_empty());
                span.set_error(message.as_deref());
            }
            // Dropping the span here ends it with the call, not when hyper frees the body.
        }
    }
}

impl Settle for GrpcCall {
    /// Notes the response head: its HTTP status, and `grpc-status` of a trailers-only response.
    fn on_response<B>(&mut self, response: &http::Response<B>) {
        let http_status = response.status().as_u16();
        self.http_status = Some(http_status);
        self.read_status(response.headers());
        self.on_head(http_status);
    }

    fn settle(&mut self, outcome: Outcome) {
        let (http_status, code) = match outcome {
            // The status read so far, or the one the HTTP status implies.
            Outcome::Complete => {
                let http_status = self.http_status.unwrap_or(200);
                let status = StatusCode::from_u16(http_status).unwrap_or(StatusCode::OK);
                (
                    http_status,
                    self.code.unwrap_or_else(|| code_from_http(status)),
                )
            }
            // Without a response head, the error is the service's (the channel's: no
            // connection): 500.
            Outcome::Error => (
                self.http_status.unwrap_or(500),
                self.code.unwrap_or(match (self.client, self.http_status) {
                    (true, None) => Code::Unavailable,
                    _ => Code::Unknown,
                }),
            ),
            Outcome::Cancelled => (CLIENT_CLOSED_REQUEST, Code::Cancelled),
            Outcome::Panicked => (500, Code::Unknown),
        };
        self.finish(http_status, code);
    }

    /// Counts the messages ending in a data frame of the response body.
    fn on_data_frame<D: bytes::Buf>(&mut self, data: &D) {
        let Some(frames) = &mut self.frames else {
            return;
        };
        let ended = frames.read_buf(data);
        if ended > 0 {
            self.response_messages += ended;
            if let Some(series) = &self.series {
                series.response_messages(ended);
            }
        }
    }

    fn on_trailers(&mut self, trailers: &HeaderMap) {
        self.read_status(trailers);
    }

    fn span(&self) -> Option<&Span> {
        self.span.as_ref().and_then(ServerSpan::tracing_span)
    }

    fn context(&self) -> Option<&opentelemetry::Context> {
        self.span.as_ref().and_then(ServerSpan::context)
    }
}

impl fmt::Debug for GrpcCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcCall")
            .field("http_status", &self.http_status)
            .field("code", &self.code)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

    use super::*;
    use crate::{
        grpc::{series::SeriesTable, GrpcMetricNames, GrpcOperation},
        metrics::toolkit::{RecorderRef, SettleGuard},
    };

    /// The `grpc_request_total` samples as `code,grpc_code` with their counts.
    fn totals(snapshotter: &Snapshotter) -> Vec<(String, u64)> {
        let mut totals: Vec<_> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| match value {
                DebugValue::Counter(n) if key.key().name() == "grpc_request_total" => {
                    let labels: Vec<_> = key.key().labels().map(|l| l.value().to_owned()).collect();
                    Some((labels[..2].join(","), n))
                }
                _ => None,
            })
            .collect();
        totals.sort();
        totals
    }

    #[test]
    fn each_outcome_is_counted_with_its_codes() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let recorder = RecorderRef::Shared(Arc::new(recorder));
        let table = SeriesTable::new(
            recorder,
            &GrpcMetricNames::default(),
            10,
            Arc::default(),
            false,
        );
        let call = || {
            let series = table.series(GrpcOperation::from_path("/p.S/M"));
            SettleGuard::new(GrpcCall::start(Some(series), None))
        };
        let head = |guard: &mut SettleGuard<GrpcCall>, status: u16, grpc_status: Option<&str>| {
            let mut res = http::Response::new(());
            if let Some(value) = grpc_status {
                res.headers_mut()
                    .insert("grpc-status", value.parse().unwrap());
            }
            *res.status_mut() = StatusCode::from_u16(status).unwrap();
            guard.state().unwrap().on_response(&res);
        };
        // Complete: the status of a trailers-only head, or the one the HTTP status implies.
        let mut g = call();
        head(&mut g, 200, Some("5"));
        g.settle(Outcome::Complete);
        let mut g = call();
        head(&mut g, 503, None);
        g.settle(Outcome::Complete);
        // Error: the status read so far, else UNKNOWN; before any head, the service's 500.
        let mut g = call();
        head(&mut g, 200, Some("7"));
        g.settle(Outcome::Error);
        let mut g = call();
        head(&mut g, 200, None);
        g.settle(Outcome::Error);
        call().settle(Outcome::Error);
        // Dropped (cancelled), and panicked.
        drop(call());
        call().settle(Outcome::Panicked);
        assert_eq!(
            totals(&snapshotter),
            [
                ("200,NOT_FOUND".to_owned(), 1),
                ("200,PERMISSION_DENIED".to_owned(), 1),
                ("200,UNKNOWN".to_owned(), 1),
                ("499,CANCELLED".to_owned(), 1),
                ("500,UNKNOWN".to_owned(), 2),
                ("503,UNAVAILABLE".to_owned(), 1),
            ]
        );
    }
}
