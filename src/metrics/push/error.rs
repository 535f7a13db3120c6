//! [`PushConfigError`] and [`PushError`], and the text they carry.

use http::StatusCode;

use crate::{export_log::error_chain, metrics::UnknownComponent};

/// Errors of building a [`Pushgateway`](super::Pushgateway).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushConfigError {
    /// The Pushgateway URL is not a usable `http://` or `https://` base URL. Give the
    /// Pushgateway's address only, such as `http://pushgateway:9091` (a path prefix of a
    /// reverse proxy is fine), without `/metrics/job/...`, a query or a fragment.
    #[error("invalid Pushgateway URL: {0}")]
    InvalidUrl(String),
    /// The job name is empty; the Pushgateway needs one for every group.
    #[error("the Pushgateway job name must not be empty")]
    EmptyJob,
    /// A grouping label name is not a Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`, and
    /// names starting with `__` are reserved).
    #[error(
        "invalid grouping label name {0:?}: use [a-zA-Z_][a-zA-Z0-9_]*, not starting with \"__\""
    )]
    InvalidLabelName(String),
    /// `job` was given as a grouping label; the job name is the second argument of
    /// [`Pushgateway::new`](super::Pushgateway::new).
    #[error("\"job\" cannot be a grouping label: pass the job name to Pushgateway::new")]
    JobLabel,
    /// An empty `instance` grouping value: the Pushgateway would mix that group up with the
    /// group without `instance` and fail every scrape. Leave `instance` out instead.
    #[error(
        "an empty \"instance\" grouping value collides with the group without one: leave it out"
    )]
    EmptyInstance,
    /// The HTTP client could not be built (its TLS setup failed).
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Errors of pushing to or deleting from a Pushgateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The Pushgateway could not be reached or did not answer within the timeout (connection
    /// refused, DNS, TLS, timeout). Check the URL and that the Pushgateway runs; pushing again
    /// later is safe.
    #[error("cannot reach the Pushgateway: {}", error_chain(.0))]
    Transport(reqwest::Error),
    /// The Pushgateway answered with a status other than 2xx. A `400` means the push conflicts
    /// with what it holds (see the [module docs](super)), `401`/`403` wrong or missing
    /// credentials ([`Pushgateway::with_basic_auth`](super::Pushgateway::with_basic_auth)).
    #[error("the Pushgateway answered {status}: {body}")]
    Status {
        /// The status of the answer.
        status: StatusCode,
        /// The start of the answer's body (at most 1 KiB, lossily decoded as UTF-8), which
        /// holds the Pushgateway's explanation.
        body: String,
    },
    /// A component given to
    /// [`Pushgateway::with_component`](super::Pushgateway::with_component) has no families in
    /// the registry; register it with
    /// [`MetricsRegistry::register_component`](crate::metrics::MetricsRegistry::register_component)
    /// first.
    #[error(transparent)]
    UnknownComponent(#[from] UnknownComponent),
    /// A series of family `metric` carries the label `label`, which is `job` or a grouping
    /// label; the Pushgateway would overwrite its value. Nothing was sent: rename the label or
    /// push that family under another group.
    #[error(
        "family {metric:?} has a {label:?} label, which the Pushgateway would overwrite with the group's; nothing was pushed"
    )]
    LabelConflict {
        /// The sample name of the offending series.
        metric: String,
        /// The label that is also `job` or a grouping label.
        label: String,
    },
    /// A task of the pusher (rendering, or the interval task) panicked or was cancelled by the
    /// runtime shutting down.
    #[error("the push task ended abnormally: {0}")]
    Task(String),
}
