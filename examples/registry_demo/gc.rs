//! Garbage collection as an instrumented background job: deletes the blobs that no manifest
//! refers to (as config or layer).
//!
//! Runs go through a queue with one worker (pool `gc`), instrumented with
//! [`JobQueues`](towerscope::jobs::JobQueues): a run waits in
//! `harbor_task_queue_size{type="GARBAGE_COLLECTION"}` (the age of the oldest in
//! `harbor_task_queue_latency`), runs in `harbor_task_concurrency{pool="gc"}`, and a periodic
//! schedule (Harbor's `Hourly`, `Daily`, `Weekly`) counts in `harbor_task_scheduled_total`.
//! Each run goes through [`Jobs::run`](towerscope::jobs::Jobs::run) with the [`JobContext`]
//! captured in the scheduling request, so its `run-job` span links to that request, and it is
//! counted in `task_total{type="GARBAGE_COLLECTION",status}`. Its status (`Pending`,
//! `Running`, `Success`, `Error`, Harbor's words) is kept in the `gc_run` table.
//!
//! Like Distribution's offline GC, it does not lock out pushes: a blob uploaded but not yet
//! referenced by its manifest when GC runs is deleted (the push then fails with
//! `MANIFEST_BLOB_UNKNOWN` and the client retries). Run it when the registry is quiet. Each
//! blob is deleted as a blob `DELETE` deletes it (`Db::delete_unreferenced_blob`): one that a
//! manifest stored since the run's scan refers to is kept, so a manifest that was accepted
//! never loses a blob. A blob deleted through the API before the run is not counted by it.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{sync::mpsc, task::JoinHandle};
use towerscope::jobs::{JobContext, JobInfo, JobQueues, QueuedJob, ScheduledJob};

use crate::{db::BlobDeletion, digest::Digest, registry::referenced_blobs, AppState};

/// The job name (Harbor's), the `type` label of the task metrics.
pub(crate) const GC_JOB: &str = "GARBAGE_COLLECTION";

/// The worker pool of the GC queue (the `pool` label of `task_concurrency`).
pub(crate) const GC_POOL: &str = "gc";

/// What a GC run did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct GcReport {
    pub(crate) deleted_blobs: i64,
    pub(crate) freed_bytes: i64,
}

/// Why a GC run failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GcError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("a stored manifest cannot be parsed; nothing was deleted")]
    BadManifest,
}

/// A run waiting for the worker.
struct QueuedRun {
    id: i64,
    context: JobContext,
    ticket: QueuedJob,
}

/// A periodic schedule: Harbor's schedule types with a fixed cron.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Period {
    Hourly,
    Daily,
    Weekly,
}

impl Period {
    /// Harbor's schedule type, or `None` for the ones the demo does not run (`Custom` and
    /// `Schedule` take a cron expression, which the demo does not parse).
    pub(crate) fn parse(schedule_type: &str) -> Option<Self> {
        match schedule_type {
            "Hourly" => Some(Self::Hourly),
            "Daily" => Some(Self::Daily),
            "Weekly" => Some(Self::Weekly),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Hourly => "Hourly",
            Self::Daily => "Daily",
            Self::Weekly => "Weekly",
        }
    }

    /// The cron Harbor gives the type (seconds first).
    pub(crate) fn cron(self) -> &'static str {
        match self {
            Self::Hourly => "0 0 * * * *",
            Self::Daily => "0 0 0 * * *",
            Self::Weekly => "0 0 0 * * 0",
        }
    }

    /// The first time the cron fires strictly after `now` (Unix seconds, UTC).
    pub(crate) fn next_after(self, now: u64) -> u64 {
        const HOUR: u64 = 3600;
        const DAY: u64 = 24 * HOUR;
        match self {
            Self::Hourly => (now / HOUR + 1) * HOUR,
            Self::Daily => (now / DAY + 1) * DAY,
            // 1970-01-01 was a Thursday: Sundays are the days d with (d + 4) % 7 == 0.
            Self::Weekly => {
                let day = now / DAY + 1;
                (day + (7 - (day + 4) % 7) % 7) * DAY
            }
        }
    }
}

/// The periodic schedule in force: its timer task and its `task_scheduled_total` ticket.
#[derive(Debug)]
struct Periodic {
    period: Period,
    next: u64,
    timer: JoinHandle<()>,
    _scheduled: ScheduledJob,
}

impl Drop for Periodic {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

/// The GC queue: runs wait here for the one worker; see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct GcQueue {
    tx: mpsc::UnboundedSender<QueuedRun>,
    queues: JobQueues,
    periodic: Arc<Mutex<Option<Periodic>>>,
}

impl std::fmt::Debug for QueuedRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuedRun")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The worker's end of the queue, until [`start_worker`] takes it.
#[derive(Debug)]
pub(crate) struct GcWorker(mpsc::UnboundedReceiver<QueuedRun>);

impl GcQueue {
    /// An empty queue instrumented with `queues`, and its worker's end.
    pub(crate) fn new(queues: JobQueues) -> (Self, GcWorker) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = Self {
            tx,
            queues,
            periodic: Arc::default(),
        };
        (queue, GcWorker(rx))
    }

    /// Whether the worker is alive (`harbor_up{component="jobservice"}`).
    pub(crate) fn worker_alive(&self) -> bool {
        !self.tx.is_closed()
    }

    /// The periodic schedule, with its next run (Unix seconds), if one is set.
    pub(crate) fn periodic(&self) -> Option<(Period, u64)> {
        let periodic = self.periodic.lock().unwrap_or_else(PoisonError::into_inner);
        periodic.as_ref().map(|p| (p.period, p.next))
    }
}

/// Starts the worker: it takes the runs in order, one at a time, each as its own task (so a
/// panicking run fails that run, not the worker).
pub(crate) fn start_worker(state: AppState, GcWorker(mut rx): GcWorker) {
    tokio::spawn(async move {
        while let Some(run) = rx.recv().await {
            let running = run.ticket.start(GC_POOL);
            let info = JobInfo {
                id: run.id.to_string(),
                name: GC_JOB.to_owned(),
                periodic: false,
            };
            let job = state.jobs.run(info, run.context, {
                let state = state.clone();
                async move {
                    let _running = running;
                    self::run(state, run.id).await
                }
            });
            // The outcome is in the gc_run table and the task metrics; a panic is logged by
            // the runtime.
            let _ = tokio::spawn(job).await;
        }
    });
}

/// Records a GC run and queues it; returns the run's id. Call it inside the scheduling
/// request, so the job links to its span.
pub(crate) async fn schedule(state: &AppState, schedule_type: &str) -> Result<i64, sqlx::Error> {
    let id = state.db.create_gc_run(schedule_type).await?;
    let run = QueuedRun {
        id,
        context: JobContext::capture(),
        ticket: state.gc.queues.enqueue(GC_JOB),
    };
    if state.gc.tx.send(run).is_err() {
        // The worker is gone: the run is recorded as failed, not left pending.
        state.db.update_gc_run(id, "Error", 0, 0).await?;
        tracing::warn!(gc.id = id, "the garbage collection worker is not running");
    }
    Ok(id)
}

/// Sets the periodic schedule (replacing any), or removes it with `None`.
pub(crate) fn set_periodic(state: &AppState, period: Option<Period>) {
    let mut periodic = state
        .gc
        .periodic
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    // The old timer is aborted and its ticket dropped.
    *periodic = period.map(|period| {
        let next = period.next_after(unix_now());
        let timer = tokio::spawn(timer(state.clone(), period, next));
        Periodic {
            period,
            next,
            timer,
            _scheduled: state.gc.queues.schedule(),
        }
    });
}

/// `secs` (Unix, UTC) as RFC 3339, `2026-12-06T00:00:00Z` (days to civil date after Howard
/// Hinnant's `civil_from_days`).
pub(crate) fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Queues a run at each time the schedule fires.
async fn timer(state: AppState, period: Period, mut next: u64) {
    loop {
        tokio::time::sleep(Duration::from_secs(next.saturating_sub(unix_now()))).await;
        if let Err(err) = schedule(&state, "Schedule").await {
            tracing::warn!(error = %err, "scheduling a periodic garbage collection failed");
        }
        next = period.next_after(unix_now());
        let mut periodic = state
            .gc
            .periodic
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = periodic.as_mut().filter(|p| p.period == period) {
            p.next = next;
        }
    }
}

async fn run(state: AppState, id: i64) -> Result<GcReport, GcError> {
    state.db.update_gc_run(id, "Running", 0, 0).await?;
    let result = collect(&state).await;
    match &result {
        Ok(report) => {
            tracing::info!(
                gc.id = id,
                deleted_blobs = report.deleted_blobs,
                freed_bytes = report.freed_bytes,
                "garbage collection finished"
            );
            state
                .db
                .update_gc_run(id, "Success", report.deleted_blobs, report.freed_bytes)
                .await?;
        }
        Err(err) => {
            tracing::warn!(gc.id = id, error = %err, "garbage collection failed");
            state.db.update_gc_run(id, "Error", 0, 0).await?;
        }
    }
    result
}

async fn collect(state: &AppState) -> Result<GcReport, GcError> {
    let mut referenced = HashSet::new();
    for content in state.db.all_manifest_contents().await? {
        let blobs = referenced_blobs(&content).ok_or(GcError::BadManifest)?;
        // External layers too: one that was pushed anyway is kept.
        referenced.extend(blobs.into_iter().map(|blob| blob.digest));
    }
    let mut report = GcReport::default();
    for (digest, _) in state.db.blobs().await? {
        if referenced.contains(&digest) {
            continue;
        }
        let Some(parsed) = Digest::parse(&digest) else {
            continue; // never stored: rows are written for parsed digests only
        };
        // As a blob DELETE does: the row goes first (a blob without a row is invisible, a row
        // without a file is not), kept if a manifest pushed since the scan above refers to it,
        // and the digest is locked against a push of the same content.
        let _lock = state.storage.lock_blob(&parsed).await;
        if let BlobDeletion::Deleted { size } = state.db.delete_unreferenced_blob(&digest).await? {
            state.storage.delete(&parsed).await?;
            report.deleted_blobs += 1;
            report.freed_bytes += size;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::{collect, rfc3339, Period};
    use crate::{digest::Digest, registry::test_support::TestRegistry};
    use axum::http::{Method, StatusCode};

    #[tokio::test]
    async fn gc_counts_only_what_it_deletes_itself() {
        let registry = TestRegistry::new().await;
        let (kept, deleted, orphan) = (Digest::of(b"{}"), Digest::of(b"x"), Digest::of(b"orphan"));
        registry.push_blob("r", &kept, &b"{}"[..]).await;
        registry.push_blob("r", &deleted, &b"x"[..]).await;
        let manifest =
            format!(r#"{{"schemaVersion":2,"config":{{"digest":"{kept}"}},"layers":[]}}"#);
        let put = registry
            .send(Method::PUT, "/v2/r/manifests/v1", manifest)
            .await;
        assert_eq!(put.status, StatusCode::CREATED);
        let uri = format!("/v2/r/blobs/{deleted}");
        let answer = registry.send(Method::DELETE, &uri, ()).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);

        // The blob deleted through the API is not the run's; the referenced one stays.
        let report = collect(&registry.state).await.unwrap();
        assert_eq!((report.deleted_blobs, report.freed_bytes), (0, 0));
        registry.push_blob("r", &orphan, &b"orphan"[..]).await;
        let report = collect(&registry.state).await.unwrap();
        assert_eq!((report.deleted_blobs, report.freed_bytes), (1, 6));
        let uri = format!("/v2/r/blobs/{kept}");
        assert_eq!(
            registry.send(Method::HEAD, &uri, ()).await.status,
            StatusCode::OK
        );
    }

    #[test]
    fn periods_fire_at_harbors_cron_times() {
        // 2026-12-03T06:30:00Z, a Thursday.
        let now = 1_796_279_400;
        assert_eq!(Period::Hourly.next_after(now), now + 30 * 60);
        assert_eq!(
            Period::Hourly.next_after(now + 30 * 60),
            now + 90 * 60,
            "strictly after"
        );
        let midnight = now - 6 * 3600 - 30 * 60;
        assert_eq!(Period::Daily.next_after(now), midnight + 86_400);
        // The next Sunday, 2026-12-06T00:00:00Z.
        assert_eq!(Period::Weekly.next_after(now), midnight + 3 * 86_400);
        assert_eq!(
            Period::Weekly.next_after(midnight + 3 * 86_400),
            midnight + 10 * 86_400
        );
        assert_eq!(
            rfc3339(Period::Weekly.next_after(now)),
            "2026-12-06T00:00:00Z"
        );
        assert_eq!(rfc3339(now), "2026-12-03T06:30:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(Period::parse("Custom"), None);
        assert_eq!(
            Period::parse("Daily").map(Period::cron),
            Some("0 0 0 * * *")
        );
    }
}
