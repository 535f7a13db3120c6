//! The pieces of PromQL and of rule text the rules are written with: string and regular
//! expression literals, numbers, the `le` matcher, template-safe text.

use crate::metrics::store::{push_f64, push_om_float};

/// `value` as a PromQL string literal's contents.
pub(super) fn quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `value` as an RE2 literal (for `=~`).
pub(super) fn regex_literal(value: &str) -> String {
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
pub(super) fn template_safe(text: &str) -> String {
    text.replace("{{", "{ {").replace("}}", "} }")
}

/// A number as a rule writes it: shortest form, no float noise (`0.001`, not
/// `0.0010000000000000009`).
pub(super) fn number(value: f64) -> String {
    let rounded = format!("{value:.12}");
    let trimmed = rounded.trim_end_matches('0').trim_end_matches('.');
    trimmed.to_owned()
}

/// The matcher of the bucket `le = value`, for either spelling of its label: as the text
/// exposition writes it (`le="1"`, what Prometheus 2 stores from a text scrape) and as
/// Prometheus 3 stores it whatever the scrape (OpenMetrics' canonical `le="1.0"`, also what
/// Prometheus 2 stores from a protobuf scrape). One matcher when the two are the same
/// (`le="0.5"`), a regular expression of both otherwise (`le=~"1|1\\.0"`).
pub(super) fn le_matcher(value: f64) -> String {
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
