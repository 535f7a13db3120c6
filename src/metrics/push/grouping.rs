//! The group's URL (`/metrics/job/<job>/<label>/<value>...`, values encoded the Pushgateway's
//! way), grouping label names, and the labels a pushed series must not carry.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::Url;

/// Escapes everything in a path segment but RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The base64url alphabet (RFC 4648, section 5).
const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// `base` + `/metrics/job/<job>/<label>/<value>...`, each value encoded the Pushgateway's way.
pub(super) fn group_url(base: &Url, job: &str, grouping: &[(String, String)]) -> Url {
    let mut path = base.path().trim_end_matches('/').to_owned();
    path.push_str("/metrics");
    push_pair(&mut path, "job", job);
    for (name, value) in grouping {
        push_pair(&mut path, name, value);
    }
    let mut url = base.clone();
    url.set_path(&path);
    url
}

fn push_pair(path: &mut String, name: &str, value: &str) {
    path.push('/');
    path.push_str(name);
    // A `/` cannot be percent-encoded (the Pushgateway decodes the path before splitting it),
    // an empty segment would vanish, and `.`/`..` are dot segments that URLs resolve away.
    if value.is_empty() || value.contains('/') || value == "." || value == ".." {
        path.push_str("@base64/");
        if value.is_empty() {
            path.push('=');
        } else {
            path.push_str(&base64url(value.as_bytes()));
        }
    } else {
        path.push('/');
        path.extend(utf8_percent_encode(value, SEGMENT));
    }
}

/// Base64url with padding (RFC 4648, section 5).
fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                let sextet = (n >> (18 - 6 * i)) & 0x3f;
                out.push(char::from(BASE64URL[sextet as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(super) fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The first series in the exposition `text` with a label in `reserved`: (sample name, label).
pub(super) fn label_conflict<'t>(text: &'t str, reserved: &[String]) -> Option<(&'t str, &'t str)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, labels) = line.split_once('{')?;
            // A `{` after the first space belongs to the value part, not to labels.
            if name.contains(' ') {
                return None;
            }
            line_labels(labels)
                .find(|label| reserved.iter().any(|r| r == label))
                .map(|label| (name, label))
        })
}

/// The label names of a sample line, given the text after its `{`.
fn line_labels(mut rest: &str) -> impl Iterator<Item = &str> {
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches([' ', ',']);
        if rest.starts_with('}') {
            return None;
        }
        let (name, value) = rest.split_once('=')?;
        let value = value.trim_start().strip_prefix('"')?;
        // Skip the quoted value, whose `\"` and `\\` escapes do not end it.
        let mut escaped = false;
        let end = value.char_indices().find_map(|(i, c)| {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => return Some(i),
                _ => {}
            }
            None
        })?;
        rest = &value[end + 1..];
        Some(name.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::push::Pushgateway;

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("/var/tmp", "L3Zhci90bXA="),
        ] {
            assert_eq!(base64url(plain.as_bytes()), encoded, "{plain:?}");
        }
        // The URL-safe alphabet: `-` and `_` instead of `+` and `/`.
        assert_eq!(base64url(&[0xfb, 0xff, 0xbf]), "-_-_");
    }

    #[test]
    fn url_encodes_job_and_values_the_pushgateway_way() {
        let p = Pushgateway::new("http://gw:9091/", "a/b")
            .unwrap()
            .with_grouping("plain", "v-1.2_x~")
            .unwrap()
            .with_grouping("empty", "")
            .unwrap()
            .with_grouping("dots", "..")
            .unwrap()
            .with_grouping("odd", "a b%?#é\\")
            .unwrap();
        assert_eq!(
            p.url(),
            "http://gw:9091/metrics/job@base64/YS9i/plain/v-1.2_x~/empty@base64/=\
             /dots@base64/Li4=/odd/a%20b%25%3F%23%C3%A9%5C"
        );
    }

    #[test]
    fn url_keeps_a_path_prefix_and_replaces_a_repeated_label() {
        let p = Pushgateway::new("https://proxy/pushgateway", "j")
            .unwrap()
            .with_grouping("instance", "a")
            .unwrap()
            .with_grouping("instance", "b")
            .unwrap();
        assert_eq!(
            p.url(),
            "https://proxy/pushgateway/metrics/job/j/instance/b"
        );
    }

    #[test]
    fn label_conflict_finds_reserved_labels_only_in_label_names() {
        let reserved = vec!["job".to_owned(), "path".to_owned()];
        let text = "# HELP a_total has job=\"x\" in its help\n\
                    # TYPE a_total counter\n\
                    a_total{x=\"path=\\\"1\\\",job=\\\\\",y=\"}\"} 1\n\
                    b 2\n";
        assert_eq!(label_conflict(text, &reserved), None);
        let text = "a_total{x=\"1\"} 1\nc{method=\"GET\",path=\"/\"} 3\n";
        assert_eq!(label_conflict(text, &reserved), Some(("c", "path")));
        assert_eq!(
            label_conflict("d{job=\"x\"} 1\n", &reserved),
            Some(("d", "job"))
        );
    }
}
