//! `Telemetry::init` installs the registry as the process-wide recorder, once.
//! (Its own test binary: the global recorder is per process.)

use http::{Request, Response};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use towerscope::{metrics::MetricsLayer, Config, Telemetry, TelemetryError};

#[tokio::test]
async fn init_installs_the_global_recorder_once() {
    let config = Config::from_yaml_str("metric: { namespace: app }").unwrap();
    let telemetry = Telemetry::init(&config).unwrap();

    // The service's own macros land in the same registry as the layer's series.
    metrics::counter!("app_jobs_total").increment(2);
    let svc = ServiceBuilder::new()
        .layer(MetricsLayer::with_global_recorder())
        .service(service_fn(|_req: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::new()))
        }));
    drop(
        svc.oneshot(Request::get("/").body(()).unwrap())
            .await
            .unwrap(),
    );
    let text = telemetry.registry().render();
    assert!(text.contains("app_jobs_total 2"), "{text}");
    assert!(
        text.contains(r#"http_request_total{method="GET",code="200",operation="unknown"} 1"#),
        "{text}"
    );

    match Telemetry::init(&config) {
        Err(TelemetryError::Metrics(e)) => {
            assert_eq!(
                e.to_string(),
                "a global metrics recorder is already installed"
            )
        }
        other => panic!("a second global install must fail, got {other:?}"),
    }
    let invalid = Config {
        metric: towerscope::config::MetricConfig {
            max_operations: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    let err = Telemetry::init_local(&invalid).unwrap_err().to_string();
    assert_eq!(
        err,
        "invalid configuration:\n  metric.max_operations: must be at least 1"
    );
}
