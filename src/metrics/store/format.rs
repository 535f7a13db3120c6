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
pub(super) fn push_label_value(out: &mut String, value: &str) {
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

/// Appends a float as OpenMetrics' canonical form writes it, which is how Prometheus 3 stores
/// every `le` and `quantile` label value whatever the exposition format (its
/// `FormatOpenMetricsFloat`: Go's shortest `%g`, exponent when it is below -4 or at least 6,
/// and `.0` appended to a bare integer): `1` is `1.0`, `0.005` stays, `1e-5` is `1e-05`,
/// `1048576` is `1.048576e+06`. For the rules' `le` matchers (`cli`).
#[cfg(feature = "cli")]
pub(crate) fn push_om_float(out: &mut String, value: f64) {
    if value.is_nan() || value.is_infinite() {
        return push_f64(out, value);
    }
    // Rust's `{:e}` gives the shortest round-trip digits: `d[.ddd]e[-]x`.
    let sci = format!("{value:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let _ = write!(
            out,
            "{mantissa}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        );
        return;
    }
    let start = out.len();
    let _ = write!(out, "{value}");
    if !out[start..].contains('.') {
        out.push_str(".0");
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

#[cfg(any(feature = "otlp", test))]
/// The pairs of a rendered label set `k1="v1",k2="v2"` (as `format::label_set` writes it),
/// values unescaped.
pub(crate) fn parse_label_set(set: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut rest = set;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        pairs.push((key.to_owned(), value));
        rest = after[end..].strip_prefix(',').unwrap_or(&after[end..]);
    }
    pairs
}

#[cfg(any(feature = "otlp", feature = "protobuf"))]
/// A `# HELP` text back to the description (`\\` and `\n` unescaped).
pub(crate) fn unescape_help(help: &str) -> String {
    let mut out = String::with_capacity(help.len());
    let mut chars = help.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(any(feature = "otlp", feature = "protobuf"))]
    fn label_sets_parse_back_to_their_pairs() {
        for pairs in [
            vec![],
            vec![("a", "1")],
            vec![("method", "GET"), ("operation", "/v2/{name}")],
            vec![("q", "say \"hi\"\\n,\nx=\"y\""), ("b", "")],
        ] {
            let set = label_set(pairs.iter().copied());
            let parsed = parse_label_set(&set);
            let expected: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            assert_eq!(parsed, expected, "{set}");
        }
    }

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
    #[cfg(feature = "cli")]
    fn om_floats_are_what_prometheus_3_stores() {
        // Go's labels.FormatOpenMetricsFloat for the same values.
        let cases = [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (0.005, "0.005"),
            (10.0, "10.0"),
            (0.0, "0.0"),
            (-2.5, "-2.5"),
            (100_000.0, "100000.0"),
            (1_000_000.0, "1e+06"),
            (1_048_576.0, "1.048576e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123_456.7, "123456.7"),
            (2.5e21, "2.5e+21"),
            (f64::INFINITY, "+Inf"),
        ];
        for (value, want) in cases {
            let mut out = String::new();
            push_om_float(&mut out, value);
            assert_eq!(out, want, "{value}");
        }
    }

    #[test]
    fn help_keeps_quotes_and_escapes_newlines() {
        assert_eq!(help_text("a \"b\"\\\nc"), "a \"b\"\\\\\\nc");
    }
}
