//! The `filters:` list: which requests the server layers (HTTP, and gRPC through
//! `GrpcLayer::from_telemetry`) measure and trace, and how (see [`crate::filter`]).

use http::Method;
use serde::Deserialize;

use super::error::{ConfigProblem, Problems};
use crate::filter::{FilterRule, PathPattern, RequestFilter};

/// One entry of `filters:`: what it matches (`path` or `operation`, optionally `methods`)
/// and what is done (`action`, or `sample_rate`).
///
/// ```yaml
/// filters:
///   - { path: /healthz, action: skip }
///   - { path: "/internal/**", action: metrics_only }
///   - { operation: GetBlob, methods: [GET, HEAD], sample_rate: 0.01 }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// A path pattern ([`PathPattern`]): literals, `*` or `{name}` for one segment, a final
    /// `**` for the rest.
    pub path: Option<String>,
    /// An operation, exactly as the `operation` label shows it.
    pub operation: Option<String>,
    /// Only these methods (empty: any).
    pub methods: Vec<String>,
    /// `skip`, `metrics_only` or `observe`.
    pub action: Option<FilterAction>,
    /// A sampling rate for new traces, 0 to 1, instead of `trace.sample_rate`.
    pub sample_rate: Option<f64>,
}

/// What a `filters:` entry does with the requests it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterAction {
    /// Neither metrics nor span.
    Skip,
    /// Metrics, no span.
    MetricsOnly,
    /// Measured as usual: an exception ahead of a broader entry.
    Observe,
}

impl FilterConfig {
    /// The rule of this entry, or the problems with it (fields relative to the entry).
    fn rule(&self) -> Result<FilterRule, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        let rule = match (&self.path, &self.operation) {
            (Some(path), None) => match PathPattern::new(path) {
                Ok(pattern) => Some(FilterRule::path(pattern)),
                Err(e) => {
                    problems.push(("path", e.to_string()));
                    None
                }
            },
            (None, Some(operation)) if !operation.is_empty() => {
                Some(FilterRule::operation(operation.as_str()))
            }
            (None, Some(_)) => {
                problems.push(("operation", "must not be empty".to_owned()));
                None
            }
            (Some(_), Some(_)) => {
                problems.push(("path", "give a path or an operation, not both".to_owned()));
                None
            }
            (None, None) => {
                problems.push(("path", "give a path or an operation to match".to_owned()));
                None
            }
        };
        let mut methods = Vec::with_capacity(self.methods.len());
        for method in &self.methods {
            match Method::from_bytes(method.as_bytes()) {
                Ok(m) if !method.is_empty() => methods.push(m),
                _ => problems.push(("methods", format!("not an HTTP method: {method:?}"))),
            }
        }
        let rule = rule.map(|rule| rule.methods(methods));
        let rule = match (self.action, self.sample_rate) {
            (Some(_), Some(_)) => {
                problems.push((
                    "sample_rate",
                    "give an action or a sample_rate, not both".into(),
                ));
                None
            }
            (None, Some(rate)) if !(0.0..=1.0).contains(&rate) => {
                problems.push((
                    "sample_rate",
                    format!("must be between 0 and 1 (got {rate})"),
                ));
                None
            }
            (None, Some(rate)) => rule.map(|r| r.sample_rate(rate)),
            (Some(FilterAction::Skip), None) => rule.map(FilterRule::skip),
            (Some(FilterAction::MetricsOnly), None) => rule.map(FilterRule::metrics_only),
            (Some(FilterAction::Observe), None) => rule.map(FilterRule::observe),
            (None, None) => {
                problems.push((
                    "action",
                    "give an action (skip, metrics_only, observe) or a sample_rate".into(),
                ));
                None
            }
        };
        match rule {
            Some(rule) if problems.is_empty() => Ok(rule),
            _ => Err(problems),
        }
    }
}

/// Checks every entry of `filters:`.
pub(super) fn check(filters: &[FilterConfig], out: &mut Vec<ConfigProblem>) {
    for (i, filter) in filters.iter().enumerate() {
        if let Err(problems) = filter.rule() {
            let mut p = Problems::new(out, format!("filters[{i}]"));
            for (field, message) in problems {
                p.push(field, message);
            }
        }
    }
}

impl RequestFilter {
    /// The filter of a `filters:` list. An entry that does not validate (a configuration
    /// built in code and not validated) is left out, with a warning naming it: the requests
    /// it meant are observed as usual.
    pub fn from_config(filters: &[FilterConfig]) -> Self {
        let mut filter = RequestFilter::new();
        for (i, entry) in filters.iter().enumerate() {
            match entry.rule() {
                Ok(rule) => filter = filter.rule(rule),
                Err(problems) => tracing::warn!(
                    target: "towerscope::config",
                    "filters[{i}] left out: {}",
                    problems
                        .iter()
                        .map(|(field, message)| format!("{field}: {message}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            }
        }
        filter
    }
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;
    use crate::{filter::Treatment, Config};

    #[test]
    fn entries_become_rules_in_order() {
        let config = Config::from_json_str(
            r#"{"filters": [
                {"path": "/healthz", "action": "skip"},
                {"path": "/internal/**", "methods": ["GET"], "action": "metrics_only"},
                {"operation": "GetBlob", "sample_rate": 0.01}
            ]}"#,
        )
        .unwrap();
        let filter = RequestFilter::from_config(&config.filters);
        let get = |path: &str| Request::get(path).body(()).unwrap();
        assert_eq!(filter.treat(&get("/healthz")), Treatment::Skip);
        assert_eq!(filter.treat(&get("/internal/a")), Treatment::MetricsOnly);
        let post = Request::post("/internal/a").body(()).unwrap();
        assert_eq!(filter.treat(&post), Treatment::Observe);
        let mut blob = get("/v2/a/blobs/b");
        blob.extensions_mut()
            .insert(crate::OperationId::new("GetBlob"));
        assert_eq!(filter.treat(&blob), Treatment::SampleRate(0.01));
    }

    #[test]
    fn every_problem_is_named_by_its_field() {
        let err = Config::from_json_str(
            r#"{"filters": [
                {"path": "healthz", "action": "skip"},
                {"action": "skip"},
                {"path": "/a", "operation": "b", "action": "skip"},
                {"path": "/a", "methods": ["G ET"], "sample_rate": 2},
                {"path": "/a", "action": "skip", "sample_rate": 0.5},
                {"path": "/a/**/b"},
                {"operation": "", "action": "observe"}
            ]}"#,
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "filters[0].path: must start with '/' (got \"healthz\")",
            "filters[1].path: give a path or an operation to match",
            "filters[2].path: give a path or an operation, not both",
            "filters[3].methods: not an HTTP method: \"G ET\"",
            "filters[3].sample_rate: must be between 0 and 1 (got 2)",
            "filters[4].sample_rate: give an action or a sample_rate, not both",
            "filters[5].path: '**' can only be the last segment",
            "filters[5].action: give an action (skip, metrics_only, observe) or a sample_rate",
            "filters[6].operation: must not be empty",
        ] {
            assert!(err.contains(expected), "{expected}\n{err}");
        }
        let unknown = Config::from_json_str(r#"{"filters": [{"pth": "/a"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("pth"), "{unknown}");
    }
}
