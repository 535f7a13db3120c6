//! Push metrics to a Prometheus Pushgateway, for batch processes that end before any scrape.
//!
//! A [`Pushgateway`] names one *group* on the Pushgateway: the `job` plus any grouping labels.
//! [`Pushgateway::push`] sends the registry's text exposition to it (PUT replaces the group, POST
//! replaces only the families pushed), [`Pushgateway::delete`] removes the group at the end of a
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

use std::{
    error::Error as _,
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use http::StatusCode;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{header::CONTENT_TYPE, redirect, Client, Method, Url};
use tokio::{
    sync::oneshot,
    task::JoinHandle,
    time::{Instant, MissedTickBehavior},
};

use super::{MetricsRegistry, UnknownComponent};

/// The timeout of one request to the Pushgateway unless [`Pushgateway::with_timeout`] says
/// otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The content type of a push: the Prometheus text format 0.0.4.
const PUSH_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The most bytes of an error answer's body kept in [`PushError::Status`].
const MAX_ERROR_BODY: usize = 1024;

/// Escapes everything in a path segment but RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The base64url alphabet (RFC 4648, section 5).
const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// How a push changes the group on the Pushgateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PushMethod {
    /// `PUT`: the group afterwards holds exactly the pushed families; families it held before
    /// and that are absent from this push are removed. The default.
    #[default]
    Put,
    /// `POST`: only the families present in this push are replaced; the group's other families
    /// stay as they were.
    Post,
}

impl PushMethod {
    fn http(self) -> Method {
        match self {
            PushMethod::Put => Method::PUT,
            PushMethod::Post => Method::POST,
        }
    }
}

/// Errors of building a [`Pushgateway`].
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
    /// [`Pushgateway::new`].
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
    /// with what it holds (see the [module docs](self)), `401`/`403` wrong or missing
    /// credentials ([`Pushgateway::with_basic_auth`]).
    #[error("the Pushgateway answered {status}: {body}")]
    Status {
        /// The status of the answer.
        status: StatusCode,
        /// The start of the answer's body (at most 1 KiB, lossily decoded as UTF-8), which
        /// holds the Pushgateway's explanation.
        body: String,
    },
    /// A component given to [`Pushgateway::with_component`] has no families in the registry;
    /// register it with [`MetricsRegistry::register_component`] first.
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

/// A pusher to one group (job and grouping labels) of a Prometheus Pushgateway.
///
/// Cloning is cheap and shares the HTTP connection pool.
#[derive(Clone)]
pub struct Pushgateway {
    /// The Pushgateway's base URL, credentials removed.
    base: Url,
    job: String,
    grouping: Vec<(String, String)>,
    /// `base` + `/metrics/job/...`: the group's URL.
    url: Url,
    auth: Option<(String, String)>,
    method: PushMethod,
    components: Vec<String>,
    timeout: Duration,
    client: Client,
}

impl fmt::Debug for Pushgateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pushgateway")
            .field("url", &self.url.as_str())
            .field("method", &self.method)
            .field("components", &self.components)
            .field("timeout", &self.timeout)
            .field("basic_auth", &self.auth.is_some())
            .finish_non_exhaustive()
    }
}

impl Pushgateway {
    /// A pusher to the group `job` of the Pushgateway at `url` (`http://` or `https://`, such as
    /// `http://pushgateway:9091`; a path prefix is kept).
    ///
    /// The job travels base64url-encoded when it contains a `/`. User and password in the URL
    /// become basic auth. By default the pusher uses `PUT`, pushes every family of the registry
    /// and gives each request [`DEFAULT_TIMEOUT`].
    pub fn new(url: &str, job: impl Into<String>) -> Result<Self, PushConfigError> {
        let mut base = Url::parse(url).map_err(|e| PushConfigError::InvalidUrl(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(PushConfigError::InvalidUrl(format!(
                "the scheme is {:?}, not http or https",
                base.scheme()
            )));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(PushConfigError::InvalidUrl(
                "give the base URL, without a query or a fragment".into(),
            ));
        }
        if base.path().contains("/metrics/job") {
            return Err(PushConfigError::InvalidUrl(
                "give the Pushgateway's base URL, without /metrics/job/...".into(),
            ));
        }
        let auth = (!base.username().is_empty() || base.password().is_some()).then(|| {
            let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
            (
                decode(base.username()),
                base.password().map(decode).unwrap_or_default(),
            )
        });
        // Both only fail for URLs that cannot have credentials, which http(s) URLs can.
        let _ = base.set_username("");
        let _ = base.set_password(None);

        let job = job.into();
        if job.is_empty() {
            return Err(PushConfigError::EmptyJob);
        }

        crate::trace::ensure_tls_provider();
        let client = Client::builder()
            .redirect(redirect::Policy::none())
            .user_agent(concat!("towerscope/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PushConfigError::Client(error_chain(&e)))?;

        let url = group_url(&base, &job, &[]);
        Ok(Self {
            base,
            job,
            grouping: Vec::new(),
            url,
            auth,
            method: PushMethod::default(),
            components: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            client,
        })
    }

    /// Adds the grouping label `label="value"` to the group (a label given again gets the new
    /// value).
    ///
    /// `label` must be a Prometheus label name other than `job` and not start with `__`. A
    /// value that is empty or contains a `/` travels base64url-encoded (`label@base64/...`),
    /// others percent-encoded. An empty `instance` is refused (see the
    /// [module docs](self)). By default a group has no grouping labels besides `job`.
    pub fn with_grouping(
        mut self,
        label: &str,
        value: impl Into<String>,
    ) -> Result<Self, PushConfigError> {
        if label == "job" {
            return Err(PushConfigError::JobLabel);
        }
        if !is_label_name(label) || label.starts_with("__") {
            return Err(PushConfigError::InvalidLabelName(label.to_owned()));
        }
        let value = value.into();
        if label == "instance" && value.is_empty() {
            return Err(PushConfigError::EmptyInstance);
        }
        match self.grouping.iter_mut().find(|(name, _)| name == label) {
            Some(pair) => pair.1 = value,
            None => self.grouping.push((label.to_owned(), value)),
        }
        self.url = group_url(&self.base, &self.job, &self.grouping);
        Ok(self)
    }

    /// Sends `Authorization: Basic` with every request. By default no credentials are sent
    /// (unless the URL given to [`new`](Self::new) carries some).
    pub fn with_basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Some((user.into(), password.into()));
        self
    }

    /// Whether a push replaces the whole group ([`PushMethod::Put`]) or only the families it
    /// carries ([`PushMethod::Post`]). Defaults to `Put`.
    pub fn with_method(mut self, method: PushMethod) -> Self {
        self.method = method;
        self
    }

    /// Pushes only the families registered under `component`
    /// ([`MetricsRegistry::register_component`], Harbor's `?comp=`). Call it again to add more
    /// components. By default every family of the registry is pushed.
    pub fn with_component(mut self, component: &str) -> Self {
        if !self.components.iter().any(|c| c == component) {
            self.components.push(component.to_owned());
        }
        self
    }

    /// The timeout of each request, from connecting to the end of the answer. Defaults to
    /// [`DEFAULT_TIMEOUT`] (10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The group's URL that pushes go to, without credentials.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// Pushes the registry's current metrics (or the chosen components') to the group.
    ///
    /// The body is the registry's text exposition, sent as `text/plain; version=0.0.4` with the
    /// configured method; rendering runs on tokio's blocking pool. Any 2xx answer is success.
    /// Must be called within a tokio runtime.
    pub async fn push(&self, registry: &MetricsRegistry) -> Result<(), PushError> {
        let registry = registry.clone();
        let components = self.components.clone();
        let reserved: Vec<String> = std::iter::once("job".to_owned())
            .chain(self.grouping.iter().map(|(name, _)| name.clone()))
            .collect();
        let body = tokio::task::spawn_blocking(move || {
            let names: Vec<&str> = components.iter().map(String::as_str).collect();
            let text = registry.render_components(&names)?;
            match label_conflict(&text, &reserved) {
                Some((metric, label)) => Err(PushError::LabelConflict {
                    metric: metric.to_owned(),
                    label: label.to_owned(),
                }),
                None => Ok(text),
            }
        })
        .await
        .map_err(|e| PushError::Task(e.to_string()))??;
        self.send(self.method.http(), Some(body)).await
    }

    /// Deletes the group (all its families) from the Pushgateway, as a batch run does when its
    /// results should no longer be scraped. Deleting a group that does not exist succeeds.
    /// Must be called within a tokio runtime.
    pub async fn delete(&self) -> Result<(), PushError> {
        self.send(Method::DELETE, None).await
    }

    /// Pushes `registry` every `period` on a tokio task until [`PushTask::stop`], which pushes
    /// one last time. The first push happens one period after the start.
    ///
    /// A failed push is logged with `tracing::warn!` and counted ([`PushTask::failures`],
    /// [`PushTask::last_error`]); the task goes on. A push that takes longer than `period`
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
        let stats = Arc::new(Stats::default());
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
                        task_stats.record(&self.url, result.as_ref().err());
                    }
                }
            }
            let result = self.push(&registry).await;
            task_stats.record(&self.url, result.as_ref().err());
            result
        });
        PushTask {
            stop,
            handle,
            stats,
        }
    }

    async fn send(&self, method: Method, body: Option<String>) -> Result<(), PushError> {
        let mut request = self
            .client
            .request(method, self.url.clone())
            .timeout(self.timeout);
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, PUSH_CONTENT_TYPE).body(body);
        }
        let mut response = request.send().await.map_err(PushError::Transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let mut body = Vec::new();
        // An error body is read only as far as it is kept; a failing read keeps what came.
        while body.len() < MAX_ERROR_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        Err(PushError::Status {
            status,
            body: excerpt(&body, MAX_ERROR_BODY),
        })
    }
}

/// The handle of a [`Pushgateway::spawn_interval`] task.
#[derive(Debug)]
pub struct PushTask {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<Result<(), PushError>>,
    stats: Arc<Stats>,
}

#[derive(Debug, Default)]
struct Stats {
    pushes: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Stats {
    fn record(&self, url: &Url, error: Option<&PushError>) {
        let last = match error {
            None => {
                self.pushes.fetch_add(1, Ordering::Relaxed);
                None
            }
            Some(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pushgateway = %url, %error, "pushing metrics to the Pushgateway failed");
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

/// `base` + `/metrics/job/<job>/<label>/<value>...`, each value encoded the Pushgateway's way.
fn group_url(base: &Url, job: &str, grouping: &[(String, String)]) -> Url {
    let mut path = base.path().trim_end_matches('/').to_owned();
    path.push_str("/metrics");
    push_pair(&mut path, "job", job);
    for (name, value) in grouping {
        push_pair(&mut path, name, value);
    }
    let mut url = base.clone();
    url.set_path(&path);
    url
}

fn push_pair(path: &mut String, name: &str, value: &str) {
    path.push('/');
    path.push_str(name);
    // A `/` cannot be percent-encoded (the Pushgateway decodes the path before splitting it),
    // an empty segment would vanish, and `.`/`..` are dot segments that URLs resolve away.
    if value.is_empty() || value.contains('/') || value == "." || value == ".." {
        path.push_str("@base64/");
        if value.is_empty() {
            path.push('=');
        } else {
            path.push_str(&base64url(value.as_bytes()));
        }
    } else {
        path.push('/');
        path.extend(utf8_percent_encode(value, SEGMENT));
    }
}

/// Base64url with padding (RFC 4648, section 5).
fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                let sextet = (n >> (18 - 6 * i)) & 0x3f;
                out.push(char::from(BASE64URL[sextet as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The first series in the exposition `text` with a label in `reserved`: (sample name, label).
fn label_conflict<'t>(text: &'t str, reserved: &[String]) -> Option<(&'t str, &'t str)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, labels) = line.split_once('{')?;
            // A `{` after the first space belongs to the value part, not to labels.
            if name.contains(' ') {
                return None;
            }
            line_labels(labels)
                .find(|label| reserved.iter().any(|r| r == label))
                .map(|label| (name, label))
        })
}

/// The label names of a sample line, given the text after its `{`.
fn line_labels(mut rest: &str) -> impl Iterator<Item = &str> {
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches([' ', ',']);
        if rest.starts_with('}') {
            return None;
        }
        let (name, value) = rest.split_once('=')?;
        let value = value.trim_start().strip_prefix('"')?;
        // Skip the quoted value, whose `\"` and `\\` escapes do not end it.
        let mut escaped = false;
        let end = value.char_indices().find_map(|(i, c)| {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => return Some(i),
                _ => {}
            }
            None
        })?;
        rest = &value[end + 1..];
        Some(name.trim())
    })
}

/// At most `max` bytes of `body` as text, cut at a character boundary, trailing space trimmed.
fn excerpt(body: &[u8], max: usize) -> String {
    let mut cut = &body[..body.len().min(max)];
    // Drop a character split by the cut; invalid bytes elsewhere become U+FFFD.
    if let Err(e) = std::str::from_utf8(cut) {
        if e.error_len().is_none() {
            cut = &cut[..e.valid_up_to()];
        }
    }
    String::from_utf8_lossy(cut).trim_end().to_owned()
}

/// An error and its sources, `: `-separated (reqwest's own message omits the cause).
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("/var/tmp", "L3Zhci90bXA="),
        ] {
            assert_eq!(base64url(plain.as_bytes()), encoded, "{plain:?}");
        }
        // The URL-safe alphabet: `-` and `_` instead of `+` and `/`.
        assert_eq!(base64url(&[0xfb, 0xff, 0xbf]), "-_-_");
    }

    #[test]
    fn url_encodes_job_and_values_the_pushgateway_way() {
        let p = Pushgateway::new("http://gw:9091/", "a/b")
            .unwrap()
            .with_grouping("plain", "v-1.2_x~")
            .unwrap()
            .with_grouping("empty", "")
            .unwrap()
            .with_grouping("dots", "..")
            .unwrap()
            .with_grouping("odd", "a b%?#é\\")
            .unwrap();
        assert_eq!(
            p.url(),
            "http://gw:9091/metrics/job@base64/YS9i/plain/v-1.2_x~/empty@base64/=\
             /dots@base64/Li4=/odd/a%20b%25%3F%23%C3%A9%5C"
        );
    }

    #[test]
    fn url_keeps_a_path_prefix_and_replaces_a_repeated_label() {
        let p = Pushgateway::new("https://proxy/pushgateway", "j")
            .unwrap()
            .with_grouping("instance", "a")
            .unwrap()
            .with_grouping("instance", "b")
            .unwrap();
        assert_eq!(
            p.url(),
            "https://proxy/pushgateway/metrics/job/j/instance/b"
        );
    }

    #[test]
    fn credentials_in_the_url_become_basic_auth() {
        let p = Pushgateway::new("http://us%40er:p%3Ass@gw:9091", "j").unwrap();
        assert_eq!(p.url(), "http://gw:9091/metrics/job/j");
        assert_eq!(p.auth, Some(("us@er".to_owned(), "p:ss".to_owned())));
        assert!(!format!("{p:?}").contains("p:ss"));
    }

    #[test]
    fn new_rejects_bad_urls_and_an_empty_job() {
        for url in [
            "gw:9091",
            "ftp://gw",
            "not a url",
            "http://gw/?x=1",
            "http://gw:9091/metrics/job/j",
        ] {
            assert!(
                matches!(
                    Pushgateway::new(url, "j"),
                    Err(PushConfigError::InvalidUrl(_))
                ),
                "{url}"
            );
        }
        assert_eq!(
            Pushgateway::new("http://gw", "").unwrap_err(),
            PushConfigError::EmptyJob
        );
    }

    #[test]
    fn with_grouping_validates_label_names() {
        let p = || Pushgateway::new("http://gw", "j").unwrap();
        for bad in ["", "1a", "a-b", "é", "__name"] {
            assert_eq!(
                p().with_grouping(bad, "v").unwrap_err(),
                PushConfigError::InvalidLabelName(bad.to_owned())
            );
        }
        assert_eq!(
            p().with_grouping("job", "v").unwrap_err(),
            PushConfigError::JobLabel
        );
        assert_eq!(
            p().with_grouping("instance", "").unwrap_err(),
            PushConfigError::EmptyInstance
        );
        assert!(p().with_grouping("_a1", "v").is_ok());
    }

    #[test]
    fn label_conflict_finds_reserved_labels_only_in_label_names() {
        let reserved = vec!["job".to_owned(), "path".to_owned()];
        let text = "# HELP a_total has job=\"x\" in its help\n\
                    # TYPE a_total counter\n\
                    a_total{x=\"path=\\\"1\\\",job=\\\\\",y=\"}\"} 1\n\
                    b 2\n";
        assert_eq!(label_conflict(text, &reserved), None);
        let text = "a_total{x=\"1\"} 1\nc{method=\"GET\",path=\"/\"} 3\n";
        assert_eq!(label_conflict(text, &reserved), Some(("c", "path")));
        assert_eq!(
            label_conflict("d{job=\"x\"} 1\n", &reserved),
            Some(("d", "job"))
        );
    }

    #[test]
    fn excerpt_is_bounded_and_trimmed() {
        assert_eq!(excerpt(b"bad push\n", 1024), "bad push");
        assert_eq!(excerpt(&[b'x'; 3000], 1024).len(), 1024);
        // A multi-byte character cut in half is dropped, an invalid byte replaced.
        assert_eq!(excerpt("aé".as_bytes(), 2), "a");
        assert_eq!(excerpt(b"a\xffb", 10), "a\u{fffd}b");
    }

    #[test]
    fn debug_hides_the_password() {
        let p = Pushgateway::new("http://gw", "j")
            .unwrap()
            .with_basic_auth("u", "hunter2");
        let text = format!("{p:?}");
        assert!(text.contains("basic_auth: true"), "{text}");
        assert!(!text.contains("hunter2"));
    }
}
