//! The alerting rules of one subject: multi-window burn-rate alerts on its error and
//! slow-request budgets, and (summaries) a latency quantile above the threshold.

use std::collections::BTreeMap;

use super::{
    openapi::Subject,
    promql::{number, quote},
    record::Names,
    Durations, Rule, RulesOptions, BURNS,
};

/// The alerts of one subject.
pub(super) fn alert(out: &mut Vec<Rule>, names: &Names, options: &RulesOptions, subject: &Subject) {
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
    if options.durations != Durations::Summary {
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
