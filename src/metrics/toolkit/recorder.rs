//! [`RecorderRef`]: where a family's series are registered.

use std::{fmt, sync::Arc};

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Level, Metadata, Recorder, SharedString, Unit,
};

use crate::metrics::MetricsRegistry;

/// The recorder a family registers its series in: the global `metrics` recorder, or an
/// explicit one (a [`MetricsRegistry`]'s, a `metrics_util` `DebuggingRecorder` in tests, any
/// other exporter).
///
/// Cheap to clone.
///
/// ```
/// use metrics::Key;
/// use towerscope::{config::MetricConfig, metrics::{toolkit::RecorderRef, MetricsRegistry}};
///
/// let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
/// let recorder = RecorderRef::from(&registry);
/// recorder.counter(&Key::from_name("jobs_total")).increment(3);
/// assert!(registry.render().contains("jobs_total 3"));
/// ```
#[derive(Clone, Default)]
pub enum RecorderRef {
    /// The process-wide recorder installed with `metrics::set_global_recorder`, looked up at
    /// each registration (so a recorder installed later is found).
    #[default]
    Global,
    /// An explicit recorder.
    Shared(Arc<dyn Recorder + Send + Sync>),
}

impl fmt::Debug for RecorderRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shared(_) => f.write_str("Shared(..)"),
            Self::Global => f.write_str("Global"),
        }
    }
}

impl From<&MetricsRegistry> for RecorderRef {
    fn from(registry: &MetricsRegistry) -> Self {
        Self::Shared(registry.recorder())
    }
}

impl From<Arc<dyn Recorder + Send + Sync>> for RecorderRef {
    fn from(recorder: Arc<dyn Recorder + Send + Sync>) -> Self {
        Self::Shared(recorder)
    }
}

/// The metadata of every series towerscope registers.
static METADATA: Metadata<'static> = Metadata::new("towerscope", Level::INFO, Some("towerscope"));

impl RecorderRef {
    /// Runs `f` with the recorder.
    pub fn with<T>(&self, f: impl FnOnce(&dyn Recorder) -> T) -> T {
        match self {
            Self::Shared(r) => f(&**r),
            Self::Global => metrics::with_recorder(|r| f(r)),
        }
    }

    /// Registers (or finds) the counter of `key`.
    pub fn counter(&self, key: &Key) -> Counter {
        self.with(|r| r.register_counter(key, &METADATA))
    }

    /// Registers (or finds) the gauge of `key`.
    pub fn gauge(&self, key: &Key) -> Gauge {
        self.with(|r| r.register_gauge(key, &METADATA))
    }

    /// Registers (or finds) the histogram (summary) of `key`.
    pub fn histogram(&self, key: &Key) -> Histogram {
        self.with(|r| r.register_histogram(key, &METADATA))
    }

    /// Describes `family` (its `# HELP` line and unit).
    pub fn describe(&self, family: &Family) {
        let name = KeyName::from(family.name.clone());
        let help = SharedString::from(family.help.clone());
        self.with(|r| match family.kind {
            FamilyKind::Counter => r.describe_counter(name, family.unit, help),
            FamilyKind::Gauge => r.describe_gauge(name, family.unit, help),
            FamilyKind::Histogram => r.describe_histogram(name, family.unit, help),
        });
    }
}

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyKind {
    /// A monotonic counter.
    Counter,
    /// A gauge.
    Gauge,
    /// A summary, or a histogram where the registry has buckets for it.
    Histogram,
}

/// A metric family as an integration declares it: name, kind, unit and help text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// The full name, prefix included.
    pub name: SharedString,
    /// Its kind.
    pub kind: FamilyKind,
    /// Its unit, if any (`Unit::Seconds` for durations).
    pub unit: Option<Unit>,
    /// The `# HELP` text.
    pub help: SharedString,
}

impl Family {
    /// A counter family.
    pub fn counter(name: impl Into<SharedString>, help: impl Into<SharedString>) -> Self {
        Self::new(name, FamilyKind::Counter, None, help)
    }

    /// A gauge family.
    pub fn gauge(name: impl Into<SharedString>, help: impl Into<SharedString>) -> Self {
        Self::new(name, FamilyKind::Gauge, None, help)
    }

    /// A duration family in seconds (a summary, or a histogram with buckets).
    pub fn seconds(name: impl Into<SharedString>, help: impl Into<SharedString>) -> Self {
        Self::new(name, FamilyKind::Histogram, Some(Unit::Seconds), help)
    }

    /// A family of any kind.
    pub fn new(
        name: impl Into<SharedString>,
        kind: FamilyKind,
        unit: Option<Unit>,
        help: impl Into<SharedString>,
    ) -> Self {
        Self {
            name: name.into(),
            kind,
            unit,
            help: help.into(),
        }
    }
}
