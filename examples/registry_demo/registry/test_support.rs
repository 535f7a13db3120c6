//! A registry on a temporary directory for the handlers' tests: requests go to [`handle`]
//! directly, without a socket.

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode},
};
use towerscope::{
    config::MetricConfig,
    db::Transactions,
    jobs::{JobQueues, Jobs},
    metrics::MetricsRegistry,
};

use super::handle;
use crate::{db::Db, digest::Digest, gc::GcQueue, storage::Storage, AppState, TempDir};

/// A registry of its own, removed when dropped.
#[derive(Debug)]
pub(crate) struct TestRegistry {
    pub(crate) state: AppState,
    _dir: TempDir,
}

/// An answer: status, headers and the whole body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The values of a header that is a comma-separated list (RFC 9110), each trimmed.
    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        let values = self.headers.get_all(name).iter();
        let values = values.filter_map(|v| v.to_str().ok());
        values
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_owned())
            .collect()
    }

    /// The `code` of the first OCI error in the body.
    pub(crate) fn error_code(&self) -> Option<String> {
        let value: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        Some(value["errors"][0]["code"].as_str()?.to_owned())
    }
}

impl TestRegistry {
    pub(crate) async fn new() -> Self {
        let dir = TempDir::new().unwrap();
        let registry = MetricsRegistry::new(&MetricConfig::default()).unwrap();
        let url = format!("sqlite://{}", dir.0.join("registry.db").display());
        let db = Db::connect(&url, Transactions::new(&registry))
            .await
            .unwrap();
        let storage = Storage::open(&dir.0.join("storage")).await.unwrap();
        let (gc, _worker) = GcQueue::new(JobQueues::new(&registry));
        let state = AppState {
            db,
            storage,
            jobs: Jobs::new(&registry),
            gc,
            listen: "127.0.0.1:0".parse().unwrap(),
            proxy: None,
        };
        Self { state, _dir: dir }
    }

    /// Sends a request with `headers` and `body`.
    pub(crate) async fn send_with(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = handle(
            State(self.state.clone()),
            request.body(body.into()).unwrap(),
        )
        .await;
        let (parts, body) = response.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: axum::body::to_bytes(body, usize::MAX).await.unwrap(),
        }
    }

    pub(crate) async fn send(&self, method: Method, uri: &str, body: impl Into<Body>) -> Answer {
        self.send_with(method, uri, &[], body).await
    }

    /// Pushes `content` monolithically to `name` under `digest`.
    pub(crate) async fn push_blob(&self, name: &str, digest: &Digest, content: impl Into<Body>) {
        let uri = format!("/v2/{name}/blobs/uploads/?digest={digest}");
        let answer = self.send(Method::POST, &uri, content).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    }
}
