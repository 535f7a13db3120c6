//! The `trace:` block: Harbor's keys for span export, plus towerscope's.

use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue, Uri};
use serde::Deserialize;

use super::error::{ConfigProblem, Problems};
pub use crate::trace::propagation::Propagator;

/// The `trace:` block (harbor.yml's keys, plus `service_name`, `otel.protocol`,
/// `otel.headers`, `propagators`, `max_queue_size`, `shutdown_timeout_secs`,
/// `echo_traceparent` and `log_span`).
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
    /// Whether each request also gets a `tracing` span with the server span's fields (target
    /// `towerscope::http::log`, or `towerscope::grpc::log`), for log layers that print span
    /// fields. Defaults to `false`: log lines get the request's `request_id` and `operation`
    /// from [`log::RequestFields`](crate::log::RequestFields) (which `init_subscriber` uses)
    /// without a span, and an OpenTelemetry layer of the application's own cannot export a
    /// second server span. With `true`, such a layer must leave those targets out.
    pub log_span: bool,
    /// Request headers recorded on the server span as `http.request.header.<name>` (the
    /// conventions' opt-in attributes: every value, as a string array). Defaults to none.
    /// Credentials (`authorization`, `proxy-authorization`, `cookie`) are refused here: a
    /// hook in code can still record what it chooses.
    pub capture_request_headers: Vec<String>,
    /// Response headers recorded as `http.response.header.<name>` (`set-cookie` refused).
    /// Defaults to none.
    pub capture_response_headers: Vec<String>,
    /// The export thread's schedule and batch size (`OTEL_BSP_SCHEDULE_DELAY`,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`; `OTEL_BSP_MAX_QUEUE_SIZE` sets `max_queue_size`).
    pub batch: super::TraceBatchConfig,
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
            log_span: false,
            capture_request_headers: Vec::new(),
            capture_response_headers: Vec::new(),
            batch: super::TraceBatchConfig::default(),
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
    /// Checks the block: its own keys, the choice of exporter, then the exporter's block.
    pub(super) fn check(&self, problems: &mut Vec<ConfigProblem>) {
        let mut p = Problems::new(problems, "trace");
        self.check_pipeline(&mut p);
        self.check_captured_headers(&mut p);
        self.check_batch(&mut p);
        self.check_exporter_choice(&mut p);
        if let Some(jaeger) = &self.jaeger {
            jaeger.check(&mut p.block("jaeger"));
        }
        if let Some(otel) = &self.otel {
            otel.check(&mut p.block("otel"));
        }
    }

    /// The server span's captured headers, from `capture_request_headers` and
    /// `capture_response_headers` (a name that is not a header name is left out: validation
    /// reports it).
    pub fn span_attributes(&self) -> crate::trace::SpanAttributes {
        let names = |names: &[String]| -> Vec<http::HeaderName> {
            names
                .iter()
                .filter_map(|n| http::HeaderName::from_bytes(n.as_bytes()).ok())
                .collect()
        };
        crate::trace::SpanAttributes::new()
            .capture_request_headers(names(&self.capture_request_headers))
            .capture_response_headers(names(&self.capture_response_headers))
    }

    /// `capture_request_headers` and `capture_response_headers`: header names, no
    /// credentials.
    fn check_captured_headers(&self, p: &mut Problems<'_>) {
        const CREDENTIALS: [&str; 4] = [
            "authorization",
            "proxy-authorization",
            "cookie",
            "set-cookie",
        ];
        for (field, names) in [
            ("capture_request_headers", &self.capture_request_headers),
            ("capture_response_headers", &self.capture_response_headers),
        ] {
            for (i, name) in names.iter().enumerate() {
                let field = format!("{field}[{i}]");
                match http::HeaderName::from_bytes(name.as_bytes()) {
                    Err(_) => p.push(&field, format!("not a header name: {name:?}")),
                    Ok(header) if CREDENTIALS.contains(&header.as_str()) => p.push(
                        &field,
                        format!(
                            "{header} carries credentials: it is not exported from configuration"
                        ),
                    ),
                    Ok(_) => {}
                }
            }
        }
    }

    /// Sampling, the resource's name and the export queue.
    fn check_pipeline(&self, p: &mut Problems<'_>) {
        if !(0.0..=1.0).contains(&self.sample_rate) {
            p.push(
                "sample_rate",
                format!("must be between 0 and 1 (got {})", self.sample_rate),
            );
        }
        if let Some(name) = &self.service_name {
            if name.trim().is_empty() {
                p.push("service_name", "must not be empty");
            }
        }
        if self.max_queue_size == 0 {
            p.push("max_queue_size", "must be at least 1");
        }
        if self.shutdown_timeout_secs == 0 {
            p.push("shutdown_timeout_secs", "must be at least 1");
        }
    }

    /// Exactly one exporter when tracing is enabled, at most one otherwise.
    fn check_exporter_choice(&self, p: &mut Problems<'_>) {
        match (&self.jaeger, &self.otel) {
            (None, None) if self.enabled => p.push(
                "",
                "tracing is enabled but no exporter is set: add trace.jaeger or trace.otel",
            ),
            (Some(_), Some(_)) => p.push(
                "",
                "set exactly one exporter: trace.jaeger or trace.otel, not both",
            ),
            _ => {}
        }
    }
}

impl JaegerConfig {
    /// Checks `trace.jaeger`; `p` names fields under it.
    fn check(&self, p: &mut Problems<'_>) {
        self.check_mode(p);
        if let Some(endpoint) = &self.endpoint {
            if let Err(e) = check_http_url(endpoint) {
                p.push("endpoint", e);
            }
        }
        self.check_agent(p);
        self.check_auth(p);
        if self.timeout == Some(0) {
            p.push("timeout", "must be at least 1");
        }
    }

    /// A collector (`endpoint`) or an agent (`agent_host`), exactly one.
    fn check_mode(&self, p: &mut Problems<'_>) {
        match (&self.endpoint, &self.agent_host) {
            (Some(_), Some(_)) => p.push(
                "",
                "set exactly one of endpoint (collector over HTTP) and agent_host (agent over UDP), not both",
            ),
            (None, None) => p.push(
                "",
                "set endpoint (collector over HTTP) or agent_host (agent over UDP)",
            ),
            _ => {}
        }
    }

    fn check_agent(&self, p: &mut Problems<'_>) {
        if let Some(host) = &self.agent_host {
            if host.trim().is_empty() || host.contains(['/', ' ']) {
                p.push(
                    "agent_host",
                    format!("must be a host name or IP address (got {host:?})"),
                );
            }
            if self.agent_port == Some(0) {
                p.push("agent_port", "must not be 0");
            }
        } else if self.agent_port.is_some() {
            p.push("agent_port", "is only used with agent_host");
        }
    }

    /// Basic auth: both parts or neither, and only for the collector.
    fn check_auth(&self, p: &mut Problems<'_>) {
        match (&self.username, &self.password) {
            (Some(_), None) => p.push("password", "is required when username is set"),
            (None, Some(_)) => p.push("username", "is required when password is set"),
            (Some(_), Some(_)) if self.endpoint.is_none() => p.push(
                "username",
                "basic auth applies to the collector endpoint only",
            ),
            _ => {}
        }
    }
}

impl OtelConfig {
    /// Checks `trace.otel`; `p` names fields under it.
    pub(super) fn check(&self, p: &mut Problems<'_>) {
        if self.endpoint.trim().is_empty() {
            p.push("endpoint", "must be set, e.g. 127.0.0.1:4318");
        } else if let Err(e) = check_http_url(&self.url()) {
            p.push("endpoint", e);
        }
        if !self.url_path.starts_with('/') {
            p.push(
                "url_path",
                format!("must start with '/' (got {:?})", self.url_path),
            );
        }
        if self.timeout == 0 {
            p.push("timeout", "must be at least 1");
        }
        if self.protocol == OtlpProtocol::Grpc && !cfg!(feature = "otlp-grpc") {
            p.push(
                "protocol",
                "grpc needs towerscope's `otlp-grpc` feature (features = [\"otlp-grpc\"] in \
                 Cargo.toml), or use protocol: http",
            );
        }
        self.check_headers(p);
    }

    fn check_headers(&self, p: &mut Problems<'_>) {
        for (name, value) in &self.headers {
            if HeaderName::try_from(name.as_str()).is_err() {
                p.push(&format!("headers.{name}"), "is not a valid header name");
            } else if HeaderValue::try_from(value.as_str()).is_err() {
                p.push(&format!("headers.{name}"), "is not a valid header value");
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
}
