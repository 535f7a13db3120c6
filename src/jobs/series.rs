//! The task families, and the handles of each job type in a capped [`LabelTable`].

use std::sync::{Arc, OnceLock};

use metrics::{Counter, Histogram, Key, Label, SharedString};

use super::JobStatus;
use crate::metrics::toolkit::{Family, LabelTable, RecorderRef};

/// The task families under `prefix`, with their help texts: total, process time, overflow.
pub(super) fn families(prefix: &str) -> [Family; 3] {
    [
        Family::counter(
            format!("{prefix}task_total"),
            "Finished jobs, by type (job name) and status (success, fail, stop: cancelled).",
        ),
        Family::seconds(
            format!("{prefix}task_process_time_seconds"),
            "Job process time in seconds, by type (job name) and status.",
        ),
        Family::counter(
            format!("{prefix}task_type_overflow_total"),
            "Job runs labelled type=\"_overflow\" because the cap on distinct job types was reached.",
        ),
    ]
}

/// Where and under which names a [`TypeSeries`] registers its handles.
#[derive(Debug)]
struct Registrar {
    recorder: RecorderRef,
    total: SharedString,
    time: SharedString,
}

impl Registrar {
    fn key(name: &SharedString, label: &SharedString, status: JobStatus) -> Key {
        Key::from_parts(
            name.clone(),
            vec![
                Label::new("type", label.clone()),
                Label::new("status", SharedString::const_str(status.as_str())),
            ],
        )
    }
}

/// The handles of one job type: the counters of every status, registered with the type (so
/// that `status="fail"` is scraped as 0 before the first failure), and the process-time
/// summaries, registered with their first observation.
#[derive(Debug)]
pub(super) struct TypeSeries {
    label: SharedString,
    total: [Counter; 3],
    time: [OnceLock<Histogram>; 3],
    registrar: Arc<Registrar>,
}

impl TypeSeries {
    fn new(registrar: Arc<Registrar>, label: SharedString) -> Self {
        let total = JobStatus::ALL.map(|status| {
            let key = Registrar::key(&registrar.total, &label, status);
            registrar.recorder.counter(&key)
        });
        Self {
            label,
            total,
            time: std::array::from_fn(|_| OnceLock::new()),
            registrar,
        }
    }

    /// Counts one run that ended with `status` after `seconds`.
    pub(super) fn record(&self, status: JobStatus, seconds: f64) {
        self.total[status.index()].increment(1);
        self.time[status.index()]
            .get_or_init(|| {
                let key = Registrar::key(&self.registrar.time, &self.label, status);
                self.registrar.recorder.histogram(&key)
            })
            .record(seconds);
    }

    /// The `type` label value of this series (`_overflow` past the cap).
    pub(super) fn label(&self) -> &str {
        self.label.as_ref()
    }
}

/// The series of each job type, built once per [`Jobs`](super::Jobs) (and shared by its
/// clones).
#[derive(Debug)]
pub(super) struct JobTable {
    registrar: Arc<Registrar>,
    types: LabelTable<TypeSeries>,
}

impl JobTable {
    /// An empty table for the `families` (as [`families`] returns them) recorded in
    /// `recorder`; the families are described by the caller. The overflow counter is
    /// registered now.
    pub(super) fn new(recorder: RecorderRef, families: &[Family; 3], max_types: usize) -> Self {
        let [total, time, overflow] = families.clone().map(|family| family.name);
        Self {
            types: LabelTable::new(max_types).with_overflow_counter(recorder.clone(), overflow),
            registrar: Arc::new(Registrar {
                recorder,
                total,
                time,
            }),
        }
    }

    /// The handles of job type `name`, registered on first use (`_overflow` past the cap).
    pub(super) fn series(&self, name: &str) -> Arc<TypeSeries> {
        self.types
            .get(name, |label| TypeSeries::new(self.registrar.clone(), label))
    }
}
