//! The pieces of the Prometheus text format 0.0.4: names, label sets, numbers.

use std::fmt::Write;

/// `name` with every character outside `[a-zA-Z0-9_:]` (and a leading digit) replaced by `_`.
pub(crate) fn metric_name(name: &str) -> String {
    sanitize(name, |c| c == ':')
}

/// `key` with every character outside `[a-zA-Z0-9_]` (and a leading digit) replaced by `_`.
fn label_key(key: &str) -> String {
    sanitize(key, |_| false)
}

fn sanitize(s: &str, extra: impl Fn(char) -> bool) -> String {
    let mut out: String = s
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let valid =
                c.is_ascii_alphabetic() || c == '_' || extra(c) || (i > 0 && c.is_ascii_digit());
            if valid {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// Appends `value` escaped as the text format wants a label value: `\`, `"` and line feed.
fn push_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `help` escaped for a `# HELP` line: `\` and line feed.
pub(crate) fn help_text(help: &str) -> String {
    let mut out = String::with_capacity(help.len());
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The inside of a series' braces, `k1="v1",k2="v2"`, in the key's order; a repeated label
/// keeps its first place and its last value.
pub(crate) fn label_set<'a>(labels: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<(String, &str)> = Vec::new();
    for (key, value) in labels {
        let key = label_key(key);
        match pairs.iter_mut().find(|(k, _)| *k == key) {
            Some(pair) => pair.1 = value,
            None => pairs.push((key, value)),
        }
    }
    let mut out = String::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push_str("=\"");
        push_label_value(&mut out, value);
        out.push('"');
    }
    out
}

/// Appends a float as the text format writes it: `+Inf`, `-Inf`, `NaN`, or Rust's shortest
/// round-trip form.
pub(crate) fn push_f64(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value == f64::INFINITY {
        out.push_str("+Inf");
    } else if value == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{value}");
    }
}

/// Appends an integer.
pub(crate) fn push_u64(out: &mut String, value: u64) {
    let _ = write!(out, "{value}");
}

/// Appends one sample line: `name[suffix]{labels[,extra]} `, the caller appends the value and
/// the line feed.
pub(crate) fn push_sample_head(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &str,
    extra: Option<(&str, &str)>,
) {
    out.push_str(name);
    out.push_str(suffix);
    if labels.is_empty() && extra.is_none() {
        out.push(' ');
        return;
    }
    out.push('{');
    out.push_str(labels);
    if let Some((key, value)) = extra {
        if !labels.is_empty() {
            out.push(',');
        }
        out.push_str(key);
        out.push_str("=\"");
        out.push_str(value);
        out.push('"');
    }
    out.push_str("} ");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys_are_sanitized() {
        assert_eq!(
            metric_name("http.server:duration-ms"),
            "http_server:duration_ms"
        );
        assert_eq!(metric_name("9lives"), "_lives");
        assert_eq!(metric_name(""), "_");
        assert_eq!(
            label_set([("a.b", "1"), ("c:d", "2")].into_iter()),
            r#"a_b="1",c_d="2""#
        );
    }

    #[test]
    fn label_values_are_escaped_and_repeats_folded() {
        assert_eq!(
            label_set([("op", "a\\\"b\nc"), ("x", "1"), ("op", "last")].into_iter()),
            r#"op="last",x="1""#
        );
        assert_eq!(
            label_set([("op", "a\\\"b\nc")].into_iter()),
            r#"op="a\\\"b\nc""#
        );
    }

    #[test]
    fn floats_use_the_text_format_spellings() {
        let mut out = String::new();
        for v in [0.5, 1.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 1e-7] {
            push_f64(&mut out, v);
            out.push(' ');
        }
        assert_eq!(out, "0.5 1 +Inf -Inf NaN 0.0000001 ");
    }

    #[test]
    fn help_keeps_quotes_and_escapes_newlines() {
        assert_eq!(help_text("a \"b\"\\\nc"), "a \"b\"\\\\\\nc");
    }
}
