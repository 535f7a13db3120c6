//! UTF-8 names: the OpenTelemetry conventions' own metric names and attribute keys, for a
//! scrape that allows them (`escaping=allow-utf-8`, Prometheus 3's default).
//!
//! Only the conventions' families (`metric.naming: otel`: `http_server_request_duration_seconds`
//! is `http.server.request.duration`, its label `http_request_method` is
//! `http.request.method`, ...) have other names; every other family and label keeps its name.
//! The text formats quote a name that is not a legacy one: `# TYPE "http.server.request.duration"
//! histogram` and `{"http.server.request.duration_bucket","http.request.method"="GET",le="0.1"}`;
//! the protobuf format carries the names as they are.

use super::format::push_label_value;
use crate::metrics::semconv;

/// Which names a render writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Names {
    /// The Prometheus names everywhere (a scrape that does not allow UTF-8).
    #[default]
    Legacy,
    /// The conventions' own names for their families.
    Utf8,
}

impl Names {
    /// The UTF-8 name of the family `name`, when it has one and these are UTF-8 names.
    pub(super) fn family(self, name: &str) -> Option<&'static str> {
        match self {
            Self::Utf8 => semconv::otel_instrument(name).map(|i| i.name),
            Self::Legacy => None,
        }
    }
}

/// The attribute key of a label of the conventions' families (`http_request_method` is
/// `http.request.method`); other labels keep theirs.
#[cfg_attr(not(feature = "protobuf"), allow(dead_code))]
pub(super) fn label_key(key: &str) -> &str {
    semconv::otel_attribute(key).map_or(key, |(otel, _)| otel)
}

/// A rendered label set (`k1="v1",k2="v2"`) with the conventions' attribute keys, quoted
/// (`"http.request.method"="GET"`); values are copied as they are (already escaped).
pub(super) fn label_set(set: &str) -> String {
    let mut out = String::with_capacity(set.len() + 16);
    let mut rest = set;
    while let Some((key, after)) = rest.split_once("=\"") {
        // The value ends at the first quote not escaped by a backslash.
        let mut end = after.len();
        let mut escaped = false;
        for (i, b) in after.bytes().enumerate() {
            match b {
                b'\\' if !escaped => escaped = true,
                b'"' if !escaped => {
                    end = i;
                    break;
                }
                _ => escaped = false,
            }
        }
        if !out.is_empty() {
            out.push(',');
        }
        match semconv::otel_attribute(key) {
            Some((otel, _)) => push_quoted(&mut out, otel),
            None => out.push_str(key),
        }
        out.push_str("=\"");
        out.push_str(&after[..end]);
        out.push('"');
        let next = &after[(end + 1).min(after.len())..];
        rest = next.strip_prefix(',').unwrap_or(next);
    }
    out
}

/// Appends `"name"`, escaped as a label value is.
pub(super) fn push_quoted(out: &mut String, name: &str) {
    out.push('"');
    push_label_value(out, name);
    out.push('"');
}

/// Appends one sample line's head with a quoted name inside the braces:
/// `{"name[suffix]"[,labels][,extra]} `; the caller appends the value and the line feed.
pub(super) fn push_sample_head(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &str,
    extra: Option<(&str, &str)>,
) {
    out.push_str("{\"");
    push_label_value(out, name);
    out.push_str(suffix);
    out.push('"');
    if !labels.is_empty() {
        out.push(',');
        out.push_str(labels);
    }
    if let Some((key, value)) = extra {
        out.push(',');
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
    fn the_conventions_keys_are_quoted_and_the_rest_kept() {
        assert_eq!(
            label_set(r#"http_request_method="GET",http_route="/a\"b\\",other="x""#),
            r#""http.request.method"="GET","http.route"="/a\"b\\",other="x""#
        );
        assert_eq!(label_set(""), "");
        let mut out = String::new();
        push_sample_head(
            &mut out,
            "http.server.request.duration",
            "_bucket",
            "",
            Some(("le", "0.1")),
        );
        assert_eq!(out, r#"{"http.server.request.duration_bucket",le="0.1"} "#);
        assert_eq!(
            Names::Utf8.family("http_server_request_duration_seconds"),
            Some("http.server.request.duration")
        );
        assert_eq!(Names::Utf8.family("http_request_total"), None);
        assert_eq!(
            Names::Legacy.family("http_server_request_duration_seconds"),
            None
        );
        assert_eq!(
            label_key("http_response_status_code"),
            "http.response.status_code"
        );
    }
}
