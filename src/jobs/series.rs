//! The metric handles of each job type, registered on first use and cached, with the cap on
//! distinct types.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock, PoisonError, RwLock,
    },
};

use metrics::{Counter, Histogram, Key, Label, Recorder, SharedString};
use metrics_exporter_prometheus::PrometheusRecorder;

use super::{JobStatus, METADATA};
use crate::metrics::OVERFLOW_OPERATION;

/// Names and recorder of the two families.
pub(super) struct Families {
    pub(super) recorder: Arc<PrometheusRecorder>,
    pub(super) total: SharedString,
    pub(super) time: SharedString,
}

/// The handles of one job type: counters of every status, summaries registered on first use.
pub(super) struct TypeSeries {
    label: SharedString,
    total: [Counter; 3],
    time: [OnceLock<Histogram>; 3],
    families: Arc<Families>,
}

impl TypeSeries {
    fn new(families: Arc<Families>, label: SharedString) -> Self {
        let total = JobStatus::ALL.map(|status| {
            families
                .recorder
                .register_counter(&Self::key(&families.total, &label, status), &METADATA)
        });
        Self {
            label,
            total,
            time: std::array::from_fn(|_| OnceLock::new()),
            families,
        }
    }

    fn key(name: &SharedString, label: &SharedString, status: JobStatus) -> Key {
        Key::from_parts(
            name.clone(),
            vec![
                Label::new("type", label.clone()),
                Label::new("status", SharedString::const_str(status.as_str())),
            ],
        )
    }

    pub(super) fn record(&self, status: JobStatus, seconds: f64) {
        self.total[status.index()].increment(1);
        self.time[status.index()]
            .get_or_init(|| {
                let key = Self::key(&self.families.time, &self.label, status);
                self.families.recorder.register_histogram(&key, &METADATA)
            })
            .record(seconds);
    }
}

/// What the clones of a [`Jobs`](super::Jobs) share: the families and the handles per job type.
pub(super) struct JobsInner {
    pub(super) families: Arc<Families>,
    pub(super) types: RwLock<HashMap<String, Arc<TypeSeries>, foldhash::fast::RandomState>>,
    pub(super) overflow: OnceLock<Arc<TypeSeries>>,
    pub(super) max_types: AtomicUsize,
}

impl JobsInner {
    /// The handles of job type `name`, registered on first use.
    pub(super) fn series(&self, name: &str) -> Arc<TypeSeries> {
        if let Some(series) = self
            .types
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return series.clone();
        }
        let mut types = self.types.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = types.get(name) {
            return series.clone();
        }
        if types.len() >= self.max_types.load(Ordering::Relaxed) {
            drop(types);
            return self
                .overflow
                .get_or_init(|| {
                    Arc::new(TypeSeries::new(
                        self.families.clone(),
                        SharedString::const_str(OVERFLOW_OPERATION),
                    ))
                })
                .clone();
        }
        let series = Arc::new(TypeSeries::new(
            self.families.clone(),
            SharedString::from(name.to_owned()),
        ));
        types.insert(name.to_owned(), series.clone());
        series
    }
}
