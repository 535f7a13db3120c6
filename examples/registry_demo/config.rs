//! The demo's configuration file: its own keys beside towerscope's `metric:`, `trace:` and
//! `request_id:` blocks, read with [`WithTelemetry`], so that towerscope's validation messages
//! and field paths are the ones the user sees and a misspelt key of either part is refused.

use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;
use towerscope::{
    config::{ConfigError, ConfigProblem, WithTelemetry},
    Config,
};

/// The demo's configuration.
#[derive(Debug, Clone)]
pub(crate) struct DemoConfig {
    /// Where the API (registry and core) listens.
    pub(crate) listen: SocketAddr,
    /// A sqlx URL; `None` means SQLite in a fresh temporary directory.
    pub(crate) database: Option<String>,
    /// The blob directory; `None` means a fresh temporary directory.
    pub(crate) storage: Option<PathBuf>,
    /// The upstream registry of proxy-cache mode (`http://HOST:PORT`, anonymous access).
    pub(crate) upstream: Option<String>,
    /// An OpenAPI document to label core requests with instead of the demo's own one.
    pub(crate) openapi: Option<PathBuf>,
    /// The SDK's configuration.
    pub(crate) telemetry: Config,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database: None,
            storage: None,
            upstream: None,
            openapi: None,
            telemetry: Config::default(),
        }
    }
}

/// The demo's own keys, as written in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DemoKeys {
    listen: Option<String>,
    database: Option<String>,
    storage: Option<PathBuf>,
    upstream: Option<String>,
    openapi: Option<PathBuf>,
}

impl DemoConfig {
    /// Reads and validates a file.
    pub(crate) fn from_path(path: &std::path::Path) -> Result<Self, ConfigError> {
        Self::checked(WithTelemetry::from_path(path)?)
    }

    /// Parses and validates a YAML document.
    #[cfg(test)]
    pub(crate) fn from_yaml_str(yaml: &str) -> Result<Self, ConfigError> {
        Self::checked(WithTelemetry::from_yaml_str(yaml)?)
    }

    /// The demo's own checks, after towerscope's.
    fn checked(doc: WithTelemetry<DemoKeys>) -> Result<Self, ConfigError> {
        let WithTelemetry { app, telemetry } = doc;
        let mut problems = Vec::new();
        let mut config = Self {
            database: app.database,
            storage: app.storage,
            openapi: app.openapi,
            telemetry,
            ..Self::default()
        };
        if let Some(listen) = app.listen {
            match listen.parse() {
                Ok(addr) => config.listen = addr,
                Err(_) => problems.push(problem(
                    "listen",
                    format!("{listen:?} is not an address like 127.0.0.1:8080"),
                )),
            }
        }
        if let Some(upstream) = &app.upstream {
            if let Err(message) = crate::proxy::validate_upstream(upstream) {
                problems.push(problem("upstream", message));
            }
        }
        config.upstream = app.upstream;
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }
}

fn problem(field: &str, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        field: field.to_owned(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults() {
        let config = DemoConfig::from_yaml_str("").unwrap();
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(config.telemetry.metric.port, 9090);
        assert!(!config.telemetry.trace.enabled);
    }

    #[test]
    fn sdk_blocks_are_validated_by_the_sdk() {
        let err = DemoConfig::from_yaml_str(
            "trace: { enabled: true, jaeger: { endpoint: http://a/api/traces }, otel: { endpoint: a:4318 } }",
        )
        .unwrap_err();
        assert_eq!(err.problems[0].field, "trace", "{err}");
    }

    #[test]
    fn upstream_must_be_an_http_url() {
        let config = DemoConfig::from_yaml_str("upstream: http://127.0.0.1:5001").unwrap();
        assert_eq!(config.upstream.as_deref(), Some("http://127.0.0.1:5001"));
        let err = DemoConfig::from_yaml_str("upstream: 127.0.0.1:5001").unwrap_err();
        assert!(
            err.to_string()
                .contains("upstream: \"127.0.0.1:5001\" is not an http:// or https:// URL"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = DemoConfig::from_yaml_str("lisen: 127.0.0.1:1").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        // A misspelt block of towerscope's is the demo's unknown key: refused, not ignored.
        let err = DemoConfig::from_yaml_str("trcae: { enabled: true }").unwrap_err();
        assert_eq!(err.problems[0].field, "trcae", "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let yaml = "listen: nowhere\nupstream: ftp://x\nmetric: { path: metrics }";
        let err = DemoConfig::from_yaml_str(yaml).unwrap_err();
        // towerscope's blocks are checked first: a demo problem is only found once they pass.
        assert_eq!(err.problems[0].field, "metric.path", "{err}");
        let err = DemoConfig::from_yaml_str("listen: nowhere\nupstream: ftp://x").unwrap_err();
        let fields: Vec<_> = err.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["listen", "upstream"], "{err}");
    }
}
