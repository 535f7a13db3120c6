//! Redaction of the URL recorded in a client span's `url.full`.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use reqwest::Url;

/// What redacted credentials and query values are replaced with.
pub const REDACTED: &str = "REDACTED";

/// Query parameters whose values [`redact_url`] replaces (compared case-insensitively): the
/// signatures and credentials of pre-signed S3, GCS and Azure URLs, and bearer tokens.
pub const REDACTED_QUERY_PARAMS: [&str; 9] = [
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "X-Goog-Signature",
    "AWSAccessKeyId",
    "sig",
    "signature",
    "token",
    "access_token",
];

/// `url` as recorded in `url.full`: a username and password replaced by `REDACTED`, and the
/// values of the [`REDACTED_QUERY_PARAMS`] too. Borrowed when there is nothing to redact.
///
/// ```
/// use towerscope::client::redact_url;
///
/// let url = "https://u:p@s3.example/b?X-Amz-Signature=abc&partNumber=1".parse().unwrap();
/// assert_eq!(
///     redact_url(&url),
///     "https://REDACTED:REDACTED@s3.example/b?X-Amz-Signature=REDACTED&partNumber=1"
/// );
/// ```
pub fn redact_url(url: &Url) -> Cow<'_, str> {
    let userinfo = !url.username().is_empty() || url.password().is_some();
    let query = url
        .query()
        .filter(|q| q.split('&').any(|pair| is_redacted_param(param_name(pair))));
    if !userinfo && query.is_none() {
        return Cow::Borrowed(url.as_str());
    }
    let mut redacted = url.clone();
    if userinfo {
        // Only fails for URLs without a host, which have no userinfo.
        let _ = redacted.set_username(REDACTED);
        if url.password().is_some() {
            let _ = redacted.set_password(Some(REDACTED));
        }
    }
    if let Some(query) = query {
        let mut out = String::with_capacity(query.len());
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            let name = param_name(pair);
            if is_redacted_param(name) {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            } else {
                out.push_str(pair);
            }
        }
        redacted.set_query(Some(&out));
    }
    Cow::Owned(redacted.into())
}

fn param_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(name, _)| name)
}

fn is_redacted_param(name: &str) -> bool {
    let name = percent_decode_str(name).decode_utf8_lossy();
    REDACTED_QUERY_PARAMS
        .iter()
        .any(|p| p.eq_ignore_ascii_case(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        s.parse().unwrap()
    }

    #[test]
    fn clean_urls_are_borrowed() {
        let u = url("https://registry.example:8443/v2/x/blobs/sha256:1?n=10&last=a");
        assert!(matches!(redact_url(&u), Cow::Borrowed(s) if s == u.as_str()));
    }

    #[test]
    fn credentials_and_signature_values_are_redacted() {
        for (given, expected) in [
            ("http://user@h/", "http://REDACTED@h/"),
            ("http://user:pw@h/p", "http://REDACTED:REDACTED@h/p"),
            (
                "https://s3.example/b/k?X-Amz-Credential=AK%2F1&x-amz-signature=f00&X-Amz-Expires=60",
                "https://s3.example/b/k?X-Amz-Credential=REDACTED&x-amz-signature=REDACTED&X-Amz-Expires=60",
            ),
            (
                "https://h/?SIG=1&Signature=2&token&access_token=3&X-Goog-Signature=4&keep=5",
                "https://h/?SIG=REDACTED&Signature=REDACTED&token=REDACTED&access_token=REDACTED&X-Goog-Signature=REDACTED&keep=5",
            ),
            ("https://h/?X%2DAmz%2DSignature=1", "https://h/?X%2DAmz%2DSignature=REDACTED"),
            ("https://h/?tokens=1&not_token=2", "https://h/?tokens=1&not_token=2"),
        ] {
            assert_eq!(redact_url(&url(given)), expected, "{given}");
        }
    }
}
