//! The demo's configuration file: its own keys plus towerscope's `metric:`, `trace:` and
//! `request_id:` blocks, which are handed to [`towerscope::Config`] unchanged so that its
//! validation messages and field paths are the ones the user sees.

use std::{net::SocketAddr, path::PathBuf};

use serde_norway::{Mapping, Value};
use towerscope::{config::ConfigError, Config};

/// The SDK's blocks, passed through to [`Config::from_yaml_str`].
const SDK_KEYS: [&str; 3] = ["metric", "trace", "request_id"];

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

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DemoConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not YAML, or a demo key has the wrong type.
    #[error("invalid configuration:\n  {field}: {message}")]
    Field { field: String, message: String },
    /// The SDK's blocks are invalid: the SDK's own message.
    #[error(transparent)]
    Sdk(#[from] ConfigError),
}

fn field_error(field: &str, message: impl Into<String>) -> DemoConfigError {
    DemoConfigError::Field {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn string_field(map: &Mapping, key: &str) -> Result<Option<String>, DemoConfigError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(field_error(key, "expected a string")),
    }
}

impl DemoConfig {
    /// Reads and validates a file.
    pub(crate) fn from_path(path: &std::path::Path) -> Result<Self, DemoConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| DemoConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml_str(&text)
    }

    /// Parses and validates a YAML document.
    pub(crate) fn from_yaml_str(yaml: &str) -> Result<Self, DemoConfigError> {
        let value: Value =
            serde_norway::from_str(yaml).map_err(|e| field_error("(root)", e.to_string()))?;
        let map = match value {
            Value::Mapping(map) => map,
            Value::Null => Mapping::new(),
            _ => return Err(field_error("(root)", "expected a mapping")),
        };
        const DEMO_KEYS: [&str; 5] = ["listen", "database", "storage", "upstream", "openapi"];
        let mut sdk = Mapping::new();
        for (key, value) in &map {
            let Some(name) = key.as_str() else {
                return Err(field_error("(root)", "keys must be strings"));
            };
            if SDK_KEYS.contains(&name) {
                sdk.insert(key.clone(), value.clone());
            } else if !DEMO_KEYS.contains(&name) {
                // A typo must not be silently ignored.
                return Err(field_error(
                    name,
                    format!(
                        "unknown key, expected one of {}",
                        [&DEMO_KEYS[..], &SDK_KEYS[..]].concat().join(", ")
                    ),
                ));
            }
        }
        let mut config = Self::default();
        if let Some(listen) = string_field(&map, "listen")? {
            config.listen = listen.parse().map_err(|_| {
                field_error(
                    "listen",
                    format!("{listen:?} is not an address like 127.0.0.1:8080"),
                )
            })?;
        }
        config.database = string_field(&map, "database")?;
        config.storage = string_field(&map, "storage")?.map(PathBuf::from);
        config.upstream = string_field(&map, "upstream")?;
        if let Some(upstream) = &config.upstream {
            crate::proxy::validate_upstream(upstream).map_err(|m| field_error("upstream", m))?;
        }
        config.openapi = string_field(&map, "openapi")?.map(PathBuf::from);
        let sdk_yaml = serde_norway::to_string(&Value::Mapping(sdk))
            .map_err(|e| field_error("(root)", e.to_string()))?;
        config.telemetry = Config::from_yaml_str(&sdk_yaml)?;
        Ok(config)
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
        assert!(matches!(err, DemoConfigError::Sdk(_)), "{err}");
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
    }
}
