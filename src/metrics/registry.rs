//! [`MetricsRegistry`]: the Prometheus recorder, its upkeep, and Harbor-style components.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::{mpsc, Arc, PoisonError, RwLock},
    thread,
    time::Duration,
};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use super::exposition;

/// Errors of setting up metrics.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The Prometheus recorder rejected the quantiles or buckets; check `metric.quantiles` and
    /// `metric.buckets` (validate the configuration first to get a field-by-field message).
    #[error("invalid summary or histogram settings: {0}")]
    Build(#[from] metrics_exporter_prometheus::BuildError),
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

/// The metrics of a service: a Prometheus recorder, an upkeep thread, and the component of each
/// family for Harbor's `?comp=` selection.
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
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    /// component name -> family names
    components: RwLock<BTreeMap<String, BTreeSet<String>>>,
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

/// Families whose name ends in this (every duration towerscope records: requests, client
/// calls, gRPC calls, transactions, jobs) are histograms when buckets are configured.
pub const DURATION_SUFFIX: &str = "_seconds";

impl MetricsRegistry {
    /// A registry recording with `builder`'s settings, running upkeep every `upkeep`
    /// (at least one second). [`MetricsRegistry::new`] builds one from the `metric:` block.
    pub(crate) fn from_builder(
        builder: PrometheusBuilder,
        upkeep: Duration,
    ) -> Result<Self, MetricsError> {
        let recorder = Arc::new(builder.build_recorder());
        let handle = recorder.handle();
        let (tx, rx) = mpsc::channel::<()>();
        let interval = upkeep.max(Duration::from_secs(1));
        let upkeep_handle = handle.clone();
        thread::Builder::new()
            .name("towerscope-upkeep".into())
            .spawn(move || {
                // Runs until every sender (every registry clone) is gone.
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(interval) {
                    upkeep_handle.run_upkeep();
                }
            })
            .map_err(MetricsError::Upkeep)?;
        Ok(Self {
            inner: Arc::new(Inner {
                recorder,
                handle,
                components: RwLock::new(BTreeMap::new()),
                _upkeep: tx,
            }),
        })
    }

    /// Installs this registry as the process-wide `metrics` recorder, so `counter!` and friends
    /// anywhere in the service record into it.
    pub fn install_global(&self) -> Result<(), MetricsError> {
        metrics::set_global_recorder(self.inner.recorder.clone())
            .map_err(|_| MetricsError::GlobalAlreadyInstalled)
    }

    /// The recorder, to record into without installing it globally
    /// (`metrics::with_local_recorder`).
    pub fn recorder(&self) -> Arc<PrometheusRecorder> {
        self.inner.recorder.clone()
    }

    /// The Prometheus handle (render, upkeep).
    pub fn handle(&self) -> &PrometheusHandle {
        &self.inner.handle
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
    /// Takes milliseconds with many series: call it off the async worker threads
    /// (the [`MetricsEndpoint`](super::MetricsEndpoint) does).
    pub fn render(&self) -> String {
        exposition::canonicalize(&self.inner.handle.render(), |_| true)
    }

    /// Renders only the families registered under the given components (all families when
    /// `components` is empty).
    pub fn render_components(&self, components: &[&str]) -> Result<String, UnknownComponent> {
        if components.is_empty() {
            return Ok(self.render());
        }
        let wanted: BTreeSet<String> = {
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
            wanted
        };
        Ok(exposition::canonicalize(
            &self.inner.handle.render(),
            |family| wanted.contains(family),
        ))
    }
}
