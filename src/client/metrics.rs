//! The client metric families: their names, and the handles of each (peer, method), resolved
//! once in a [`LabelTable`] with the cap on distinct peers.

use std::{
    fmt::{self, Write as _},
    sync::{Arc, OnceLock},
    time::Duration,
};

use http::Method;
use metrics::{Counter, Gauge, Histogram, Key, Label, SharedString};

use crate::{
    labels::MethodTable,
    metrics::toolkit::{
        http_slot, status_label, CodeCounters, Family, LabelTable, RecorderRef, HTTP_SLOTS,
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

/// The families of [`ClientMiddleware`](super::ClientMiddleware), with their help texts.
pub(super) fn families(names: &ClientMetricNames) -> [Family; 4] {
    let [inflight, duration, total, overflow] = names.families().map(str::to_owned);
    [
        Family::gauge(inflight, INFLIGHT_HELP),
        Family::seconds(duration, DURATION_HELP),
        Family::counter(total, TOTAL_HELP),
        Family::counter(overflow, OVERFLOW_HELP),
    ]
}

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
}

/// Where a [`Series`] registers the counter of each code it counts.
#[derive(Debug)]
struct Totals {
    recorder: RecorderRef,
    name: SharedString,
}

/// The handles of one (peer, method).
#[derive(Debug)]
pub(super) struct Series {
    inflight: Gauge,
    duration: Histogram,
    /// `[method, peer]`.
    labels: [Label; 2],
    totals: CodeCounters<Code, HTTP_SLOTS>,
    totals_in: Arc<Totals>,
}

impl Series {
    /// Counts a call in flight.
    pub(super) fn start(&self) {
        self.inflight.increment(1.0);
    }

    /// Ends a call started with [`start`](Self::start) after `elapsed`, with `code`.
    pub(super) fn finish(&self, elapsed: Duration, code: Code) {
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

/// The series of one peer label, by method index.
#[derive(Debug)]
struct Peer {
    label: SharedString,
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
}

impl PeerTable {
    /// An empty table, with its overflow counter registered; the families are described by
    /// the caller.
    pub(super) fn new(recorder: RecorderRef, names: &ClientMetricNames, max_peers: usize) -> Self {
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
        }
    }

    /// The index of `method` in the label table; other methods share the `_OTHER` slot.
    pub(super) fn method_index(&self, method: &Method) -> usize {
        self.methods.index(method)
    }

    /// The handles of (`peer`, method at `method_index`), registered on first use.
    pub(super) fn series(&self, peer: PeerRef<'_>, method_index: usize) -> Arc<Series> {
        let peer = match peer {
            PeerRef::Operation(name) => self.peer(name),
            PeerRef::Host(host, port) => {
                let mut label = PeerLabel::default();
                match write!(label, "{host}:{port}") {
                    Ok(()) => self.peer(label.as_str()),
                    // Longer than the buffer: a host this long is rare enough to format.
                    Err(fmt::Error) => self.peer(&format!("{host}:{port}")),
                }
            }
        };
        let method_index = method_index.min(self.methods.len());
        let make = || {
            let method = Label::new("method", self.methods.label(method_index));
            let labels = [method, Label::new("peer", peer.label.clone())];
            let key = |name: &SharedString| Key::from_parts(name.clone(), labels.to_vec());
            Arc::new(Series {
                inflight: self.recorder.gauge(&key(&self.inflight)),
                duration: self.recorder.histogram(&key(&self.duration)),
                labels,
                totals: CodeCounters::new(),
                totals_in: self.totals.clone(),
            })
        };
        peer.by_method[method_index].get_or_init(make).clone()
    }

    fn peer(&self, label: &str) -> Arc<Peer> {
        let slots = self.methods.len() + 1;
        self.peers.get(label, |label| Peer {
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
        let a = table.series(PeerRef::Host("a", 80), 0);
        assert!(Arc::ptr_eq(&a, &table.series(PeerRef::Host("a", 80), 0)));
        let b = table.series(PeerRef::Operation("op"), 9);
        let c = table.series(PeerRef::Host("a", 81), 0);
        a.count(Code::Status(200));
        a.count(Code::Status(200));
        b.count(Code::Timeout);
        c.count(Code::Connect);
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
        let long = table.series(PeerRef::Host(&host, 443), 0);
        assert!(Arc::ptr_eq(
            &long,
            &table.series(PeerRef::Host(&host, 443), 0)
        ));
        assert_eq!(long.labels[1].value(), format!("{host}:443"));
        let short = table.series(PeerRef::Host("[::1]", 8080), 2);
        assert_eq!(short.labels[1].value(), "[::1]:8080");
        assert_eq!(short.labels[0].value(), "POST");
    }
}
