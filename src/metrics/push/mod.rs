//! Push metrics to a Prometheus Pushgateway, for batch processes that end before any scrape.
//!
//! A [`Pushgateway`] names one *group* on the Pushgateway: the `job` plus any grouping labels.
//! [`Pushgateway::push`] sends the registry's text exposition to it (PUT replaces the group, POST
//! replaces only the families pushed; every family, or those of one component with
//! [`Pushgateway::with_component`]; HTTP basic auth with [`Pushgateway::with_basic_auth`]),
//! [`Pushgateway::delete`] removes the group at the end of a
//! run, and [`Pushgateway::spawn_interval`] pushes on a timer for long batch runs. Failures are
//! returned as [`PushError`] (or counted and logged by the interval task); nothing here panics
//! on what the network or the Pushgateway does.
//!
//! # Example
//!
//! ```
//! use towerscope::metrics::push::{PushMethod, Pushgateway};
//!
//! # fn main() -> Result<(), towerscope::metrics::push::PushConfigError> {
//! let pusher = Pushgateway::new("http://127.0.0.1:9091", "nightly-backup")?
//!     .with_grouping("instance", "db-1")?
//!     // A value with a `/` (or an empty one) travels base64url-encoded, as the Pushgateway asks.
//!     .with_grouping("path", "/var/lib/data")?
//!     .with_method(PushMethod::Post);
//! assert_eq!(
//!     pusher.url(),
//!     "http://127.0.0.1:9091/metrics/job/nightly-backup/instance/db-1/path@base64/L3Zhci9saWIvZGF0YQ=="
//! );
//! # Ok(())
//! # }
//! ```
//!
//! A batch run pushes once at its end, or on an interval while it runs:
//!
//! ```no_run
//! use std::time::Duration;
//! use towerscope::{config::MetricConfig, metrics::{push::Pushgateway, MetricsRegistry}};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = MetricsRegistry::new(&MetricConfig::default())?;
//! let pusher = Pushgateway::new("http://pushgateway:9091", "backup")?
//!     .with_basic_auth("pusher", "s3cret");
//! let task = pusher.clone().spawn_interval(registry.clone(), Duration::from_secs(15));
//! // ... the batch work, recording into `registry` ...
//! task.stop().await?; // stops the timer and pushes one last time
//! # Ok(())
//! # }
//! ```
//!
//! # What the Pushgateway rejects (checked against Pushgateway 1.5.1)
//!
//! The Pushgateway checks every push against everything it already holds, and answers
//! `400 Bad Request` ([`PushError::Status`], with its explanation in `body`) when:
//!
//! - a family already pushed by any group has another type (a `_total` counter in one job and a
//!   gauge of the same name in another), including the Pushgateway's own families (`go_*`,
//!   `process_*`, `pushgateway_*`, `push_time_seconds`, `push_failure_time_seconds`);
//! - two series of the pushed text end up with the same labels once the grouping labels are
//!   added (see the next paragraph), or a sample has a timestamp (the registry writes none).
//!
//! Series carrying the `job` label or a grouping label are not rejected by the Pushgateway: it
//! silently overwrites their value with the group's, which merges distinct series or fails as
//! above. [`Pushgateway::push`] therefore refuses such a push itself
//! ([`PushError::LabelConflict`]); keep those label names out of the pushed families, or push
//! them to another group. This covers a summary's `quantile` and a histogram's `le` too: do not
//! group by those names. An `instance` label on a series is allowed (the group's `instance`,
//! empty when not grouped by it, applies only to series without one).
//!
//! Different `# HELP` texts for the same family across groups are accepted with a warning in
//! the Pushgateway's log, and one of them wins on its `/metrics`; give a family the same
//! description everywhere. A family named like one of the Pushgateway's own gets the
//! Pushgateway's HELP text.
//!
//! An empty value is the same as no label in Prometheus, but not for the Pushgateway: a group
//! with `instance=""` collides with the group that has no `instance`, and from then on every
//! scrape of the Pushgateway fails until one of them is deleted. [`Pushgateway::with_grouping`]
//! refuses an empty `instance` for that reason; other empty values are sent as the Pushgateway
//! documents (`name@base64/=`), but they show up as an empty label, which Prometheus drops.
//!
//! # Choices
//!
//! - Redirects are not followed: a Pushgateway that redirects (a path it would clean up, a proxy)
//!   is answered with [`PushError::Status`] rather than a PUT silently turned into a GET.
//! - Credentials in the URL (`http://user:pass@host:9091`) become basic auth and are removed from
//!   the URL, so they appear in no error or log message.
//! - The HTTP client is reqwest's async client, without tracing instrumentation of its own, so
//!   pushes never show up as spans of the service. `https://` needs the `tls` feature.

mod error;
mod grouping;
mod pushgateway;
mod task;

use std::time::Duration;

pub use error::{PushConfigError, PushError};
pub use pushgateway::{PushMethod, Pushgateway};
pub use task::PushTask;

/// The timeout of one request to the Pushgateway unless [`Pushgateway::with_timeout`] says
/// otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
