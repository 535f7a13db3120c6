//! [`Pushgateway::spawn_interval`]: pushing on a timer, and the [`PushTask`] that stops it.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use reqwest::Url;
use tokio::{
    sync::oneshot,
    task::JoinHandle,
    time::{Instant, MissedTickBehavior},
};

use super::{PushError, Pushgateway};
use crate::{
    export_log::{ExportLog, Exported},
    metrics::MetricsRegistry,
};

/// "30 s", "500 ms": a period for the start-up log line.
fn humantime(period: Duration) -> String {
    if period.subsec_millis() == 0 {
        format!("{} s", period.as_secs())
    } else {
        format!("{} ms", period.as_millis())
    }
}

impl Pushgateway {
    /// Pushes `registry` every `period` on a tokio task until [`PushTask::stop`], which pushes
    /// one last time. The first push happens one period after the start.
    ///
    /// The task logs where it pushes at start-up (`info`). A failed push is counted
    /// ([`PushTask::failures`], [`PushTask::last_error`]) and the task goes on; the first
    /// failure of a streak is logged at `warn` with its cause and what to change, the others at
    /// `debug`, the first success after failures at `info`. A push that takes longer than `period`
    /// delays the next one rather than piling them up. A zero period is taken as 1 ms.
    ///
    /// Dropping the [`PushTask`] without calling `stop` also ends the timer; the last push then
    /// runs detached and is cut short if the runtime shuts down first.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, like `tokio::spawn`.
    pub fn spawn_interval(self, registry: MetricsRegistry, period: Duration) -> PushTask {
        let period = period.max(Duration::from_millis(1));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let stats = Arc::new(Stats::new(&self.url, period));
        stats.log.announce();
        let task_stats = Arc::clone(&stats);
        let handle = tokio::spawn(async move {
            let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    // A stop message or a dropped PushTask.
                    _ = &mut stopped => break,
                    _ = ticker.tick() => {
                        let result = self.push(&registry).await;
                        task_stats.record(result.as_ref().err());
                    }
                }
            }
            let result = self.push(&registry).await;
            task_stats.record(result.as_ref().err());
            result
        });
        PushTask {
            stop,
            handle,
            stats,
        }
    }
}

/// The handle of a [`Pushgateway::spawn_interval`] task.
#[derive(Debug)]
pub struct PushTask {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<Result<(), PushError>>,
    stats: Arc<Stats>,
}

#[derive(Debug)]
struct Stats {
    pushes: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
    log: ExportLog,
}

impl Stats {
    fn new(url: &Url, period: Duration) -> Self {
        Self {
            pushes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
            log: ExportLog::new(
                Exported::Pushgateway,
                url.as_str(),
                format!("HTTP, every {}", humantime(period)),
            ),
        }
    }

    fn record(&self, error: Option<&PushError>) {
        let last = match error {
            None => {
                self.pushes.fetch_add(1, Ordering::Relaxed);
                self.log.succeeded();
                None
            }
            Some(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.log.failed(error, 0);
                Some(error.to_string())
            }
        };
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = last;
    }
}

impl PushTask {
    /// Stops the timer, pushes one last time and returns the result of that last push.
    pub async fn stop(self) -> Result<(), PushError> {
        let PushTask { stop, handle, .. } = self;
        // The task may have ended already (the runtime shutting down); the join says so.
        let _ = stop.send(());
        match handle.await {
            Ok(result) => result,
            Err(e) => Err(PushError::Task(e.to_string())),
        }
    }

    /// How many pushes succeeded so far.
    pub fn pushes(&self) -> u64 {
        self.stats.pushes.load(Ordering::Relaxed)
    }

    /// How many pushes failed so far.
    pub fn failures(&self) -> u64 {
        self.stats.failures.load(Ordering::Relaxed)
    }

    /// The error of the latest push if it failed, `None` if it succeeded or none happened yet.
    pub fn last_error(&self) -> Option<String> {
        self.stats
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
