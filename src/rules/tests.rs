use serde_json::Value;

use super::{promql::*, *};

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

#[test]
fn native_histograms_record_with_histogram_fraction_and_no_le() {
    let ops = operations(&doc()).unwrap();
    let mut options = RulesOptions::new("harbor_core_");
    options.durations = Durations::Native;
    options.latency = 0.3;
    let rules = generate(&ops, &options).unwrap();
    assert!(
        rules.text.contains(
            "1 - histogram_fraction(0, 0.3, sum by (operation) (rate(harbor_core_http_request_duration_seconds[5m])))"
        ),
        "{}",
        rules.text
    );
    assert!(rules.text.contains(
        "histogram_quantile(0.99, sum by (operation) (rate(harbor_core_http_request_duration_seconds[5m])))"
    ));
    assert!(!rules.text.contains("le="), "native histograms have no le");
    assert!(rules.text.contains("native histogram durations"));
    // Availability and latency burn alerts, two each, per operation; no summary alert.
    assert_eq!(rules.alerts, 8);
    assert_eq!(
        rules.recording,
        WINDOWS.len() * 3 + HISTOGRAM_QUANTILES.len()
    );
    // By tag: the tag's operations selected inside the rate.
    options.group_by = GroupBy::Tag;
    let rules = generate(&ops, &options).unwrap();
    assert!(rules.text.contains(
        r#"1 - histogram_fraction(0, 0.3, sum (rate(harbor_core_http_request_duration_seconds{operation=~"#
    ));
}
