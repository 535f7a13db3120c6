//! Run with: cargo run --example jobs
//!
//! A request handler captures a `JobContext` (the request's span context and `X-Request-ID`);
//! a worker then runs two jobs with it through `Jobs`, one that succeeds and one that fails.
//! Printed: the captured context, each `run-job` span as it closes (with `job.status` and the
//! enqueuer's `request_id`), then the `task_*` families, as `/metrics?comp=jobservice` would
//! serve them. Look at `task_total{type="REPLICATION",status="fail"}`.

use axum::{body::Body, routing::post, Router};
use http::Request;
use opentelemetry::trace::TracerProvider as _;
use tokio::sync::mpsc;
use tower::ServiceExt;
use towerscope::{
    jobs::{JobContext, JobInfo, Jobs},
    Config, Telemetry,
};
use tracing_subscriber::{fmt::format::FmtSpan, layer::SubscriberExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_yaml_str("metric: { namespace: demo, subsystem: jobservice }")?;
    let telemetry = Telemetry::init_local(&config)?;
    // In a service, `telemetry.init_subscriber()` with `trace.enabled`. Here the spans get
    // OpenTelemetry ids without being exported, and print a line on stdout when they close.
    let tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .build()
        .tracer("jobs-example");
    let spans = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .without_time()
        .with_span_events(FmtSpan::CLOSE);
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .with(spans);
    tracing::subscriber::set_global_default(subscriber)?;

    // The handler that enqueues the job captures its context; here it sends it to the worker
    // on a channel, a real queue would store `context.to_traceparent()` beside the job.
    let (queue, mut worker) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/replications",
            post(move || async move {
                let _ = queue.send(JobContext::capture());
                "queued\n"
            }),
        )
        .layer(telemetry.layer());
    let request = Request::post("/replications")
        .header("x-request-id", "req-42")
        .body(Body::empty())?;
    // Dropping the response ends the request and its span.
    let status = app.oneshot(request).await?.status();
    println!("POST /replications: {status}");

    let context = worker.try_recv()?;
    println!(
        "captured: request id {:?}, traceparent {:?}",
        context.request_id().map(|id| id.as_str().to_owned()),
        context.to_traceparent(),
    );

    // The worker: each run is a `run-job` span linked to the request, and is counted.
    let jobs = Jobs::from_telemetry(&telemetry);
    let info = |id: &str| JobInfo {
        id: id.into(),
        name: "REPLICATION".into(),
        periodic: false,
    };
    let copied = jobs
        .run(info("1"), context.clone(), async { Ok::<_, String>(3) })
        .await;
    println!("job 1: {copied:?}");
    let failed = jobs
        .run(info("2"), context, async {
            Err::<u32, _>("registry unreachable".to_owned())
        })
        .await;
    println!("job 2: {failed:?}\n");

    println!(
        "{}",
        telemetry.registry().render_components(&["jobservice"])?
    );
    Ok(())
}
