//! Log lines that say which request they belong to: [`RequestFields`], an event format for
//! `tracing_subscriber::fmt` that ends every line logged inside a request with its
//! `request_id` and `operation`.
//!
//! The two values are read from the request being polled on the thread
//! ([`request_id::current`],
//! [`operation::current`]), not from a `tracing` span: behind
//! [`Telemetry::layer`](crate::Telemetry::layer) with tracing enabled no `tracing` span is
//! opened for the request unless `trace.log_span` asks for one, because an OpenTelemetry
//! layer of the application's own would export such a span as a second server span, sampled
//! by the application's sampler instead of towerscope's.
//! [`Telemetry::init_subscriber`](crate::Telemetry::init_subscriber) uses this format; with a
//! subscriber of your own, wrap your format in it:
//!
//! ```
//! use tracing_subscriber::{fmt, layer::SubscriberExt};
//! use towerscope::log::RequestFields;
//!
//! let subscriber = tracing_subscriber::registry()
//!     .with(fmt::layer().event_format(RequestFields::new(fmt::format().with_ansi(false))));
//! # let _ = subscriber;
//! ```
//!
//! A line logged in a handler then reads
//! `2026-12-07T10:00:00.000000Z  INFO my_app: cache miss key=42 request_id=3f2a… operation=getUser`.
//! Outside a request, lines are the inner format's, unchanged. The inner format writes into a
//! buffer first, so its colours follow its own setting (`fmt::format().with_ansi(..)`), not the
//! layer's. The fields are appended as text: wrap a text format, not `fmt::format().json()`.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::{
    fmt::{
        format::{Format, Writer},
        FmtContext, FormatEvent, FormatFields,
    },
    registry::LookupSpan,
};

use crate::{operation, request_id};

/// An event format that appends the current request's `request_id` and `operation` to the
/// line `inner` writes; see the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct RequestFields<F = Format> {
    inner: F,
}

impl<F> RequestFields<F> {
    /// Wraps `inner`, e.g. `tracing_subscriber::fmt::format()`.
    pub fn new(inner: F) -> Self {
        Self { inner }
    }
}

impl<S, N, F> FormatEvent<S, N> for RequestFields<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let (id, operation) = (request_id::current(), operation::current());
        if id.is_none() && operation.is_none() {
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let (text, newline) = match line.strip_suffix('\n') {
            Some(text) => (text, true),
            None => (line.as_str(), false),
        };
        writer.write_str(text)?;
        if let Some(id) = id {
            write!(writer, " request_id={}", id.as_str())?;
        }
        if let Some(operation) = operation {
            write!(writer, " operation={operation}")?;
        }
        if newline {
            writer.write_char('\n')?;
        }
        Ok(())
    }
}
