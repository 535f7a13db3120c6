//! `Telemetry::init_subscriber` with `trace.enabled: false` and `RUST_LOG=warn`: nothing wants
//! the server layer's `info` spans, so the layer builds none. (Its own test binary: the
//! subscriber is global.)

use towerscope::{Config, Telemetry};
use tracing::{metadata::Kind, Level};

#[tokio::test]
async fn with_tracing_off_and_rust_log_warn_no_span_is_wanted() {
    // Set before the subscriber reads it; this binary has no other test.
    std::env::set_var("RUST_LOG", "warn");
    let config = Config::from_yaml_str("trace: { enabled: false }").unwrap();
    let telemetry = Telemetry::init_local(&config).unwrap();
    telemetry.init_subscriber().unwrap();
    assert!(
        !tracing::enabled!(kind: Kind::SPAN, target: "towerscope::http", Level::INFO),
        "an info span of the server layer is wanted with tracing off at RUST_LOG=warn"
    );
    assert!(tracing::enabled!(target: "towerscope", Level::WARN));
}
