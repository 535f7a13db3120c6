//! Build information, process metrics and tokio runtime metrics.
//!
//! [`build_info`] sets `{prefix}build_info{version="...",...} 1` (Dragonfly's `version`,
//! Harbor's `system_info`): join on it to label any series with the running version.
//!
//! With the `process` feature, [`RuntimeMetrics::start`] collects, at once and then on an
//! interval on a thread of its own (until the handle is dropped), the standard Prometheus
//! process metrics (component `process`, read through `metrics-process`) and the stable tokio
//! runtime metrics (component `runtime`) of the runtime it was started on:
//!
//! | family | type | what |
//! |---|---|---|
//! | `process_cpu_seconds_total` | counter | user + system CPU time, in whole seconds |
//! | `process_resident_memory_bytes` | gauge | resident set size |
//! | `process_virtual_memory_bytes` | gauge | virtual memory size |
//! | `process_virtual_memory_max_bytes` | gauge | address space limit (absent when unlimited) |
//! | `process_open_fds`, `process_max_fds` | gauge | open file descriptors and their limit |
//! | `process_start_time_seconds` | gauge | start time, seconds since the Unix epoch |
//! | `process_threads` | gauge | OS threads |
//! | `tokio_workers` | gauge | worker threads of the runtime |
//! | `tokio_alive_tasks` | gauge | tasks spawned and not yet finished (Go's `go_goroutines`) |
//! | `tokio_global_queue_depth` | gauge | tasks waiting in the runtime's global (injection) queue |
//! | `tokio_worker_park_total` | counter | times the workers parked (went idle), summed |
//! | `tokio_workers_busy_ratio` | gauge | share of the last interval the workers were busy, 0–1 |
//!
//! These are the series of the Harbor dashboard's "General metrics" row (open fds, CPU time
//! rate, threads, goroutines); process and tokio names are unprefixed, as every Prometheus
//! client library writes them. `process_cpu_seconds_total` is a whole number of seconds: the
//! `metrics` facade's counters are integers (a 5 minute `rate()` is off by at most 0.3 % of a
//! core). The worker counters and busy ratio need 64-bit atomics (every 64-bit target).
//!
//! # Example
//!
//! ```
//! use towerscope::{config::MetricConfig, metrics::{runtime, MetricsRegistry}};
//!
//! let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
//! runtime::build_info(&registry, "harbor_", env!("CARGO_PKG_VERSION"), &[("git_commit", "a1b2c3d")])
//!     .unwrap();
//! let text = registry.render_components(&["runtime"]).unwrap();
//! let series = format!(
//!     r#"harbor_build_info{{version="{}",git_commit="a1b2c3d"}}"#,
//!     env!("CARGO_PKG_VERSION")
//! );
//! assert_eq!(text.lines().find(|l| l.starts_with(&series)), Some(format!("{series} 1").as_str()));
//! ```
// `RuntimeMetrics` is behind the `process` feature: linked when built, else to docs.rs.
#![cfg_attr(
    feature = "process",
    doc = "[`RuntimeMetrics::start`]: RuntimeMetrics::start"
)]
#![cfg_attr(
    not(feature = "process"),
    doc = "[`RuntimeMetrics::start`]: https://docs.rs/towerscope/latest/towerscope/metrics/runtime/struct.RuntimeMetrics.html#method.start"
)]

use std::collections::BTreeSet;

use metrics::{Key, KeyName, Label, Level, Metadata, Recorder, SharedString};

use super::MetricsRegistry;

/// The `?comp=` component of the build info and the tokio runtime families.
pub const RUNTIME_COMPONENT: &str = "runtime";

/// The `?comp=` component of the process families.
pub const PROCESS_COMPONENT: &str = "process";

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// A label that [`build_info`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildInfoError {
    /// A label name is not a Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting
    /// with `__`, which is reserved); rename it.
    #[error("invalid label name {0:?}: use [a-zA-Z_][a-zA-Z0-9_]*, not starting with __")]
    InvalidLabelName(String),
    /// A label is given twice (`version` is always set from the `version` argument).
    #[error("label {0:?} is given twice")]
    DuplicateLabel(String),
}

fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.starts_with("__")
}

/// Sets the gauge `{prefix}build_info{version, labels...}` to 1, described and registered under
/// the `runtime` component, e.g. `labels = &[("git_commit", GIT_COMMIT), ("rustc", RUSTC)]`.
///
/// Call it once at start-up. Fails on a label name Prometheus would reject, or one given
/// twice.
pub fn build_info(
    registry: &MetricsRegistry,
    prefix: &str,
    version: &str,
    labels: &[(&str, &str)],
) -> Result<(), BuildInfoError> {
    let mut seen = BTreeSet::from(["version"]);
    let mut all = Vec::with_capacity(labels.len() + 1);
    all.push(Label::new("version", version.to_owned()));
    for &(name, value) in labels {
        if !is_label_name(name) {
            return Err(BuildInfoError::InvalidLabelName(name.to_owned()));
        }
        if !seen.insert(name) {
            return Err(BuildInfoError::DuplicateLabel(name.to_owned()));
        }
        all.push(Label::new(name.to_owned(), value.to_owned()));
    }
    let name = format!("{prefix}build_info");
    let recorder = registry.recorder();
    recorder.describe_gauge(
        KeyName::from(name.clone()),
        None,
        SharedString::const_str("Always 1; the labels describe the running build."),
    );
    recorder
        .register_gauge(&Key::from_parts(name.clone(), all), &METADATA)
        .set(1.0);
    registry.register_component(RUNTIME_COMPONENT, [name]);
    Ok(())
}

#[cfg(feature = "process")]
pub use collector::{RuntimeMetrics, RuntimeMetricsError, DEFAULT_INTERVAL, MIN_INTERVAL};

#[cfg(feature = "process")]
mod collector {
    use std::{
        fmt,
        sync::{mpsc, Arc, Mutex, PoisonError},
        thread,
        time::{Duration, Instant},
    };

    use metrics::{Counter, Gauge, Key, KeyName, Recorder, SharedString, Unit};

    use super::{MetricsRegistry, METADATA, PROCESS_COMPONENT, RUNTIME_COMPONENT};

    /// A sensible collection interval: a little under the usual 15 s scrape interval.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

    /// Shorter intervals are raised to this.
    pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

    /// Errors of [`RuntimeMetrics::start`].
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum RuntimeMetricsError {
        /// The collector thread could not be started (the process is out of threads or
        /// memory).
        #[error("cannot start the runtime metrics thread: {0}")]
        Spawn(#[source] std::io::Error),
    }

    const CPU: &str = "process_cpu_seconds_total";
    const RESIDENT: &str = "process_resident_memory_bytes";
    const VIRTUAL: &str = "process_virtual_memory_bytes";
    const VIRTUAL_MAX: &str = "process_virtual_memory_max_bytes";
    const OPEN_FDS: &str = "process_open_fds";
    const MAX_FDS: &str = "process_max_fds";
    const START_TIME: &str = "process_start_time_seconds";
    const THREADS: &str = "process_threads";
    const WORKERS: &str = "tokio_workers";
    const ALIVE_TASKS: &str = "tokio_alive_tasks";
    const GLOBAL_QUEUE: &str = "tokio_global_queue_depth";
    const PARKS: &str = "tokio_worker_park_total";
    const BUSY: &str = "tokio_workers_busy_ratio";

    const PROCESS_FAMILIES: [&str; 8] = [
        CPU,
        RESIDENT,
        VIRTUAL,
        VIRTUAL_MAX,
        OPEN_FDS,
        MAX_FDS,
        START_TIME,
        THREADS,
    ];
    const RUNTIME_FAMILIES: [&str; 5] = [WORKERS, ALIVE_TASKS, GLOBAL_QUEUE, PARKS, BUSY];

    /// A gauge registered on its first value, so a value the platform cannot read is absent
    /// rather than a false 0.
    struct LazyGauge {
        name: &'static str,
        gauge: Option<Gauge>,
    }

    impl LazyGauge {
        fn new(name: &'static str) -> Self {
            Self { name, gauge: None }
        }

        fn set(&mut self, recorder: &dyn Recorder, value: Option<f64>) {
            let Some(value) = value else { return };
            self.gauge
                .get_or_insert_with(|| {
                    recorder.register_gauge(&Key::from_static_name(self.name), &METADATA)
                })
                .set(value);
        }
    }

    struct LazyCounter {
        name: &'static str,
        counter: Option<Counter>,
    }

    impl LazyCounter {
        fn new(name: &'static str) -> Self {
            Self {
                name,
                counter: None,
            }
        }

        fn absolute(&mut self, recorder: &dyn Recorder, value: Option<u64>) {
            let Some(value) = value else { return };
            self.counter
                .get_or_insert_with(|| {
                    recorder.register_counter(&Key::from_static_name(self.name), &METADATA)
                })
                .absolute(value);
        }
    }

    /// Cumulative worker busy time at the previous collection, for the busy ratio.
    struct BusySample {
        at: Instant,
        busy: Duration,
    }

    /// The collector's handles and state; shared by the thread and [`RuntimeMetrics::collect`].
    struct State {
        recorder: Arc<dyn Recorder + Send + Sync>,
        runtime: Option<tokio::runtime::RuntimeMetrics>,
        cpu: LazyCounter,
        resident: LazyGauge,
        virtual_memory: LazyGauge,
        virtual_max: LazyGauge,
        open_fds: LazyGauge,
        max_fds: LazyGauge,
        start_time: LazyGauge,
        threads: LazyGauge,
        workers: LazyGauge,
        alive_tasks: LazyGauge,
        global_queue: LazyGauge,
        parks: LazyCounter,
        busy: LazyGauge,
        last_busy: Option<BusySample>,
    }

    /// metrics-process reads an unlimited limit as `0`, which would look like "no fds allowed":
    /// leave the series out instead.
    fn limit(value: Option<u64>) -> Option<f64> {
        value.filter(|&v| v != 0).map(|v| v as f64)
    }

    impl State {
        fn collect(&mut self) {
            let p = metrics_process::collector::collect();
            let r = &*self.recorder;
            // Counters are integers: whole CPU seconds, never rounded up so they never go back.
            self.cpu
                .absolute(r, p.cpu_seconds_total.map(|s| s.max(0.0).floor() as u64));
            self.resident
                .set(r, p.resident_memory_bytes.map(|v| v as f64));
            self.virtual_memory
                .set(r, p.virtual_memory_bytes.map(|v| v as f64));
            self.virtual_max.set(r, limit(p.virtual_memory_max_bytes));
            self.open_fds.set(r, p.open_fds.map(|v| v as f64));
            self.max_fds.set(r, limit(p.max_fds));
            self.start_time
                .set(r, p.start_time_seconds.map(|v| v as f64));
            self.threads.set(r, p.threads.map(|v| v as f64));

            let Some(rt) = &self.runtime else { return };
            let workers = rt.num_workers();
            self.workers.set(r, Some(workers as f64));
            self.alive_tasks.set(r, Some(rt.num_alive_tasks() as f64));
            self.global_queue
                .set(r, Some(rt.global_queue_depth() as f64));
            #[cfg(target_has_atomic = "64")]
            {
                let parks = (0..workers).map(|w| rt.worker_park_count(w)).sum();
                self.parks.absolute(r, Some(parks));
                let now = Instant::now();
                let busy: Duration = (0..workers).map(|w| rt.worker_total_busy_duration(w)).sum();
                if let Some(last) = &self.last_busy {
                    let elapsed = now.saturating_duration_since(last.at).as_secs_f64();
                    let spent = busy.saturating_sub(last.busy).as_secs_f64();
                    if elapsed > 0.0 && workers > 0 {
                        let ratio = (spent / (elapsed * workers as f64)).clamp(0.0, 1.0);
                        self.busy.set(r, Some(ratio));
                    }
                }
                self.last_busy = Some(BusySample { at: now, busy });
            }
        }
    }

    fn describe(recorder: &dyn Recorder) {
        let gauges: [(&'static str, Option<Unit>, &'static str); 11] = [
            (
                RESIDENT,
                Some(Unit::Bytes),
                "Resident memory size in bytes.",
            ),
            (VIRTUAL, Some(Unit::Bytes), "Virtual memory size in bytes."),
            (
                VIRTUAL_MAX,
                Some(Unit::Bytes),
                "Maximum amount of virtual memory available in bytes (absent when unlimited).",
            ),
            (OPEN_FDS, None, "Number of open file descriptors."),
            (MAX_FDS, None, "Maximum number of open file descriptors."),
            (
                START_TIME,
                Some(Unit::Seconds),
                "Start time of the process since unix epoch in seconds.",
            ),
            (THREADS, None, "Number of OS threads in the process."),
            (
                WORKERS,
                None,
                "Number of worker threads of the tokio runtime.",
            ),
            (
                ALIVE_TASKS,
                None,
                "Number of tokio tasks spawned and not yet finished.",
            ),
            (
                GLOBAL_QUEUE,
                None,
                "Number of tasks waiting in the tokio runtime's global queue.",
            ),
            (
                BUSY,
                None,
                "Share of the last collection interval the tokio workers were busy (0 to 1).",
            ),
        ];
        for (name, unit, help) in gauges {
            recorder.describe_gauge(
                KeyName::from_const_str(name),
                unit,
                SharedString::const_str(help),
            );
        }
        recorder.describe_counter(
            KeyName::from_const_str(CPU),
            Some(Unit::Seconds),
            SharedString::const_str(
                "Total user and system CPU time spent in seconds (whole seconds).",
            ),
        );
        recorder.describe_counter(
            KeyName::from_const_str(PARKS),
            None,
            SharedString::const_str("Total number of times the tokio workers parked (went idle)."),
        );
    }

    /// Collects process and tokio runtime metrics into a [`MetricsRegistry`] until dropped;
    /// see the [module docs](super).
    ///
    /// ```
    /// use std::time::Duration;
    /// use towerscope::{config::MetricConfig, metrics::{runtime::RuntimeMetrics, MetricsRegistry}};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
    /// let _runtime_metrics = RuntimeMetrics::start(&registry, Duration::from_secs(10)).unwrap();
    /// // Collected once already: a scrape right now has data.
    /// let text = registry.render_components(&["runtime"]).unwrap();
    /// assert_eq!(text.lines().find(|l| l.starts_with("tokio_workers ")), Some("tokio_workers 1"));
    /// # }
    /// ```
    pub struct RuntimeMetrics {
        state: Arc<Mutex<State>>,
        /// Dropping the sender stops the thread.
        _stop: mpsc::Sender<()>,
    }

    impl fmt::Debug for RuntimeMetrics {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            f.debug_struct("RuntimeMetrics")
                .field("tokio", &state.runtime.is_some())
                .finish_non_exhaustive()
        }
    }

    impl RuntimeMetrics {
        /// Starts collecting every `interval` (at least [`MIN_INTERVAL`]; [`DEFAULT_INTERVAL`]
        /// suits a 15 s scrape), after collecting once before returning. The tokio metrics are
        /// those of the runtime this is called on; outside a runtime only process metrics are
        /// collected (see [`start_with_runtime`](Self::start_with_runtime)).
        pub fn start(
            registry: &MetricsRegistry,
            interval: Duration,
        ) -> Result<Self, RuntimeMetricsError> {
            let handle = tokio::runtime::Handle::try_current().ok();
            Self::start_with_runtime(registry, interval, handle.as_ref())
        }

        /// Like [`start`](Self::start), with the tokio metrics of `runtime` (none when `None`).
        pub fn start_with_runtime(
            registry: &MetricsRegistry,
            interval: Duration,
            runtime: Option<&tokio::runtime::Handle>,
        ) -> Result<Self, RuntimeMetricsError> {
            let recorder = registry.recorder();
            describe(&recorder);
            registry.register_component(PROCESS_COMPONENT, PROCESS_FAMILIES);
            if runtime.is_some() {
                registry.register_component(RUNTIME_COMPONENT, RUNTIME_FAMILIES);
            }
            let mut state = State {
                recorder,
                runtime: runtime.map(tokio::runtime::Handle::metrics),
                cpu: LazyCounter::new(CPU),
                resident: LazyGauge::new(RESIDENT),
                virtual_memory: LazyGauge::new(VIRTUAL),
                virtual_max: LazyGauge::new(VIRTUAL_MAX),
                open_fds: LazyGauge::new(OPEN_FDS),
                max_fds: LazyGauge::new(MAX_FDS),
                start_time: LazyGauge::new(START_TIME),
                threads: LazyGauge::new(THREADS),
                workers: LazyGauge::new(WORKERS),
                alive_tasks: LazyGauge::new(ALIVE_TASKS),
                global_queue: LazyGauge::new(GLOBAL_QUEUE),
                parks: LazyCounter::new(PARKS),
                busy: LazyGauge::new(BUSY),
                last_busy: None,
            };
            state.collect();
            let state = Arc::new(Mutex::new(state));
            let (stop, stopped) = mpsc::channel::<()>();
            let interval = interval.max(MIN_INTERVAL);
            let thread_state = state.clone();
            thread::Builder::new()
                .name("towerscope-runtime-metrics".into())
                .spawn(move || {
                    // Runs until the handle (the only sender) is dropped.
                    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval)
                    {
                        thread_state
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .collect();
                    }
                })
                .map_err(RuntimeMetricsError::Spawn)?;
            Ok(Self { state, _stop: stop })
        }

        /// Collects now, on the calling thread (e.g. right before a scrape or a push).
        pub fn collect(&self) {
            self.state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .collect();
        }
    }
}
