//! Path patterns: `/healthz`, `/v2/*/manifests/*`, `/v2/{name}/blobs/{digest}`, `/internal/**`.

use std::fmt;

/// A pattern over request paths, segment by segment.
///
/// - a literal segment matches itself (byte for byte, as the path arrives: no decoding);
/// - `*`, or a route parameter `{name}` (so that an axum route can be pasted), matches any one
///   non-empty segment;
/// - `**`, only as the last segment, matches the rest of the path: nothing, or any segments.
///
/// A trailing slash is a segment of its own (empty): `/healthz` does not match `/healthz/`.
#[derive(Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: Box<str>,
    segments: Box<[Segment]>,
}

#[derive(Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    One,
    Rest,
}

/// Why a text is not a [`PathPattern`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError(String);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PatternError {}

impl PathPattern {
    /// Parses `pattern`, which starts with `/`.
    pub fn new(pattern: &str) -> Result<Self, PatternError> {
        let Some(rest) = pattern.strip_prefix('/') else {
            return Err(PatternError(format!(
                "must start with '/' (got {pattern:?})"
            )));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let segment = match *part {
                "**" if i + 1 == parts.len() => Segment::Rest,
                "**" => {
                    return Err(PatternError(format!(
                        "'**' can only be the last segment (got {pattern:?})"
                    )))
                }
                "*" => Segment::One,
                p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => Segment::One,
                p if p.contains('*') || p.contains('{') || p.contains('}') => {
                    return Err(PatternError(format!(
                        "a segment is a literal, '*', '{{name}}' or a final '**' \
                         (got {p:?} in {pattern:?})"
                    )))
                }
                p => Segment::Literal(p.into()),
            };
            segments.push(segment);
        }
        Ok(Self {
            text: pattern.into(),
            segments: segments.into(),
        })
    }

    /// Whether `path` (a request's path, without its query) matches.
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = rest.split('/');
        for segment in self.segments.iter() {
            let literal = match segment {
                Segment::Rest => return true,
                Segment::One => None,
                Segment::Literal(literal) => Some(literal),
            };
            // The path ended before the pattern.
            let Some(part) = parts.next() else {
                return false;
            };
            let fits = match literal {
                Some(literal) => **literal == *part,
                None => !part.is_empty(),
            };
            if !fits {
                return false;
            }
        }
        // The pattern ended: so must the path.
        parts.next().is_none()
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PathPattern").field(&self.text).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, path: &str) -> bool {
        PathPattern::new(pattern).unwrap().matches(path)
    }

    #[test]
    fn literals_wildcards_parameters_and_the_rest() {
        assert!(matches("/healthz", "/healthz"));
        assert!(!matches("/healthz", "/healthz/"));
        assert!(!matches("/healthz", "/healthzz"));
        assert!(!matches("/healthz", "/"));
        assert!(matches("/", "/"));
        assert!(!matches("/", "/a"));
        assert!(matches("/v2/*/manifests/*", "/v2/library/manifests/latest"));
        assert!(!matches("/v2/*/manifests/*", "/v2/library/manifests/"));
        assert!(!matches(
            "/v2/*/manifests/*",
            "/v2/library/manifests/latest/x"
        ));
        assert!(matches(
            "/v2/{name}/blobs/{digest}",
            "/v2/a/blobs/sha256:00"
        ));
        assert!(!matches(
            "/v2/{name}/blobs/{digest}",
            "/v2/a/b/blobs/sha256:00"
        ));
        assert!(matches("/internal/**", "/internal"));
        assert!(matches("/internal/**", "/internal/"));
        assert!(matches("/internal/**", "/internal/a/b/c"));
        assert!(!matches("/internal/**", "/internals"));
        assert!(matches("/**", "/anything/at/all"));
        assert!(matches("/**", "/"));
        assert!(!matches("/a", "a"));
        assert!(!matches("/a", ""));
    }

    #[test]
    fn malformed_patterns_say_why() {
        for (pattern, why) in [
            ("healthz", "must start with '/'"),
            ("/a/**/b", "'**' can only be the last segment"),
            ("/a*", "a segment is a literal"),
            ("/{a", "a segment is a literal"),
            ("/{}", "a segment is a literal"),
        ] {
            let err = PathPattern::new(pattern).unwrap_err().to_string();
            assert!(err.contains(why), "{pattern}: {err}");
        }
    }
}
