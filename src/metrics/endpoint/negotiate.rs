//! The answer's format from the scraper's `Accept`, and the response that carries it.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::metrics::{registry::UnknownComponent, store::Format};

/// The content type of the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `Content-Type` of an OpenMetrics answer, served when the scraper's `Accept` prefers
/// `application/openmetrics-text` (Prometheus 2.x asks for it first).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The format an `Accept` header asks for: the supported media range with the highest
/// quality (`q`, 1 when absent; 0 refuses). The ranges read: the protobuf format
/// (`application/vnd.google.protobuf` with `proto=io.prometheus.client.MetricFamily` and
/// `encoding=delimited`, when built with the `protobuf` feature),
/// `application/openmetrics-text`, `text/plain` and `*/*` (the 0.0.4 text). On a tie the
/// protobuf format wins over OpenMetrics, and OpenMetrics over the text (Prometheus 2.x sends
/// OpenMetrics and `text/plain` at once); nothing usable, the text.
pub(crate) fn negotiate(accept: &str) -> Format {
    let (mut protobuf, mut om, mut text) = (0.0_f64, 0.0_f64, None::<f64>);
    let mut any = 0.0_f64;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let (mut q, mut proto, mut delimited) = (1.0_f64, false, false);
        for param in parts {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                "q" => q = value.parse::<f64>().unwrap_or(1.0).clamp(0.0, 1.0),
                "proto" => proto = value == "io.prometheus.client.MetricFamily",
                "encoding" => delimited = value == "delimited",
                _ => {}
            }
        }
        match media.as_str() {
            "application/vnd.google.protobuf" if proto && delimited => protobuf = protobuf.max(q),
            "application/openmetrics-text" => om = om.max(q),
            "text/plain" => text = Some(text.unwrap_or(0.0).max(q)),
            "*/*" => any = any.max(q),
            _ => {}
        }
    }
    let text = text.unwrap_or(any);
    #[cfg(feature = "protobuf")]
    if protobuf > 0.0 && protobuf >= om && protobuf >= text {
        return Format::Protobuf;
    }
    let _ = protobuf;
    if om > 0.0 && om >= text {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

pub(crate) fn rendered(
    result: Result<Bytes, UnknownComponent>,
    head: bool,
    format: Format,
) -> Response<Full<Bytes>> {
    match result {
        Ok(body) => {
            let len = body.len();
            let body = if head { Bytes::new() } else { body };
            let mut res = Response::new(Full::new(body));
            let headers = res.headers_mut();
            let content_type = match format {
                Format::Text => CONTENT_TYPE,
                Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
                #[cfg(feature = "protobuf")]
                Format::Protobuf => crate::metrics::PROTOBUF_CONTENT_TYPE,
            };
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            headers.insert(header::VARY, HeaderValue::from_static("accept"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if head {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            }
            res
        }
        Err(err) => {
            let mut res = Response::new(Full::new(Bytes::from(format!("{err}\n"))));
            *res.status_mut() = StatusCode::NOT_FOUND;
            res
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Prometheus 3.16 sends with its default scrape protocols, and with
    /// `scrape_native_histograms: true` (captured from its scrapes).
    const PROMETHEUS_3: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.7,application/openmetrics-text;version=0.0.1;q=0.6,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.3";
    const PROMETHEUS_3_NATIVE: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    /// Prometheus 2.x's.
    const PROMETHEUS_2: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[test]
    fn prometheus_gets_what_it_asks_for_first() {
        assert_eq!(negotiate(PROMETHEUS_3), Format::OpenMetrics);
        assert_eq!(negotiate(PROMETHEUS_2), Format::OpenMetrics);
        #[cfg(feature = "protobuf")]
        assert_eq!(negotiate(PROMETHEUS_3_NATIVE), Format::Protobuf);
        #[cfg(not(feature = "protobuf"))]
        assert_eq!(negotiate(PROMETHEUS_3_NATIVE), Format::OpenMetrics);
    }

    #[test]
    fn qualities_decide_and_ties_prefer_the_richer_format() {
        assert_eq!(negotiate("*/*"), Format::Text);
        assert_eq!(negotiate("text/plain"), Format::Text);
        assert_eq!(negotiate("application/json"), Format::Text);
        assert_eq!(
            negotiate("application/openmetrics-text"),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate("text/plain;q=0.9, application/openmetrics-text;q=0.5"),
            Format::Text
        );
        assert_eq!(
            negotiate("application/openmetrics-text;q=0, */*"),
            Format::Text
        );
        assert_eq!(
            negotiate("text/plain, application/openmetrics-text"),
            Format::OpenMetrics
        );
        // Protobuf needs both parameters: another message or encoding is not ours.
        for other in [
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily",
            "application/vnd.google.protobuf;proto=other.Message;encoding=delimited",
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text",
        ] {
            assert_eq!(negotiate(other), Format::Text, "{other}");
        }
        #[cfg(feature = "protobuf")]
        assert_eq!(
            negotiate("application/vnd.google.protobuf; proto=\"io.prometheus.client.MetricFamily\"; encoding=delimited, text/plain"),
            Format::Protobuf
        );
    }
}
