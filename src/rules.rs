#![doc = include_str!("docs/rules.md")]

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use serde::Serialize;
use serde_json::Value;

use crate::metrics::store::{push_f64, push_om_float};

/// The windows every ratio is recorded over.
pub const WINDOWS: [&str; 4] = ["5m", "30m", "1h", "6h"];

/// The histogram quantiles recorded.
pub const HISTOGRAM_QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

/// The burn-rate alerts: severity, long window, short window, burn rate, `for`.
const BURNS: [(&str, &str, &str, f64, &str); 2] = [
    ("page", "1h", "5m", 14.4, "2m"),
    ("ticket", "6h", "30m", 6.0, "15m"),
];

/// The HTTP methods an OpenAPI path item may hold, in the order operations are listed.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
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

/// An operation of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiOperation {
    /// `operationId`.
    pub id: String,
    /// The method, upper case.
    pub method: String,
    /// The path template.
    pub path: String,
    /// `summary`, else `description`'s first line.
    pub summary: Option<String>,
    /// `tags`.
    pub tags: Vec<String>,
}

/// Reads a document from a file: JSON when the name ends in `.json`, YAML otherwise.
pub fn read_document(path: &Path) -> Result<Value, RulesError> {
    let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let is_json = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    if is_json {
        serde_json::from_str(&text)
            .map_err(|e| RulesError::Parse(format!("{}: {e}", path.display())))
    } else {
        serde_norway::from_str(&text)
            .map_err(|e| RulesError::Parse(format!("{}: {e}", path.display())))
    }
}

/// The operations of a Swagger 2.0 or OpenAPI 3.x document that have an `operationId`, sorted
/// by it; a repeated id keeps its first path (in path order).
pub fn operations(document: &Value) -> Result<Vec<ApiOperation>, RulesError> {
    let paths = document
        .get("paths")
        .and_then(Value::as_object)
        .ok_or_else(|| RulesError::Parse("the document has no `paths` object".to_owned()))?;
    let mut found: BTreeMap<String, ApiOperation> = BTreeMap::new();
    for (template, item) in paths {
        if template.starts_with("x-") {
            continue;
        }
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let Some(id) = op.get("operationId").and_then(Value::as_str) else {
                continue;
            };
            if id.is_empty() || found.contains_key(id) {
                continue;
            }
            let summary = op
                .get("summary")
                .and_then(Value::as_str)
                .or_else(|| {
                    op.get("description")
                        .and_then(Value::as_str)
                        .and_then(|d| d.lines().next())
                })
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
            let tags = op
                .get("tags")
                .and_then(Value::as_array)
                .map(|tags| {
                    tags.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            found.insert(
                id.to_owned(),
                ApiOperation {
                    id: id.to_owned(),
                    method: method.to_ascii_uppercase(),
                    path: template.clone(),
                    summary,
                    tags,
                },
            );
        }
    }
    if found.is_empty() {
        return Err(RulesError::Empty("operation with an operationId"));
    }
    Ok(found.into_values().collect())
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
struct Rule {
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<String>,
    expr: String,
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    for_: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// What the rules are about: an operation or a tag, the selector of its raw series, and the
/// text of its runbook.
struct Subject {
    label: &'static str,
    value: String,
    /// Selector of the raw series (tag mode: the tag's operations); empty by operation, where
    /// one `sum by (operation)` records every operation.
    raw: String,
    title: String,
    runbook: String,
}

/// `value` as a PromQL string literal's contents.
fn quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `value` as an RE2 literal (for `=~`).
fn regex_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Template delimiters in document text would be read by Prometheus as templates.
fn template_safe(text: &str) -> String {
    text.replace("{{", "{ {").replace("}}", "} }")
}

/// A number as a rule writes it: shortest form, no float noise (`0.001`, not
/// `0.0010000000000000009`).
fn number(value: f64) -> String {
    let rounded = format!("{value:.12}");
    let trimmed = rounded.trim_end_matches('0').trim_end_matches('.');
    trimmed.to_owned()
}

/// `le` as towerscope renders it for a bucket bound.
/// The matcher of the bucket `le = value`, for either spelling of its label: as the text
/// exposition writes it (`le="1"`, what Prometheus 2 stores from a text scrape) and as
/// Prometheus 3 stores it whatever the scrape (OpenMetrics' canonical `le="1.0"`, also what
/// Prometheus 2 stores from a protobuf scrape). One matcher when the two are the same
/// (`le="0.5"`), a regular expression of both otherwise (`le=~"1|1\\.0"`).
fn le_matcher(value: f64) -> String {
    let (mut text, mut canonical) = (String::new(), String::new());
    push_f64(&mut text, value);
    push_om_float(&mut canonical, value);
    if text == canonical {
        return format!(r#"le="{text}""#);
    }
    // Regular-expression metacharacters of a float's spelling, escaped for RE2 inside a
    // PromQL string (whose own escape doubles the backslash).
    let escape = |s: &str| s.replace('.', r"\\.").replace('+', r"\\+");
    format!(r#"le=~"{}|{}""#, escape(&text), escape(&canonical))
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

fn subjects(ops: &[ApiOperation], group_by: GroupBy) -> Result<Vec<Subject>, RulesError> {
    match group_by {
        GroupBy::Operation => Ok(ops
            .iter()
            .map(|op| {
                let summary = op
                    .summary
                    .as_deref()
                    .unwrap_or("no summary in the document");
                Subject {
                    label: "operation",
                    value: op.id.clone(),
                    raw: String::new(),
                    title: format!("{} ({} {})", op.id, op.method, op.path),
                    runbook: template_safe(&format!(
                        "Operation {} ({} {}): {summary}",
                        op.id, op.method, op.path
                    )),
                }
            })
            .collect()),
        GroupBy::Tag => {
            let mut tags: BTreeMap<&str, Vec<&ApiOperation>> = BTreeMap::new();
            for op in ops {
                for tag in &op.tags {
                    tags.entry(tag).or_default().push(op);
                }
            }
            if tags.is_empty() {
                return Err(RulesError::Empty("tagged operation"));
            }
            Ok(tags
                .into_iter()
                .map(|(tag, ops)| {
                    let alternatives: Vec<String> =
                        ops.iter().map(|op| regex_literal(&op.id)).collect();
                    let listed: Vec<String> = ops
                        .iter()
                        .map(|op| match &op.summary {
                            Some(s) => format!("{} ({s})", op.id),
                            None => op.id.clone(),
                        })
                        .collect();
                    Subject {
                        label: "tag",
                        value: tag.to_owned(),
                        raw: format!(r#"operation=~"{}""#, quote(&alternatives.join("|"))),
                        title: format!("tag {tag} ({} operations)", ops.len()),
                        runbook: template_safe(&format!(
                            "Tag {tag}, {} operations: {}",
                            ops.len(),
                            listed.join("; ")
                        )),
                    }
                })
                .collect())
        }
    }
}

/// The recorded families' names (the window or nothing is appended).
struct Names {
    requests: String,
    errors: String,
    slow: String,
    quantile: String,
    max: String,
}

/// The recording rules over the raw series selected by `raw` (and `code` matchers), summed
/// `by` (by operation: `by (operation) `; by tag: nothing, and the tag as a label).
fn record(
    out: &mut Vec<Rule>,
    names: &Names,
    options: &RulesOptions,
    by: &str,
    raw: &str,
    label: Option<(&str, &str)>,
) {
    let p = &options.prefix;
    let total = format!("{p}http_request_total");
    let duration = format!("{p}http_request_duration_seconds");
    let labels: BTreeMap<String, String> = label
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into_iter()
        .collect();
    let sel = |extra: &str| match (raw.is_empty(), extra.is_empty()) {
        (true, true) => String::new(),
        (true, false) => format!("{{{extra}}}"),
        (false, true) => format!("{{{raw}}}"),
        (false, false) => format!("{{{raw},{extra}}}"),
    };
    let mut push = |record: String, expr: String, extra: Option<(&str, String)>| {
        let mut labels = labels.clone();
        if let Some((k, v)) = extra {
            labels.insert(k.to_owned(), v);
        }
        out.push(Rule {
            record: Some(record),
            expr,
            labels,
            ..Rule::default()
        });
    };
    for w in WINDOWS {
        push(
            format!("{}{w}", names.requests),
            format!("sum {by}(rate({total}{}[{w}]))", sel("")),
            None,
        );
        push(
            format!("{}{w}", names.errors),
            format!(
                r#"sum {by}(rate({total}{}[{w}])) / sum {by}(rate({total}{}[{w}]))"#,
                sel(r#"code=~"5..""#),
                sel(r#"code!="499""#)
            ),
            None,
        );
    }
    match options.durations {
        Durations::Histogram => {
            let by_le = if by.is_empty() {
                "by (le) ".to_owned()
            } else {
                "by (operation, le) ".to_owned()
            };
            for w in WINDOWS {
                let fast = sel(&le_matcher(options.latency));
                push(
                    format!("{}{w}", names.slow),
                    format!(
                        "1 - sum {by}(rate({duration}_bucket{fast}[{w}])) / sum {by}(rate({duration}_count{}[{w}]))",
                        sel("")
                    ),
                    None,
                );
            }
            for q in HISTOGRAM_QUANTILES {
                push(
                    names.quantile.clone(),
                    format!(
                        "histogram_quantile({}, sum {by_le}(rate({duration}_bucket{}[5m])))",
                        number(q),
                        sel("")
                    ),
                    Some(("quantile", number(q))),
                );
            }
        }
        Durations::Summary => {
            let by_q = if by.is_empty() {
                "by (quantile) ".to_owned()
            } else {
                "by (operation, quantile) ".to_owned()
            };
            push(
                names.max.clone(),
                format!("max {by_q}({duration}{})", sel("")),
                None,
            );
        }
    }
}

/// The alerts of one subject.
fn alert(out: &mut Vec<Rule>, names: &Names, options: &RulesOptions, subject: &Subject) {
    let is = format!(r#"{{{}="{}"}}"#, subject.label, quote(&subject.value));
    let budget = number(1.0 - options.objective);
    let kind = match subject.label {
        "operation" => "Operation",
        _ => "Tag",
    };
    let base = |severity: &str, slo: &str| -> BTreeMap<String, String> {
        [
            (subject.label.to_owned(), subject.value.clone()),
            ("severity".to_owned(), severity.to_owned()),
            ("slo".to_owned(), slo.to_owned()),
        ]
        .into_iter()
        .collect()
    };
    let mut slos = vec![("availability", &names.errors, "fail".to_owned())];
    if options.durations == Durations::Histogram {
        let slower = format!("are slower than {} s", number(options.latency));
        slos.push(("latency", &names.slow, slower));
    }
    for (slo, ratio, what) in &slos {
        for (severity, long, short, burn, for_) in BURNS {
            let threshold = format!("{} * {budget}", number(burn));
            out.push(Rule {
                alert: Some(format!(
                    "{kind}{}BudgetBurn",
                    if *slo == "latency" { "Latency" } else { "Error" }
                )),
                expr: format!("{ratio}{long}{is} > {threshold}\nand\n{ratio}{short}{is} > {threshold}"),
                for_: Some(for_.to_owned()),
                labels: {
                    let mut labels = base(severity, slo);
                    labels.insert("long_window".to_owned(), long.to_owned());
                    labels.insert("short_window".to_owned(), short.to_owned());
                    labels
                },
                annotations: [
                    (
                        "summary".to_owned(),
                        format!(
                            "{}: {{{{ $value | humanizePercentage }}}} of requests {what} over {long} (and over {short}): the {slo} budget of a {} objective burns {} times too fast",
                            subject.title,
                            number(options.objective),
                            number(burn)
                        ),
                    ),
                    ("runbook".to_owned(), subject.runbook.clone()),
                ]
                .into_iter()
                .collect(),
                ..Rule::default()
            });
        }
    }
    if options.durations == Durations::Summary {
        let q = number(options.quantile);
        out.push(Rule {
            alert: Some(format!("{kind}LatencyHigh")),
            expr: format!(
                r#"{}{{{}="{}",quantile="{q}"}} > {}"#,
                names.max,
                subject.label,
                quote(&subject.value),
                number(options.latency)
            ),
            for_: Some("10m".to_owned()),
            labels: base("ticket", "latency"),
            annotations: [
                (
                    "summary".to_owned(),
                    format!(
                        "{}: the {q} quantile of its latency is {{{{ $value | humanizeDuration }}}} (threshold {} s)",
                        subject.title,
                        number(options.latency)
                    ),
                ),
                ("runbook".to_owned(), subject.runbook.clone()),
            ]
            .into_iter()
            .collect(),
            ..Rule::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        serde_json::json!({
            "openapi": "3.0.0",
            "paths": {
                "/a/{id}": {
                    "get": { "operationId": "getA", "summary": "Get {{an}} A", "tags": ["x", "y"] },
                    "delete": { "operationId": "delete.A", "description": "Deletes\nmore", "tags": ["x"] },
                    "parameters": []
                },
                "/b": { "post": { "operationId": "getA" }, "put": { "summary": "no id" } },
                "x-internal": { "get": { "operationId": "hidden" } }
            }
        })
    }

    #[test]
    fn operations_are_read_sorted_once_each_with_summary_and_tags() {
        let ops = operations(&doc()).unwrap();
        let ids: Vec<_> = ops
            .iter()
            .map(|o| (o.id.as_str(), o.method.as_str(), o.path.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                ("delete.A", "DELETE", "/a/{id}"),
                ("getA", "GET", "/a/{id}")
            ]
        );
        assert_eq!(ops[0].summary.as_deref(), Some("Deletes"));
        assert_eq!(ops[1].tags, ["x", "y"]);
        assert!(matches!(
            operations(&serde_json::json!({"paths": {}})),
            Err(RulesError::Empty(_))
        ));
        assert!(matches!(
            operations(&serde_json::json!([])),
            Err(RulesError::Parse(_))
        ));
    }

    #[test]
    fn by_tag_each_tag_selects_its_operations_escaped() {
        let ops = operations(&doc()).unwrap();
        let mut options = RulesOptions::new("p_");
        options.group_by = GroupBy::Tag;
        options.durations = Durations::Histogram;
        let rules = generate(&ops, &options).unwrap();
        assert_eq!(rules.subjects, 2);
        assert!(
            rules.text.contains(r#"operation=~"delete\\.A|getA""#),
            "the dot is escaped for RE2, then for the PromQL string: {}",
            rules.text
        );
        assert!(rules.text.contains(r#"le="0.5""#), "{}", rules.text);
        // Two SLOs, two burn rates, two tags.
        assert_eq!(rules.alerts, 8);
        assert!(
            rules.text.contains("Get { {an} } A"),
            "no template in the runbook"
        );
    }

    #[test]
    fn an_integral_latency_matches_both_spellings_of_its_bucket() {
        // Prometheus 3 stores le="1" as le="1.0" whatever the scrape; Prometheus 2 keeps a
        // text scrape's le="1".
        assert_eq!(le_matcher(0.5), r#"le="0.5""#);
        assert_eq!(le_matcher(1.0), r#"le=~"1|1\\.0""#);
        assert_eq!(le_matcher(2_000_000.0), r#"le=~"2000000|2e\\+06""#);
    }

    #[test]
    fn thresholds_are_written_without_float_noise_and_settings_are_checked() {
        let ops = operations(&doc()).unwrap();
        let rules = generate(&ops, &RulesOptions::new("harbor_core_")).unwrap();
        assert!(rules.text.contains("> 14.4 * 0.001"), "{}", rules.text);
        assert!(rules.text.contains("> 6 * 0.001"), "{}", rules.text);
        // Two operations: 2 availability alerts and one latency alert each.
        assert_eq!(rules.alerts, 6);
        assert_eq!(rules.recording, WINDOWS.len() * 2 + 1);
        for bad in [0.0, 1.0, f64::NAN] {
            let mut options = RulesOptions::new("");
            options.objective = bad;
            assert!(matches!(
                generate(&ops, &options),
                Err(RulesError::Invalid(_))
            ));
        }
        let mut options = RulesOptions::new("9bad-");
        assert!(generate(&ops, &options).is_err());
        options.prefix = String::new();
        options.latency = -1.0;
        assert!(generate(&ops, &options).is_err());
    }
}
