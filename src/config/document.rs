//! [`WithTelemetry`]: towerscope's blocks inside an application's own configuration file.

use std::path::Path;

use serde::{
    de::{self, DeserializeOwned, Visitor},
    Deserializer,
};
use serde_json::{Map, Value};

use super::{Config, ConfigError, ConfigProblem};

/// The top-level keys that are towerscope's: the blocks of [`Config`].
const BLOCKS: [&str; 4] = ["metric", "trace", "request_id", "filters"];

/// An application's configuration document with towerscope's `metric:`, `trace:`,
/// `request_id:` and `filters:` blocks at its top level beside the application's own keys, as harbor.yml
/// holds Harbor's: the application's part deserialized into `T`, towerscope's into a
/// [`Config`], both checked with the field path of every problem.
///
/// A top-level key that is neither towerscope's nor a field of `T` is an error, whether or
/// not `T` denies unknown fields: a misspelt block (`trcae:`) cannot silently turn tracing off.
/// (With `#[serde(flatten)] telemetry: Config` in `T` it would: serde hands a flattened struct
/// only the keys it knows, and drops the others.) Every problem is reported at once: the
/// application's (the first serde error in its part, as serde stops there) and towerscope's
/// validation, each with its path from the document's root. The `OTEL_*` variables are
/// applied later, by [`Telemetry::init`](crate::Telemetry::init), as for any [`Config`].
///
/// To keep towerscope's blocks under a key of its own instead (`telemetry: { metric: ... }`),
/// give `T` a field `telemetry: Config` and check it with
/// [`Config::validate_at`]`("telemetry")`.
///
/// # Example
///
/// ```
/// use serde::Deserialize;
/// use towerscope::config::WithTelemetry;
///
/// #[derive(Debug, Deserialize)]
/// struct App {
///     listen: String,
///     #[serde(default)]
///     database: Option<String>,
/// }
///
/// let yaml = r#"
/// listen: 127.0.0.1:8080
/// metric: { namespace: harbor, subsystem: core }
/// trace: { enabled: true, otel: { endpoint: "127.0.0.1:4318", insecure: true } }
/// "#;
/// let WithTelemetry { app, telemetry } = WithTelemetry::<App>::from_yaml_str(yaml).unwrap();
/// assert_eq!(app.listen, "127.0.0.1:8080");
/// assert_eq!(telemetry.metric.prefix(), "harbor_core_");
///
/// // A misspelt block, and a problem in each part: all reported, each with its field.
/// let yaml = "listen: 8080\ntrcae: { enabled: true }\nmetric: { path: metrics }\n";
/// let err = WithTelemetry::<App>::from_yaml_str(yaml).unwrap_err();
/// assert_eq!(err.to_string(), "invalid configuration:\n  \
///     trcae: unknown key, expected one of: listen, database, metric, trace, request_id, filters\n  \
///     listen: invalid type: integer `8080`, expected a string\n  \
///     metric.path: must start with '/' (got \"metrics\")");
/// ```
#[derive(Debug, Clone)]
pub struct WithTelemetry<T> {
    /// The application's part of the document.
    pub app: T,
    /// towerscope's blocks, validated.
    pub telemetry: Config,
}

impl<T: DeserializeOwned> WithTelemetry<T> {
    /// Parses a YAML document and checks both parts (feature `yaml`, on by default).
    #[cfg(feature = "yaml")]
    pub fn from_yaml_str(yaml: &str) -> Result<Self, ConfigError> {
        let root: Value =
            serde_norway::from_str(yaml).map_err(|e| ConfigError::one("(root)", e.to_string()))?;
        Self::from_value(root)
    }

    /// Parses a JSON document and checks both parts (no feature needed).
    pub fn from_json_str(json: &str) -> Result<Self, ConfigError> {
        let root: Value =
            serde_json::from_str(json).map_err(|e| ConfigError::one("(root)", e.to_string()))?;
        Self::from_value(root)
    }

    /// Parses a TOML document and checks both parts (feature `toml`).
    #[cfg(feature = "toml")]
    pub fn from_toml_str(toml: &str) -> Result<Self, ConfigError> {
        let root: Value = toml::from_str(toml)
            .map_err(|e| ConfigError::one("(root)", e.to_string().trim_end().to_owned()))?;
        Self::from_value(root)
    }

    /// Reads a file: JSON for `.json`, TOML for `.toml` (feature `toml`), YAML otherwise
    /// (feature `yaml`).
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let (format, text) = read(path.as_ref())?;
        match format {
            Format::Json => Self::from_json_str(&text),
            #[cfg(feature = "toml")]
            Format::Toml => Self::from_toml_str(&text),
            #[cfg(feature = "yaml")]
            Format::Yaml => Self::from_yaml_str(&text),
        }
    }

    /// Splits a parsed document (a mapping, or nothing) into its two parts and checks both.
    fn from_value(root: Value) -> Result<Self, ConfigError> {
        let map = match root {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => {
                return Err(ConfigError::one(
                    "(root)",
                    format!("expected a mapping of keys, got {}", kind(&other)),
                ))
            }
        };
        let (ours, mut theirs): (Map<String, Value>, Map<String, Value>) = map
            .into_iter()
            .partition(|(k, _)| BLOCKS.contains(&k.as_str()));
        let mut problems = Vec::new();
        if let Some(fields) = struct_fields::<T>() {
            let expected: Vec<&str> = fields.iter().copied().chain(BLOCKS).collect();
            // Reported here, with towerscope's blocks among the expected keys, and taken out
            // so that a `T` denying unknown fields does not report them again.
            theirs.retain(|key, _| {
                let known = fields.contains(&key.as_str());
                if !known {
                    problems.push(ConfigProblem {
                        field: key.clone(),
                        message: format!("unknown key, expected one of: {}", expected.join(", ")),
                    });
                }
                known
            });
        }
        let app = deserialize::<T>(Value::Object(theirs)).map_err(|e| problems.extend(e));
        let telemetry = deserialize::<Config>(Value::Object(ours))
            .and_then(|c| c.validate().map(|()| c).map_err(|e| e.problems))
            .map_err(|e| problems.extend(e));
        // The application's problems first (unknown keys, then serde's), then towerscope's.
        problems.sort_by_key(|p| BLOCKS.iter().any(|b| p.field.starts_with(b)));
        match (app, telemetry) {
            (Ok(app), Ok(telemetry)) if problems.is_empty() => Ok(Self { app, telemetry }),
            _ => Err(ConfigError { problems }),
        }
    }
}

/// The formats of a configuration file this build reads.
pub(super) enum Format {
    Json,
    #[cfg(feature = "toml")]
    Toml,
    #[cfg(feature = "yaml")]
    Yaml,
}

/// A file's text and format (by its extension: `.json`, `.toml`, anything else YAML); an
/// error when it cannot be read or its format's feature is off.
pub(super) fn read(path: &Path) -> Result<(Format, String), ConfigError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let format = match ext {
        "json" => Format::Json,
        #[cfg(feature = "toml")]
        "toml" => Format::Toml,
        #[cfg(not(feature = "toml"))]
        "toml" => return Err(unsupported(path, "TOML", "toml")),
        #[cfg(feature = "yaml")]
        _ => Format::Yaml,
        #[cfg(not(feature = "yaml"))]
        _ => return Err(unsupported(path, "YAML", "yaml")),
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::one("(file)", format!("cannot read {}: {e}", path.display())))?;
    Ok((format, text))
}

#[cfg(any(not(feature = "toml"), not(feature = "yaml")))]
fn unsupported(path: &Path, format: &str, feature: &str) -> ConfigError {
    ConfigError::one(
        "(file)",
        format!(
            "{} is read as {format}, which needs towerscope's `{feature}` feature (or write it as .json)",
            path.display()
        ),
    )
}

/// `T` from `value`, or its first problem with its path.
fn deserialize<T: DeserializeOwned>(value: Value) -> Result<T, Vec<ConfigProblem>> {
    serde_path_to_error::deserialize(value).map_err(|e| ConfigError::from_path_error(e).problems)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The field names of `T` when it deserializes as a struct (what `#[derive(Deserialize)]`
/// does), `None` otherwise (a map takes any key). Asked of `T` itself, not of a document.
fn struct_fields<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    let mut fields = None;
    let _ = T::deserialize(FieldProbe(&mut fields));
    fields
}

/// A deserializer that only notes the fields a struct asks for, then stops.
struct FieldProbe<'a>(&'a mut Option<&'static [&'static str]>);

#[derive(Debug)]
struct Probed;

impl std::fmt::Display for Probed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("probed")
    }
}

impl std::error::Error for Probed {}

impl de::Error for Probed {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Probed
    }
}

impl<'de> Deserializer<'de> for FieldProbe<'_> {
    type Error = Probed;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Probed> {
        *self.0 = Some(fields);
        Err(Probed)
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Probed> {
        Err(Probed)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

impl Config {
    /// [`validate`](Self::validate), with every field named from `at`, this configuration's
    /// position in a larger document (`at = "telemetry"`: `telemetry.metric.path`). For an
    /// application that keeps towerscope's blocks under a key of its own.
    ///
    /// ```
    /// use towerscope::Config;
    ///
    /// let config = Config::from_yaml_str("metric: { port: 9090 }").unwrap();
    /// assert!(config.validate_at("telemetry").is_ok());
    /// let mut config = config;
    /// config.metric.path = "metrics".into();
    /// let err = config.validate_at("telemetry").unwrap_err();
    /// assert_eq!(err.problems[0].field, "telemetry.metric.path");
    /// ```
    pub fn validate_at(&self, at: &str) -> Result<(), ConfigError> {
        self.validate().map_err(|mut e| {
            if !at.is_empty() {
                for p in &mut e.problems {
                    p.field = format!("{at}.{}", p.field);
                }
            }
            e
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct App {
        listen: String,
        #[serde(default)]
        workers: Option<u32>,
    }

    #[test]
    fn each_part_gets_its_keys() {
        let yaml = "listen: a\nworkers: 4\ntrace: { enabled: false }\nrequest_id: { header: X-Id }";
        let doc = WithTelemetry::<App>::from_yaml_str(yaml).unwrap();
        assert_eq!((doc.app.listen.as_str(), doc.app.workers), ("a", Some(4)));
        assert_eq!(doc.telemetry.request_id.header.as_str(), "x-id");
    }

    #[test]
    fn a_misspelt_block_is_an_error_even_when_the_app_allows_unknown_keys() {
        // `App` does not deny unknown fields; the document still refuses the key.
        let err = WithTelemetry::<App>::from_yaml_str("listen: a\ntrcae: {}").unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(err.problems[0].field, "trcae");
        // A map takes any key: nothing to check against.
        let doc = WithTelemetry::<BTreeMap<String, String>>::from_yaml_str("anything: x").unwrap();
        assert_eq!(doc.app["anything"], "x");
    }

    #[test]
    fn problems_in_toml_name_their_fields_too() {
        let toml = "listen = \"a\"\n[trace]\nenabled = true\nsample_rate = 2.0\n";
        let err = WithTelemetry::<App>::from_toml_str(toml).unwrap_err();
        let fields: Vec<_> = err.problems.iter().map(|p| p.field.as_str()).collect();
        assert!(fields.contains(&"trace.sample_rate"), "{err}");
    }

    #[test]
    fn a_document_that_is_not_a_mapping_is_refused() {
        let err = WithTelemetry::<App>::from_yaml_str("- a\n- b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid configuration:\n  (root): expected a mapping of keys, got a list"
        );
        assert!(WithTelemetry::<BTreeMap<String, String>>::from_yaml_str("").is_ok());
    }
}
