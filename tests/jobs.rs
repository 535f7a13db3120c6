//! Background jobs: the `run-job` span (attributes, status, link to the enqueuing request) and
//! the task metrics, for jobs that succeed, fail, panic and are cancelled; and the job context
//! carried as a `traceparent`.

mod support;

use std::{
    future::Future,
    pin::pin,
    sync::{Arc, Mutex},
    task::Poll,
};

use axum::{body::Body, routing::get, Router};
use http::Request;
use http_body_util::BodyExt;
use opentelemetry::{
    trace::{SpanContext, SpanId, SpanKind, Status},
    Value,
};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use support::sample;
use tower::ServiceExt;
use towerscope::{
    config::MetricConfig,
    jobs::{JobContext, JobFuture, JobInfo, JobOutcome, Jobs},
    metrics::MetricsRegistry,
    Telemetry,
};
use tracing_subscriber::layer::SubscriberExt;

const CONFIG: &str = "
metric: { namespace: harbor, subsystem: jobservice }
trace: { enabled: true, service_name: jobs-test, otel: { endpoint: '127.0.0.1:1', insecure: true } }
";

fn telemetry() -> (Telemetry, InMemorySpanExporter) {
    support::no_stale_span_interest();
    support::in_memory_telemetry(CONFIG)
}

/// Sends `GET /enqueue` with `x-request-id: req-42` through `telemetry.layer()`; the handler
/// captures the job context the way a service enqueuing a job would. Its server span is the
/// only server span of the test (its name depends on the `axum` feature).
async fn enqueue(telemetry: &Telemetry) -> JobContext {
    let captured = Arc::new(Mutex::new(None));
    let slot = captured.clone();
    let app = Router::new()
        .route(
            "/enqueue",
            get(move || async move {
                *slot.lock().unwrap() = Some(JobContext::capture());
                "queued"
            }),
        )
        .layer(telemetry.layer());
    let req = Request::get("/enqueue")
        .header("x-request-id", "req-42")
        .body(Body::empty())
        .unwrap();
    let res = app.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap();
    let context = captured.lock().unwrap().take();
    context.expect("the handler ran")
}

fn finished(telemetry: &Telemetry, exporter: &InMemorySpanExporter) -> Vec<SpanData> {
    telemetry.trace_pipeline().unwrap().force_flush().unwrap();
    exporter.get_finished_spans().unwrap()
}

fn attr(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

fn string(span: &SpanData, key: &str) -> Option<String> {
    attr(span, key).map(|v| v.to_string())
}

fn job_span<'a>(spans: &'a [SpanData], id: &str) -> &'a SpanData {
    spans
        .iter()
        .find(|s| s.name == "run-job" && string(s, "job.id").as_deref() == Some(id))
        .unwrap_or_else(|| panic!("no run-job span for job {id} in {spans:#?}"))
}

fn info(id: &str, name: &str, periodic: bool) -> JobInfo {
    JobInfo {
        id: id.into(),
        name: name.into(),
        periodic,
    }
}

/// Polls `future` exactly once.
async fn poll_once<F: Future>(mut future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
}

fn assert_linked_to(job: &SpanData, request: &SpanContext) {
    assert_eq!(job.links.len(), 1, "{:?}", job.links);
    let link = &job.links[0].span_context;
    assert_eq!(link.trace_id(), request.trace_id());
    assert_eq!(link.span_id(), request.span_id());
    // A link, not a parent: the job is a trace of its own.
    assert_eq!(job.parent_span_id, SpanId::INVALID);
    assert_ne!(job.span_context.trace_id(), request.trace_id());
}

#[tokio::test]
async fn jobs_are_linked_spans_with_status_and_counted_by_type_and_status() {
    let (t, exporter) = telemetry();
    let subscriber = tracing_subscriber::registry().with(t.tracing_layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    let jobs = Jobs::from_telemetry(&t);

    let context = enqueue(&t).await;
    assert_eq!(context.request_id().unwrap().as_str(), "req-42");
    let request = finished(&t, &exporter)
        .into_iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .expect("the request span")
        .span_context;
    assert_eq!(context.span_context().trace_id(), request.trace_id());
    assert_eq!(context.span_context().span_id(), request.span_id());

    // success, twice
    for id in ["s1", "s2"] {
        let out = jobs
            .run(info(id, "REPLICATION", false), context.clone(), async {
                tokio::task::yield_now().await;
                Ok::<_, String>(id.len())
            })
            .await;
        assert_eq!(out, Ok(2));
    }
    // failure
    let out = jobs
        .run(info("f1", "REPLICATION", false), context.clone(), async {
            Err::<(), _>("registry unreachable")
        })
        .await;
    assert_eq!(out, Err("registry unreachable"));
    // panic: counted as fail, then the panic goes on to the task
    fn collect_garbage() -> Result<(), String> {
        panic!("out of disk")
    }
    let job = jobs.run(
        info("p1", "GARBAGE_COLLECTION", true),
        context.clone(),
        async { collect_garbage() },
    );
    let joined = tokio::spawn(job).await;
    assert!(joined.unwrap_err().is_panic());
    // cancellation midway: polled once, then dropped
    {
        let mut job = pin!(jobs.run(
            info("c1", "GARBAGE_COLLECTION", true),
            context.clone(),
            std::future::pending::<Result<(), String>>(),
        ));
        assert!(poll_once(job.as_mut()).await.is_pending());
    }
    // cancellation before it ever ran
    drop(jobs.run(
        info("c2", "GARBAGE_COLLECTION", true),
        context.clone(),
        async { Ok::<(), String>(()) },
    ));

    let spans = finished(&t, &exporter);
    let expect = [
        ("s1", "REPLICATION", false, "success"),
        ("s2", "REPLICATION", false, "success"),
        ("f1", "REPLICATION", false, "fail"),
        ("p1", "GARBAGE_COLLECTION", true, "fail"),
        ("c1", "GARBAGE_COLLECTION", true, "stop"),
        ("c2", "GARBAGE_COLLECTION", true, "stop"),
    ];
    assert_eq!(
        spans.iter().filter(|s| s.name == "run-job").count(),
        expect.len()
    );
    for (id, name, periodic, status) in expect {
        let span = job_span(&spans, id);
        assert_linked_to(span, &request);
        assert_eq!(span.span_kind, SpanKind::Internal);
        assert_eq!(string(span, "job.name").as_deref(), Some(name), "{id}");
        assert_eq!(
            attr(span, "job.periodic"),
            Some(Value::Bool(periodic)),
            "{id}"
        );
        assert_eq!(
            string(span, "request_id").as_deref(),
            Some("req-42"),
            "{id}"
        );
        assert_eq!(string(span, "job.status").as_deref(), Some(status), "{id}");
    }
    assert_eq!(job_span(&spans, "s1").status, Status::Unset);
    assert_eq!(
        job_span(&spans, "f1").status,
        Status::error("registry unreachable")
    );
    assert_eq!(
        job_span(&spans, "p1").status,
        Status::error("panicked: out of disk")
    );
    assert_eq!(job_span(&spans, "c1").status, Status::Unset);

    let text = t.registry().render();
    let total = |ty: &str, status: &str| {
        sample(
            &text,
            &format!(r#"harbor_jobservice_task_total{{type="{ty}",status="{status}"}}"#),
        )
    };
    assert_eq!(total("REPLICATION", "success"), Some(2.0), "{text}");
    assert_eq!(total("REPLICATION", "fail"), Some(1.0));
    assert_eq!(total("REPLICATION", "stop"), Some(0.0));
    assert_eq!(total("GARBAGE_COLLECTION", "success"), Some(0.0));
    assert_eq!(total("GARBAGE_COLLECTION", "fail"), Some(1.0));
    assert_eq!(total("GARBAGE_COLLECTION", "stop"), Some(2.0));
    let count = |ty: &str, status: &str| {
        sample(
            &text,
            &format!(
                r#"harbor_jobservice_task_process_time_seconds_count{{type="{ty}",status="{status}"}}"#
            ),
        )
    };
    assert_eq!(count("REPLICATION", "success"), Some(2.0));
    assert_eq!(count("REPLICATION", "fail"), Some(1.0));
    assert_eq!(count("GARBAGE_COLLECTION", "fail"), Some(1.0));
    assert_eq!(count("GARBAGE_COLLECTION", "stop"), Some(2.0));
    // No observation, no summary series.
    assert_eq!(count("GARBAGE_COLLECTION", "success"), None);
    assert!(text.contains("# TYPE harbor_jobservice_task_process_time_seconds summary"));
    assert!(text.contains(
        r#"harbor_jobservice_task_process_time_seconds{type="REPLICATION",status="success",quantile="0.99"}"#
    ));
    assert!(text.contains("# TYPE harbor_jobservice_task_total counter"));
    assert!(text.contains("# HELP harbor_jobservice_task_total "));

    let component = t.registry().render_components(&["jobservice"]).unwrap();
    assert!(component.contains("harbor_jobservice_task_total{"));
    assert!(!component.contains("http_request_total"));
}

#[tokio::test]
async fn the_traceparent_round_trip_keeps_the_link() {
    let (t, exporter) = telemetry();
    let subscriber = tracing_subscriber::registry().with(t.tracing_layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    let jobs = Jobs::new(t.registry());

    let captured = enqueue(&t).await;
    let traceparent = captured.to_traceparent().expect("a traced request");
    let sc = captured.span_context();
    // Sampled, and random: the request's trace was started by the layer (W3C level 2).
    assert_eq!(
        traceparent,
        format!("00-{}-{}-03", sc.trace_id(), sc.span_id())
    );

    // As a job queue would: two strings in a row, read back by a worker.
    let stored_id = captured.request_id().unwrap().as_str().to_owned();
    let restored = JobContext::from_traceparent(&traceparent)
        .unwrap()
        .with_request_id(towerscope::RequestId::new(stored_id.parse().unwrap()));
    assert_eq!(restored.span_context().trace_id(), sc.trace_id());
    assert_eq!(restored.span_context().span_id(), sc.span_id());
    assert_eq!(restored.span_context().trace_flags(), sc.trace_flags());
    assert!(restored.span_context().is_remote());
    assert_eq!(restored.request_id(), captured.request_id());
    assert_eq!(
        restored.to_traceparent().as_deref(),
        Some(traceparent.as_str())
    );

    // Or as JSON, through serde.
    let json = serde_json::to_string(&captured).unwrap();
    assert_eq!(
        json,
        format!(r#"{{"traceparent":"{traceparent}","request_id":"req-42"}}"#)
    );
    let from_json: JobContext = serde_json::from_str(&json).unwrap();
    assert_eq!(from_json, restored);

    jobs.run(info("r1", "SCAN", false), restored, async {})
        .await;
    let spans = finished(&t, &exporter);
    let request = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .unwrap();
    let job = job_span(&spans, "r1");
    assert_linked_to(job, &request.span_context);
    assert_eq!(string(job, "request_id").as_deref(), Some("req-42"));
    assert_eq!(string(job, "job.status").as_deref(), Some("success"));
}

#[test]
fn a_damaged_stored_context_is_dropped_not_fatal() {
    let context: JobContext =
        serde_json::from_str(r#"{"traceparent":"00-nope","request_id":"{bad id}"}"#).unwrap();
    assert_eq!(context, JobContext::default());
    let context: JobContext = serde_json::from_str("{}").unwrap();
    assert_eq!(context, JobContext::default());
    assert_eq!(serde_json::to_string(&context).unwrap(), "{}");
    let err = JobContext::from_traceparent("00-nope").unwrap_err();
    assert!(err.to_string().starts_with("invalid traceparent"), "{err}");
}

#[tokio::test]
async fn a_job_without_context_has_no_link_and_no_request_id() {
    let (t, exporter) = telemetry();
    let subscriber = tracing_subscriber::registry().with(t.tracing_layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    let jobs = Jobs::new(t.registry());
    // Even when run inside some other span: the job's span is a root.
    let outer = tracing::info_span!("scheduler-tick");
    let job = {
        let _e = outer.enter();
        jobs.run(
            info("p1", "SCHEDULED_SCAN", true),
            JobContext::default(),
            async {},
        )
    };
    job.await;
    drop(outer);
    let spans = finished(&t, &exporter);
    let job = job_span(&spans, "p1");
    assert!(job.links.is_empty());
    assert_eq!(job.parent_span_id, SpanId::INVALID);
    assert_eq!(attr(job, "request_id"), None);
    assert_eq!(attr(job, "job.periodic"), Some(Value::Bool(true)));
}

#[tokio::test]
async fn job_types_beyond_the_cap_share_the_overflow_series() {
    // Runs jobs with no subscriber while other tests have one (see no_stale_span_interest).
    support::no_stale_span_interest();
    let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
    let jobs = Jobs::new(&registry).with_max_types(2);
    for name in ["A", "B", "C", "D", "A"] {
        jobs.run(info("1", name, false), JobContext::default(), async {})
            .await;
    }
    let text = registry.render();
    assert_eq!(
        sample(&text, r#"task_total{type="A",status="success"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, r#"task_total{type="B",status="success"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"task_total{type="_overflow",status="success"}"#),
        Some(2.0)
    );
    assert!(!text.contains(r#"type="C""#));
}

#[test]
fn outcomes_of_results_unit_and_custom_types() {
    struct Exit(i32);
    impl JobOutcome for Exit {
        fn is_failure(&self) -> bool {
            self.0 != 0
        }
    }
    assert!(!Ok::<u8, String>(1).is_failure());
    assert!(Err::<u8, _>("x").is_failure());
    assert_eq!(Err::<u8, _>("x").failure_message().as_deref(), Some("x"));
    assert!(!().is_failure());
    assert!(Exit(3).is_failure() && Exit(3).failure_message().is_none());
}

#[test]
fn contexts_and_job_futures_cross_threads() {
    fn send_static<T: Send + 'static>() {}
    fn clone<T: Clone>() {}
    send_static::<JobContext>();
    clone::<JobContext>();
    send_static::<JobFuture<std::future::Ready<Result<(), String>>>>();
}
