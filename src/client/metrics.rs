//! The client metric families: their names, the handles cached per (peer, method) with the cap
//! on distinct peers, and the guard that counts a call in flight.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, OnceLock, PoisonError, RwLock},
    time::Instant,
};

use http::Method;
use metrics::{
    Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, SharedString, Unit,
};

use crate::metrics::{OTHER_METHOD, OVERFLOW_OPERATION};

/// The `?comp=` component the client families are registered under.
pub const CLIENT_COMPONENT: &str = "client";

/// The default cap on distinct `peer` label values.
pub const DEFAULT_MAX_PEERS: usize = 1000;

// The module path of `client`, where the families were always recorded from, not this file's.
static METADATA: Metadata<'static> = Metadata::new(
    "towerscope::client",
    Level::INFO,
    Some("towerscope::client"),
);

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

/// The number of standard methods; their indexes are `0..METHODS`, `_OTHER` is `METHODS`.
pub(super) const METHODS: usize = 9;

/// The label index and name of a method of the standard set.
pub(super) fn known_method(method: &Method) -> Option<(usize, &'static str)> {
    Some(match method.as_str() {
        "GET" => (0, "GET"),
        "HEAD" => (1, "HEAD"),
        "POST" => (2, "POST"),
        "PUT" => (3, "PUT"),
        "DELETE" => (4, "DELETE"),
        "CONNECT" => (5, "CONNECT"),
        "OPTIONS" => (6, "OPTIONS"),
        "TRACE" => (7, "TRACE"),
        "PATCH" => (8, "PATCH"),
        _ => return None,
    })
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
            Self::Status(code) => SharedString::from(code.to_string()),
            Self::Timeout => SharedString::const_str("timeout"),
            Self::Connect => SharedString::const_str("connect"),
            Self::Error => SharedString::const_str("error"),
            Self::Cancelled => SharedString::const_str("cancelled"),
        }
    }
}

/// Where series are registered, and under which names.
pub(super) struct Families {
    recorder: Arc<dyn Recorder + Send + Sync>,
    inflight: SharedString,
    duration: SharedString,
    total: SharedString,
    overflowed: Counter,
}

impl fmt::Debug for Families {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Families")
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl Families {
    pub(super) fn new(
        recorder: Arc<dyn Recorder + Send + Sync>,
        names: &ClientMetricNames,
    ) -> Self {
        recorder.describe_gauge(
            names.inflight.clone().into(),
            None,
            "Outgoing HTTP requests in flight, by method and peer.".into(),
        );
        recorder.describe_histogram(
            names.duration.clone().into(),
            Some(Unit::Seconds),
            "Outgoing HTTP request durations in seconds until the response headers arrived, by method and peer.".into(),
        );
        recorder.describe_counter(
            names.total.clone().into(),
            None,
            "Finished outgoing HTTP requests, by method, status code (or timeout, connect, error, cancelled) and peer.".into(),
        );
        recorder.describe_counter(
            names.overflow.clone().into(),
            None,
            "Outgoing HTTP requests labelled peer=\"_overflow\" because the cap on distinct peers was reached.".into(),
        );
        let overflowed =
            recorder.register_counter(&Key::from_name(names.overflow.clone()), &METADATA);
        Self {
            recorder,
            inflight: names.inflight.clone().into(),
            duration: names.duration.clone().into(),
            total: names.total.clone().into(),
            overflowed,
        }
    }
}

/// The handles of one (peer, method).
#[derive(Debug)]
pub(super) struct Series {
    inflight: Gauge,
    duration: Histogram,
    labels: [Label; 2],
    totals: RwLock<Vec<(Code, Counter)>>,
    families: Arc<Families>,
}

impl Series {
    fn new(families: &Arc<Families>, method: &'static str, peer: SharedString) -> Self {
        let labels = [
            Label::new("method", SharedString::const_str(method)),
            Label::new("peer", peer),
        ];
        let r = &families.recorder;
        let key = |name: &SharedString| Key::from_parts(name.clone(), labels.to_vec());
        Self {
            inflight: r.register_gauge(&key(&families.inflight), &METADATA),
            duration: r.register_histogram(&key(&families.duration), &METADATA),
            labels,
            totals: RwLock::new(Vec::new()),
            families: families.clone(),
        }
    }

    fn count(&self, code: Code) {
        let find = |totals: &[(Code, Counter)]| {
            totals
                .iter()
                .find(|(c, _)| *c == code)
                .map(|(_, counter)| counter.increment(1))
        };
        if find(&self.totals.read().unwrap_or_else(PoisonError::into_inner)).is_some() {
            return;
        }
        let mut totals = self.totals.write().unwrap_or_else(PoisonError::into_inner);
        if find(&totals).is_some() {
            return;
        }
        let [method, peer] = self.labels.clone();
        let key = Key::from_parts(
            self.families.total.clone(),
            vec![method, Label::new("code", code.label()), peer],
        );
        let counter = self.families.recorder.register_counter(&key, &METADATA);
        counter.increment(1);
        totals.push((code, counter));
    }
}

/// The series of one peer label, by method index.
#[derive(Debug)]
struct Peer {
    label: SharedString,
    by_method: [OnceLock<Arc<Series>>; METHODS + 1],
}

impl Peer {
    fn new(label: SharedString) -> Arc<Self> {
        Arc::new(Self {
            label,
            by_method: std::array::from_fn(|_| OnceLock::new()),
        })
    }
}

/// A call's peer before it is resolved to a label.
#[derive(Debug, Clone, Copy)]
pub(super) enum PeerRef<'a> {
    Host(&'a str, u16),
    Operation(&'a str),
}

#[derive(Debug, Default)]
struct Peers {
    /// host -> (port, peer): looked up without formatting `host:port`.
    hosts: HashMap<String, Vec<(u16, Arc<Peer>)>, foldhash::fast::RandomState>,
    operations: HashMap<String, Arc<Peer>, foldhash::fast::RandomState>,
    len: usize,
}

impl Peers {
    fn get(&self, peer: PeerRef<'_>) -> Option<&Arc<Peer>> {
        match peer {
            PeerRef::Host(host, port) => self
                .hosts
                .get(host)?
                .iter()
                .find_map(|(p, peer)| (*p == port).then_some(peer)),
            PeerRef::Operation(name) => self.operations.get(name),
        }
    }
}

/// The per-middleware cache of series, with the cap on distinct peers.
#[derive(Debug)]
pub(super) struct PeerTable {
    pub(super) families: Arc<Families>,
    pub(super) max_peers: usize,
    peers: RwLock<Peers>,
    overflow: OnceLock<Arc<Peer>>,
}

impl PeerTable {
    pub(super) fn new(families: Arc<Families>, max_peers: usize) -> Arc<Self> {
        Arc::new(Self {
            families,
            max_peers: max_peers.max(1),
            peers: RwLock::default(),
            overflow: OnceLock::new(),
        })
    }

    /// The handles of (`peer`, method at `method_index`), registered on first use.
    pub(super) fn series(&self, peer: PeerRef<'_>, method_index: usize) -> Arc<Series> {
        let peer = self.peer(peer);
        let method = method_index.min(METHODS);
        peer.by_method[method]
            .get_or_init(|| {
                let label = KNOWN_METHOD_LABELS.get(method).copied();
                Arc::new(Series::new(
                    &self.families,
                    label.unwrap_or(OTHER_METHOD),
                    peer.label.clone(),
                ))
            })
            .clone()
    }

    fn peer(&self, peer: PeerRef<'_>) -> Arc<Peer> {
        if let Some(found) = self
            .peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(peer)
        {
            return found.clone();
        }
        let mut peers = self.peers.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = peers.get(peer) {
            return found.clone();
        }
        if peers.len >= self.max_peers {
            drop(peers);
            self.families.overflowed.increment(1);
            return self
                .overflow
                .get_or_init(|| Peer::new(SharedString::const_str(OVERFLOW_OPERATION)))
                .clone();
        }
        peers.len += 1;
        match peer {
            PeerRef::Host(host, port) => {
                let new = Peer::new(SharedString::from(format!("{host}:{port}")));
                peers
                    .hosts
                    .entry(host.to_owned())
                    .or_default()
                    .push((port, new.clone()));
                new
            }
            PeerRef::Operation(name) => {
                let new = Peer::new(SharedString::from(name.to_owned()));
                peers.operations.insert(name.to_owned(), new.clone());
                new
            }
        }
    }
}

const KNOWN_METHOD_LABELS: [&str; METHODS] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// A call in flight: counted out when it finishes, or as `cancelled` when dropped before.
pub(super) struct InFlight {
    series: Arc<Series>,
    start: Instant,
    done: bool,
}

impl InFlight {
    pub(super) fn start(series: Arc<Series>) -> Self {
        series.inflight.increment(1.0);
        Self {
            series,
            start: Instant::now(),
            done: false,
        }
    }

    pub(super) fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.series.inflight.decrement(1.0);
        self.series
            .duration
            .record(self.start.elapsed().as_secs_f64());
        self.series.count(code);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{client::ClientMiddleware, config::MetricConfig, metrics::MetricsRegistry};

    #[test]
    fn series_are_resolved_once_and_peers_capped() {
        let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
        let middleware = ClientMiddleware::new(&registry, "t_").with_max_peers(2);
        let table = middleware.table.unwrap();
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
}
