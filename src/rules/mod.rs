#![doc = include_str!("../docs/rules.md")]

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

mod alert;
mod openapi;
mod promql;
mod record;
#[cfg(test)]
mod tests;

use alert::alert;
use openapi::subjects;
pub use openapi::{operations, read_document, ApiOperation};
use promql::number;
use record::{record, Names};

/// The windows every ratio is recorded over.
pub const WINDOWS: [&str; 4] = ["5m", "30m", "1h", "6h"];

/// The histogram quantiles recorded.
pub const HISTOGRAM_QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

/// The burn-rate alerts: severity, long window, short window, burn rate, `for`.
pub(super) const BURNS: [(&str, &str, &str, f64, &str); 2] = [
    ("page", "1h", "5m", 14.4, "2m"),
    ("ticket", "6h", "30m", 6.0, "15m"),
];

/// What the rules are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// One series and one set of alerts per `operationId`.
    Operation,
    /// One per OpenAPI tag (an operation with several tags counts in each; untagged operations
    /// are left out).
    Tag,
}

/// How the request durations are stored (`metric.buckets` set: histogram; Harbor's default:
/// summary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durations {
    /// Summaries with quantiles: latency alerts on a quantile above the threshold.
    Summary,
    /// Histograms: latency burn-rate alerts on the ratio of requests slower than the threshold.
    Histogram,
    /// Native histograms (`metric.histogram: native` or `both`, scraped with
    /// `scrape_native_histograms`): the same alerts, the ratio from `histogram_fraction`.
    Native,
}

/// The generator's settings.
#[derive(Debug, Clone)]
pub struct RulesOptions {
    /// The families' prefix, `{namespace}_{subsystem}_` (`harbor_core_`; may be empty).
    pub prefix: String,
    /// The availability and latency objective, in (0, 1): 0.999 leaves a budget of 0.1 %.
    pub objective: f64,
    /// The latency threshold in seconds: a slower request is a latency failure.
    pub latency: f64,
    /// The summary quantile compared with the threshold (one of `metric.quantiles`).
    pub quantile: f64,
    /// Per operation or per tag.
    pub group_by: GroupBy,
    /// Summary or histogram durations.
    pub durations: Durations,
}

impl RulesOptions {
    /// Objective 0.999, latency 0.5 s at the 0.99 quantile, per operation, summaries.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            objective: 0.999,
            latency: 0.5,
            quantile: 0.99,
            group_by: GroupBy::Operation,
            durations: Durations::Summary,
        }
    }
}

/// Why no rules could be generated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RulesError {
    /// The document could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The document is not YAML or JSON.
    #[error("{0}")]
    Parse(String),
    /// The document has no operation with an `operationId` (or, by tag, no tagged one).
    #[error("the document has no {0} to write rules for")]
    Empty(&'static str),
    /// A setting is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// Generated rules.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The rule file, YAML.
    pub text: String,
    /// Recording rules written.
    pub recording: usize,
    /// Alerting rules written.
    pub alerts: usize,
    /// Operations or tags covered.
    pub subjects: usize,
    /// Operations left out (by tag: those without one).
    pub left_out: usize,
}

#[derive(Serialize)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Serialize)]
struct Group {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Serialize, Default)]
pub(super) struct Rule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) record: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) alert: Option<String>,
    pub(super) expr: String,
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    pub(super) for_: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) annotations: BTreeMap<String, String>,
}

/// Generates the rule file for `ops`.
pub fn generate(ops: &[ApiOperation], options: &RulesOptions) -> Result<Rules, RulesError> {
    check(options)?;
    let subjects = subjects(ops, options.group_by)?;
    let left_out = match options.group_by {
        GroupBy::Operation => 0,
        GroupBy::Tag => ops.iter().filter(|op| op.tags.is_empty()).count(),
    };
    let key = match options.group_by {
        GroupBy::Operation => "operation",
        GroupBy::Tag => "tag",
    };
    let p = &options.prefix;
    let names = Names {
        requests: format!("{key}:{p}http_requests:rate"),
        errors: format!("{key}:{p}http_errors:ratio_rate"),
        slow: format!("{key}:{p}http_slow_requests:ratio_rate"),
        quantile: format!("{key}:{p}http_request_duration_seconds:quantile5m"),
        max: format!("{key}:{p}http_request_duration_seconds:max"),
    };

    let mut recording = Vec::new();
    match options.group_by {
        GroupBy::Operation => record(&mut recording, &names, options, "by (operation) ", "", None),
        GroupBy::Tag => {
            for subject in &subjects {
                let labels = Some((key, subject.value.as_str()));
                record(&mut recording, &names, options, "", &subject.raw, labels);
            }
        }
    }
    let mut alerts = Vec::new();
    for subject in &subjects {
        alert(&mut alerts, &names, options, subject);
    }
    let (n_recording, n_alerts) = (recording.len(), alerts.len());
    let file = RuleFile {
        groups: vec![
            Group {
                name: format!("towerscope-{p}red-by-{key}"),
                rules: recording,
            },
            Group {
                name: format!("towerscope-{p}slo-by-{key}"),
                rules: alerts,
            },
        ],
    };
    let yaml = serde_norway::to_string(&file)
        .map_err(|e| RulesError::Invalid(format!("cannot write the rules as YAML: {e}")))?;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "# Generated by `towerscope rules`: objective {}, latency {} s, by {key}, {} durations.\n\
         # Errors are 5xx over the requests that were not 499 (clients that went away).",
        number(options.objective),
        number(options.latency),
        match options.durations {
            Durations::Summary => "summary",
            Durations::Histogram => "histogram",
            Durations::Native => "native histogram",
        },
    );
    text.push_str(&yaml);
    Ok(Rules {
        text,
        recording: n_recording,
        alerts: n_alerts,
        subjects: subjects.len(),
        left_out,
    })
}

fn check(options: &RulesOptions) -> Result<(), RulesError> {
    if !(options.objective > 0.0 && options.objective < 1.0) {
        return Err(RulesError::Invalid(format!(
            "--objective {} must be between 0 and 1 (exclusive), e.g. 0.999",
            options.objective
        )));
    }
    if !(options.latency.is_finite() && options.latency > 0.0) {
        return Err(RulesError::Invalid(format!(
            "--latency {} must be a positive number of seconds",
            options.latency
        )));
    }
    if !(options.quantile > 0.0 && options.quantile < 1.0) {
        return Err(RulesError::Invalid(format!(
            "--quantile {} must be between 0 and 1 (exclusive)",
            options.quantile
        )));
    }
    let valid_prefix = options
        .prefix
        .chars()
        .enumerate()
        .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()));
    if !valid_prefix {
        return Err(RulesError::Invalid(format!(
            "--prefix {:?} is not the start of a Prometheus metric name ([a-zA-Z_][a-zA-Z0-9_]*)",
            options.prefix
        )));
    }
    Ok(())
}
