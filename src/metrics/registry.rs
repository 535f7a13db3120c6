//! [`MetricsRegistry`]: the Prometheus recorder, its upkeep, and Harbor-style components.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::{mpsc, Arc, PoisonError, RwLock, Weak},
    thread,
    time::{Duration, Instant},
};

use metrics::Recorder;

use super::store::{Format, Names, Settings, Store, StoreStats};

/// Errors of setting up metrics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// Quantiles outside 0..=1, or buckets that are empty, not finite and positive, or not
    /// strictly increasing; check `metric.quantiles`, `metric.buckets` and
    /// `metric.family_buckets` (validate the configuration first to get a field-by-field
    /// message).
    #[error("invalid summary or histogram settings: {0}")]
    Invalid(String),
    /// A global `metrics` recorder is already installed in this process; install only one, or
    /// use the registry without installing it (the layers record into it directly).
    #[error("a global metrics recorder is already installed")]
    GlobalAlreadyInstalled,
    /// The upkeep thread could not be started.
    #[error("cannot start the metrics upkeep thread: {0}")]
    Upkeep(#[source] std::io::Error),
}

/// A `?comp=` value that no family is registered under.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown component {0:?}")]
pub struct UnknownComponent(pub String);

/// The metrics of a service: towerscope's own `metrics` recorder and Prometheus exposition
/// (lock-free series, families kept in order), an upkeep thread that moves the summary windows,
/// and the component of each family for Harbor's `?comp=` selection.
///
/// Cloning is cheap and shares the registry. The upkeep thread stops when the last clone drops.
///
/// ```
/// use towerscope::{config::MetricConfig, metrics::MetricsRegistry};
///
/// let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
/// registry.register_component("jobs", ["job_runs_total"]);
/// metrics::with_local_recorder(&*registry.recorder(), || {
///     metrics::counter!("job_runs_total").increment(2);
/// });
/// let text = registry.render_components(&["jobs"]).unwrap();
/// assert!(text.contains("job_runs_total 2"));
/// assert!(registry.render_components(&["nope"]).is_err());
/// ```
#[derive(Clone)]
pub struct MetricsRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    /// component name -> family names
    components: RwLock<BTreeMap<String, BTreeSet<String>>>,
    /// Called before every render, while their owner lives (see [`RenderHook`]).
    hooks: RwLock<Vec<Weak<RenderHook>>>,
    /// Dropping the sender stops the upkeep thread.
    _upkeep: mpsc::Sender<()>,
}

impl fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsRegistry")
            .field("components", &self.inner.components)
            .finish_non_exhaustive()
    }
}

/// Sets gauges computed at render time (a queue's oldest job's age); held by its owner, the
/// registry keeps a weak reference.
pub(crate) type RenderHook = dyn Fn() + Send + Sync;

/// Families whose name ends in this (every duration towerscope records: requests, client
/// calls, gRPC calls, transactions, jobs) are histograms when buckets are configured.
pub const DURATION_SUFFIX: &str = "_seconds";

/// How long one summary window slot collects; quantiles cover two to three of these.
pub(crate) const SUMMARY_SLOT: Duration = Duration::from_secs(20);

impl MetricsRegistry {
    /// A registry storing durations as `settings` say, checking every `upkeep` (at least one
    /// second) whether the summary windows move on. [`MetricsRegistry::new`] builds one from
    /// the `metric:` block.
    pub(crate) fn from_settings(
        settings: Settings,
        upkeep: Duration,
    ) -> Result<Self, MetricsError> {
        check_settings(&settings)?;
        let store = Arc::new(Store::new(settings));
        let (tx, rx) = mpsc::channel::<()>();
        let interval = upkeep.max(Duration::from_secs(1)).min(SUMMARY_SLOT);
        let weak = Arc::downgrade(&store);
        thread::Builder::new()
            .name("towerscope-upkeep".into())
            .spawn(move || {
                let mut since = Instant::now();
                // Runs until every sender (every registry clone) is gone.
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(interval) {
                    if since.elapsed() >= SUMMARY_SLOT {
                        since = Instant::now();
                        match weak.upgrade() {
                            Some(store) => store.rotate(),
                            None => return,
                        }
                    }
                }
            })
            .map_err(MetricsError::Upkeep)?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                components: RwLock::new(BTreeMap::new()),
                hooks: RwLock::default(),
                _upkeep: tx,
            }),
        })
    }

    /// Installs this registry as the process-wide `metrics` recorder, so `counter!` and friends
    /// anywhere in the service record into it.
    pub fn install_global(&self) -> Result<(), MetricsError> {
        metrics::set_global_recorder(self.inner.store.clone())
            .map_err(|_| MetricsError::GlobalAlreadyInstalled)
    }

    /// The recorder, to record into without installing it globally
    /// (`metrics::with_local_recorder(&*registry.recorder(), ..)`).
    pub fn recorder(&self) -> Arc<dyn Recorder + Send + Sync> {
        self.inner.store.clone()
    }

    /// What the registry holds: families, series and the bytes they take.
    pub fn stats(&self) -> StoreStats {
        self.inner.store.stats()
    }

    /// Serves `families` under `component`: `?comp=component` returns them (and only the
    /// families of the components asked for). Families stay in the unfiltered output too.
    pub fn register_component<I, N>(&self, component: &str, families: I)
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        let mut components = self
            .inner
            .components
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let set = components.entry(component.to_owned()).or_default();
        set.extend(families.into_iter().map(|f| f.as_ref().to_owned()));
    }

    /// Stores the duration family `name` as a histogram with `buckets` (the buckets its
    /// instrumentation advises, as the OpenTelemetry conventions do) unless `metric.buckets` or
    /// `metric.family_buckets` give it buckets: configuration wins over advice. Takes effect for
    /// a family not registered yet.
    pub(crate) fn advise_buckets(&self, name: &str, buckets: &[f64]) {
        self.inner.store.advise_buckets(name, buckets);
    }

    /// The registered component names.
    pub fn components(&self) -> Vec<String> {
        self.inner
            .components
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Renders every family in the Prometheus text format 0.0.4, families sorted by name and
    /// series by labels, so two scrapes of the same state are byte-identical.
    ///
    /// Takes about a millisecond per thousand series: call it off the async worker threads
    /// (the [`MetricsEndpoint`](super::MetricsEndpoint) does).
    pub fn render(&self) -> String {
        self.run_hooks();
        self.inner.store.render(|_| true, Format::Text)
    }

    /// Every family's current state, after the render hooks ran (as a scrape would see it).
    #[cfg(feature = "otlp")]
    pub(crate) fn snapshot(&self) -> Vec<super::store::snapshot::FamilySnapshot> {
        self.run_hooks();
        self.inner.store.snapshot(|_| true)
    }

    /// Calls `hook` before every render from now on, until the `Arc` is dropped.
    pub(crate) fn before_render(&self, hook: &Arc<RenderHook>) {
        self.inner
            .hooks
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(hook));
    }

    /// Runs the live render hooks and forgets the dropped ones.
    fn run_hooks(&self) {
        let live: Vec<Arc<RenderHook>> = {
            let mut hooks = self
                .inner
                .hooks
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            hooks.retain(|hook| hook.strong_count() > 0);
            hooks.iter().filter_map(Weak::upgrade).collect()
        };
        for hook in live {
            hook();
        }
    }

    /// Renders only the families registered under the given components (all families when
    /// `components` is empty).
    pub fn render_components(&self, components: &[&str]) -> Result<String, UnknownComponent> {
        self.render_as(components, Format::Text)
    }

    /// Renders like [`render_components`](Self::render_components), in the OpenMetrics 1.0
    /// text format (`application/openmetrics-text; version=1.0.0`), with the last exemplar
    /// (trace and span id of a sampled request) of each counter and histogram bucket, and
    /// `# EOF`. A counter `foo_total` is declared `# TYPE foo counter`; one whose name does
    /// not end in `_total` is declared `unknown`, so that every series keeps its name.
    pub fn render_openmetrics(&self, components: &[&str]) -> Result<String, UnknownComponent> {
        self.render_as(components, Format::OpenMetrics)
    }

    /// Renders like [`render_components`](Self::render_components), in the Prometheus
    /// protobuf format (`application/vnd.google.protobuf;
    /// proto=io.prometheus.client.MetricFamily; encoding=delimited`): one length-delimited
    /// `MetricFamily` message per family, with the same values and exemplars as OpenMetrics.
    #[cfg(feature = "protobuf")]
    pub fn render_protobuf(&self, components: &[&str]) -> Result<Vec<u8>, UnknownComponent> {
        let wanted = self.wanted(components)?;
        self.run_hooks();
        Ok(self.inner.store.render_protobuf(keep(&wanted)))
    }

    /// The families of `components` (every family when empty) in `format`, as a body.
    /// With [`Names::Utf8`], the conventions' families under their own names.
    pub(crate) fn render_body(
        &self,
        components: &[&str],
        format: Format,
        names: Names,
    ) -> Result<bytes::Bytes, UnknownComponent> {
        let wanted = self.wanted(components)?;
        self.run_hooks();
        let store = &self.inner.store;
        #[cfg(feature = "protobuf")]
        if format == Format::Protobuf {
            let body = store.render_protobuf_names(keep(&wanted), names);
            return Ok(bytes::Bytes::from(body));
        }
        Ok(bytes::Bytes::from(store.render_names(
            keep(&wanted),
            format,
            names,
        )))
    }

    fn render_as(&self, components: &[&str], format: Format) -> Result<String, UnknownComponent> {
        let wanted = self.wanted(components)?;
        self.run_hooks();
        Ok(self.inner.store.render(keep(&wanted), format))
    }

    /// The families of `components`; `None` (every family) when there are none.
    fn wanted(&self, components: &[&str]) -> Result<Option<BTreeSet<String>>, UnknownComponent> {
        if components.is_empty() {
            return Ok(None);
        }
        let registered = self
            .inner
            .components
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut wanted = BTreeSet::new();
        for c in components {
            let families = registered
                .get(*c)
                .ok_or_else(|| UnknownComponent((*c).to_owned()))?;
            wanted.extend(families.iter().cloned());
        }
        Ok(Some(wanted))
    }
}

/// The filter of a render: every family, or those `wanted`.
fn keep(wanted: &Option<BTreeSet<String>>) -> impl Fn(&str) -> bool + '_ {
    move |family| wanted.as_ref().is_none_or(|w| w.contains(family))
}

/// The checks `metric:` validation makes, for settings that did not come from a validated
/// configuration.
fn check_settings(settings: &Settings) -> Result<(), MetricsError> {
    if let Some(q) = settings
        .quantiles
        .iter()
        .find(|q| !(0.0..=1.0).contains(*q))
    {
        return Err(MetricsError::Invalid(format!(
            "quantile {q} is not between 0 and 1"
        )));
    }
    let buckets = settings
        .suffix_buckets
        .iter()
        .map(|(_, b)| b)
        .chain(settings.family_buckets.values());
    for b in buckets {
        let increasing = b.windows(2).all(|w| w[0] < w[1]);
        if b.is_empty() || !increasing || b.iter().any(|x| !x.is_finite() || *x <= 0.0) {
            return Err(MetricsError::Invalid(format!(
                "buckets {b:?} must be non-empty, positive, finite and strictly increasing"
            )));
        }
    }
    Ok(())
}
