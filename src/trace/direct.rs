//! Server spans that the layers export themselves: [`DirectTracer`] and [`DirectSpan`].
//!
//! Behind [`Telemetry::layer`](crate::Telemetry::layer) and `GrpcLayer::from_telemetry`, the
//! server span of a sampled request is not a `tracing` span that `tracing-opentelemetry` turns
//! into an OpenTelemetry span. The layer builds the OpenTelemetry span itself, with every
//! attribute known from the request, puts it in an OpenTelemetry [`Context`] that is current
//! while the request is polled, and ends it into the pipeline's span processor when the
//! request settles. What `tracing-opentelemetry` does on the way for each span — a registry
//! slot, a span builder, an owned copy of every string field through a visitor, the SDK span's
//! start, a lock and a lookup at every `record`, the context attached through the subscriber at
//! every poll — is left out; BENCHMARKS.md has the figures.
//!
//! Spans opened inside the request (`tracing` spans through `tracing-opentelemetry`, the
//! client, database and job spans) find this span in the current context and become its
//! children, and `tracing` events inside it are added to it as span events by
//! [`Telemetry::tracing_layer`](crate::Telemetry::tracing_layer) (see `events`). Code that wants
//! the span itself reads [`current_context`](super::current_context).
//!
//! A [`DirectSpan`] keeps the SDK's semantics: the default span limits, a status that only
//! moves up (`Unset` < `Error` < `Ok`), nothing after the pipeline shut down. It differs in one
//! point: setting an attribute whose key is already there replaces its value (the
//! OpenTelemetry rule), where the SDK's span appends a second one.

use std::{
    borrow::Cow,
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::SystemTime,
};

use opentelemetry::{
    trace::{Event, Link, SpanContext, SpanId, SpanKind, Status, TraceContextExt},
    Context, InstrumentationScope, KeyValue,
};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLimits, SpanLinks, SpanProcessor};

/// The pipeline's side of the spans the layers build: the processor they end into, the
/// instrumentation scope they are reported under, the span limits.
#[derive(Clone)]
pub(crate) struct DirectTracer(Arc<Sink>);

struct Sink {
    processor: Arc<dyn SpanProcessor>,
    scope: InstrumentationScope,
    limits: SpanLimits,
    /// Set when the pipeline shuts down: spans that end later are not handed over (as the
    /// SDK's spans).
    shut_down: AtomicBool,
}

impl fmt::Debug for DirectTracer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectTracer")
            .field("scope", &self.0.scope.name())
            .field("shut_down", &self.0.shut_down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What a layer knows of a span when it starts it.
pub(crate) struct SpanStart {
    /// The span's name.
    pub(crate) name: Cow<'static, str>,
    /// Its kind.
    pub(crate) kind: SpanKind,
    /// Its attributes (at most the span limit are kept).
    pub(crate) attributes: Vec<KeyValue>,
}

impl DirectTracer {
    /// A tracer ending its spans into `processor`, reported under `scope`.
    pub(crate) fn new(processor: Arc<dyn SpanProcessor>, scope: InstrumentationScope) -> Self {
        Self(Arc::new(Sink {
            processor,
            scope,
            limits: SpanLimits::default(),
            shut_down: AtomicBool::new(false),
        }))
    }

    /// Stops handing spans over: the pipeline is shutting down.
    pub(crate) fn shut_down(&self) {
        self.0.shut_down.store(true, Ordering::Relaxed);
    }

    /// Starts a sampled span named by `start`, with the ids of `span_context`, as a child of
    /// `parent`'s span when it has a valid one; returns `parent` with the span in it.
    pub(crate) fn start(
        &self,
        parent: Context,
        span_context: SpanContext,
        start: SpanStart,
    ) -> Context {
        let (parent_span_id, parent_span_is_remote) = {
            let parent = parent.span();
            let sc = parent.span_context();
            if sc.is_valid() {
                (sc.span_id(), sc.is_remote())
            } else {
                (SpanId::INVALID, false)
            }
        };
        let SpanStart {
            name,
            kind,
            mut attributes,
        } = start;
        let limit = self.0.limits.max_attributes_per_span as usize;
        let dropped_attributes_count = attributes.len().saturating_sub(limit) as u32;
        attributes.truncate(limit);
        let now = opentelemetry::time::now();
        let data = SpanData {
            span_context: span_context.clone(),
            parent_span_id,
            parent_span_is_remote,
            span_kind: kind,
            name,
            start_time: now,
            end_time: now,
            attributes,
            dropped_attributes_count,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: self.0.scope.clone(),
        };
        parent.with_span(DirectSpan {
            span_context,
            data: Some(data),
            sink: self.0.clone(),
        })
    }
}

/// A sampled span a layer built itself: recorded in place, handed to the pipeline's processor
/// when it ends (or is dropped unended).
pub(crate) struct DirectSpan {
    span_context: SpanContext,
    /// `None` once ended.
    data: Option<SpanData>,
    sink: Arc<Sink>,
}

impl fmt::Debug for DirectSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectSpan")
            .field("span_context", &self.span_context)
            .field("ended", &self.data.is_none())
            .finish_non_exhaustive()
    }
}

impl opentelemetry::trace::Span for DirectSpan {
    fn add_event_with_timestamp<T>(
        &mut self,
        name: T,
        timestamp: SystemTime,
        mut attributes: Vec<KeyValue>,
    ) where
        T: Into<Cow<'static, str>>,
    {
        let limits = self.sink.limits;
        let Some(data) = &mut self.data else { return };
        if data.events.events.len() < limits.max_events_per_span as usize {
            let limit = limits.max_attributes_per_event as usize;
            let dropped = attributes.len().saturating_sub(limit) as u32;
            attributes.truncate(limit);
            data.events
                .events
                .push(Event::new(name, timestamp, attributes, dropped));
        } else {
            data.events.dropped_count += 1;
        }
    }

    fn span_context(&self) -> &SpanContext {
        &self.span_context
    }

    fn is_recording(&self) -> bool {
        self.data.is_some()
    }

    fn set_attribute(&mut self, attribute: KeyValue) {
        let limit = self.sink.limits.max_attributes_per_span as usize;
        let Some(data) = &mut self.data else { return };
        if let Some(kv) = data
            .attributes
            .iter_mut()
            .find(|kv| kv.key == attribute.key)
        {
            kv.value = attribute.value;
        } else if data.attributes.len() < limit {
            data.attributes.push(attribute);
        } else {
            data.dropped_attributes_count += 1;
        }
    }

    fn set_status(&mut self, status: Status) {
        if let Some(data) = &mut self.data {
            if status > data.status {
                data.status = status;
            }
        }
    }

    fn update_name<T>(&mut self, new_name: T)
    where
        T: Into<Cow<'static, str>>,
    {
        if let Some(data) = &mut self.data {
            data.name = new_name.into();
        }
    }

    fn add_link(&mut self, span_context: SpanContext, mut attributes: Vec<KeyValue>) {
        let limits = self.sink.limits;
        let Some(data) = &mut self.data else { return };
        if data.links.links.len() < limits.max_links_per_span as usize {
            let limit = limits.max_attributes_per_link as usize;
            let dropped = attributes.len().saturating_sub(limit) as u32;
            attributes.truncate(limit);
            data.links
                .links
                .push(Link::new(span_context, attributes, dropped));
        } else {
            data.links.dropped_count += 1;
        }
    }

    fn end_with_timestamp(&mut self, timestamp: SystemTime) {
        let Some(mut data) = self.data.take() else {
            return;
        };
        if self.sink.shut_down.load(Ordering::Relaxed) {
            return;
        }
        data.end_time = timestamp;
        self.sink.processor.on_end(data);
    }
}

impl Drop for DirectSpan {
    fn drop(&mut self) {
        use opentelemetry::trace::Span as _;
        // Ended already, as a span normally is: no clock read.
        if self.data.is_some() {
            self.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use opentelemetry::trace::{TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::{error::OTelSdkResult, trace::Span as SdkSpan};

    use super::*;

    #[derive(Debug, Default)]
    struct Collect(Mutex<Vec<SpanData>>);

    impl SpanProcessor for Collect {
        fn on_start(&self, _span: &mut SdkSpan, _cx: &Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().unwrap().push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _timeout: std::time::Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    fn ids(trace: u128, span: u64, remote: bool) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::SAMPLED,
            remote,
            TraceState::default(),
        )
    }

    fn tracer() -> (DirectTracer, Arc<Collect>) {
        let collect = Arc::new(Collect::default());
        let tracer = DirectTracer::new(
            collect.clone(),
            InstrumentationScope::builder("towerscope").build(),
        );
        (tracer, collect)
    }

    fn start(tracer: &DirectTracer, parent: Context, attributes: Vec<KeyValue>) -> Context {
        tracer.start(
            parent,
            ids(7, 9, false),
            SpanStart {
                name: "GET /users/{id}".into(),
                kind: SpanKind::Server,
                attributes,
            },
        )
    }

    #[test]
    fn a_span_ends_once_into_the_processor_with_what_was_recorded() {
        let (tracer, collect) = tracer();
        let parent = Context::new().with_remote_span_context(ids(7, 3, true));
        let cx = start(
            &tracer,
            parent,
            vec![
                KeyValue::new("operation", "a"),
                KeyValue::new("url.path", "/x"),
            ],
        );
        let span = cx.span();
        assert!(span.is_recording());
        span.set_attribute(KeyValue::new("http.response.status_code", 503));
        span.set_attribute(KeyValue::new("operation", "b"));
        span.set_status(Status::error(""));
        span.set_status(Status::Unset); // never moves down
        span.add_event("handled", vec![KeyValue::new("k", 1)]);
        span.end();
        span.end();
        span.set_attribute(KeyValue::new("late", true));
        drop(cx);
        let spans = collect.0.lock().unwrap();
        assert_eq!(spans.len(), 1);
        let data = &spans[0];
        assert_eq!(data.name, "GET /users/{id}");
        assert_eq!(data.span_kind, SpanKind::Server);
        assert_eq!(data.parent_span_id, SpanId::from(3));
        assert!(data.parent_span_is_remote);
        assert_eq!(data.span_context.span_id(), SpanId::from(9));
        assert_eq!(
            data.attributes,
            [
                KeyValue::new("operation", "b"),
                KeyValue::new("url.path", "/x"),
                KeyValue::new("http.response.status_code", 503),
            ]
        );
        assert_eq!(data.status, Status::error(""));
        assert_eq!(data.events.events.len(), 1);
        assert_eq!(data.events.events[0].name, "handled");
        assert!(data.end_time >= data.start_time);
        assert_eq!(data.instrumentation_scope.name(), "towerscope");
    }

    #[test]
    fn a_root_span_has_no_parent_and_a_dropped_context_ends_it() {
        let (tracer, collect) = tracer();
        drop(start(&tracer, Context::new(), Vec::new()));
        let spans = collect.0.lock().unwrap();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].parent_span_id, SpanId::INVALID);
        assert!(!spans[0].parent_span_is_remote);
    }

    #[test]
    fn limits_hold_and_nothing_is_handed_over_after_shutdown() {
        let (tracer, collect) = tracer();
        let many = (0..200)
            .map(|i| KeyValue::new(format!("k{i}"), i))
            .collect();
        let cx = start(&tracer, Context::new(), many);
        for i in 0..200 {
            cx.span().add_event(format!("e{i}"), Vec::new());
        }
        cx.span().end();
        {
            let spans = collect.0.lock().unwrap();
            let limits = SpanLimits::default();
            assert_eq!(
                spans[0].attributes.len(),
                limits.max_attributes_per_span as usize
            );
            assert_eq!(spans[0].dropped_attributes_count, 200 - 128);
            assert_eq!(spans[0].events.events.len(), 128);
            assert_eq!(spans[0].events.dropped_count, 200 - 128);
        }
        tracer.shut_down();
        drop(start(&tracer, Context::new(), Vec::new()));
        assert_eq!(collect.0.lock().unwrap().len(), 1);
    }
}
