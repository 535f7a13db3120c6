//! The storage behind a [`MetricsRegistry`](super::MetricsRegistry): a `metrics` recorder
//! that keeps every series in lock-free cells and writes the Prometheus text format itself.
//!
//! Why towerscope owns this instead of using `metrics-exporter-prometheus` (CHANGELOG has the
//! figures): that exporter rebuilds every summary's quantiles from mergeable sketches at each
//! scrape and renders in hash-map order, which took 600–850 ms for 10,000 summary series (and
//! the re-sorting pass on top), and its histograms append every sample to a buffer that the
//! upkeep thread drains, allocating a new block now and then on the request path. Here:
//!
//! - counters and gauges are one `AtomicU64` each, histograms one atomic per bucket, summaries
//!   a log-linear sketch of atomics in pages allocated once per power of two ([`summary`]);
//!   recording into an existing series never locks and never allocates;
//! - families are kept sorted by name and series by their rendered label set, so a render is
//!   one ordered walk that writes straight into the output, byte-identical between two scrapes
//!   of the same state, and `?comp=` filters families without parsing text;
//! - users' own `counter!`/`gauge!`/`histogram!` calls land in the same store when the registry
//!   is installed as the global recorder.

mod exemplar;
mod format;
#[cfg(feature = "cli")]
pub(crate) use format::{push_f64, push_om_float};
mod histogram;
mod utf8;
pub(crate) use utf8::Names;
pub(crate) mod native;
#[cfg(feature = "protobuf")]
mod protobuf;
#[cfg(feature = "otlp")]
pub(crate) mod snapshot;
mod summary;
mod text;

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, PoisonError, RwLock,
    },
};

use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

use crate::metrics::names::HistogramMode;
pub(crate) use exemplar::with_exemplar_at;
use exemplar::ExemplarSlot;
pub use exemplar::{with_exemplar, SpanIds};
use histogram::HistogramCell;
use native::{NativeCell, NativeSettings};

/// What a render writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Format {
    /// Prometheus text format 0.0.4 (1.0.0 with UTF-8 names).
    #[default]
    Text,
    /// OpenMetrics 1.0 text, with exemplars.
    OpenMetrics,
    /// The Prometheus protobuf format: delimited `io.prometheus.client.MetricFamily`
    /// messages, with exemplars.
    #[cfg(feature = "protobuf")]
    Protobuf,
}

/// A counter series: its value and its last exemplar.
#[derive(Debug, Default)]
pub(crate) struct CounterCell {
    value: AtomicU64,
    exemplar: ExemplarSlot,
    keep_exemplars: bool,
}

impl CounterFn for CounterCell {
    fn increment(&self, value: u64) {
        self.value.fetch_add(value, Ordering::Relaxed);
        if self.keep_exemplars {
            self.exemplar.observe(value as f64);
        }
    }

    fn absolute(&self, value: u64) {
        self.value.fetch_max(value, Ordering::Relaxed);
    }
}
use summary::{SummaryCell, SLOTS};

/// How duration families are stored: the summary quantiles, and which families are histograms
/// with which buckets.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Quantiles of every summary.
    pub(crate) quantiles: Vec<f64>,
    /// Buckets of every histogram family whose name ends in the suffix.
    pub(crate) suffix_buckets: Option<(String, Vec<f64>)>,
    /// Buckets by full family name; win over `suffix_buckets`.
    pub(crate) family_buckets: BTreeMap<String, Vec<f64>>,
    /// `metric.exemplars: false`: the cells keep no exemplar.
    pub(crate) no_exemplars: bool,
    /// `metric.histogram`: summaries and classic buckets, native histograms, or both.
    pub(crate) histogram: HistogramMode,
    /// `metric.native_histogram`, for `native` and `both`.
    pub(crate) native: NativeSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            quantiles: Vec::new(),
            suffix_buckets: None,
            family_buckets: BTreeMap::new(),
            no_exemplars: false,
            histogram: HistogramMode::Classic,
            native: NativeSettings::new(DEFAULT_BUCKET_FACTOR),
        }
    }
}

/// client_golang's default bucket factor of native histograms (schema 3).
pub(crate) const DEFAULT_BUCKET_FACTOR: f64 = 1.1;

/// Prometheus' default buckets (client_golang's `DefBuckets`), the classic buckets of
/// `metric.histogram: both` for a family without buckets of its own.
pub(crate) const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One series' storage.
#[derive(Clone)]
enum Cell {
    Counter(Arc<CounterCell>),
    Gauge(Arc<AtomicU64>),
    Summary(Arc<SummaryCell>),
    Histogram(Arc<HistogramCell>),
    Native(Arc<NativeCell>),
}

/// What a registration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Counter,
    Gauge,
    Histogram,
}

/// Classic buckets: the upper bounds, and the `le` label values formatted once.
type Bounds = (Arc<[f64]>, Arc<[String]>);

/// How a family is stored and rendered.
#[derive(Clone)]
enum Kind {
    Counter,
    Gauge,
    Summary,
    Histogram {
        bounds: Arc<[f64]>,
        /// `le` label values, formatted once.
        le: Arc<[String]>,
    },
    /// A native histogram, with classic buckets beside it (`both`).
    Native {
        classic: Option<Bounds>,
    },
}

impl Kind {
    fn asked(&self) -> Asked {
        match self {
            Self::Counter => Asked::Counter,
            Self::Gauge => Asked::Gauge,
            Self::Summary | Self::Histogram { .. } | Self::Native { .. } => Asked::Histogram,
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Summary => "summary",
            Self::Native { .. } => "histogram",
            Self::Histogram { .. } => "histogram",
        }
    }
}

struct Family {
    kind: Kind,
    /// Rendered label set -> cell.
    series: BTreeMap<String, Cell>,
    /// A registration of another kind under this name was refused and logged.
    conflict_logged: bool,
}

/// The recorder and storage of a registry.
pub(crate) struct Store {
    settings: Settings,
    /// `quantile` label values, formatted once.
    quantile_labels: Vec<String>,
    /// Indices of `settings.quantiles`, smallest quantile first.
    quantile_order: Vec<usize>,
    /// The current summary window slot (all summaries rotate together).
    clock: Arc<AtomicUsize>,
    /// Registration cache: the raw key -> its cell. Hit by every `counter!`-style call.
    keys: RwLock<HashMap<Key, Cell, foldhash::fast::RandomState>>,
    /// Sanitized family name -> family, in name order.
    families: RwLock<BTreeMap<String, Family>>,
    /// Sanitized family name -> escaped `# HELP` text.
    help: RwLock<HashMap<String, String, foldhash::fast::RandomState>>,
    /// Length of the last render: the next one reserves it up front.
    last_len: AtomicUsize,
    /// The same for the protobuf render.
    #[cfg(feature = "protobuf")]
    last_proto_len: AtomicUsize,
    /// Buckets a family's instrumentation advises (the OpenTelemetry conventions' duration
    /// buckets), by full family name: used when the settings name no buckets for the family.
    advised: RwLock<BTreeMap<String, Arc<[f64]>>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Counts of what a store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Families with at least one series.
    pub families: usize,
    /// Series (label sets) over all families.
    pub series: usize,
    /// Bytes held by the series: their cells, summary pages and label sets (map overhead
    /// estimated at two pointers per entry).
    pub bytes: usize,
}

impl Store {
    pub(crate) fn new(settings: Settings) -> Self {
        let quantile_labels = settings.quantiles.iter().map(|q| float(*q)).collect();
        Self {
            quantile_order: summary::ascending(&settings.quantiles),
            settings,
            quantile_labels,
            clock: Arc::new(AtomicUsize::new(0)),
            keys: RwLock::default(),
            families: RwLock::default(),
            help: RwLock::default(),
            last_len: AtomicUsize::new(0),
            #[cfg(feature = "protobuf")]
            last_proto_len: AtomicUsize::new(0),
            advised: RwLock::default(),
        }
    }

    /// Stores the family `name` as a histogram with `buckets` (positive, finite, increasing)
    /// unless the settings give it buckets (or it was registered already).
    pub(crate) fn advise_buckets(&self, name: &str, buckets: &[f64]) {
        self.advised
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.to_owned())
            .or_insert_with(|| Arc::from(buckets));
    }

    /// How a new family named `name` is stored when registered as `asked`.
    fn kind_for(&self, name: &str, asked: Asked) -> Kind {
        match asked {
            Asked::Counter => Kind::Counter,
            Asked::Gauge => Kind::Gauge,
            Asked::Histogram => {
                let with_le = |bounds: Arc<[f64]>| {
                    let le: Arc<[String]> = bounds.iter().map(|b| float(*b)).collect();
                    (bounds, le)
                };
                match (self.settings.histogram, self.buckets_for(name)) {
                    (HistogramMode::Classic, Some(bounds)) => {
                        let (bounds, le) = with_le(bounds);
                        Kind::Histogram { bounds, le }
                    }
                    (HistogramMode::Classic, None) => Kind::Summary,
                    (HistogramMode::Native, _) => Kind::Native { classic: None },
                    (HistogramMode::Both, bounds) => Kind::Native {
                        classic: Some(with_le(
                            bounds.unwrap_or_else(|| Arc::from(DEFAULT_BUCKETS.as_slice())),
                        )),
                    },
                }
            }
        }
    }

    /// The classic buckets of the family `name`: its own, those of its suffix, or the advised
    /// ones.
    fn buckets_for(&self, name: &str) -> Option<Arc<[f64]>> {
        let configured = self.settings.family_buckets.get(name).or_else(|| {
            self.settings
                .suffix_buckets
                .as_ref()
                .filter(|(suffix, _)| name.ends_with(suffix.as_str()))
                .map(|(_, buckets)| buckets)
        });
        match configured {
            Some(bounds) => Some(Arc::from(bounds.as_slice())),
            None => self
                .advised
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(name)
                .cloned(),
        }
    }

    /// The cell of `key`, created on first use; `None` when the family exists with another
    /// kind (logged once per family: a family has one type in the text format).
    fn cell(&self, key: &Key, asked: Asked) -> Option<Cell> {
        let cached = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned();
        if let Some(cell) = cached {
            return cell.is(asked).then_some(cell);
        }
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(cell) = keys.get(key) {
            return cell.is(asked).then(|| cell.clone());
        }
        let name = format::metric_name(key.name());
        let labels = format::label_set(key.labels().map(|l| (l.key(), l.value())));
        let mut families = self
            .families
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let family = families.entry(name.clone()).or_insert_with(|| Family {
            kind: self.kind_for(&name, asked),
            series: BTreeMap::new(),
            conflict_logged: false,
        });
        if family.kind.asked() != asked {
            if !family.conflict_logged {
                family.conflict_logged = true;
                tracing::warn!(
                    family = %name,
                    registered_as = family.kind.type_name(),
                    "a metric family was registered again with another type; those records are dropped"
                );
            }
            return None;
        }
        let cell = family
            .series
            .entry(labels)
            .or_insert_with(|| self.new_cell(&family.kind))
            .clone();
        keys.insert(key.clone(), cell.clone());
        Some(cell)
    }

    fn new_cell(&self, kind: &Kind) -> Cell {
        match kind {
            Kind::Counter => Cell::Counter(Arc::new(CounterCell {
                keep_exemplars: !self.settings.no_exemplars,
                ..CounterCell::default()
            })),
            Kind::Gauge => Cell::Gauge(Arc::new(AtomicU64::new(0f64.to_bits()))),
            Kind::Summary => Cell::Summary(Arc::new(SummaryCell::new(self.clock.clone()))),
            Kind::Histogram { bounds, .. } => Cell::Histogram(Arc::new(HistogramCell::new(
                bounds.clone(),
                !self.settings.no_exemplars,
            ))),
            Kind::Native { classic } => {
                let keep = !self.settings.no_exemplars;
                let classic = classic
                    .as_ref()
                    .map(|(bounds, _)| HistogramCell::new(bounds.clone(), keep));
                Cell::Native(Arc::new(NativeCell::new(
                    &self.settings.native,
                    classic,
                    keep,
                )))
            }
        }
    }

    fn describe(&self, name: &str, help: &str) {
        self.help
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(format::metric_name(name), format::help_text(help));
    }

    /// Moves every summary's window on by one slot: the oldest slot is cleared and becomes
    /// the current one.
    pub(crate) fn rotate(&self) {
        let next = self.clock.load(Ordering::Relaxed).wrapping_add(1);
        let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
        for family in families.values() {
            for cell in family.series.values() {
                match cell {
                    Cell::Summary(summary) => summary.clear_slot(next % SLOTS),
                    Cell::Native(native) => {
                        native.reset_if_due(&self.settings.native);
                    }
                    _ => {}
                }
            }
        }
        self.clock.store(next, Ordering::Relaxed);
    }

    /// What the store holds.
    pub(crate) fn stats(&self) -> StoreStats {
        let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
        let mut stats = StoreStats::default();
        for family in families.values().filter(|f| !f.series.is_empty()) {
            stats.families += 1;
            for (labels, cell) in &family.series {
                stats.series += 1;
                // The label set is held twice: in the family and (as a `Key`) in the cache.
                stats.bytes += 2 * labels.len() + 4 * std::mem::size_of::<usize>();
                stats.bytes += match cell {
                    Cell::Counter(_) => std::mem::size_of::<CounterCell>(),
                    Cell::Gauge(_) => std::mem::size_of::<AtomicU64>(),
                    Cell::Summary(s) => s.heap_bytes(),
                    Cell::Histogram(h) => h.heap_bytes(),
                    Cell::Native(n) => n.heap_bytes(),
                };
            }
        }
        stats
    }
}

fn float(value: f64) -> String {
    let mut s = String::new();
    format::push_f64(&mut s, value);
    s
}

impl Cell {
    fn is(&self, asked: Asked) -> bool {
        matches!(
            (self, asked),
            (Self::Counter(_), Asked::Counter)
                | (Self::Gauge(_), Asked::Gauge)
                | (
                    Self::Summary(_) | Self::Histogram(_) | Self::Native(_),
                    Asked::Histogram
                )
        )
    }
}

impl HistogramFn for SummaryCell {
    fn record(&self, value: f64) {
        SummaryCell::record(self, value);
    }
}

impl HistogramFn for HistogramCell {
    fn record(&self, value: f64) {
        HistogramCell::record(self, value);
    }
}

impl HistogramFn for NativeCell {
    fn record(&self, value: f64) {
        NativeCell::record(self, value);
    }
}

impl Recorder for Store {
    fn describe_counter(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key.as_str(), &description);
    }

    fn describe_gauge(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key.as_str(), &description);
    }

    fn describe_histogram(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key.as_str(), &description);
    }

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        match self.cell(key, Asked::Counter) {
            Some(Cell::Counter(c)) => Counter::from_arc(c),
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        match self.cell(key, Asked::Gauge) {
            Some(Cell::Gauge(g)) => Gauge::from_arc(g),
            _ => Gauge::noop(),
        }
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        match self.cell(key, Asked::Histogram) {
            Some(Cell::Summary(s)) => Histogram::from_arc(s),
            Some(Cell::Histogram(h)) => Histogram::from_arc(h),
            Some(Cell::Native(n)) => Histogram::from_arc(n),
            _ => Histogram::noop(),
        }
    }
}

#[cfg(test)]
mod tests;
