//! Overrides from the standard OpenTelemetry environment variables (`OTEL_*`).

use super::{
    error::{ConfigError, ConfigProblem, Problems},
    Config, MetricConfig, MetricOtlpConfig, MetricTemporality, OtelConfig, OtlpProtocol,
    TraceConfig,
};

impl Config {
    /// Applies the standard `OTEL_*` environment variables of this process over the file's
    /// values (see [`apply_env_overrides`](Self::apply_env_overrides)).
    /// [`Telemetry::init`](crate::Telemetry::init) calls it.
    pub fn apply_process_env(&mut self) -> Result<(), ConfigError> {
        self.apply_env_overrides(|name| std::env::var(name).ok())
    }

    /// Applies `OTEL_SDK_DISABLED`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
    /// `OTEL_TRACES_SAMPLER_ARG`, `OTEL_BSP_{SCHEDULE_DELAY,MAX_QUEUE_SIZE,MAX_EXPORT_BATCH_SIZE}`
    /// and `OTEL_EXPORTER_OTLP[_TRACES]_{ENDPOINT,PROTOCOL,HEADERS,TIMEOUT}`
    /// to `trace:`, and `OTEL_EXPORTER_OTLP_METRICS_{ENDPOINT,PROTOCOL,HEADERS,TIMEOUT,
    /// COMPRESSION,TEMPORALITY_PREFERENCE}` and `OTEL_METRIC_EXPORT_INTERVAL` to `metric.otlp`,
    /// read through `lookup`. A value that does not parse is a problem named `$VARIABLE`.
    pub fn apply_env_overrides(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.trace.apply_env(&lookup, &mut problems);
        self.metric.apply_env(&lookup, &mut problems);
        ConfigError::check(problems)
    }
}

/// The variables, read through the caller's lookup; a blank value counts as unset.
struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    fn var(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    /// `OTEL_EXPORTER_OTLP_TRACES_{suffix}`, else `OTEL_EXPORTER_OTLP_{suffix}`; with whether
    /// the value came from the signal-specific variable.
    fn traces_or_generic(&self, suffix: &str) -> Option<(String, bool)> {
        self.var(&format!("OTEL_EXPORTER_OTLP_TRACES_{suffix}"))
            .map(|v| (v, true))
            .or_else(|| {
                self.var(&format!("OTEL_EXPORTER_OTLP_{suffix}"))
                    .map(|v| (v, false))
            })
    }
}

impl TraceConfig {
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
        let env = Env { lookup };
        // Problems are named after the variable, `$OTEL_...`.
        let mut bad = Problems::new(problems, "");
        self.apply_sdk_env(&env, &mut bad);
        self.apply_bsp_env(&|name| env.var(name), &mut bad);
        let protocol = otlp_protocol(&env, &mut bad);
        self.apply_otlp_endpoint(&env, protocol);
        self.apply_otlp_headers(&env, &mut bad);
        self.apply_otlp_timeout(&env, &mut bad);
    }

    /// The variables of the SDK as a whole: on/off, the resource and the sampler.
    fn apply_sdk_env(&mut self, env: &Env<'_>, bad: &mut Problems<'_>) {
        if let Some(v) = env.var("OTEL_SDK_DISABLED") {
            if v.trim().eq_ignore_ascii_case("true") {
                self.enabled = false;
            }
        }
        if let Some(v) = env.var("OTEL_SERVICE_NAME") {
            self.service_name = Some(v);
        }
        if let Some(v) = env.var("OTEL_RESOURCE_ATTRIBUTES") {
            match parse_key_values(&v) {
                Ok(pairs) => self.attributes.extend(pairs),
                Err(e) => bad.push("$OTEL_RESOURCE_ATTRIBUTES", e),
            }
        }
        if let Some(v) = env.var("OTEL_TRACES_SAMPLER_ARG") {
            match v.trim().parse::<f64>() {
                Ok(rate) => self.sample_rate = rate,
                Err(_) => bad.push(
                    "$OTEL_TRACES_SAMPLER_ARG",
                    format!("is not a number: {v:?}"),
                ),
            }
        }
    }

    /// An endpoint enables OTLP export (and tracing); a protocol alone changes the protocol
    /// of a configured `trace.otel`.
    fn apply_otlp_endpoint(&mut self, env: &Env<'_>, protocol: Option<OtlpProtocol>) {
        let Some((endpoint, signal_specific)) = env.traces_or_generic("ENDPOINT") else {
            if let (Some(p), Some(otel)) = (protocol, self.otel.as_mut()) {
                otel.protocol = p;
            }
            return;
        };
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
    }

    fn apply_otlp_headers(&mut self, env: &Env<'_>, bad: &mut Problems<'_>) {
        if let Some((headers, _)) = env.traces_or_generic("HEADERS") {
            match parse_key_values(&headers) {
                Ok(pairs) => {
                    if let Some(otel) = self.otel.as_mut() {
                        otel.headers.extend(pairs);
                    }
                }
                Err(e) => bad.push("$OTEL_EXPORTER_OTLP_HEADERS", e),
            }
        }
    }

    /// The timeout is in milliseconds; `trace.otel.timeout` in whole seconds, rounded up.
    fn apply_otlp_timeout(&mut self, env: &Env<'_>, bad: &mut Problems<'_>) {
        if let Some((timeout, _)) = env.traces_or_generic("TIMEOUT") {
            match timeout.trim().parse::<u64>() {
                Ok(ms) => {
                    if let Some(otel) = self.otel.as_mut() {
                        otel.timeout = ms.div_ceil(1000).max(1);
                    }
                }
                Err(_) => bad.push(
                    "$OTEL_EXPORTER_OTLP_TIMEOUT",
                    format!("is not milliseconds: {timeout:?}"),
                ),
            }
        }
    }
}

impl MetricConfig {
    /// The metrics signal's own variables (the generic `OTEL_EXPORTER_OTLP_*` ones configure
    /// spans only: a metrics push is never started by them). An endpoint sets up
    /// `metric.otlp`; the others change a configured one. `lowmemory` temporality is taken as
    /// `delta` (towerscope's counters and histograms are the synchronous kinds it applies to).
    fn apply_env(
        &mut self,
        lookup: &dyn Fn(&str) -> Option<String>,
        problems: &mut Vec<ConfigProblem>,
    ) {
        let env = Env { lookup };
        let mut bad = Problems::new(problems, "");
        if let Some(endpoint) = env.var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
            let endpoint = endpoint.trim().trim_end_matches('/');
            let otlp = self.otlp.get_or_insert_with(MetricOtlpConfig::default);
            otlp.endpoint = if endpoint.contains("://") {
                endpoint.to_owned()
            } else {
                format!("http://{endpoint}")
            };
        }
        let Some(otlp) = self.otlp.as_mut() else {
            return;
        };
        if let Some(v) = env.var("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") {
            match v.trim() {
                "grpc" => otlp.protocol = OtlpProtocol::Grpc,
                "http/protobuf" => otlp.protocol = OtlpProtocol::Http,
                other => bad.push(
                    "$OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
                    format!("must be grpc or http/protobuf (got {other:?})"),
                ),
            }
        }
        if let Some(v) = env.var("OTEL_EXPORTER_OTLP_METRICS_HEADERS") {
            match parse_key_values(&v) {
                Ok(pairs) => otlp.headers.extend(pairs),
                Err(e) => bad.push("$OTEL_EXPORTER_OTLP_METRICS_HEADERS", e),
            }
        }
        for (name, slot) in [
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", &mut otlp.timeout),
            ("OTEL_METRIC_EXPORT_INTERVAL", &mut otlp.interval_secs),
        ] {
            if let Some(v) = env.var(name) {
                match v.trim().parse::<u64>() {
                    Ok(ms) => *slot = ms.div_ceil(1000).max(1),
                    Err(_) => bad.push(&format!("${name}"), format!("is not milliseconds: {v:?}")),
                }
            }
        }
        if let Some(v) = env.var("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION") {
            match v.trim() {
                "gzip" => otlp.compression = true,
                "none" => otlp.compression = false,
                other => bad.push(
                    "$OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
                    format!("must be gzip or none (got {other:?})"),
                ),
            }
        }
        if let Some(v) = env.var("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE") {
            match v.trim().to_ascii_lowercase().as_str() {
                "cumulative" => otlp.temporality = MetricTemporality::Cumulative,
                "delta" | "lowmemory" => otlp.temporality = MetricTemporality::Delta,
                other => bad.push(
                    "$OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                    format!("must be cumulative, delta or lowmemory (got {other:?})"),
                ),
            }
        }
    }
}

/// `OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL`: `grpc` or `http/protobuf`.
fn otlp_protocol(env: &Env<'_>, bad: &mut Problems<'_>) -> Option<OtlpProtocol> {
    let (protocol, _) = env.traces_or_generic("PROTOCOL")?;
    match protocol.trim() {
        "grpc" => Some(OtlpProtocol::Grpc),
        "http/protobuf" => Some(OtlpProtocol::Http),
        other => {
            bad.push(
                "$OTEL_EXPORTER_OTLP_PROTOCOL",
                format!("must be grpc or http/protobuf (got {other:?})"),
            );
            None
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

    use crate::config::{Config, MetricTemporality, OtlpProtocol};

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
    fn the_metrics_variables_set_up_and_change_metric_otlp() {
        let mut c = Config::default();
        c.apply_env_overrides(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4318",
        )]))
        .unwrap();
        assert!(
            c.metric.otlp.is_none(),
            "the generic endpoint configures spans only"
        );
        c.apply_env_overrides(env(&[
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-api-key=k2"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "1500"),
            ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "gzip"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                "LowMemory",
            ),
            ("OTEL_METRIC_EXPORT_INTERVAL", "15000"),
        ]))
        .unwrap();
        let otlp = c.metric.otlp.clone().unwrap();
        assert_eq!(otlp.endpoint, "http://collector:4317");
        assert_eq!(otlp.protocol, OtlpProtocol::Grpc);
        assert_eq!(otlp.headers["x-api-key"], "k2");
        assert_eq!((otlp.timeout, otlp.interval_secs), (2, 15));
        assert!(otlp.compression);
        assert_eq!(otlp.temporality, MetricTemporality::Delta);
        c.validate().unwrap();
        let e = c
            .apply_env_overrides(env(&[
                ("OTEL_METRIC_EXPORT_INTERVAL", "soon"),
                (
                    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                    "sometimes",
                ),
            ]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("$OTEL_METRIC_EXPORT_INTERVAL: is not milliseconds"),
            "{e}"
        );
        assert!(
            e.contains("$OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"),
            "{e}"
        );
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
