//! Small text helpers shared by the layers.

/// `s` cut to at most `max` bytes at a character boundary (for attribute values copied from
/// requests, error messages and statements).
pub(crate) fn capped(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::capped;

    #[test]
    fn cuts_at_char_boundaries() {
        assert_eq!(capped("abc", 5), "abc");
        assert_eq!(capped("abcdef", 3), "abc");
        assert_eq!(capped("aé", 2), "a", "never inside a character");
        assert_eq!(capped("", 0), "");
    }
}
