//! `tracestate` read by the W3C Trace Context grammar (level 2), before anything reaches the
//! SDK's `TraceState`.
//!
//! ```text
//! list             = list-member 0*31( OWS "," OWS list-member )
//! list-member      = key "=" value / OWS
//! key              = simple-key / multi-tenant-key
//! simple-key       = lcalpha 0*255( lcalpha / DIGIT / "_" / "-"/ "*" / "/" )
//! multi-tenant-key = tenant-id "@" system-id
//! tenant-id        = ( lcalpha / DIGIT ) 0*240( lcalpha / DIGIT / "_" / "-"/ "*" / "/" )
//! system-id        = lcalpha 0*13( lcalpha / DIGIT / "_" / "-"/ "*" / "/" )
//! value            = 0*255( chr ) nblk-chr
//! nblk-chr         = %x21-2B / %x2D-3C / %x3E-7E
//! chr              = %x20 / nblk-chr
//! ```
//!
//! Empty and whitespace-only members are skipped; spaces and tabs around a member are
//! optional whitespace, not part of it (so a value keeps its leading spaces and loses its
//! trailing ones). A key may appear once.
//!
//! **What is dropped.** The whole `tracestate` is discarded when any member it keeps breaks
//! the grammar or repeats a key: the specification says the list *is* the value of the header
//! (a header that does not parse has no list to take members from), its test suite expects an
//! invalid header to be discarded whole, and keeping the valid members around a broken one
//! would forward a list its sender never wrote. `traceparent` is unaffected (the spec: a
//! failure to parse `tracestate` must not affect `traceparent`). The 32-member / 512-byte cap
//! ([`cap_members`](super::cap_members)) runs first and cuts whole members off the end, as the
//! spec allows; members it cuts are neither kept nor judged.

/// The longest key, simple or multi-tenant.
const MAX_KEY: usize = 256;
/// The longest tenant id of a multi-tenant key (before the `@`).
const MAX_TENANT: usize = 241;
/// The longest system id of a multi-tenant key (after the `@`).
const MAX_SYSTEM: usize = 14;
/// The longest value.
const MAX_VALUE: usize = 256;

/// The members of `list`, in order, when every member follows the grammar and no key repeats;
/// `None` otherwise. An empty or whitespace-only list gives no members.
///
/// The caller caps the list first: checking duplicates is quadratic in the member count, which
/// the cap bounds to 32.
pub(crate) fn parse(list: &str) -> Option<Vec<(&str, &str)>> {
    let mut members: Vec<(&str, &str)> = Vec::new();
    for member in list.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue;
        }
        let (key, value) = member.split_once('=')?;
        if !is_key(key) || !is_value(value) || members.iter().any(|&(k, _)| k == key) {
            return None;
        }
        members.push((key, value));
    }
    Some(members)
}

/// `key = simple-key / multi-tenant-key`.
pub(crate) fn is_key(key: &str) -> bool {
    match key.split_once('@') {
        Some((tenant, system)) => {
            is_id(tenant, MAX_TENANT, |b| {
                b.is_ascii_lowercase() || b.is_ascii_digit()
            }) && is_id(system, MAX_SYSTEM, |b| b.is_ascii_lowercase())
        }
        None => is_id(key, MAX_KEY, |b| b.is_ascii_lowercase()),
    }
}

/// 1 to `max` bytes, the first accepted by `first`, the others key characters (no `@`).
fn is_id(id: &str, max: usize, first: impl Fn(u8) -> bool) -> bool {
    let bytes = id.as_bytes();
    match bytes.split_first() {
        Some((&head, rest)) => {
            bytes.len() <= max
                && first(head)
                && rest.iter().all(|&b| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || matches!(b, b'_' | b'-' | b'*' | b'/')
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
