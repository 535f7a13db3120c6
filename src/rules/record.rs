//! The recording rules: request rates, error ratios, slow-request ratios and latency quantiles
//! over the raw series, per window.

use std::collections::BTreeMap;

use super::{
    promql::{le_matcher, number},
    Durations, Rule, RulesOptions, HISTOGRAM_QUANTILES, WINDOWS,
};

/// The recorded families' names (the window or nothing is appended).
pub(super) struct Names {
    pub(super) requests: String,
    pub(super) errors: String,
    pub(super) slow: String,
    pub(super) quantile: String,
    pub(super) max: String,
}

/// Where the recording rules of one subject go: the raw series' selector and the labels
/// every rule carries.
struct Recorder<'a> {
    out: &'a mut Vec<Rule>,
    raw: &'a str,
    labels: BTreeMap<String, String>,
}

impl Recorder<'_> {
    /// The selector of the raw series, with `extra` matchers.
    fn sel(&self, extra: &str) -> String {
        match (self.raw.is_empty(), extra.is_empty()) {
            (true, true) => String::new(),
            (true, false) => format!("{{{extra}}}"),
            (false, true) => format!("{{{}}}", self.raw),
            (false, false) => format!("{{{},{extra}}}", self.raw),
        }
    }

    fn push(&mut self, record: String, expr: String, extra: Option<(&str, String)>) {
        let mut labels = self.labels.clone();
        if let Some((k, v)) = extra {
            labels.insert(k.to_owned(), v);
        }
        self.out.push(Rule {
            record: Some(record),
            expr,
            labels,
            ..Rule::default()
        });
    }
}

/// The recording rules over the raw series selected by `raw` (and `code` matchers), summed
/// `by` (by operation: `by (operation) `; by tag: nothing, and the tag as a label).
pub(super) fn record(
    out: &mut Vec<Rule>,
    names: &Names,
    options: &RulesOptions,
    by: &str,
    raw: &str,
    label: Option<(&str, &str)>,
) {
    let total = format!("{}http_request_total", options.prefix);
    let mut r = Recorder {
        out,
        raw,
        labels: label
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into_iter()
            .collect(),
    };
    for w in WINDOWS {
        let expr = format!("sum {by}(rate({total}{}[{w}]))", r.sel(""));
        r.push(format!("{}{w}", names.requests), expr, None);
        let expr = format!(
            r#"sum {by}(rate({total}{}[{w}])) / sum {by}(rate({total}{}[{w}]))"#,
            r.sel(r#"code=~"5..""#),
            r.sel(r#"code!="499""#)
        );
        r.push(format!("{}{w}", names.errors), expr, None);
    }
    match options.durations {
        Durations::Histogram => classic_histogram(&mut r, names, options, by),
        Durations::Native => native_histogram(&mut r, names, options, by),
        Durations::Summary => {
            let by_q = if by.is_empty() {
                "by (quantile) ".to_owned()
            } else {
                "by (operation, quantile) ".to_owned()
            };
            let expr = format!(
                "max {by_q}({}http_request_duration_seconds{})",
                options.prefix,
                r.sel("")
            );
            r.push(names.max.clone(), expr, None);
        }
    }
}

/// The slow-request ratios and quantiles of classic buckets: the bucket at the threshold
/// over the count, `histogram_quantile` by `le`.
fn classic_histogram(r: &mut Recorder<'_>, names: &Names, options: &RulesOptions, by: &str) {
    let duration = format!("{}http_request_duration_seconds", options.prefix);
    let by_le = if by.is_empty() {
        "by (le) ".to_owned()
    } else {
        "by (operation, le) ".to_owned()
    };
    let fast = r.sel(&le_matcher(options.latency));
    for w in WINDOWS {
        let expr = format!(
            "1 - sum {by}(rate({duration}_bucket{fast}[{w}])) / sum {by}(rate({duration}_count{}[{w}]))",
            r.sel("")
        );
        r.push(format!("{}{w}", names.slow), expr, None);
    }
    for q in HISTOGRAM_QUANTILES {
        let expr = format!(
            "histogram_quantile({}, sum {by_le}(rate({duration}_bucket{}[5m])))",
            number(q),
            r.sel("")
        );
        r.push(names.quantile.clone(), expr, Some(("quantile", number(q))));
    }
}

/// The same of native histograms (`metric.histogram: native` or `both`), which have no `le`:
/// the fraction above the threshold is `1 - histogram_fraction(0, threshold, ...)` of the
/// summed rate, quantiles `histogram_quantile` of it. Any threshold works (no bucket needs to
/// end there); between bucket bounds Prometheus interpolates.
fn native_histogram(r: &mut Recorder<'_>, names: &Names, options: &RulesOptions, by: &str) {
    let duration = format!("{}http_request_duration_seconds", options.prefix);
    let latency = number(options.latency);
    for w in WINDOWS {
        let expr = format!(
            "1 - histogram_fraction(0, {latency}, sum {by}(rate({duration}{}[{w}])))",
            r.sel("")
        );
        r.push(format!("{}{w}", names.slow), expr, None);
    }
    for q in HISTOGRAM_QUANTILES {
        let expr = format!(
            "histogram_quantile({}, sum {by}(rate({duration}{}[5m])))",
            number(q),
            r.sel("")
        );
        r.push(names.quantile.clone(), expr, Some(("quantile", number(q))));
    }
}
