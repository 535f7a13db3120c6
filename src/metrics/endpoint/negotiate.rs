//! The answer's format from the scraper's `Accept`, and the response that carries it.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::metrics::registry::UnknownComponent;

/// The content type of the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `Content-Type` of an OpenMetrics answer, served when the scraper's `Accept` prefers
/// `application/openmetrics-text` (Prometheus 2.x asks for it first).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether `accept` (an `Accept` header) prefers OpenMetrics to the 0.0.4 text: it lists
/// `application/openmetrics-text` with a quality above 0 and at least that of `text/plain`
/// (or of `*/*` when `text/plain` is not listed).
pub(crate) fn prefers_openmetrics(accept: &str) -> bool {
    let (mut om, mut text, mut any) = (0.0_f64, None::<f64>, 0.0_f64);
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f64>().ok())
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        match media.as_str() {
            "application/openmetrics-text" => om = om.max(q),
            "text/plain" => text = Some(text.unwrap_or(0.0).max(q)),
            "*/*" => any = any.max(q),
            _ => {}
        }
    }
    om > 0.0 && om >= text.unwrap_or(any)
}

pub(crate) fn rendered(
    result: Result<String, UnknownComponent>,
    head: bool,
    openmetrics: bool,
) -> Response<Full<Bytes>> {
    match result {
        Ok(text) => {
            let len = text.len();
            let body = if head {
                Bytes::new()
            } else {
                Bytes::from(text)
            };
            let mut res = Response::new(Full::new(body));
            let headers = res.headers_mut();
            let content_type = if openmetrics {
                OPENMETRICS_CONTENT_TYPE
            } else {
                CONTENT_TYPE
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
