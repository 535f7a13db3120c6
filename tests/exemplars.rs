//! Exemplars of real requests through `Telemetry::layer`: the sampled server span's trace and
//! span id on the duration bucket and the request counter, served in OpenMetrics when the
//! scraper asks for it; none for requests sampled out or with `metric.exemplars: false`.

mod support;

use axum::{body::Body, routing::get, Router};
use http::{header, Request};
use http_body_util::BodyExt;
use opentelemetry_sdk::trace::InMemorySpanExporter;
use tower::ServiceExt;
use towerscope::{metrics::OPENMETRICS_CONTENT_TYPE, Telemetry};
use tracing_subscriber::layer::SubscriberExt;

/// What Prometheus 2.x sends.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

fn config(extra: &str, rate: f64) -> String {
    format!(
        "metric: {{ buckets: [0.1, 1]{extra} }}\n\
         trace: {{ enabled: true, sample_rate: {rate}, service_name: exemplars-test, otel: {{ endpoint: '127.0.0.1:1' }} }}"
    )
}

/// Sends `n` requests through the layer with the telemetry's subscriber; returns the exported
/// spans' `(trace id, span id)` and the OpenMetrics scrape.
async fn requests(
    t: &Telemetry,
    exporter: &InMemorySpanExporter,
    n: usize,
) -> (Vec<(String, String)>, String) {
    let subscriber = tracing_subscriber::registry().with(t.tracing_layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .layer(t.layer());
    for i in 0..n {
        let req = Request::get(format!("/users/{i}"))
            .body(Body::empty())
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    t.trace_pipeline().unwrap().force_flush().unwrap();
    let spans = exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .map(|s| {
            (
                s.span_context.trace_id().to_string(),
                s.span_context.span_id().to_string(),
            )
        })
        .collect();
    (spans, t.registry().render_openmetrics(&[]).unwrap())
}

/// The `(trace_id, span_id)` of the exemplar on the first line starting with `series`.
fn exemplar(text: &str, series: &str) -> Option<(String, String)> {
    let line = text.lines().find(|l| l.starts_with(series))?;
    let (_, tail) = line.split_once(" # {trace_id=\"")?;
    let (trace, rest) = tail.split_once("\",span_id=\"")?;
    let (span, _) = rest.split_once('"')?;
    Some((trace.to_owned(), span.to_owned()))
}

#[tokio::test]
async fn a_sampled_requests_span_ids_are_the_exemplars_of_its_bucket_and_counter() {
    let (t, exporter) = support::in_memory_telemetry(&config("", 1.0));
    let (spans, text) = requests(&t, &exporter, 3).await;
    assert_eq!(spans.len(), 3, "{spans:?}");
    let last = spans.last().unwrap().clone();
    let bucket =
        r#"http_request_duration_seconds_bucket{method="GET",operation="/users/{id}",le="0.1"}"#;
    assert_eq!(exemplar(&text, bucket), Some(last.clone()), "{text}");
    let total = r#"http_request_total{method="GET",code="200",operation="/users/{id}"}"#;
    assert_eq!(exemplar(&text, total), Some(last), "{text}");
    assert!(text.contains("# TYPE http_request counter\n"), "{text}");
    assert!(text.ends_with("# EOF\n"));
    // The 0.0.4 text carries none.
    assert!(!t.registry().render().contains(" # {"));
}

#[tokio::test]
async fn requests_sampled_out_or_with_exemplars_off_have_none() {
    for (extra, rate) in [("", 0.0), (", exemplars: false", 1.0)] {
        let (t, exporter) = support::in_memory_telemetry(&config(extra, rate));
        let (spans, text) = requests(&t, &exporter, 2).await;
        assert_eq!(spans.len(), if rate > 0.0 { 2 } else { 0 });
        assert!(
            text.contains(
                r#"http_request_total{method="GET",code="200",operation="/users/{id}"} 2"#
            ),
            "{text}"
        );
        assert!(!text.contains(" # {"), "{extra} rate {rate}: {text}");
    }
}

#[tokio::test]
async fn the_endpoint_serves_openmetrics_to_prometheus_and_0_0_4_otherwise() {
    let (t, exporter) = support::in_memory_telemetry(&config("", 1.0));
    requests(&t, &exporter, 1).await;
    let endpoint = t.metrics_endpoint();
    for (accept, om) in [
        (Some(PROMETHEUS_ACCEPT), true),
        (Some("text/plain;version=0.0.4"), false),
        (
            Some("application/openmetrics-text;q=0.2,text/plain;q=0.5"),
            false,
        ),
        (Some("application/openmetrics-text; version=1.0.0"), true),
        (None, false),
    ] {
        let mut req = Request::get("/metrics");
        if let Some(accept) = accept {
            req = req.header(header::ACCEPT, accept);
        }
        let Ok(res) = endpoint.respond(&req.body(()).unwrap()).await;
        let content_type = res.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert_eq!(
            content_type == OPENMETRICS_CONTENT_TYPE,
            om,
            "{accept:?}: {content_type}"
        );
        assert_eq!(body.ends_with("# EOF\n"), om, "{accept:?}");
        assert_eq!(body.contains(" # {trace_id="), om, "{accept:?}");
    }
}

#[tokio::test]
async fn a_jobs_run_job_span_is_the_exemplar_of_its_task_series() {
    use towerscope::jobs::{JobContext, JobInfo, Jobs};
    let (t, exporter) = support::in_memory_telemetry(&config("", 1.0));
    let subscriber = tracing_subscriber::registry().with(t.tracing_layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    let info = JobInfo {
        id: "7".into(),
        name: "SCAN".into(),
        periodic: false,
    };
    Jobs::from_telemetry(&t)
        .run(info, JobContext::default(), async {})
        .await;
    t.trace_pipeline().unwrap().force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let job = spans
        .iter()
        .find(|s| s.name == "run-job")
        .expect("run-job span");
    let want = (
        job.span_context.trace_id().to_string(),
        job.span_context.span_id().to_string(),
    );
    let text = t.registry().render_openmetrics(&[]).unwrap();
    let total = r#"task_total{type="SCAN",status="success"}"#;
    assert_eq!(exemplar(&text, total), Some(want.clone()), "{text}");
    let bucket = r#"task_process_time_seconds_bucket{type="SCAN",status="success",le="0.1"}"#;
    assert_eq!(exemplar(&text, bucket), Some(want), "{text}");
}

/// A metrics layer of its own inside `Telemetry::layer` (as the example registry's
/// Distribution families are) finds the request's sampled span in the current context and
/// keeps it as its exemplar too; a request sampled out leaves none.
#[tokio::test]
async fn an_inner_metrics_layer_keeps_the_server_spans_ids() {
    use towerscope::MetricsLayer;
    for rate in [1.0, 0.0] {
        let (t, exporter) = support::in_memory_telemetry(&config("", rate));
        let subscriber = tracing_subscriber::registry().with(t.tracing_layer());
        let _guard = tracing::subscriber::set_default(subscriber);
        let inner = MetricsLayer::new(t.registry())
            .with_names(towerscope::metrics::MetricNames::with_prefix("registry_"));
        let app = Router::new()
            .route("/users/{id}", get(|| async { "user" }))
            .layer(inner)
            .layer(t.layer());
        let res = app
            .oneshot(Request::get("/users/1").body(Body::empty()).unwrap())
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
        t.trace_pipeline().unwrap().force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        let text = t.registry().render_openmetrics(&[]).unwrap();
        let total =
            r#"registry_http_request_total{method="GET",code="200",operation="/users/{id}"}"#;
        assert!(text.contains(total), "{text}");
        if rate > 0.0 {
            assert_eq!(spans.len(), 1, "{spans:?}");
            let want = (
                spans[0].span_context.trace_id().to_string(),
                spans[0].span_context.span_id().to_string(),
            );
            assert_eq!(exemplar(&text, total), Some(want), "{text}");
        } else {
            assert!(spans.is_empty(), "{spans:?}");
            assert_eq!(exemplar(&text, total), None, "{text}");
        }
    }
}
