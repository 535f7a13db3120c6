//! Percent-encoding of paths: request paths and template literals are brought to one form so
//! that they compare byte for byte.

use std::borrow::Cow;

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

/// Characters of a template literal that a client sends percent-encoded: the WHATWG path
/// percent-encode set without the braces (which delimit parameters); non-ASCII is encoded too.
const LITERAL_ENCODE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`');

/// Decodes the percent-escapes of unreserved characters (RFC 3986 §6.2.2.2), leaving every
/// other escape, and any malformed one, as is. Borrows when nothing changes.
pub(super) fn normalize_percent(path: &str) -> Cow<'_, str> {
    let bytes = path.as_bytes();
    if !bytes.contains(&b'%') {
        return Cow::Borrowed(path);
    }
    let mut normalized = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let decoded = match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(&high), Some(&low)) => hex(high).zip(hex(low)).map(|(h, l)| h << 4 | l),
                _ => None,
            };
            if let Some(byte) = decoded.filter(|&byte| is_unreserved(byte)) {
                // `copied` follows an escape and `i` is at a `%`: both are char boundaries.
                normalized.push_str(&path[copied..i]);
                normalized.push(char::from(byte));
                i += 3;
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    if copied == 0 {
        return Cow::Borrowed(path);
    }
    normalized.push_str(&path[copied..]);
    Cow::Owned(normalized)
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Normalizes a literal path the way request paths are: percent-encodes what a client would,
/// then decodes escaped unreserved characters.
pub(super) fn normalize_literal(literal: &str) -> String {
    let encoded: Cow<'_, str> = utf8_percent_encode(literal, LITERAL_ENCODE).into();
    normalize_percent(&encoded).into_owned()
}
