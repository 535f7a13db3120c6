//! [`RequestMetrics`]: what one request records when it settles.
//!
//! A request is "in flight" from the moment the service is called until its response body
//! ends. The [`SettleGuard`](super::toolkit::SettleGuard) holding this state is created in
//! [`MetricsService::call`](super::MetricsService), moved into the response future, then into
//! the [`ResponseBody`](super::ResponseBody); it settles the request exactly once:
//!
//! | what happened                                   | code counted            |
//! |-------------------------------------------------|-------------------------|
//! | body reached its end (or was empty)             | the response status     |
//! | body returned an error mid-stream               | the response status     |
//! | service returned an error                       | 500                     |
//! | future or body dropped early (client went away) | 499                     |
//! | handler panicked through the layer              | 500                     |

use std::{
    fmt,
    sync::Arc,
    time::{Instant, SystemTime},
};

use super::{
    semconv::server::{ServerRequest, ServerSeries},
    series::MethodSeries,
    store::{with_exemplar_at, SpanIds},
    toolkit::{Outcome, Settle},
};
use crate::operation::OperationId;

/// Status code counted for a request dropped before it finished (nginx's "client closed").
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// The metrics state of one request in flight, carried by the response future and body of
/// [`MetricsService`](super::MetricsService) until the request settles.
pub struct RequestMetrics(Naming);

/// The state of each [`MetricNaming`](super::MetricNaming).
enum Naming {
    Harbor(HarborRequest),
    Otel(ServerRequest),
}

/// The state of a request measured with Harbor's families.
struct HarborRequest {
    /// The series whose in-flight gauge this request incremented.
    inflight: Arc<MethodSeries>,
    /// The series the duration and total go to, when the response overrides the operation.
    settled_on: Option<Arc<MethodSeries>>,
    start: Instant,
    status: u16,
    /// The sampled server span's ids: the exemplar of the duration and the total.
    exemplar: Option<SpanIds>,
}

impl RequestMetrics {
    /// Counts the request in flight in `series`; `exemplar`, the ids of its sampled server
    /// span, goes with its duration and total.
    pub(crate) fn start(series: Arc<MethodSeries>, exemplar: Option<SpanIds>) -> Self {
        series.inflight().increment(1.0);
        Self(Naming::Harbor(HarborRequest {
            inflight: series,
            settled_on: None,
            start: Instant::now(),
            // Until a response is seen: a service error is a 500.
            status: 500,
            exemplar,
        }))
    }

    /// Counts the request active in the OpenTelemetry `series`; `request_size` is its
    /// `Content-Length` when body sizes are recorded.
    pub(crate) fn start_otel(
        series: Arc<ServerSeries>,
        exemplar: Option<SpanIds>,
        request_size: Option<u64>,
    ) -> Self {
        Self(Naming::Otel(ServerRequest::start(
            series,
            exemplar,
            request_size,
        )))
    }
}

impl Settle for RequestMetrics {
    /// Notes the status, recorded when the body ends, and (Harbor naming) a handler's
    /// `OperationId` override on the response, which the duration and total go to.
    fn on_response<B>(&mut self, response: &http::Response<B>) {
        match &mut self.0 {
            Naming::Harbor(harbor) => harbor.on_response(response),
            Naming::Otel(otel) => otel.on_status(response.status().as_u16()),
        }
    }

    fn on_data(&mut self, len: usize) {
        if let Naming::Otel(otel) = &mut self.0 {
            otel.on_data(len);
        }
    }

    fn settle(&mut self, outcome: Outcome) {
        self.settle_at(outcome, None);
    }
}

impl RequestMetrics {
    /// Whether the request's duration and total keep an exemplar (it has a sampled span).
    pub(crate) fn has_exemplar(&self) -> bool {
        match &self.0 {
            Naming::Harbor(harbor) => harbor.exemplar.is_some(),
            Naming::Otel(otel) => otel.has_exemplar(),
        }
    }

    /// Settles with `outcome`; `now`, when given, is the exemplar's time (else the clock is
    /// read, when there is an exemplar).
    pub(crate) fn settle_at(&mut self, outcome: Outcome, now: Option<SystemTime>) {
        match &mut self.0 {
            Naming::Harbor(harbor) => harbor.settle(outcome, now),
            Naming::Otel(otel) => otel.settle(outcome, now),
        }
    }
}

impl HarborRequest {
    fn on_response<B>(&mut self, response: &http::Response<B>) {
        self.status = response.status().as_u16();
        if let Some(op) = response.extensions().get::<OperationId>() {
            self.settled_on = self.inflight.sibling(op);
        }
        let series = self.settled_on.as_ref().unwrap_or(&self.inflight);
        if let Some(first_byte) = series.first_byte() {
            let seconds = self.start.elapsed().as_secs_f64();
            with_exemplar_at(self.exemplar, None, || first_byte.record(seconds));
        }
    }

    fn settle(&mut self, outcome: Outcome, now: Option<SystemTime>) {
        let code = match outcome {
            Outcome::Complete | Outcome::Error => self.status,
            Outcome::Cancelled => CLIENT_CLOSED_REQUEST,
            Outcome::Panicked => 500,
        };
        let elapsed = self.start.elapsed().as_secs_f64();
        self.inflight.inflight().decrement(1.0);
        let series = self.settled_on.as_ref().unwrap_or(&self.inflight);
        with_exemplar_at(self.exemplar, now, || {
            series.duration().record(elapsed);
            series.count(code);
        });
    }
}

impl fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Naming::Harbor(harbor) => f
                .debug_struct("RequestMetrics")
                .field("operation", &harbor.inflight.operation())
                .field("status", &harbor.status)
                .finish_non_exhaustive(),
            Naming::Otel(otel) => f.debug_tuple("RequestMetrics").field(otel).finish(),
        }
    }
}
