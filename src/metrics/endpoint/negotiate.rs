//! The answer's format from the scraper's `Accept`, and the response that carries it.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::metrics::{
    registry::UnknownComponent,
    store::{Format, Names},
};

/// The content type of the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `Content-Type` of an OpenMetrics answer, served when the scraper's `Accept` prefers
/// `application/openmetrics-text` (Prometheus 2.x asks for it first).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of the Prometheus text format 1.0.0, which may quote UTF-8 names: served
/// with `escaping=allow-utf-8` when the scraper's `text/plain; version=1.0.0` range allows
/// them.
const TEXT_1_CONTENT_TYPE: &str = "text/plain; version=1.0.0; charset=utf-8";

/// What a scrape gets: the format, the names, and the escaping its `Content-Type` states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Answer {
    pub(crate) format: Format,
    pub(crate) names: Names,
    /// Whether the scraper stated an escaping (then the answer states the one it applied).
    stated: bool,
}

impl Answer {
    /// This answer with the underscored names, and the `Content-Type` of before UTF-8 names.
    pub(crate) fn legacy(self) -> Self {
        Self {
            format: self.format,
            ..Self::default()
        }
    }

    /// The `Content-Type` of the answer.
    fn content_type(self) -> HeaderValue {
        let base = match self.format {
            Format::Text if self.names == Names::Utf8 => TEXT_1_CONTENT_TYPE,
            Format::Text => CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            #[cfg(feature = "protobuf")]
            Format::Protobuf => crate::metrics::PROTOBUF_CONTENT_TYPE,
        };
        let escaping = match (self.stated, self.names) {
            (false, _) => return HeaderValue::from_static(base),
            (true, Names::Utf8) => "allow-utf-8",
            // The names served are legacy ones: what escaping them to underscores gives.
            (true, Names::Legacy) => "underscores",
        };
        HeaderValue::from_str(&format!("{base}; escaping={escaping}"))
            .unwrap_or_else(|_| HeaderValue::from_static(base))
    }
}

/// One media range of an `Accept` header, with the parameters that matter here.
struct Range {
    media: String,
    q: f64,
    proto: bool,
    delimited: bool,
    version: Option<String>,
    /// `escaping=...`: `Some(true)` for `allow-utf-8`, `Some(false)` for another known scheme
    /// (`underscores`, `dots`, `values`); an unknown one is ignored, as client_golang does.
    utf8: Option<bool>,
}

impl Range {
    fn parse(range: &str) -> Self {
        let mut parts = range.split(';');
        let mut parsed = Self {
            media: parts.next().unwrap_or("").trim().to_ascii_lowercase(),
            q: 1.0,
            proto: false,
            delimited: false,
            version: None,
            utf8: None,
        };
        for param in parts {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                "q" => parsed.q = value.parse::<f64>().unwrap_or(1.0).clamp(0.0, 1.0),
                "proto" => parsed.proto = value == "io.prometheus.client.MetricFamily",
                "encoding" => parsed.delimited = value == "delimited",
                "version" => parsed.version = Some(value.to_owned()),
                "escaping" => {
                    parsed.utf8 = match value {
                        "allow-utf-8" => Some(true),
                        "underscores" | "dots" | "values" => Some(false),
                        _ => None,
                    }
                }
                _ => {}
            }
        }
        parsed
    }
}

/// What an `Accept` header asks for. The format: the supported media range with the highest
/// quality (`q`, 1 when absent; 0 refuses). The ranges read: the protobuf format
/// (`application/vnd.google.protobuf` with `proto=io.prometheus.client.MetricFamily` and
/// `encoding=delimited`, when built with the `protobuf` feature),
/// `application/openmetrics-text`, `text/plain` and `*/*` (the 0.0.4 text). On a tie the
/// protobuf format wins over OpenMetrics, and OpenMetrics over the text (Prometheus 2.x sends
/// OpenMetrics and `text/plain` at once); nothing usable, the text.
///
/// The names: UTF-8 ones when the scraper's escaping is `allow-utf-8` (and, for the text
/// format, its range is `version=1.0.0`, the first that can quote a name). The escaping is
/// that of the highest-quality range that states one: Prometheus 3 states it on its text
/// ranges only, not on the protobuf one it puts first, yet it is one parser's setting, so a
/// protobuf scrape gets UTF-8 names too (client_golang would escape them there).
pub(crate) fn negotiate(accept: &str) -> Answer {
    let (mut protobuf, mut om, mut text) = (0.0_f64, 0.0_f64, None::<(f64, bool)>);
    let mut any = 0.0_f64;
    let mut escaping = None::<(f64, bool)>;
    for range in accept.split(',').map(Range::parse) {
        if let Some(utf8) = range.utf8.filter(|_| range.q > 0.0) {
            if escaping.is_none_or(|(q, _)| range.q > q) {
                escaping = Some((range.q, utf8));
            }
        }
        match range.media.as_str() {
            "application/vnd.google.protobuf" if range.proto && range.delimited => {
                protobuf = protobuf.max(range.q)
            }
            "application/openmetrics-text" => om = om.max(range.q),
            "text/plain" => {
                let v1 = range.version.as_deref() == Some("1.0.0");
                if text.is_none_or(|(q, _)| range.q > q) {
                    text = Some((range.q, v1));
                }
            }
            "*/*" => any = any.max(range.q),
            _ => {}
        }
    }
    let (text, text_v1) = text.filter(|(q, _)| *q >= any).unwrap_or((any, false));
    let format = pick(protobuf, om, text);
    let utf8 = escaping.is_some_and(|(_, utf8)| utf8);
    let names = match format {
        Format::Text if !text_v1 => Names::Legacy,
        _ if utf8 => Names::Utf8,
        _ => Names::Legacy,
    };
    Answer {
        format,
        names,
        stated: escaping.is_some(),
    }
}

/// The format of the best qualities: protobuf over OpenMetrics over the text on a tie.
fn pick(protobuf: f64, om: f64, text: f64) -> Format {
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
    answer: Answer,
) -> Response<Full<Bytes>> {
    match result {
        Ok(body) => {
            let len = body.len();
            let body = if head { Bytes::new() } else { body };
            let mut res = Response::new(Full::new(body));
            let headers = res.headers_mut();
            headers.insert(header::CONTENT_TYPE, answer.content_type());
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

    fn format(accept: &str) -> Format {
        negotiate(accept).format
    }

    /// What Prometheus 3.16 sends with its default scrape protocols, and with
    /// `scrape_native_histograms: true` (captured from its scrapes).
    const PROMETHEUS_3: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.7,application/openmetrics-text;version=0.0.1;q=0.6,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.3";
    const PROMETHEUS_3_NATIVE: &str = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
    /// Prometheus 2.x's.
    const PROMETHEUS_2: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[test]
    fn prometheus_gets_what_it_asks_for_first() {
        assert_eq!(format(PROMETHEUS_3), Format::OpenMetrics);
        assert_eq!(format(PROMETHEUS_2), Format::OpenMetrics);
        #[cfg(feature = "protobuf")]
        assert_eq!(format(PROMETHEUS_3_NATIVE), Format::Protobuf);
        #[cfg(not(feature = "protobuf"))]
        assert_eq!(format(PROMETHEUS_3_NATIVE), Format::OpenMetrics);
    }

    #[test]
    fn qualities_decide_and_ties_prefer_the_richer_format() {
        assert_eq!(format("*/*"), Format::Text);
        assert_eq!(format("text/plain"), Format::Text);
        assert_eq!(format("application/json"), Format::Text);
        assert_eq!(format("application/openmetrics-text"), Format::OpenMetrics);
        assert_eq!(
            format("text/plain;q=0.9, application/openmetrics-text;q=0.5"),
            Format::Text
        );
        assert_eq!(
            format("application/openmetrics-text;q=0, */*"),
            Format::Text
        );
        assert_eq!(
            format("text/plain, application/openmetrics-text"),
            Format::OpenMetrics
        );
        // Protobuf needs both parameters: another message or encoding is not ours.
        for other in [
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily",
            "application/vnd.google.protobuf;proto=other.Message;encoding=delimited",
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text",
        ] {
            assert_eq!(format(other), Format::Text, "{other}");
        }
        #[cfg(feature = "protobuf")]
        assert_eq!(
            format("application/vnd.google.protobuf; proto=\"io.prometheus.client.MetricFamily\"; encoding=delimited, text/plain"),
            Format::Protobuf
        );
    }

    fn content_type(accept: &str) -> (Names, String) {
        let answer = negotiate(accept);
        let value = answer.content_type();
        (answer.names, value.to_str().unwrap().to_owned())
    }

    #[test]
    fn utf8_names_when_the_scraper_allows_them_and_its_escaping_stated_back() {
        // Prometheus 3's defaults: OpenMetrics 1.0.0 allows UTF-8.
        assert_eq!(
            content_type(PROMETHEUS_3),
            (
                Names::Utf8,
                "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8"
                    .to_owned()
            )
        );
        // With native histograms the protobuf range comes first and states no escaping; the
        // text ranges' allow-utf-8 is the scraper's.
        #[cfg(feature = "protobuf")]
        assert_eq!(
            content_type(PROMETHEUS_3_NATIVE),
            (
                Names::Utf8,
                format!(
                    "{}; escaping=allow-utf-8",
                    crate::metrics::PROTOBUF_CONTENT_TYPE
                )
            )
        );
        // `metric_name_escaping_scheme: underscores`.
        let underscores = PROMETHEUS_3.replace("allow-utf-8", "underscores");
        assert_eq!(
            content_type(&underscores),
            (
                Names::Legacy,
                "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"
                    .to_owned()
            )
        );
        // Dots and values escaping get legacy names, stated as underscores (what was applied).
        assert_eq!(
            content_type(&PROMETHEUS_3.replace("allow-utf-8", "dots")).0,
            Names::Legacy
        );
        // Prometheus 2 states none: today's answer, byte for byte.
        assert_eq!(
            content_type(PROMETHEUS_2),
            (Names::Legacy, OPENMETRICS_CONTENT_TYPE.to_owned())
        );
        // The text format quotes names from version 1.0.0 only.
        assert_eq!(
            content_type("text/plain;version=1.0.0;escaping=allow-utf-8"),
            (
                Names::Utf8,
                "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8".to_owned()
            )
        );
        assert_eq!(
            content_type("text/plain;version=0.0.4;escaping=allow-utf-8"),
            (
                Names::Legacy,
                format!("{CONTENT_TYPE}; escaping=underscores")
            )
        );
        assert_eq!(
            content_type("*/*;escaping=allow-utf-8").0,
            Names::Legacy,
            "*/* is the 0.0.4 text"
        );
        // An unknown escaping is ignored.
        assert_eq!(
            content_type("application/openmetrics-text;escaping=rot13"),
            (Names::Legacy, OPENMETRICS_CONTENT_TYPE.to_owned())
        );
    }
}
