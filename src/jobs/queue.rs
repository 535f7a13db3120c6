//! [`JobQueues`]: the queue gauges of the `jobs` module (depth, wait, concurrency, scheduled);
//! documented in the module docs, `# Queues`.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, OnceLock, PoisonError,
    },
    time::{Duration, Instant},
};

use metrics::{Gauge, Key, Label, SharedString};

use super::{COMPONENT, DEFAULT_MAX_JOB_TYPES};
use crate::metrics::{
    toolkit::{self, Family, LabelTable, RecorderRef},
    MetricsRegistry, RenderHook,
};

/// Default cap on distinct pools with their own `task_concurrency` series, per job type.
pub const DEFAULT_MAX_POOLS: usize = 64;

/// The queue families under `prefix`: size, latency, concurrency, scheduled.
fn families(prefix: &str) -> [Family; 4] {
    [
        Family::gauge(
            format!("{prefix}task_queue_size"),
            "Jobs waiting in the queue, by type (job name).",
        ),
        Family::gauge(
            format!("{prefix}task_queue_latency"),
            "Seconds since the oldest job waiting in the queue was enqueued, by type (0: none waits).",
        ),
        Family::gauge(
            format!("{prefix}task_concurrency"),
            "Jobs running, by type and worker pool.",
        ),
        Family::gauge(
            format!("{prefix}task_scheduled_total"),
            "Periodic or delayed jobs scheduled to be enqueued later.",
        ),
    ]
}

/// Instruments job queues; see [Queues](crate::jobs#queues) in the module docs.
///
/// Built with [`new`](Self::new), [`with_recorder`](Self::with_recorder) or
/// [`from_telemetry`](Self::from_telemetry), then the `with_*` setters, which only store their
/// value. The families are described, served and the scheduled gauge registered (at 0) at the
/// first [`enqueue`](Self::enqueue), [`schedule`](Self::schedule) or
/// [`refresh`](Self::refresh); clones share the series and the tickets' counts.
#[derive(Clone)]
pub struct JobQueues {
    recorder: RecorderRef,
    registry: Option<MetricsRegistry>,
    prefix: Arc<str>,
    max_types: usize,
    max_pools: usize,
    table: Arc<OnceLock<Arc<QueueTable>>>,
}

impl fmt::Debug for JobQueues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobQueues")
            .field("recorder", &self.recorder)
            .field("prefix", &self.prefix)
            .field("max_types", &self.max_types)
            .field("max_pools", &self.max_pools)
            .field("built", &self.table.get().is_some())
            .finish_non_exhaustive()
    }
}

/// The series of every job type and the scheduled gauge, shared by the clones and tickets.
struct QueueTable {
    recorder: RecorderRef,
    names: [SharedString; 4],
    max_pools: usize,
    types: LabelTable<TypeQueue>,
    scheduled: Gauge,
    /// Numbers the waiting jobs, in enqueue order.
    next: AtomicU64,
    /// Registered with the registry: sets the latencies before each render.
    _hook: Option<Arc<RenderHook>>,
}

/// The queue of one job type: its waiting jobs and gauges.
struct TypeQueue {
    label: SharedString,
    size: Gauge,
    latency: Gauge,
    /// Waiting jobs: number -> enqueue time; the first is the oldest.
    waiting: Mutex<BTreeMap<u64, Instant>>,
    pools: LabelTable<Gauge>,
}

impl TypeQueue {
    /// Sets both gauges from `waiting`, under its lock, so that they agree with it.
    fn publish(&self, waiting: &BTreeMap<u64, Instant>, now: Instant) {
        self.size.set(waiting.len() as f64);
        let oldest = waiting.values().next();
        let age = oldest.map_or(Duration::ZERO, |at| now.saturating_duration_since(*at));
        self.latency.set(age.as_secs_f64());
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Instant>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refresh(&self, now: Instant) {
        let waiting = self.waiting();
        self.publish(&waiting, now);
    }
}

impl QueueTable {
    fn key(name: &SharedString, labels: Vec<Label>) -> Key {
        Key::from_parts(name.clone(), labels)
    }

    fn queue(self: &Arc<Self>, job_type: &str) -> Arc<TypeQueue> {
        self.types.get(job_type, |label| {
            let by_type = || vec![Label::new("type", label.clone())];
            TypeQueue {
                size: self.recorder.gauge(&Self::key(&self.names[0], by_type())),
                latency: self.recorder.gauge(&Self::key(&self.names[1], by_type())),
                waiting: Mutex::default(),
                pools: LabelTable::new(self.max_pools),
                label,
            }
        })
    }

    fn refresh(&self) {
        let now = Instant::now();
        self.types.for_each(|queue| queue.refresh(now));
    }
}

impl JobQueues {
    /// Queues recorded into `registry`, served under the `jobservice` component; no prefix
    /// (see [`with_prefix`](Self::with_prefix)). The registry computes the latencies before
    /// each render.
    pub fn new(registry: &MetricsRegistry) -> Self {
        registry.register_component(COMPONENT, std::iter::empty::<&str>());
        let mut queues = Self::with_recorder_ref(RecorderRef::from(registry));
        queues.registry = Some(registry.clone());
        queues
    }

    /// Queues recorded into `recorder` (described there, served under no `?comp=`); call
    /// [`refresh`](Self::refresh) before reading the latencies.
    pub fn with_recorder(recorder: Arc<dyn metrics::Recorder + Send + Sync>) -> Self {
        Self::with_recorder_ref(RecorderRef::Shared(recorder))
    }

    fn with_recorder_ref(recorder: RecorderRef) -> Self {
        Self {
            recorder,
            registry: None,
            prefix: Arc::from(""),
            max_types: DEFAULT_MAX_JOB_TYPES,
            max_pools: DEFAULT_MAX_POOLS,
            table: Arc::default(),
        }
    }

    fn changed(mut self) -> Self {
        self.table = Arc::default();
        self
    }

    /// Puts `prefix` before the family names: `{prefix}task_queue_size`, ... Harbor's are
    /// `harbor_` (the namespace alone: `harbor_task_queue_size`). Defaults to none.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = Arc::from(prefix);
        self.changed()
    }

    /// Sets the cap on distinct job types with their own series (further types share
    /// `type="_overflow"`). Defaults to [`DEFAULT_MAX_JOB_TYPES`].
    pub fn with_max_types(mut self, max_types: usize) -> Self {
        self.max_types = max_types;
        self.changed()
    }

    /// Sets the cap on distinct pools per job type (further pools share `pool="_overflow"`).
    /// Defaults to [`DEFAULT_MAX_POOLS`].
    pub fn with_max_pools(mut self, max_pools: usize) -> Self {
        self.max_pools = max_pools;
        self.changed()
    }

    /// The table, built on first use; `Arc`'d so that the registry's hook holds it weakly.
    fn table(&self) -> &Arc<QueueTable> {
        self.table.get_or_init(|| {
            let families = families(&self.prefix);
            toolkit::declare(
                &self.recorder,
                self.registry.as_ref(),
                &[COMPONENT],
                &families,
            );
            let names = families.map(|family| family.name);
            // Registered now: scraped as 0 before the first schedule.
            let scheduled = self.recorder.gauge(&Key::from_name(names[3].clone()));
            Arc::new_cyclic(|weak: &std::sync::Weak<QueueTable>| {
                let hook = self.registry.as_ref().map(|registry| {
                    let weak = weak.clone();
                    let hook: Arc<RenderHook> = Arc::new(move || {
                        if let Some(table) = weak.upgrade() {
                            table.refresh();
                        }
                    });
                    registry.before_render(&hook);
                    hook
                });
                QueueTable {
                    recorder: self.recorder.clone(),
                    names,
                    max_pools: self.max_pools,
                    types: LabelTable::new(self.max_types),
                    scheduled,
                    next: AtomicU64::new(0),
                    _hook: hook,
                }
            })
        })
    }

    /// A job of `job_type` (its name, the `type` label) enters the queue; it leaves when the
    /// ticket is [started](QueuedJob::start) or dropped.
    pub fn enqueue(&self, job_type: &str) -> QueuedJob {
        let table = self.table();
        let queue = table.queue(job_type);
        let number = table.next.fetch_add(1, Ordering::Relaxed);
        let enqueued = Instant::now();
        {
            let mut waiting = queue.waiting();
            waiting.insert(number, enqueued);
            queue.publish(&waiting, enqueued);
        }
        QueuedJob {
            table: table.clone(),
            queue,
            number,
            enqueued,
            job_type: job_type.into(),
        }
    }

    /// A periodic or delayed job is scheduled: counted in `task_scheduled_total` until the
    /// ticket drops (the schedule is removed).
    pub fn schedule(&self) -> ScheduledJob {
        let gauge = self.table().scheduled.clone();
        gauge.increment(1.0);
        ScheduledJob { gauge }
    }

    /// Sets every type's `task_queue_latency` to the age of its oldest waiting job now (and
    /// builds the families if no ticket did yet). A [`MetricsRegistry`] does this before each
    /// render; call it with another recorder.
    pub fn refresh(&self) {
        self.table().refresh();
    }
}

/// A job waiting in its queue (see [`JobQueues::enqueue`]): it leaves the queue when started
/// or dropped.
#[must_use = "the job leaves the queue when the ticket is dropped"]
pub struct QueuedJob {
    table: Arc<QueueTable>,
    queue: Arc<TypeQueue>,
    number: u64,
    enqueued: Instant,
    job_type: Box<str>,
}

impl fmt::Debug for QueuedJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuedJob")
            .field("job_type", &self.job_type)
            .field("label", &self.queue.label)
            .field("waited", &self.waited())
            .finish()
    }
}

impl QueuedJob {
    /// The job type it was enqueued with.
    pub fn job_type(&self) -> &str {
        &self.job_type
    }

    /// How long it has waited so far.
    pub fn waited(&self) -> Duration {
        self.enqueued.elapsed()
    }

    /// A worker of `pool` takes the job: it leaves the queue and counts in
    /// `task_concurrency{type,pool}` until the returned ticket drops.
    pub fn start(self, pool: &str) -> RunningJob {
        let queue = self.queue.clone();
        let table = self.table.clone();
        drop(self); // leaves the queue
        let gauge = queue.pools.get(pool, |pool| {
            let labels = vec![
                Label::new("type", queue.label.clone()),
                Label::new("pool", pool),
            ];
            table
                .recorder
                .gauge(&QueueTable::key(&table.names[2], labels))
        });
        gauge.increment(1.0);
        RunningJob { gauge }
    }
}

impl Drop for QueuedJob {
    fn drop(&mut self) {
        let mut waiting = self.queue.waiting();
        waiting.remove(&self.number);
        self.queue.publish(&waiting, Instant::now());
    }
}

/// A job running in a pool (see [`QueuedJob::start`]): counted until dropped.
#[must_use = "the job stops counting as running when the ticket is dropped"]
#[derive(Debug)]
pub struct RunningJob {
    gauge: Arc<Gauge>,
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

/// A periodic or delayed job's schedule (see [`JobQueues::schedule`]): counted until dropped.
#[must_use = "the schedule stops counting when the ticket is dropped"]
#[derive(Debug)]
pub struct ScheduledJob {
    gauge: Gauge,
}

impl Drop for ScheduledJob {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};

    use super::*;
    use crate::config::MetricConfig;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn tickets_count_while_they_live_however_they_end() {
        let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
        let queues = JobQueues::new(&registry).with_prefix("harbor_");
        assert_eq!(registry.render_components(&[COMPONENT]).unwrap(), "");
        let size = r#"harbor_task_queue_size{type="SCAN"}"#;
        let running = r#"harbor_task_concurrency{type="SCAN",pool="p1"}"#;
        let scheduled = "harbor_task_scheduled_total";

        let a = queues.enqueue("SCAN");
        let text = registry.render_components(&[COMPONENT]).unwrap();
        assert_eq!(
            value(&text, scheduled),
            Some(0.0),
            "registered with the table: {text}"
        );
        let b = queues.clone().enqueue("SCAN");
        let discarded = queues.enqueue("SCAN");
        let schedule = queues.schedule();
        let text = registry.render_components(&[COMPONENT]).unwrap();
        assert_eq!(value(&text, size), Some(3.0), "{text}");
        assert_eq!(value(&text, scheduled), Some(1.0), "{text}");

        drop(discarded);
        let a = a.start("p1");
        let panicked = catch_unwind(AssertUnwindSafe(move || {
            let _b = b.start("p1");
            panic!("the job panicked");
        }));
        assert!(panicked.is_err());
        let text = registry.render_components(&[COMPONENT]).unwrap();
        assert_eq!(value(&text, size), Some(0.0), "{text}");
        assert_eq!(value(&text, running), Some(1.0), "{text}");
        assert_eq!(
            value(&text, r#"harbor_task_queue_latency{type="SCAN"}"#),
            Some(0.0),
            "none waits: {text}"
        );
        drop((a, schedule));
        let text = registry.render_components(&[COMPONENT]).unwrap();
        assert_eq!(value(&text, running), Some(0.0), "{text}");
        assert_eq!(value(&text, scheduled), Some(0.0), "{text}");
        assert!(text.contains("# HELP harbor_task_queue_latency "), "{text}");
    }

    #[test]
    fn the_latency_is_the_oldest_waiting_jobs_age_at_render_time() {
        let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
        let queues = JobQueues::new(&registry);
        let latency = r#"task_queue_latency{type="GC"}"#;
        let first = queues.enqueue("GC");
        std::thread::sleep(Duration::from_millis(30));
        let second = queues.enqueue("GC");
        std::thread::sleep(Duration::from_millis(30));
        let at_60 = value(&registry.render(), latency).unwrap();
        assert!(at_60 >= 0.06, "the first job has waited 60 ms: {at_60}");
        std::thread::sleep(Duration::from_millis(30));
        let at_90 = value(&registry.render(), latency).unwrap();
        assert!(
            at_90 >= at_60 + 0.03,
            "it grows while the job waits: {at_60} then {at_90}"
        );
        drop(first.start("default"));
        let now = value(&registry.render(), latency).unwrap();
        assert!(
            (0.06..at_90).contains(&now),
            "the second job is now the oldest ({now}); it was enqueued 30 ms after the first"
        );
        drop(second);
        assert_eq!(value(&registry.render(), latency), Some(0.0));
    }

    #[test]
    fn types_and_pools_are_capped_and_other_recorders_refresh_by_hand() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};

        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let queues = JobQueues::with_recorder(Arc::new(recorder))
            .with_max_types(1)
            .with_max_pools(1);
        let _a = queues.enqueue("A").start("p1");
        let _b = queues.enqueue("B").start("p2");
        let waiting = queues.enqueue("B");
        std::thread::sleep(Duration::from_millis(20));
        queues.refresh();
        let mut gauges: Vec<(String, f64)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| {
                let DebugValue::Gauge(v) = value else {
                    return None;
                };
                let key = key.key();
                let labels: Vec<_> = key.labels().map(|l| l.value().to_owned()).collect();
                Some((
                    format!("{}{{{}}}", key.name(), labels.join(",")),
                    v.into_inner(),
                ))
            })
            .collect();
        gauges.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<_> = gauges.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "task_concurrency{A,p1}",
                "task_concurrency{_overflow,p2}",
                "task_queue_latency{A}",
                "task_queue_latency{_overflow}",
                "task_queue_size{A}",
                "task_queue_size{_overflow}",
                "task_scheduled_total{}",
            ]
        );
        let latency = gauges[3].1;
        assert!(latency >= 0.02, "refreshed by hand: {latency}");
        assert_eq!(waiting.job_type(), "B");
    }
}
