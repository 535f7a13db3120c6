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
