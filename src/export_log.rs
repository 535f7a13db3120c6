//! How an exporter's health reaches the log, the same for spans, the OTLP metrics push and the
//! Pushgateway: one `info` line at start-up naming where the data goes and how; the first
//! failure of a streak at `warn`, once, with its cause, the endpoint and what to change; the
//! failures after it at `debug`; the first success after a streak at `info`.
//!
//! A transport that knows more than the error it returns (the OTLP/HTTP client sees the
//! connection error or the collector's answer, which opentelemetry-otlp reduces to "network
//! error") leaves it with [`ExportLog::note_cause`]; the next failure reports it.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, PoisonError,
    },
};

/// What an exporter sends; each has its log target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exported {
    /// Spans (target `towerscope::trace`).
    Spans,
    /// The `metric.otlp` push (target `towerscope::metrics`).
    #[cfg(feature = "otlp")]
    OtlpMetrics,
    /// Pushes to a Pushgateway (target `towerscope::metrics::push`).
    Pushgateway,
}

impl Exported {
    fn noun(self) -> &'static str {
        match self {
            Self::Spans => "span export",
            #[cfg(feature = "otlp")]
            Self::OtlpMetrics => "OTLP metrics push",
            Self::Pushgateway => "Pushgateway push",
        }
    }
}

/// Emits one event at `$level` with the target of `$what` (targets must be literals).
macro_rules! event {
    ($level:ident, $what:expr, $($rest:tt)+) => {
        match $what {
            Exported::Spans => tracing::$level!(target: "towerscope::trace", $($rest)+),
            #[cfg(feature = "otlp")]
            Exported::OtlpMetrics => tracing::$level!(target: "towerscope::metrics", $($rest)+),
            Exported::Pushgateway => {
                tracing::$level!(target: "towerscope::metrics::push", $($rest)+)
            }
        }
    };
}

/// The failure streak of one exporter, and what it has logged.
#[derive(Debug)]
pub(crate) struct ExportLog {
    what: Exported,
    endpoint: String,
    /// How the data travels ("OTLP http/protobuf", ...), for the start-up line.
    protocol: String,
    /// Failures since the last success.
    streak: AtomicU64,
    /// A transport's account of the failure in progress, taken by [`failed`](Self::failed).
    cause: Mutex<Option<String>>,
}

impl ExportLog {
    /// The log of an exporter sending `what` to `endpoint` (a URL, or `host:port`) over
    /// `protocol`.
    pub(crate) fn new(
        what: Exported,
        endpoint: impl Into<String>,
        protocol: impl Into<String>,
    ) -> Self {
        Self {
            what,
            endpoint: endpoint.into(),
            protocol: protocol.into(),
            streak: AtomicU64::new(0),
            cause: Mutex::new(None),
        }
    }

    /// Logs at `info` where the exporter sends and how: at start-up, and again when
    /// [`Telemetry::init_subscriber`](crate::Telemetry::init_subscriber) installs the
    /// subscriber after the exporters were built.
    pub(crate) fn announce(&self) {
        let (what, endpoint, protocol) = (self.what.noun(), &self.endpoint, &self.protocol);
        event!(info, self.what, endpoint = %endpoint, protocol = %protocol, "{what} to {endpoint} over {protocol}");
    }

    #[cfg(feature = "otlp")]
    /// Keeps a transport's account of the failure in progress (the connection error with its
    /// causes, or the status and an excerpt of the body), for the next [`failed`](Self::failed).
    pub(crate) fn note_cause(&self, cause: String) {
        *self.cause.lock().unwrap_or_else(PoisonError::into_inner) = Some(cause);
    }

    /// Counts a failure: the first of a streak is logged at `warn` with its cause (the noted
    /// one if a transport left one, else `error`), the endpoint and a hint; the others at
    /// `debug`. `items` is what the attempt carried (spans, points, ...), for the log line.
    pub(crate) fn failed(&self, error: &dyn fmt::Display, items: u64) {
        let noted = self
            .cause
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let cause = noted.unwrap_or_else(|| error.to_string());
        let streak = self.streak.fetch_add(1, Ordering::AcqRel) + 1;
        let (what, endpoint) = (self.what.noun(), &self.endpoint);
        if streak == 1 {
            match hint(self.what, endpoint, &cause) {
                Some(hint) => event!(warn, self.what, endpoint = %endpoint, cause = %cause, items,
                    "{what} to {endpoint} failed: {cause} ({hint}); further failures are logged at debug until one succeeds"),
                None => event!(warn, self.what, endpoint = %endpoint, cause = %cause, items,
                    "{what} to {endpoint} failed: {cause}; further failures are logged at debug until one succeeds"),
            }
        } else {
            event!(debug, self.what, endpoint = %endpoint, cause = %cause, items, streak,
                "{what} to {endpoint} failed again: {cause}");
        }
    }

    /// Counts a success; the first after a streak of failures is logged at `info`.
    pub(crate) fn succeeded(&self) {
        // A load first: a success without a streak (the common case) writes nothing.
        if self.streak.load(Ordering::Acquire) == 0 {
            return;
        }
        let failures = self.streak.swap(0, Ordering::AcqRel);
        if failures > 0 {
            let (what, endpoint) = (self.what.noun(), &self.endpoint);
            event!(info, self.what, endpoint = %endpoint, failures,
                "{what} to {endpoint} works again after {failures} failed attempts");
        }
    }
}

/// What to change, from what failed and where it was sent; `None` when the cause says it all.
pub(crate) fn hint(what: Exported, endpoint: &str, cause: &str) -> Option<&'static str> {
    let otlp = what != Exported::Pushgateway;
    let cause = cause.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| cause.contains(w));
    let https = endpoint.starts_with("https://");
    if https
        && has(&[
            "certificate",
            "unknownissuer",
            "unknown issuer",
            "notvalidforname",
        ])
    {
        return Some(
            "the server's certificate is not trusted: add its CA to the system's roots or \
             point SSL_CERT_FILE at it",
        );
    }
    if https
        && has(&[
            "invalidcontenttype",
            "corrupt message",
            "wrong version number",
            "record overflow",
            "tls",
            "handshake",
            "unexpected eof",
        ])
    {
        return Some(
            "the endpoint was reached over TLS: if it speaks plain HTTP, set `insecure: true` \
             or write the endpoint as http://HOST:PORT",
        );
    }
    if has(&["connection refused", "connectionrefused"]) {
        return Some("nothing accepts connections there: is it running, on this host and port?");
    }
    if has(&[
        "dns error",
        "failed to lookup",
        "name or service not known",
        "no such host",
    ]) {
        return Some("the host name does not resolve");
    }
    if has(&["timed out", "timeout", "no answer within", "deadline"]) {
        return Some(
            "no answer in time: is the server overloaded, or a firewall dropping packets? \
             `timeout` sets the limit",
        );
    }
    if otlp && has(&["status 404", "404 not found"]) {
        return Some("the collector has no such path: check the endpoint's path (`url_path`)");
    }
    if otlp && has(&["status 405", "405 method not allowed"]) {
        return Some(if what == Exported::Spans {
            "that path does not take POST: a full http(s):// endpoint is used as given, so it \
             must include the path (e.g. /v1/traces)"
        } else {
            "that path does not take POST: a full http(s):// endpoint is used as given, so it \
             must include the path (e.g. /v1/metrics)"
        });
    }
    if has(&[
        "status 401",
        "status 403",
        "401 unauthorized",
        "403 forbidden",
        "unauthenticated",
    ]) {
        return Some("the credentials were refused: check `headers` (or the user and password)");
    }
    if otlp
        && has(&[
            "h2 protocol error",
            "http2 error",
            "frame with invalid size",
        ])
    {
        return Some(
            "the port does not speak this protocol: OTLP over gRPC is usually on 4317, over \
             http/protobuf on 4318 (`protocol`)",
        );
    }
    None
}

/// How much of a refusing collector's body goes into the log line, in bytes.
#[cfg(feature = "otlp")]
const BODY_EXCERPT: usize = 200;

/// "the collector answered status 404 Not Found: <the body's start>".
#[cfg(feature = "otlp")]
pub(crate) fn refusal(status: impl fmt::Display, body: &[u8]) -> String {
    let mut text = excerpt(body.trim_ascii_start(), BODY_EXCERPT);
    if text.len() < body.trim_ascii().len() {
        text.push('…');
    }
    if text.is_empty() {
        format!("the collector answered status {status}")
    } else {
        format!("the collector answered status {status}: {text}")
    }
}

/// At most `max` bytes of `body` as text, cut at a character boundary, trailing space trimmed.
#[cfg(any(feature = "otlp", feature = "jaeger", feature = "pushgateway"))]
pub(crate) fn excerpt(body: &[u8], max: usize) -> String {
    let mut cut = &body[..body.len().min(max)];
    // Drop a character split by the cut; invalid bytes elsewhere become U+FFFD.
    if let Err(e) = std::str::from_utf8(cut) {
        if e.error_len().is_none() {
            cut = &cut[..e.valid_up_to()];
        }
    }
    String::from_utf8_lossy(cut).trim_end().to_owned()
}

/// An error and its sources, each once, `: `-separated (reqwest's own message names only the
/// URL, not why the request failed).
#[cfg(any(feature = "otlp", feature = "jaeger", feature = "pushgateway"))]
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(all(test, feature = "otlp"))]
mod tests {
    use super::{error_chain, excerpt, hint, refusal, Exported, BODY_EXCERPT};

    #[derive(Debug)]
    struct Layered(&'static str, Option<Box<Layered>>);

    impl std::fmt::Display for Layered {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layered {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn the_chain_names_every_cause_once() {
        let error = Layered(
            "error sending request",
            Some(Box::new(Layered(
                "client error (Connect)",
                Some(Box::new(Layered("Connection refused (os error 111)", None))),
            ))),
        );
        assert_eq!(
            error_chain(&error),
            "error sending request: client error (Connect): Connection refused (os error 111)"
        );
    }

    #[test]
    fn excerpt_is_bounded_and_trimmed() {
        assert_eq!(excerpt(b"bad push\n", 1024), "bad push");
        assert_eq!(excerpt(&[b'x'; 3000], 1024).len(), 1024);
        // A multi-byte character cut in half is dropped, an invalid byte replaced.
        assert_eq!(excerpt("aé".as_bytes(), 2), "a");
        assert_eq!(excerpt(b"a\xffb", 10), "a\u{fffd}b");
    }

    #[test]
    fn a_refusal_keeps_the_status_and_the_start_of_the_body() {
        let text = refusal("413 Payload Too Large", "x".repeat(500).as_bytes());
        assert!(text.starts_with("the collector answered status 413 Payload Too Large: xxx"));
        assert_eq!(text.chars().filter(|c| *c == 'x').count(), BODY_EXCERPT);
        assert_eq!(
            refusal("404 Not Found", b""),
            "the collector answered status 404 Not Found"
        );
    }

    #[test]
    fn tls_to_a_plain_collector_suggests_insecure() {
        let cause = "error sending request: client error (Connect): received corrupt message of type InvalidContentType";
        let h = hint(Exported::Spans, "https://127.0.0.1:4318/v1/traces", cause).unwrap();
        assert!(h.contains("insecure: true") && h.contains("http://"), "{h}");
        // The same words over plain HTTP are not about TLS.
        let plain = hint(Exported::Spans, "http://127.0.0.1:4318/v1/traces", cause);
        assert_ne!(plain, Some(h));
    }

    #[test]
    fn untrusted_certificates_point_at_the_roots() {
        let cause = "invalid peer certificate: UnknownIssuer";
        let h = hint(
            Exported::OtlpMetrics,
            "https://collector:4318/v1/metrics",
            cause,
        )
        .unwrap();
        assert!(h.contains("SSL_CERT_FILE"), "{h}");
    }

    #[test]
    fn refused_unresolved_slow_and_statuses_each_have_a_hint() {
        let cases = [
            (
                "tcp connect error: Connection refused (os error 111)",
                "running",
            ),
            ("dns error: failed to lookup address information", "resolve"),
            ("operation timed out", "`timeout`"),
            (
                "the collector answered status 404 Not Found: 404 page not found",
                "`url_path`",
            ),
            (
                "the collector answered status 405 Method Not Allowed",
                "/v1/traces",
            ),
            (
                "the collector answered status 401 Unauthorized",
                "`headers`",
            ),
            ("transport error: h2 protocol error: http2 error", "4317"),
        ];
        for (cause, word) in cases {
            let h = hint(Exported::Spans, "http://127.0.0.1:4318/v1/traces", cause)
                .unwrap_or_else(|| panic!("no hint for {cause}"));
            assert!(h.contains(word), "{cause}: {h}");
        }
        let boom = "the collector answered status 500: boom";
        assert_eq!(hint(Exported::Spans, "http://c:4318", boom), None);
        // A Pushgateway has no `url_path`.
        let missing = "the Pushgateway answered 404 Not Found: 404 page not found";
        assert_eq!(
            hint(Exported::Pushgateway, "http://pgw:9091", missing),
            None
        );
    }
}
