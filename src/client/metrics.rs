//! The client metric families: their names, and the handles of each (peer, method), resolved
//! once in a [`LabelTable`] with the cap on distinct peers.

use std::{
    fmt::{self, Write as _},
    sync::{Arc, OnceLock},
    time::Duration,
};

use http::Method;
use metrics::{Counter, Gauge, Histogram, Key, Label, SharedString};

use super::propagation::unbracketed;
use crate::{
    labels::MethodTable,
    metrics::{
        semconv::{sorted, HTTP_CLIENT_REQUEST_DURATION, SCHEMES, VERSIONS},
        toolkit::{
            http_slot, status_label, CodeCounters, Family, LabelTable, RecorderRef, StatusHandles,
            HTTP_SLOTS,
        },
        MetricNaming,
    },
};

/// The `?comp=` component the client families are registered under.
pub const CLIENT_COMPONENT: &str = "client";

/// The default cap on distinct `peer` label values.
pub const DEFAULT_MAX_PEERS: usize = 1000;

/// The names of the client families behind a prefix.
///
/// ```
/// use towerscope::client::ClientMetricNames;
///
/// let names = ClientMetricNames::with_prefix("harbor_core_");
/// assert_eq!(names.total, "harbor_core_http_client_request_total");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMetricNames {
    /// Gauge of calls in flight, `{method, peer}`.
    pub inflight: String,
    /// Summary (or histogram) of call durations in seconds, `{method, peer}`.
    pub duration: String,
    /// Counter of finished calls, `{method, code, peer}`.
    pub total: String,
    /// Counter of calls labelled `peer="_overflow"`.
    pub overflow: String,
}

impl ClientMetricNames {
    /// The names behind `prefix` (which ends in `_` unless empty).
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            inflight: format!("{prefix}http_client_inflight_requests"),
            duration: format!("{prefix}http_client_request_duration_seconds"),
            total: format!("{prefix}http_client_request_total"),
            overflow: format!("{prefix}http_client_peer_overflow_total"),
        }
    }

    /// The family names, for component registration.
    pub fn families(&self) -> [&str; 4] {
        [&self.inflight, &self.duration, &self.total, &self.overflow]
    }
}

impl Default for ClientMetricNames {
    /// The names without a prefix: `http_client_request_total`, ...
    fn default() -> Self {
        Self::with_prefix("")
    }
}

// The `# HELP` texts of the client families.
const INFLIGHT_HELP: &str = "Outgoing HTTP requests in flight, by method and peer.";
const DURATION_HELP: &str = "Outgoing HTTP request durations in seconds until the response headers arrived, by method and peer.";
const TOTAL_HELP: &str = "Finished outgoing HTTP requests, by method, status code (or timeout, connect, error, cancelled) and peer.";
const OVERFLOW_HELP: &str = "Outgoing HTTP requests labelled peer=\"_overflow\" because the cap on distinct peers was reached.";

/// The families of [`ClientMiddleware`](super::ClientMiddleware) in `naming`, with their help
/// texts.
pub(super) fn families(names: &ClientMetricNames, naming: MetricNaming) -> Vec<Family> {
    let [inflight, duration, total, overflow] = names.families().map(str::to_owned);
    match naming {
        MetricNaming::Harbor => vec![
            Family::gauge(inflight, INFLIGHT_HELP),
            Family::seconds(duration, DURATION_HELP),
            Family::counter(total, TOTAL_HELP),
            Family::counter(overflow, OVERFLOW_HELP),
        ],
        MetricNaming::Otel => vec![
            Family::seconds(HTTP_CLIENT_REQUEST_DURATION, OTEL_DURATION_HELP),
            Family::counter(overflow, OTEL_OVERFLOW_HELP),
        ],
    }
}

const OTEL_DURATION_HELP: &str = "Duration of HTTP client requests until the response headers arrived (OpenTelemetry http.client.request.duration).";
const OTEL_OVERFLOW_HELP: &str = "Outgoing HTTP requests whose server_address and server_port were replaced by \"_overflow\" because the cap on distinct peers was reached.";

/// The `code` label of a finished call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Code {
    Status(u16),
    Timeout,
    Connect,
    Error,
    Cancelled,
}

impl Code {
    fn label(self) -> SharedString {
        match self {
            Self::Status(code) => status_label(code),
            Self::Timeout => SharedString::const_str("timeout"),
            Self::Connect => SharedString::const_str("connect"),
            Self::Error => SharedString::const_str("error"),
            Self::Cancelled => SharedString::const_str("cancelled"),
        }
    }

    /// The counter slot of a status; the other codes are in the list.
    fn slot(self) -> Option<usize> {
        match self {
            Self::Status(code) => http_slot(code),
            _ => None,
        }
    }

    /// The `error_type` of the OpenTelemetry conventions: a 4xx or 5xx code, or why the call
    /// got no response (the span's `error.type` values, `_OTHER` for errors of no known kind).
    fn error_type(self) -> Option<SharedString> {
        Some(match self {
            Self::Status(code) if code >= 400 => status_label(code),
            Self::Status(_) => return None,
            Self::Timeout => SharedString::const_str("timeout"),
            Self::Connect => SharedString::const_str("connect"),
            Self::Error => SharedString::const_str("_OTHER"),
            Self::Cancelled => SharedString::const_str("cancelled"),
        })
    }
}

/// Where a [`Series`] registers the counter of each code it counts.
#[derive(Debug)]
struct Totals {
    recorder: RecorderRef,
    name: SharedString,
}

/// The handles of one call's series, in the middleware's naming.
#[derive(Debug)]
pub(super) enum Series {
    /// Of one (peer, method).
    Harbor(HarborSeries),
    /// Of one (server address and port, method, scheme).
    Otel(OtelSeries),
}

impl Series {
    /// Counts a call in flight (the OpenTelemetry naming has no in-flight client family).
    pub(super) fn start(&self) {
        if let Self::Harbor(series) = self {
            series.inflight.increment(1.0);
        }
    }

    /// Ends a call started with [`start`](Self::start) after `elapsed`, with `code`;
    /// `version` is the index in [`VERSIONS`] of the response's protocol version.
    pub(super) fn finish(&self, elapsed: Duration, code: Code, version: usize) {
        match self {
            Self::Harbor(series) => series.finish(elapsed, code),
            Self::Otel(series) => series.record(elapsed, code, version),
        }
    }
}

/// The OpenTelemetry handles of one (server address and port, method, scheme): the duration
/// histograms by (code, protocol version).
#[derive(Debug)]
pub(super) struct OtelSeries {
    /// `http_request_method`, `server_address`, `server_port`, `url_scheme`.
    labels: Vec<Label>,
    durations: StatusHandles<(Code, usize), Histogram, HTTP_SLOTS>,
    recorder: RecorderRef,
}

/// The index of HTTP/1.1 in [`VERSIONS`]: its statuses have slots.
const HTTP_11: usize = 2;

impl OtelSeries {
    fn record(&self, elapsed: Duration, code: Code, version: usize) {
        let slot = if version == HTTP_11 {
            code.slot()
        } else {
            None
        };
        let register = |(code, version): (Code, usize)| {
            let mut labels = self.labels.clone();
            if let Code::Status(status) = code {
                labels.push(Label::new(
                    "http_response_status_code",
                    status_label(status),
                ));
                labels.push(Label::new("network_protocol_version", VERSIONS[version]));
            }
            if let Some(error) = code.error_type() {
                labels.push(Label::new("error_type", error));
            }
            let key = Key::from_parts(HTTP_CLIENT_REQUEST_DURATION, sorted(labels));
            self.recorder.histogram(&key)
        };
        self.durations.with((code, version), slot, register, |h| {
            h.record(elapsed.as_secs_f64())
        });
    }
}

/// Harbor-style handles of one (peer, method).
#[derive(Debug)]
pub(super) struct HarborSeries {
    inflight: Gauge,
    duration: Histogram,
    /// `[method, peer]`.
    labels: [Label; 2],
    totals: CodeCounters<Code, HTTP_SLOTS>,
    totals_in: Arc<Totals>,
}

impl HarborSeries {
    fn finish(&self, elapsed: Duration, code: Code) {
        self.inflight.decrement(1.0);
        self.duration.record(elapsed.as_secs_f64());
        self.count(code);
    }

    pub(super) fn count(&self, code: Code) {
        self.totals
            .increment(code, code.slot(), |code| self.register_total(code));
    }

    fn register_total(&self, code: Code) -> Counter {
        let [method, peer] = self.labels.clone();
        let labels = vec![method, Label::new("code", code.label()), peer];
        let totals = &self.totals_in;
        totals
            .recorder
            .counter(&Key::from_parts(totals.name.clone(), labels))
    }
}

/// The series of one peer label, by method index (and scheme, with the OpenTelemetry naming).
#[derive(Debug)]
struct Peer {
    label: SharedString,
    /// `server_address` and `server_port` of a `host:port` label (not of an operation's, nor
    /// of `_overflow`, which gets `_overflow` for both).
    address: Option<(SharedString, SharedString)>,
    by_method: Box<[OnceLock<Arc<Series>>]>,
}

/// A call's peer before it is resolved to a label.
#[derive(Debug, Clone, Copy)]
pub(super) enum PeerRef<'a> {
    /// The URL's host and port: the label `host:port`.
    Host(&'a str, u16),
    /// A [`ClientOperation`](super::ClientOperation): the label is its name.
    Operation(&'a str),
}

/// The per-middleware cache of series, with the cap on distinct peers.
#[derive(Debug)]
pub(super) struct PeerTable {
    recorder: RecorderRef,
    inflight: SharedString,
    duration: SharedString,
    totals: Arc<Totals>,
    methods: MethodTable,
    peers: LabelTable<Peer>,
    naming: MetricNaming,
}

impl PeerTable {
    /// An empty table, with its overflow counter registered; the families are described by
    /// the caller.
    pub(super) fn new(
        recorder: RecorderRef,
        names: &ClientMetricNames,
        max_peers: usize,
        naming: MetricNaming,
    ) -> Self {
        let peers = LabelTable::new(max_peers)
            .with_overflow_counter(recorder.clone(), names.overflow.clone());
        Self {
            totals: Arc::new(Totals {
                recorder: recorder.clone(),
                name: names.total.clone().into(),
            }),
            recorder,
            inflight: names.inflight.clone().into(),
            duration: names.duration.clone().into(),
            methods: MethodTable::standard(),
            peers,
            naming,
        }
    }

    /// The naming the table records in.
    pub(super) fn naming(&self) -> MetricNaming {
        self.naming
    }

    /// The slots of a peer: one per method (Harbor), or per method and scheme (OpenTelemetry).
    fn slots_per_method(&self) -> usize {
        match self.naming {
            MetricNaming::Harbor => 1,
            MetricNaming::Otel => SCHEMES.len(),
        }
    }

    /// The index of `method` in the label table; other methods share the `_OTHER` slot.
    pub(super) fn method_index(&self, method: &Method) -> usize {
        self.methods.index(method)
    }

    /// The handles of (`peer`, method at `method_index`), registered on first use; with the
    /// OpenTelemetry naming, of `scheme` (an index in [`SCHEMES`]) too.
    pub(super) fn series(
        &self,
        peer: PeerRef<'_>,
        method_index: usize,
        scheme: usize,
    ) -> Arc<Series> {
        let peer = match peer {
            PeerRef::Operation(name) => self.peer(name, None),
            PeerRef::Host(host, port) => {
                let mut label = PeerLabel::default();
                match write!(label, "{host}:{port}") {
                    Ok(()) => self.peer(label.as_str(), Some((host, port))),
                    // Longer than the buffer: a host this long is rare enough to format.
                    Err(fmt::Error) => self.peer(&format!("{host}:{port}"), Some((host, port))),
                }
            }
        };
        let method_index = method_index.min(self.methods.len());
        let scheme = scheme.min(self.slots_per_method() - 1);
        let make = || {
            let method = self.methods.label(method_index);
            Arc::new(match (self.naming, &peer.address) {
                (MetricNaming::Otel, Some((address, port))) => {
                    let labels = vec![
                        Label::new("http_request_method", method),
                        Label::new("server_address", address.clone()),
                        Label::new("server_port", port.clone()),
                        Label::new("url_scheme", SCHEMES[scheme]),
                    ];
                    Series::Otel(OtelSeries {
                        labels: sorted(labels),
                        durations: StatusHandles::new(),
                        recorder: self.recorder.clone(),
                    })
                }
                _ => {
                    let labels = [
                        Label::new("method", method),
                        Label::new("peer", peer.label.clone()),
                    ];
                    let key = |name: &SharedString| Key::from_parts(name.clone(), labels.to_vec());
                    Series::Harbor(HarborSeries {
                        inflight: self.recorder.gauge(&key(&self.inflight)),
                        duration: self.recorder.histogram(&key(&self.duration)),
                        labels,
                        totals: CodeCounters::new(),
                        totals_in: self.totals.clone(),
                    })
                }
            })
        };
        let index = method_index * self.slots_per_method() + scheme;
        peer.by_method[index].get_or_init(make).clone()
    }

    /// The series of the peer `label`; `address`, the URL's host and port, gives the
    /// OpenTelemetry naming's `server_address` and `server_port` (both `_overflow` past the
    /// cap).
    fn peer(&self, label: &str, address: Option<(&str, u16)>) -> Arc<Peer> {
        let slots = (self.methods.len() + 1) * self.slots_per_method();
        let otel = self.naming == MetricNaming::Otel;
        self.peers.get(label, |label| Peer {
            address: match address {
                _ if !otel => None,
                _ if label.as_ref() == crate::labels::OVERFLOW_LABEL => {
                    let overflow = SharedString::const_str(crate::labels::OVERFLOW_LABEL);
                    Some((overflow.clone(), overflow))
                }
                Some((host, port)) => Some((
                    SharedString::from(unbracketed(host).to_owned()),
                    SharedString::from(port.to_string()),
                )),
                None => None,
            },
            label,
            by_method: (0..slots).map(|_| OnceLock::new()).collect(),
        })
    }
}

/// `host:port` written on the stack, so that a call to a known peer allocates nothing.
struct PeerLabel {
    bytes: [u8; 128],
    len: usize,
}

impl Default for PeerLabel {
    fn default() -> Self {
        Self {
            bytes: [0; 128],
            len: 0,
        }
    }
}

impl PeerLabel {
    fn as_str(&self) -> &str {
        // Only whole `str`s are ever written.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl fmt::Write for PeerLabel {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let to = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        to.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{client::ClientMiddleware, config::MetricConfig, metrics::MetricsRegistry};

    /// A middleware recording into a registry's recorder without serving its families (no
    /// `?comp=`), and that registry.
    fn recorded() -> (ClientMiddleware, MetricsRegistry) {
        let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
        (
            ClientMiddleware::with_recorder(registry.recorder()),
            registry,
        )
    }

    #[test]
    fn series_are_resolved_once_and_peers_capped() {
        let (middleware, registry) = recorded();
        let middleware = middleware.with_prefix("t_").with_max_peers(2);
        let table = middleware.table().unwrap();
        let a = table.series(PeerRef::Host("a", 80), 0, 0);
        assert!(Arc::ptr_eq(&a, &table.series(PeerRef::Host("a", 80), 0, 0)));
        let b = table.series(PeerRef::Operation("op"), 9, 0);
        let c = table.series(PeerRef::Host("a", 81), 0, 0);
        let done = Duration::from_millis(1);
        a.finish(done, Code::Status(200), 2);
        a.finish(done, Code::Status(200), 2);
        b.finish(done, Code::Timeout, 2);
        c.finish(done, Code::Connect, 2);
        let text = registry.render();
        for line in [
            r#"t_http_client_request_total{method="GET",code="200",peer="a:80"} 2"#,
            r#"t_http_client_request_total{method="_OTHER",code="timeout",peer="op"} 1"#,
            r#"t_http_client_request_total{method="GET",code="connect",peer="_overflow"} 1"#,
            "t_http_client_peer_overflow_total 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn a_host_too_long_for_the_buffer_is_still_its_own_peer() {
        let (middleware, _) = recorded();
        let table = middleware.table().unwrap();
        let host = "h".repeat(200);
        let long = table.series(PeerRef::Host(&host, 443), 0, 0);
        assert!(Arc::ptr_eq(
            &long,
            &table.series(PeerRef::Host(&host, 443), 0, 0)
        ));
        let Series::Harbor(long) = &*long else {
            panic!("Harbor naming")
        };
        assert_eq!(long.labels[1].value(), format!("{host}:443"));
        let short = table.series(PeerRef::Host("[::1]", 8080), 2, 0);
        let Series::Harbor(short) = &*short else {
            panic!("Harbor naming")
        };
        assert_eq!(short.labels[1].value(), "[::1]:8080");
        assert_eq!(short.labels[0].value(), "POST");
    }

    #[test]
    fn otel_series_are_labelled_by_address_port_and_scheme_and_capped() {
        let (middleware, registry) = recorded();
        let middleware = middleware.with_naming(MetricNaming::Otel).with_max_peers(2);
        let table = middleware.table().unwrap();
        let done = Duration::from_millis(1);
        let v6 = table.series(PeerRef::Host("[::1]", 8443), 2, 1);
        assert!(Arc::ptr_eq(
            &v6,
            &table.series(PeerRef::Host("[::1]", 8443), 2, 1)
        ));
        v6.finish(done, Code::Status(201), 3);
        table
            .series(PeerRef::Host("a", 80), 0, 0)
            .finish(done, Code::Timeout, 2);
        table
            .series(PeerRef::Host("b", 80), 0, 0)
            .finish(done, Code::Status(404), 2);
        let text = registry.render();
        for line in [
            r#"http_client_request_duration_seconds_count{http_request_method="POST",http_response_status_code="201",network_protocol_version="2",server_address="::1",server_port="8443",url_scheme="https"} 1"#,
            r#"http_client_request_duration_seconds_count{error_type="timeout",http_request_method="GET",server_address="a",server_port="80",url_scheme="http"} 1"#,
            r#"http_client_request_duration_seconds_count{error_type="404",http_request_method="GET",http_response_status_code="404",network_protocol_version="1.1",server_address="_overflow",server_port="_overflow",url_scheme="http"} 1"#,
            "http_client_peer_overflow_total 1",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("http_client_request_total"), "{text}");
    }
}
