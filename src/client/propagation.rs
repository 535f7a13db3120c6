//! Which trace context headers a call carries, by host.

use std::collections::HashSet;

use http::HeaderMap;
use opentelemetry::propagation::Injector;

use crate::trace::propagation::HeaderInjector;

/// The hosts allowed to receive `tracestate` and `baggage`.
#[derive(Debug, Default)]
pub(super) struct ContextHosts {
    exact: HashSet<String>,
    /// `.example.com` for `*.example.com`.
    suffixes: Vec<String>,
}

impl ContextHosts {
    pub(super) fn new(hosts: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let mut this = Self::default();
        for host in hosts {
            let host = host.into().trim().to_ascii_lowercase();
            match host.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') => this.suffixes.push(suffix.to_owned()),
                _ => {
                    this.exact.insert(unbracketed(&host).to_owned());
                }
            }
        }
        this
    }

    /// `host` is a URL's host: lowercase when it is a name (the URL parser lowercases them).
    pub(super) fn allows(&self, host: &str) -> bool {
        if self.exact.is_empty() && self.suffixes.is_empty() {
            return false;
        }
        let host = unbracketed(host);
        self.exact.contains(host)
            || self
                .suffixes
                .iter()
                .any(|s| host.len() > s.len() && host.ends_with(s.as_str()))
    }
}

/// Writes only non-empty values, and only `traceparent`/`uber-trace-id` unless the host may
/// have the full context.
pub(super) struct FilteredInjector<'a> {
    pub(super) headers: &'a mut HeaderMap,
    pub(super) full_context: bool,
}

impl Injector for FilteredInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let everywhere =
            key.eq_ignore_ascii_case("traceparent") || key.eq_ignore_ascii_case("uber-trace-id");
        if value.is_empty() || !(everywhere || self.full_context) {
            return;
        }
        HeaderInjector(&mut *self.headers).set(key, value);
    }
}

pub(super) fn unbracketed(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_hosts_match_exactly_or_by_wildcard() {
        let hosts = ContextHosts::new(["Registry.Internal", "*.svc.local", "[::1]", "10.0.0.1"]);
        for host in [
            "registry.internal",
            "a.svc.local",
            "a.b.svc.local",
            "[::1]",
            "10.0.0.1",
        ] {
            assert!(hosts.allows(host), "{host}");
        }
        for host in [
            "svc.local",
            "evil-svc.local",
            "registry.internal.evil",
            "10.0.0.10",
        ] {
            assert!(!hosts.allows(host), "{host}");
        }
        assert!(!ContextHosts::default().allows("registry.internal"));
    }

    #[test]
    fn injector_skips_empty_values_and_keeps_context_to_allowed_hosts() {
        let mut headers = HeaderMap::new();
        let mut injector = FilteredInjector {
            headers: &mut headers,
            full_context: false,
        };
        injector.set("traceparent", "00-1-2-01".into());
        injector.set("uber-trace-id", "1:2:0:1".into());
        injector.set("tracestate", "v=1".into());
        injector.set("baggage", "k=v".into());
        assert_eq!(headers.len(), 2);
        let mut injector = FilteredInjector {
            headers: &mut headers,
            full_context: true,
        };
        injector.set("tracestate", String::new());
        injector.set("baggage", "k=v".into());
        assert!(!headers.contains_key("tracestate"));
        assert_eq!(headers["baggage"], "k=v");
    }
}
