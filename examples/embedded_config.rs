//! Run with: cargo run --example embedded_config [-- app.yml]
//!
//! An application's own configuration file that holds towerscope's `metric:`, `trace:` and
//! `request_id:` blocks beside its own keys, as harbor.yml holds Harbor's, read with
//! `towerscope::config::WithTelemetry`: the application's part into its own struct, towerscope's
//! validated, every problem reported with its field, and a misspelt block refused rather than
//! silently ignored. Without a file it reads the document below; try breaking it (`trcae:`,
//! `port: x`, `sample_rate: 2`) and see the error returned from `main`.

use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;
use towerscope::{config::WithTelemetry, Telemetry};

/// The application's own keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppConfig {
    listen: SocketAddr,
    #[serde(default)]
    database_url: Option<String>,
    #[serde(default = "default_timeout")]
    request_timeout_secs: u64,
}

fn default_timeout() -> u64 {
    30
}

const DOCUMENT: &str = r#"
listen: 127.0.0.1:8080
database_url: postgres://app@127.0.0.1/app
metric:
  port: 9090
  namespace: shop
  subsystem: api
trace:
  enabled: true
  service_name: shop-api
  sample_rate: 0.25
  otel: { endpoint: "127.0.0.1:4318", insecure: true }
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let doc = match std::env::args().nth(1) {
        Some(path) => WithTelemetry::<AppConfig>::from_path(path)?,
        None => WithTelemetry::<AppConfig>::from_yaml_str(DOCUMENT)?,
    };
    let WithTelemetry { app, telemetry } = doc;
    println!(
        "the application: listen on {}, database {:?}, requests time out after {:?}",
        app.listen,
        app.database_url,
        Duration::from_secs(app.request_timeout_secs)
    );
    println!(
        "towerscope: metrics on {}{} with prefix {:?}; tracing {} at rate {}",
        telemetry.metric.socket_addr(),
        telemetry.metric.path,
        telemetry.metric.prefix(),
        if telemetry.trace.enabled { "on" } else { "off" },
        telemetry.trace.sample_rate
    );
    // The `OTEL_*` variables apply here, as for any configuration.
    let telemetry = Telemetry::init_local(&telemetry)?;
    println!(
        "span pipeline built: {}",
        telemetry.trace_pipeline().is_some()
    );
    Ok(())
}
