//! Time to first byte on the gRPC layers (`with_time_to_first_byte`, `metric.time_to_first_byte`):
//! a server-streaming call whose head comes at once and whose stream ends later is recorded
//! to the head and to the end, on the server and on the client, in each naming; the sampled
//! server span marks the head with an event.
#![cfg(feature = "tonic")]

mod support;

use std::time::Duration;

use support::{
    grpc::{check, client, eventually, exported, registry, serve, telemetry, CHECK, WATCH},
    sample,
};
use tonic_health::ServingStatus;
use towerscope::{
    grpc::{GrpcClientLayer, GrpcLayer, GrpcMetricNames, RESPONSE_HEAD_EVENT},
    metrics::MetricsRegistry,
};

/// The watch stream ends this long after its first message.
const STREAM_DELAY: Duration = Duration::from_millis(300);

/// Watches `svc.A` through `client`: the first message at once, the end of the stream
/// `STREAM_DELAY` later.
async fn watch_a_while(
    client: &mut support::grpc::Client,
    reporter: &mut tonic_health::server::HealthReporter,
) {
    reporter
        .set_service_status("svc.A", ServingStatus::Serving)
        .await;
    let mut stream = client.watch(check("svc.A")).await.unwrap().into_inner();
    stream.message().await.unwrap().unwrap();
    tokio::time::sleep(STREAM_DELAY).await;
    reporter.clear_service_status("svc.A").await;
    while stream.message().await.unwrap().is_some() {}
}

/// `{family}_sum{labels}` and `{family}_count{labels}` in `text`.
fn sum_count(text: &str, family: &str, labels: &str) -> (f64, f64) {
    let value = |part: &str| {
        sample(text, &format!("{family}_{part}{labels}"))
            .unwrap_or_else(|| panic!("{family}_{part}{labels} in\n{text}"))
    };
    (value("sum"), value("count"))
}

/// The head came at once, the end `STREAM_DELAY` later; one call each.
fn assert_head_well_before_end(text: &str, first_byte: &str, duration: &str, labels: &str) {
    let (head, heads) = sum_count(text, first_byte, labels);
    let (end, ends) = sum_count(text, duration, labels);
    assert_eq!((heads, ends), (1.0, 1.0), "{text}");
    assert!(
        end >= STREAM_DELAY.as_secs_f64() && head < end - 0.2,
        "{first_byte}: head {head} s, end {end} s"
    );
}

#[tokio::test]
async fn a_server_stream_head_comes_well_before_its_end_on_server_and_client() {
    let server = registry();
    let (mut reporter, health) = tonic_health::server::health_reporter();
    let layer = GrpcLayer::new(&server).with_time_to_first_byte(true);
    let (addr, _stop) = serve(layer, health).await;
    let client_registry = registry();
    let layer = GrpcClientLayer::new()
        .with_registry(&client_registry)
        .with_time_to_first_byte(true);
    let mut client = client(addr, layer).await;
    watch_a_while(&mut client, &mut reporter).await;

    let watch = format!(r#"{{operation="{WATCH}"}}"#);
    let ok = format!(r#"grpc_request_total{{code="200",grpc_code="OK",operation="{WATCH}"}}"#);
    let text = eventually(&server, "grpc", &ok, 1.0).await;
    assert!(
        text.contains("# TYPE grpc_request_time_to_first_byte_seconds summary"),
        "{text}"
    );
    assert_head_well_before_end(
        &text,
        "grpc_request_time_to_first_byte_seconds",
        "grpc_request_duration_seconds",
        &watch,
    );
    let text = client_registry.render_components(&["client"]).unwrap();
    assert_head_well_before_end(
        &text,
        "grpc_client_request_time_to_first_byte_seconds",
        "grpc_client_request_duration_seconds",
        &watch,
    );

    // A unary call: the head, then the one message and the trailers.
    client.check(check("")).await.unwrap();
    let check_labels = format!(r#"{{operation="{CHECK}"}}"#);
    let ok = format!(r#"grpc_request_total{{code="200",grpc_code="OK",operation="{CHECK}"}}"#);
    for (registry, component, prefix) in [
        (&server, "grpc", "grpc_request"),
        (&client_registry, "client", "grpc_client_request"),
    ] {
        let text = match component {
            "grpc" => eventually(registry, component, &ok, 1.0).await,
            _ => registry.render_components(&[component]).unwrap(),
        };
        let first_byte = format!("{prefix}_time_to_first_byte_seconds");
        let (head, heads) = sum_count(&text, &first_byte, &check_labels);
        let (end, _) = sum_count(&text, &format!("{prefix}_duration_seconds"), &check_labels);
        assert!(
            heads == 1.0 && head <= end,
            "{first_byte}: {head} s, end {end} s"
        );
    }
}

/// One `Check` through layers recording into `server` and `client_registry`.
async fn one_check(layer: GrpcLayer, client_layer: GrpcClientLayer) {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (addr, _stop) = serve(layer, health).await;
    client(addr, client_layer)
        .await
        .check(check(""))
        .await
        .unwrap();
}

#[tokio::test]
async fn every_naming_has_its_family_and_none_is_recorded_unless_asked() {
    // `metric.time_to_first_byte` through from_telemetry, in both config namings.
    for (yaml, server_series, client_series) in [
        (
            "metric: { namespace: app, time_to_first_byte: true }",
            r#"app_grpc_request_time_to_first_byte_seconds_count{operation="grpc.health.v1.Health/Check"}"#,
            r#"app_grpc_client_request_time_to_first_byte_seconds_count{operation="grpc.health.v1.Health/Check"}"#,
        ),
        (
            "metric: { naming: otel, time_to_first_byte: true }",
            r#"rpc_server_time_to_first_byte_seconds_count{rpc_method="grpc.health.v1.Health/Check",rpc_system_name="grpc"}"#,
            r#"rpc_client_time_to_first_byte_seconds_count{rpc_method="grpc.health.v1.Health/Check",rpc_system_name="grpc"}"#,
        ),
    ] {
        let (t, _) = telemetry(yaml);
        one_check(
            GrpcLayer::from_telemetry(&t),
            GrpcClientLayer::from_telemetry(&t),
        )
        .await;
        let text = eventually(t.registry(), "grpc", server_series, 1.0).await;
        if yaml.contains("otel") {
            // A histogram with the conventions' advised buckets, as the duration.
            let bucket = r#"rpc_server_time_to_first_byte_seconds_bucket{rpc_method="grpc.health.v1.Health/Check",rpc_system_name="grpc",le="0.005"}"#;
            assert!(sample(&text, bucket).is_some(), "{text}");
        }
        let text = t.registry().render_components(&["client"]).unwrap();
        assert_eq!(
            sample(&text, client_series),
            Some(1.0),
            "{client_series} in {text}"
        );
    }

    // go-grpc-prometheus' scheme: towerscope's names in its style, its labels.
    let (server, client_registry) = (registry(), registry());
    one_check(
        GrpcLayer::new(&server)
            .with_names(GrpcMetricNames::go_grpc_prometheus())
            .with_time_to_first_byte(true),
        GrpcClientLayer::new()
            .with_metrics(
                &client_registry,
                GrpcMetricNames::go_grpc_prometheus_client(),
                100,
            )
            .with_time_to_first_byte(true),
    )
    .await;
    let labels = r#"{grpc_type="unary",grpc_service="grpc.health.v1.Health",grpc_method="Check"}"#;
    let series = format!("grpc_server_time_to_first_byte_seconds_count{labels}");
    eventually(&server, "grpc", &series, 1.0).await;
    let text = client_registry.render_components(&["client"]).unwrap();
    let series = format!("grpc_client_time_to_first_byte_seconds_count{labels}");
    assert_eq!(sample(&text, &series), Some(1.0), "{series} in {text}");

    // Off by default.
    let (server, client_registry) = (registry(), registry());
    one_check(
        GrpcLayer::new(&server),
        GrpcClientLayer::new().with_registry(&client_registry),
    )
    .await;
    let ok =
        r#"grpc_request_total{code="200",grpc_code="OK",operation="grpc.health.v1.Health/Check"}"#;
    eventually(&server, "grpc", ok, 1.0).await;
    for registry in [&server, &client_registry] {
        assert_first_byte_absent(registry);
    }
}

fn assert_first_byte_absent(registry: &MetricsRegistry) {
    let text = registry.render();
    assert!(!text.contains("first_byte"), "{text}");
}

#[tokio::test]
async fn the_sampled_server_span_marks_the_head_with_an_event() {
    let (t, exporter) = telemetry(
        "metric: { time_to_first_byte: true }
trace: { enabled: true, service_name: grpc-ttfb, otel: { endpoint: '127.0.0.1:1' } }",
    );
    let (mut reporter, health) = tonic_health::server::health_reporter();
    let (addr, _stop) = serve(GrpcLayer::from_telemetry(&t), health).await;
    let mut health_client = client(addr, GrpcClientLayer::new()).await;
    watch_a_while(&mut health_client, &mut reporter).await;
    // A trailers-only answer: its head is its end, and carries the status.
    health_client.check(check("nope")).await.unwrap_err();

    let spans = exported(&t, &exporter, WATCH).await;
    let watch = spans.iter().find(|s| s.name == WATCH).unwrap();
    let events: Vec<_> = watch.events.iter().map(|e| e.name.as_ref()).collect();
    assert_eq!(events, [RESPONSE_HEAD_EVENT]);
    let head = &watch.events[0];
    let attributes: Vec<_> = head
        .attributes
        .iter()
        .map(|kv| format!("{}={}", kv.key, kv.value))
        .collect();
    assert_eq!(attributes, ["http.response.status_code=200"]);
    assert!(
        watch.end_time.duration_since(head.timestamp).unwrap()
            >= STREAM_DELAY - Duration::from_millis(20)
    );

    let spans = exported(&t, &exporter, CHECK).await;
    let not_found = spans.iter().find(|s| s.name == CHECK).unwrap();
    let attributes: Vec<_> = not_found.events[0]
        .attributes
        .iter()
        .map(|kv| format!("{}={}", kv.key, kv.value))
        .collect();
    assert_eq!(
        attributes,
        ["http.response.status_code=200", "rpc.grpc.status_code=5"]
    );
}

#[tokio::test]
async fn no_head_event_without_time_to_first_byte() {
    let (t, exporter) = telemetry(
        "trace: { enabled: true, service_name: grpc-ttfb, otel: { endpoint: '127.0.0.1:1' } }",
    );
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (addr, _stop) = serve(GrpcLayer::from_telemetry(&t), health).await;
    client(addr, GrpcClientLayer::new())
        .await
        .check(check(""))
        .await
        .unwrap();
    let spans = exported(&t, &exporter, CHECK).await;
    assert!(spans[0].events.is_empty(), "{:?}", spans[0].events);
}
