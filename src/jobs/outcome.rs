//! How a job ended: [`JobStatus`], and [`JobOutcome`] for what its future resolves to.

use std::fmt;

/// How a job ended; the `status` label and the span's `job.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// The job's future resolved to a successful outcome.
    Success,
    /// The job's future resolved to a failed outcome, or panicked.
    Fail,
    /// The job's future was dropped before it completed: the job was cancelled.
    Stop,
}

impl JobStatus {
    /// All statuses, in label order.
    pub const ALL: [JobStatus; 3] = [JobStatus::Success, JobStatus::Fail, JobStatus::Stop];

    /// The label value: `success`, `fail` or `stop` (Harbor's words).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Fail => "fail",
            Self::Stop => "stop",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a job's future resolves to: a success or a failure.
///
/// Implemented for `Result<T, E>` (failed when `Err`, described by `E`'s `Display`) and for
/// `()` (always a success). Implement it for your own outcome type:
///
/// ```
/// use towerscope::jobs::JobOutcome;
///
/// enum Replication { Done, Skipped, Failed(String) }
///
/// impl JobOutcome for Replication {
///     fn is_failure(&self) -> bool {
///         matches!(self, Replication::Failed(_))
///     }
///     fn failure_message(&self) -> Option<String> {
///         match self {
///             Replication::Failed(why) => Some(why.clone()),
///             _ => None,
///         }
///     }
/// }
/// assert!(Replication::Failed("registry down".into()).is_failure());
/// assert!(!Replication::Skipped.is_failure() && !Replication::Done.is_failure());
/// ```
pub trait JobOutcome {
    /// Whether the job failed (status `fail`).
    fn is_failure(&self) -> bool;

    /// The failure, for the span's status description. Called only when
    /// [`is_failure`](Self::is_failure) is true. Defaults to none.
    fn failure_message(&self) -> Option<String> {
        None
    }
}

impl<T, E: fmt::Display> JobOutcome for Result<T, E> {
    fn is_failure(&self) -> bool {
        self.is_err()
    }

    fn failure_message(&self) -> Option<String> {
        self.as_ref().err().map(ToString::to_string)
    }
}

impl JobOutcome for () {
    fn is_failure(&self) -> bool {
        false
    }
}
