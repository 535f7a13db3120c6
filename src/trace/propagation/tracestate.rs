//! `tracestate` read by the W3C Trace Context grammar (level 2), before anything reaches the
//! SDK's `TraceState`.
//!
//! ```text
//! list        = list-member 0*31( OWS "," OWS list-member )
//! list-member = key "=" value / OWS
//! key         = ( lcalpha / DIGIT ) 0*255( keychar )
//! keychar     = lcalpha / DIGIT / "_" / "-"/ "*" / "/" / "@"
//! value       = 0*255( chr ) nblk-chr
//! nblk-chr    = %x21-2B / %x2D-3C / %x3E-7E
//! chr         = %x20 / nblk-chr
//! ```
//!
//! The key is the specification's since level 2 (and the test suite's): any number of `@`
//! anywhere but first, 256 characters in all. Level 1 had a `tenant@system` form of at most
//! 241 + 14 characters; every key it allowed is still allowed.
//!
//! Empty and whitespace-only members are skipped; spaces and tabs around a member are
//! optional whitespace, not part of it (so a value keeps its leading spaces and loses its
//! trailing ones). A key repeated later in the list is dropped there: the first member with
//! that key is kept (the spec: vendors may discard duplicate keys; the test suite expects the
//! list inherited, with one of them or both).
//!
//! **What is dropped.** The whole `tracestate` is discarded when any member it keeps breaks
//! the grammar: the specification says the list *is* the value of the header (a header that
//! does not parse has no list to take members from), its test suite expects an invalid
//! header to be discarded whole, and keeping the valid members around a broken one would
//! forward a list its sender never wrote. `traceparent` is unaffected (the spec: a failure to
//! parse `tracestate` must not affect `traceparent`). The 32-member / 512-byte cap
//! ([`cap_members`](super::cap_members)) runs first and cuts whole members off the end, as the
//! spec allows; members it cuts are neither kept nor judged.

/// The longest key.
const MAX_KEY: usize = 256;
/// The longest value.
const MAX_VALUE: usize = 256;

/// The members of `list`, in order, the first of each key only, when every member follows the
/// grammar; `None` otherwise. An empty or whitespace-only list gives no members.
///
/// The caller caps the list first: finding duplicates is quadratic in the member count, which
/// the cap bounds to 32.
pub(crate) fn parse(list: &str) -> Option<Vec<(&str, &str)>> {
    let mut members: Vec<(&str, &str)> = Vec::new();
    for member in list.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        let (key, value) = member.split_once('=')?;
        if !is_key(key) || !is_value(value) {
            return None;
        }
        if members.iter().all(|&(k, _)| k != key) {
            members.push((key, value));
        }
    }
    Some(members)
}

/// `key = ( lcalpha / DIGIT ) 0*255( keychar )`: 1 to 256 characters, the first `a`–`z` or
/// a digit, the others also `_ - * / @`.
pub(crate) fn is_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    match bytes.split_first() {
        Some((&head, rest)) => {
            bytes.len() <= MAX_KEY
                && (head.is_ascii_lowercase() || head.is_ascii_digit())
                && rest.iter().all(|&b| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || matches!(b, b'_' | b'-' | b'*' | b'/' | b'@')
                })
        }
        None => false,
    }
}

/// `value = 0*255(chr) nblk-chr`: 1 to 256 printable ASCII characters but `,` and `=`, the
/// last not a space.
pub(crate) fn is_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    match bytes.last() {
        Some(&last) => {
            bytes.len() <= MAX_VALUE
                && last != b' '
                && bytes
                    .iter()
                    .all(|&b| matches!(b, 0x20..=0x7e) && b != b',' && b != b'=')
        }
        None => false,
    }
}
