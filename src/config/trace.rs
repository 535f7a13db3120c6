//! The `trace:` block: Harbor's keys for span export, plus towerscope's.

use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue, Uri};
use serde::Deserialize;

use super::ConfigProblem;
pub use crate::trace::propagation::Propagator;

/// The `trace:` block (harbor.yml's keys, plus `service_name`, `otel.protocol`,
/// `otel.headers`, `propagators`, `max_queue_size`, `shutdown_timeout_secs` and
/// `echo_traceparent`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TraceConfig {
    /// Whether spans are exported. Defaults to `false` (as in harbor.yml).
    pub enabled: bool,
    /// `service.name` of the resource. Defaults to `unknown_service` (OpenTelemetry's
    /// default): set it.
    pub service_name: Option<String>,
    /// `service.version` of the resource. Defaults to none.
    pub service_version: Option<String>,
    /// Ratio of new traces sampled, 0..=1; children follow their parent. Defaults to `1`.
    pub sample_rate: f64,
    /// `service.namespace` of the resource. Defaults to none.
    pub namespace: Option<String>,
    /// Extra resource attributes. Defaults to none.
    pub attributes: BTreeMap<String, String>,
    /// Export to Jaeger (exactly one of `jaeger` and `otel`).
    pub jaeger: Option<JaegerConfig>,
    /// Export over OTLP (exactly one of `jaeger` and `otel`).
    pub otel: Option<OtelConfig>,
    /// Propagation formats, read in order on requests and all written on outgoing calls:
    /// `tracecontext`, `baggage`, `jaeger` (`uber-trace-id`). Defaults to
    /// `[tracecontext, baggage]`.
    pub propagators: Vec<Propagator>,
    /// Spans waiting for export at most; further spans are dropped and counted.
    /// Defaults to `2048`.
    pub max_queue_size: usize,
    /// How long `shutdown` waits for the last export. Defaults to `5`.
    pub shutdown_timeout_secs: u64,
    /// Whether responses carry a `traceparent` header naming the server span. Defaults to
    /// `false`.
    pub echo_traceparent: bool,
}

impl Default for TraceConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            service_name: None,
            service_version: None,
            sample_rate: 1.0,
            namespace: None,
            attributes: BTreeMap::new(),
            jaeger: None,
            otel: None,
            propagators: vec![Propagator::TraceContext, Propagator::Baggage],
            max_queue_size: 2048,
            shutdown_timeout_secs: 5,
            echo_traceparent: false,
        }
    }
}

/// `trace.jaeger`: a collector endpoint (`endpoint`, HTTP) or an agent (`agent_host`, UDP),
/// exactly one.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JaegerConfig {
    /// Collector URL, e.g. `http://127.0.0.1:14268/api/traces`.
    pub endpoint: Option<String>,
    /// Basic auth user for the collector (with `password`).
    pub username: Option<String>,
    /// Basic auth password for the collector (with `username`).
    pub password: Option<String>,
    /// Agent host, e.g. `127.0.0.1`.
    pub agent_host: Option<String>,
    /// Agent port. Defaults to `6831`.
    pub agent_port: Option<u16>,
    /// Seconds a collector request may take. Defaults to `10`.
    pub timeout: Option<u64>,
}

/// `trace.otel`: OTLP export.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtelConfig {
    /// `host:port` (Harbor's form, joined with `url_path` for HTTP) or a full `http://` URL.
    pub endpoint: String,
    /// Path appended to a `host:port` endpoint for HTTP. Defaults to `/v1/traces`.
    pub url_path: String,
    /// `http` (http/protobuf, Harbor's) or `grpc`. Defaults to `http`.
    pub protocol: OtlpProtocol,
    /// gzip the export requests. Defaults to `false`.
    pub compression: bool,
    /// Plain text instead of TLS for a `host:port` endpoint (`http://` rather than `https://`).
    /// Defaults to `false` (TLS, with the system's root certificates; `SSL_CERT_FILE` is
    /// honoured), as in Harbor. TLS needs the `tls` feature (on by default).
    pub insecure: bool,
    /// Seconds one export may take. Defaults to `10`.
    pub timeout: u64,
    /// Headers sent with every export (e.g. an API key).
    pub headers: BTreeMap<String, String>,
}

impl Default for OtelConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            url_path: "/v1/traces".to_owned(),
            protocol: OtlpProtocol::Http,
            compression: false,
            insecure: false,
            timeout: 10,
            headers: BTreeMap::new(),
        }
    }
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// http/protobuf.
    Http,
    /// gRPC.
    Grpc,
}

impl OtelConfig {
    /// The URL export requests go to: `endpoint` as given when it has a scheme, otherwise
    /// `https://{endpoint}` (`http://` when `insecure`) followed, for HTTP, by `url_path`
    /// (Harbor's form).
    pub fn url(&self) -> String {
        if self.endpoint.contains("://") {
            return self.endpoint.clone();
        }
        let scheme = if self.insecure { "http" } else { "https" };
        match self.protocol {
            OtlpProtocol::Http => format!("{scheme}://{}{}", self.endpoint, self.url_path),
            OtlpProtocol::Grpc => format!("{scheme}://{}", self.endpoint),
        }
    }
}

/// Default Jaeger agent port (compact Thrift over UDP).
pub const DEFAULT_JAEGER_AGENT_PORT: u16 = 6831;

fn check_http_url(url: &str) -> Result<(), String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("is not a valid URL ({e}): {url:?}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") if cfg!(feature = "tls") => {}
        Some("https") => {
            return Err(format!(
                "https needs the `tls` feature of towerscope, which this build lacks: {url:?}"
            ))
        }
        _ => return Err(format!("must be an http:// or https:// URL: {url:?}")),
    }
    match uri.authority() {
        Some(a) if !a.host().is_empty() => Ok(()),
        _ => Err(format!("has no host: {url:?}")),
    }
}

impl TraceConfig {
    pub(super) fn check(&self, problems: &mut Vec<ConfigProblem>) {
        let mut problem = |field: &str, message: String| {
            problems.push(ConfigProblem {
                field: format!("trace{}{field}", if field.is_empty() { "" } else { "." }),
                message,
            })
        };
        if !(0.0..=1.0).contains(&self.sample_rate) {
            problem(
                "sample_rate",
                format!("must be between 0 and 1 (got {})", self.sample_rate),
            );
        }
        if let Some(name) = &self.service_name {
            if name.trim().is_empty() {
                problem("service_name", "must not be empty".into());
            }
        }
        if self.max_queue_size == 0 {
            problem("max_queue_size", "must be at least 1".into());
        }
        if self.shutdown_timeout_secs == 0 {
            problem("shutdown_timeout_secs", "must be at least 1".into());
        }
        match (&self.jaeger, &self.otel) {
            (None, None) if self.enabled => problem(
                "",
                "tracing is enabled but no exporter is set: add trace.jaeger or trace.otel".into(),
            ),
            (Some(_), Some(_)) => problem(
                "",
                "set exactly one exporter: trace.jaeger or trace.otel, not both".into(),
            ),
            _ => {}
        }
        if let Some(j) = &self.jaeger {
            match (&j.endpoint, &j.agent_host) {
                (Some(_), Some(_)) => problem(
                    "jaeger",
                    "set exactly one of endpoint (collector over HTTP) and agent_host (agent over UDP), not both".into(),
                ),
                (None, None) => problem(
                    "jaeger",
                    "set endpoint (collector over HTTP) or agent_host (agent over UDP)".into(),
                ),
                _ => {}
            }
            if let Some(endpoint) = &j.endpoint {
                if let Err(e) = check_http_url(endpoint) {
                    problem("jaeger.endpoint", e);
                }
            }
            if let Some(host) = &j.agent_host {
                if host.trim().is_empty() || host.contains(['/', ' ']) {
                    problem(
                        "jaeger.agent_host",
                        format!("must be a host name or IP address (got {host:?})"),
                    );
                }
                if j.agent_port == Some(0) {
                    problem("jaeger.agent_port", "must not be 0".into());
                }
            } else if j.agent_port.is_some() {
                problem("jaeger.agent_port", "is only used with agent_host".into());
            }
            match (&j.username, &j.password) {
                (Some(_), None) => {
                    problem("jaeger.password", "is required when username is set".into())
                }
                (None, Some(_)) => {
                    problem("jaeger.username", "is required when password is set".into())
                }
                (Some(_), Some(_)) if j.endpoint.is_none() => problem(
                    "jaeger.username",
                    "basic auth applies to the collector endpoint only".into(),
                ),
                _ => {}
            }
            if j.timeout == Some(0) {
                problem("jaeger.timeout", "must be at least 1".into());
            }
        }
        if let Some(o) = &self.otel {
            if o.endpoint.trim().is_empty() {
                problem("otel.endpoint", "must be set, e.g. 127.0.0.1:4318".into());
            } else if let Err(e) = check_http_url(&o.url()) {
                problem("otel.endpoint", e);
            }
            if !o.url_path.starts_with('/') {
                problem(
                    "otel.url_path",
                    format!("must start with '/' (got {:?})", o.url_path),
                );
            }
            if o.timeout == 0 {
                problem("otel.timeout", "must be at least 1".into());
            }
            for (name, value) in &o.headers {
                if HeaderName::try_from(name.as_str()).is_err() {
                    problem(
                        &format!("otel.headers.{name}"),
                        "is not a valid header name".into(),
                    );
                } else if HeaderValue::try_from(value.as_str()).is_err() {
                    problem(
                        &format!("otel.headers.{name}"),
                        "is not a valid header value".into(),
                    );
                }
            }
        }
    }

    /// Applies the standard OpenTelemetry environment variables, read through `lookup`:
    /// `OTEL_SDK_DISABLED`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
    /// `OTEL_TRACES_SAMPLER_ARG`, `OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT`,
    /// `OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL`, `OTEL_EXPORTER_OTLP[_TRACES]_HEADERS` and
    /// `OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT` (milliseconds). An OTLP endpoint from the
    /// environment enables OTLP export (and tracing). Values that do not parse are reported as
    /// problems of the variable.
    pub(super) fn apply_env(
        &mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<ConfigProblem>,
    ) {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let traces_or_generic = |suffix: &str| {
            var(&format!("OTEL_EXPORTER_OTLP_TRACES_{suffix}"))
                .map(|v| (v, true))
                .or_else(|| var(&format!("OTEL_EXPORTER_OTLP_{suffix}")).map(|v| (v, false)))
        };
        let mut bad = |name: &str, message: String| {
            problems.push(ConfigProblem {
                field: format!("${name}"),
                message,
            })
        };
        if let Some(v) = var("OTEL_SDK_DISABLED") {
            if v.trim().eq_ignore_ascii_case("true") {
                self.enabled = false;
            }
        }
        if let Some(v) = var("OTEL_SERVICE_NAME") {
            self.service_name = Some(v);
        }
        if let Some(v) = var("OTEL_RESOURCE_ATTRIBUTES") {
            match parse_key_values(&v) {
                Ok(pairs) => self.attributes.extend(pairs),
                Err(e) => bad("OTEL_RESOURCE_ATTRIBUTES", e),
            }
        }
        if let Some(v) = var("OTEL_TRACES_SAMPLER_ARG") {
            match v.trim().parse::<f64>() {
                Ok(rate) => self.sample_rate = rate,
                Err(_) => bad("OTEL_TRACES_SAMPLER_ARG", format!("is not a number: {v:?}")),
            }
        }
        let protocol = traces_or_generic("PROTOCOL").map(|(v, _)| v);
        let protocol = match protocol.as_deref().map(str::trim) {
            None => None,
            Some("grpc") => Some(OtlpProtocol::Grpc),
            Some("http/protobuf") => Some(OtlpProtocol::Http),
            Some(other) => {
                bad(
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                    format!("must be grpc or http/protobuf (got {other:?})"),
                );
                None
            }
        };
        if let Some((endpoint, signal_specific)) = traces_or_generic("ENDPOINT") {
            let otel = self.otel.get_or_insert_with(OtelConfig::default);
            if let Some(p) = protocol {
                otel.protocol = p;
            }
            let endpoint = endpoint.trim().trim_end_matches('/').to_owned();
            // The generic variable names the collector; the spec appends the signal path for
            // HTTP. The signal-specific one is used as it is.
            otel.endpoint = if !signal_specific && otel.protocol == OtlpProtocol::Http {
                format!("{endpoint}{}", otel.url_path)
            } else {
                endpoint
            };
            if !otel.endpoint.contains("://") {
                otel.endpoint = format!("http://{}", otel.endpoint);
            }
            self.enabled = true;
        } else if let (Some(p), Some(otel)) = (protocol, self.otel.as_mut()) {
            otel.protocol = p;
        }
        if let Some((headers, _)) = traces_or_generic("HEADERS") {
            match parse_key_values(&headers) {
                Ok(pairs) => {
                    if let Some(otel) = self.otel.as_mut() {
                        otel.headers.extend(pairs);
                    }
                }
                Err(e) => bad("OTEL_EXPORTER_OTLP_HEADERS", e),
            }
        }
        if let Some((timeout, _)) = traces_or_generic("TIMEOUT") {
            match timeout.trim().parse::<u64>() {
                Ok(ms) => {
                    if let Some(otel) = self.otel.as_mut() {
                        otel.timeout = ms.div_ceil(1000).max(1);
                    }
                }
                Err(_) => bad(
                    "OTEL_EXPORTER_OTLP_TIMEOUT",
                    format!("is not milliseconds: {timeout:?}"),
                ),
            }
        }
    }
}

/// Parses the W3C-baggage-like `k1=v1,k2=v2` lists of the OTEL_* variables (values
/// percent-decoded).
fn parse_key_values(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not key=value"))?;
            let k = k.trim();
            if k.is_empty() {
                return Err(format!("{item:?} has an empty key"));
            }
            let v = percent_encoding::percent_decode_str(v.trim())
                .decode_utf8()
                .map_err(|_| format!("{item:?} is not UTF-8 once decoded"))?;
            Ok((k.to_owned(), v.into_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::config::{Config, OtlpProtocol};

    fn err(yaml: &str) -> String {
        Config::from_yaml_str(yaml).unwrap_err().to_string()
    }

    #[test]
    fn harbor_trace_blocks_parse() {
        let jaeger = Config::from_yaml_str(
            "trace:\n  enabled: true\n  sample_rate: 1\n  namespace: ''\n  attributes:\n    application: harbor\n  jaeger:\n    endpoint: http://hostname:14268/api/traces\n    username: u\n    password: p\n",
        )
        .unwrap();
        assert!(jaeger.trace.jaeger.is_some());
        let otel = Config::from_yaml_str(
            "trace:\n  enabled: true\n  otel:\n    endpoint: hostname:4318\n    url_path: /v1/traces\n    compression: false\n    insecure: true\n    timeout: 10\n",
        )
        .unwrap();
        let o = otel.trace.otel.unwrap();
        assert_eq!(o.url(), "http://hostname:4318/v1/traces");
        let tls = Config::from_yaml_str("trace: { otel: { endpoint: 'hostname:4318' } }").unwrap();
        assert_eq!(
            tls.trace.otel.unwrap().url(),
            "https://hostname:4318/v1/traces",
            "TLS unless insecure"
        );
        assert_eq!(o.protocol, OtlpProtocol::Http);
        let agent = Config::from_yaml_str(
            "trace: { enabled: true, jaeger: { agent_host: 127.0.0.1, agent_port: 6831 } }",
        )
        .unwrap();
        assert_eq!(agent.trace.jaeger.unwrap().agent_port, Some(6831));
        // Disabled tracing may name no exporter (harbor.yml ships that way).
        Config::from_yaml_str("trace: { enabled: false }").unwrap();
    }

    #[test]
    fn invalid_trace_configurations_name_their_fields() {
        let table: &[(&str, &str)] = &[
            ("trace: { enabled: true }", "trace: tracing is enabled but no exporter is set: add trace.jaeger or trace.otel"),
            ("trace: { enabled: true, jaeger: { agent_host: a }, otel: { endpoint: 'b:1' } }", "trace: set exactly one exporter: trace.jaeger or trace.otel, not both"),
            ("trace: { jaeger: { endpoint: 'http://a:1/api/traces', agent_host: a } }", "trace.jaeger: set exactly one of endpoint (collector over HTTP) and agent_host (agent over UDP), not both"),
            ("trace: { jaeger: { } }", "trace.jaeger: set endpoint (collector over HTTP) or agent_host (agent over UDP)"),
            ("trace: { sample_rate: 1.5 }", "trace.sample_rate: must be between 0 and 1 (got 1.5)"),
            ("trace: { sample_rate: -0.1 }", "trace.sample_rate: must be between 0 and 1 (got -0.1)"),
            ("trace: { jaeger: { endpoint: 'not a url' } }", "trace.jaeger.endpoint: is not a valid URL"),
            ("trace: { jaeger: { endpoint: 'ftp://a:1/x' } }", "trace.jaeger.endpoint: must be an http:// or https:// URL"),
            ("trace: { otel: { endpoint: 'a b:1' } }", "trace.otel.endpoint: is not a valid URL"),
            ("trace: { otel: { } }", "trace.otel.endpoint: must be set"),
            ("trace: { jaeger: { endpoint: 'http://a:1/x', username: u } }", "trace.jaeger.password: is required when username is set"),
            ("trace: { jaeger: { endpoint: 'http://a:1/x', password: p } }", "trace.jaeger.username: is required when password is set"),
            ("trace: { jaeger: { agent_host: a, username: u, password: p } }", "trace.jaeger.username: basic auth applies to the collector endpoint only"),
            ("trace: { jaeger: { agent_host: a, agent_port: 0 } }", "trace.jaeger.agent_port: must not be 0"),
            ("trace: { jaeger: { endpoint: 'http://a:1/x', agent_port: 6831 } }", "trace.jaeger.agent_port: is only used with agent_host"),
            ("trace: { otel: { endpoint: 'a:1', url_path: traces } }", "trace.otel.url_path: must start with '/'"),
            ("trace: { otel: { endpoint: 'a:1', timeout: 0 } }", "trace.otel.timeout: must be at least 1"),
            ("trace: { otel: { endpoint: 'a:1', protocol: json } }", "trace.otel.protocol: unknown variant `json`"),
            ("trace: { otel: { endpoint: 'a:1', headers: { 'bad header': x } } }", "trace.otel.headers.bad header: is not a valid header name"),
            ("trace: { max_queue_size: 0 }", "trace.max_queue_size: must be at least 1"),
            ("trace: { propagators: [b3] }", "trace.propagators[0]: unknown variant `b3`"),
            ("trace: { enable: true }", "trace.enable: unknown field `enable`"),
            ("trace: { jaeger: { agent_host: a, agentport: 1 } }", "trace.jaeger.agentport: unknown field `agentport`"),
        ];
        for (yaml, expected) in table {
            let got = err(yaml);
            assert!(
                got.contains(expected),
                "{yaml}\n  expected: {expected}\n  got: {got}"
            );
        }
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn otel_environment_overrides_the_file() {
        let mut c = Config::from_yaml_str(
            "trace: { enabled: true, service_name: file, sample_rate: 1, otel: { endpoint: 'file:4318' } }",
        )
        .unwrap();
        c.apply_env_overrides(env(&[
            ("OTEL_SERVICE_NAME", "from-env"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=staging,team=a%20b",
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=k1"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ]))
        .unwrap();
        c.validate().unwrap();
        let t = &c.trace;
        assert_eq!(t.service_name.as_deref(), Some("from-env"));
        assert_eq!(t.sample_rate, 0.25);
        assert_eq!(t.attributes["deployment.environment"], "staging");
        assert_eq!(t.attributes["team"], "a b");
        let o = t.otel.as_ref().unwrap();
        assert_eq!(o.url(), "http://collector:4318/v1/traces");
        assert_eq!(o.headers["x-api-key"], "k1");
        assert_eq!(o.timeout, 3);

        let mut grpc = Config::default();
        grpc.apply_env_overrides(env(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ]))
        .unwrap();
        assert!(
            grpc.trace.enabled,
            "an endpoint in the environment turns export on"
        );
        let o = grpc.trace.otel.as_ref().unwrap();
        assert_eq!(o.protocol, OtlpProtocol::Grpc);
        assert_eq!(o.url(), "http://collector:4317");

        let mut off = c.clone();
        off.apply_env_overrides(env(&[("OTEL_SDK_DISABLED", "true")]))
            .unwrap();
        assert!(!off.trace.enabled);
    }

    #[test]
    fn bad_environment_values_are_reported_by_variable() {
        let mut c = Config::default();
        let e = c
            .apply_env_overrides(env(&[
                ("OTEL_TRACES_SAMPLER_ARG", "half"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
            ]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("$OTEL_TRACES_SAMPLER_ARG: is not a number: \"half\""),
            "{e}"
        );
        assert!(
            e.contains("$OTEL_EXPORTER_OTLP_PROTOCOL: must be grpc or http/protobuf"),
            "{e}"
        );
        assert!(
            e.contains("$OTEL_RESOURCE_ATTRIBUTES: \"novalue\" is not key=value"),
            "{e}"
        );
        // A sampler argument out of range is caught by validation, with its field.
        let mut c = Config::default();
        c.apply_env_overrides(env(&[("OTEL_TRACES_SAMPLER_ARG", "7")]))
            .unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("trace.sample_rate"));
    }
}
