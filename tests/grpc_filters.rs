//! Filters on the gRPC layers: `GrpcLayer::from_telemetry` applies `filters:` (the list the
//! HTTP server layer reads too), `with_filter` replaces it; a skipped call is neither counted
//! nor traced, a metrics-only call is counted and not traced, a rate of its own samples the
//! call's new traces (a sampled caller is followed). The client leaves skipped calls out of
//! its metrics and still sends the caller's trace context and request id.
#![cfg(feature = "tonic")]

mod support;

use std::convert::Infallible;

use http::{Request, Response};
use opentelemetry::trace::TraceContextExt;
use support::{
    grpc::{check, client, eventually, exported, registry, serve, telemetry, CHECK, WATCH},
    sample,
};
use tonic_health::ServingStatus;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use towerscope::{
    filter::{FilterRule, PathPattern, RequestFilter, Treatment},
    grpc::{GrpcClientLayer, GrpcLayer},
    request_id::RequestIdLayer,
};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

/// A sampled caller's `traceparent`.
const SAMPLED_PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn total(prefix: &str, grpc_code: &str, operation: &str) -> String {
    format!(
        r#"{prefix}grpc_request_total{{code="200",grpc_code="{grpc_code}",operation="{operation}"}}"#
    )
}

#[tokio::test]
async fn configured_filters_skip_health_checks_and_leave_other_calls_alone() {
    // One list for the HTTP and gRPC servers: the `/healthz` entry matches no gRPC call.
    let (t, exporter) = telemetry(
        "metric: { namespace: app }
trace: { enabled: true, sample_rate: 1, service_name: grpc-filters, otel: { endpoint: '127.0.0.1:1' } }
filters:
  - { path: /healthz, action: skip }
  - { operation: grpc.health.v1.Health/Check, action: skip }",
    );
    let (mut reporter, health) = tonic_health::server::health_reporter();
    let (addr, _stop) = serve(GrpcLayer::from_telemetry(&t), health).await;
    let mut client = client(addr, GrpcClientLayer::new()).await;
    for _ in 0..3 {
        let res = client.check(check("")).await.unwrap();
        // The call itself is untouched: answered, its request id echoed.
        assert_eq!(res.get_ref().status, ServingStatus::Serving as i32);
        assert!(res.metadata().contains_key("x-request-id"));
    }
    reporter
        .set_service_status("svc.A", ServingStatus::Serving)
        .await;
    let mut stream = client.watch(check("svc.A")).await.unwrap().into_inner();
    stream.message().await.unwrap().unwrap();
    reporter.clear_service_status("svc.A").await;
    while stream.message().await.unwrap().is_some() {}

    let text = eventually(t.registry(), "grpc", &total("app_", "OK", WATCH), 1.0).await;
    assert!(
        !text.contains(CHECK),
        "skipped calls have no series:\n{text}"
    );
    let spans = exported(&t, &exporter, WATCH).await;
    let names: Vec<_> = spans.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(names, [WATCH], "no span for the skipped calls");
}

#[tokio::test]
async fn metrics_only_and_a_rate_of_its_own_set_in_code() {
    let (t, exporter) = telemetry(
        "trace: { enabled: true, sample_rate: 1, service_name: grpc-filters, otel: { endpoint: '127.0.0.1:1' } }
filters:
  - { operation: grpc.health.v1.Health/Check, action: skip }",
    );
    // Replaces the configured list: Check is no longer skipped.
    let filter = RequestFilter::new()
        .rule(FilterRule::operation(CHECK).sample_rate(0.0))
        .rule(
            FilterRule::path(PathPattern::new("/grpc.health.v1.Health/*").unwrap()).metrics_only(),
        );
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (addr, _stop) = serve(GrpcLayer::from_telemetry(&t).with_filter(filter), health).await;
    let mut client = client(addr, GrpcClientLayer::new()).await;

    // Watch: metrics only (the path rule). "" is SERVING and never ends: hang up.
    let mut stream = client.watch(check("")).await.unwrap().into_inner();
    stream.message().await.unwrap().unwrap();
    drop(stream);
    // Check: a new trace at the rule's rate, 0: counted, not traced.
    client.check(check("")).await.unwrap();
    // Check with a sampled caller: the caller decides, the span is exported in its trace.
    let mut followed = tonic::Request::new(check(""));
    followed
        .metadata_mut()
        .insert("traceparent", SAMPLED_PARENT.parse().unwrap());
    client.check(followed).await.unwrap();

    let cancelled = r#"grpc_request_total{code="499",grpc_code="CANCELLED",operation="grpc.health.v1.Health/Watch"}"#;
    eventually(t.registry(), "grpc", cancelled, 1.0).await;
    let text = eventually(t.registry(), "grpc", &total("", "OK", CHECK), 2.0).await;
    assert_eq!(sample(&text, cancelled), Some(1.0), "{text}");
    let spans = exported(&t, &exporter, CHECK).await;
    assert_eq!(
        spans.len(),
        1,
        "only the followed call is traced: {spans:?}"
    );
    assert_eq!(
        spans[0].span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(spans[0].parent_span_id.to_string(), "00f067aa0ba902b7");
}

#[tokio::test]
async fn a_predicate_sees_the_grpc_operation_and_the_metadata() {
    let registry = registry();
    let filter = RequestFilter::new().predicate(|head| {
        (head.operation() == Some(CHECK)
            && head.path() == "/grpc.health.v1.Health/Check"
            && head.headers().contains_key("x-probe"))
        .then_some(Treatment::Skip)
    });
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (addr, _stop) = serve(GrpcLayer::new(&registry).with_filter(filter), health).await;
    let mut client = client(addr, GrpcClientLayer::new()).await;
    let mut probe = tonic::Request::new(check(""));
    probe.metadata_mut().insert("x-probe", "1".parse().unwrap());
    client.check(probe).await.unwrap();
    client.check(check("")).await.unwrap();
    client.check(check("")).await.unwrap();
    let text = eventually(&registry, "grpc", &total("", "OK", CHECK), 2.0).await;
    let inflight = r#"grpc_inflight_requests{operation="grpc.health.v1.Health/Check"}"#;
    assert_eq!(sample(&text, inflight), Some(0.0), "{text}");
}

// Single-threaded: the server's tasks run on this thread, under the test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn a_skipped_client_call_is_not_counted_but_carries_the_callers_context_and_id() {
    let (t, exporter) = telemetry(
        "trace: { enabled: true, service_name: grpc-filters, otel: { endpoint: '127.0.0.1:1' } }",
    );
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(t.tracing_layer()));
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (addr, _stop) = serve(GrpcLayer::from_telemetry(&t), health).await;
    let client_registry = registry();
    let skip_check = RequestFilter::new().rule(FilterRule::operation(CHECK));
    let layer = GrpcClientLayer::new()
        .with_registry(&client_registry)
        .with_filter(skip_check);
    let client = client(addr, layer).await;

    // The caller is a handler behind RequestIdLayer, inside a sampled span.
    let handler = ServiceBuilder::new()
        .layer(RequestIdLayer::new())
        .service(service_fn(move |_req: Request<()>| {
            let mut client = client.clone();
            async move {
                let res = client.check(check("")).await.unwrap();
                let mut stream = client.watch(check("")).await.unwrap().into_inner();
                stream.message().await.unwrap().unwrap();
                Ok::<_, Infallible>(Response::new(res.metadata().clone()))
            }
        }));
    let caller = tracing::info_span!("caller");
    let trace_id = caller.context().span().span_context().trace_id();
    let req = Request::get("/")
        .header("x-request-id", "req-skipped-1")
        .body(())
        .unwrap();
    let res = handler.oneshot(req).instrument(caller).await.unwrap();
    // The server's RequestIdLayer got the caller's id with the skipped call and echoed it.
    assert_eq!(res.body().get("x-request-id").unwrap(), "req-skipped-1");

    let spans = exported(&t, &exporter, CHECK).await;
    let server = spans.iter().find(|s| s.name == CHECK).unwrap();
    assert_eq!(server.span_context.trace_id(), trace_id);

    // The client counted the watch (dropped: cancelled), not the check.
    let text = client_registry.render_components(&["client"]).unwrap();
    let watch = r#"grpc_client_request_total{code="499",grpc_code="CANCELLED",operation="grpc.health.v1.Health/Watch"}"#;
    assert_eq!(sample(&text, watch), Some(1.0), "{text}");
    assert!(!text.contains(CHECK), "{text}");
}
