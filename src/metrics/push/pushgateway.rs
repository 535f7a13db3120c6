//! [`Pushgateway`]: the pusher to one group, its options, and the push and delete requests.

use std::{fmt, time::Duration};

use percent_encoding::percent_decode_str;
use reqwest::{header::CONTENT_TYPE, redirect, Client, Method, Url};

use super::{
    grouping::{group_url, is_label_name, label_conflict},
    PushConfigError, PushError, DEFAULT_TIMEOUT,
};
use crate::{
    export_log::{error_chain, excerpt},
    metrics::MetricsRegistry,
};

/// The content type of a push: the Prometheus text format 0.0.4.
const PUSH_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The most bytes of an error answer's body kept in [`PushError::Status`].
const MAX_ERROR_BODY: usize = 1024;

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
    pub(super) url: Url,
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

        crate::tls::ensure_tls_provider();
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
    /// [module docs](super)). By default a group has no grouping labels besides `job`.
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn debug_hides_the_password() {
        let p = Pushgateway::new("http://gw", "j")
            .unwrap()
            .with_basic_auth("u", "hunter2");
        let text = format!("{p:?}");
        assert!(text.contains("basic_auth: true"), "{text}");
        assert!(!text.contains("hunter2"));
    }
}
