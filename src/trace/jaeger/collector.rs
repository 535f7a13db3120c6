//! Collector mode: a binary-protocol `Batch` posted over HTTP.
//!
//! The `reqwest` blocking client runs its own tokio runtime, and creating, using or dropping it
//! from inside another tokio runtime panics. Users build exporters inside `#[tokio::main]`, and
//! a simple span processor calls `export` on the application's threads, so the client lives on
//! a worker thread of its own: it is built there, used there and dropped there when the
//! exporter goes away. `export` hands the body to that thread and waits for the answer, at
//! most the configured timeout plus a grace second.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::header::CONTENT_TYPE;
use reqwest::{StatusCode, Url};

use crate::export_log::{error_chain, excerpt};

/// The content type of a binary-protocol Thrift body, as the Jaeger collector expects it.
pub(crate) const THRIFT_BINARY: &str = "application/vnd.apache.thrift.binary";

/// How long `export` waits beyond the request timeout before it gives up on the worker.
const GRACE: Duration = Duration::from_secs(1);

/// The most bytes of an error response's body quoted in the error.
const BODY_EXCERPT: usize = 200;

#[derive(Clone)]
struct Request {
    endpoint: Url,
    auth: Option<(String, String)>,
    timeout: Duration,
}

struct Job {
    body: Vec<u8>,
    reply: mpsc::Sender<Result<(), CollectorError>>,
}

/// Why a post to the collector failed. `endpoint` is the URL without credentials.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CollectorError {
    /// The worker gave no answer within the timeout plus the grace second.
    #[error(
        "jaeger collector {endpoint}: no answer within {timeout:?} (check that the collector \
         is reachable, or raise the timeout)"
    )]
    NoAnswer { endpoint: String, timeout: Duration },
    /// The worker thread ended while a request waited for it.
    #[error("jaeger collector {endpoint}: the HTTP worker thread stopped")]
    WorkerStopped { endpoint: String },
    /// The worker thread was replaced and the new one is gone too.
    #[error("jaeger collector {endpoint}: the HTTP worker thread is gone")]
    WorkerGone { endpoint: String },
    /// No worker thread could be spawned.
    #[error("jaeger collector {endpoint}: cannot start the HTTP worker thread: {source}")]
    Spawn {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    /// reqwest could not build its client (every post reports the same error).
    #[error(
        "jaeger collector {endpoint}: cannot build the HTTP client: {}",
        error_chain(&**.source)
    )]
    Client {
        endpoint: String,
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// The request failed: connecting, sending or reading the answer.
    #[error("jaeger collector {endpoint}: {}", error_chain(.source))]
    Request {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    /// The collector answered with a status other than 2xx; `excerpt` is the start of its body.
    #[error("jaeger collector {endpoint} answered {status}{}", excerpt_suffix(.excerpt))]
    Status {
        endpoint: String,
        status: StatusCode,
        excerpt: String,
    },
}

/// `: excerpt`, or nothing when the body was empty.
fn excerpt_suffix(excerpt: &str) -> String {
    if excerpt.is_empty() {
        String::new()
    } else {
        format!(": {excerpt}")
    }
}

/// The HTTP side of a [`JaegerExporter`](super::JaegerExporter) in collector mode.
pub(crate) struct CollectorTransport {
    request: Request,
    /// The queue to the worker thread, started on the first export. Dropping the sender ends
    /// the worker, which drops the client on its own thread.
    worker: Mutex<Option<mpsc::Sender<Job>>>,
}

impl std::fmt::Debug for CollectorTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectorTransport")
            .field("endpoint", &redacted(&self.request.endpoint))
            .field("basic_auth", &self.request.auth.is_some())
            .field("timeout", &self.request.timeout)
            .finish_non_exhaustive()
    }
}

impl CollectorTransport {
    pub(crate) fn new(endpoint: Url, auth: Option<(String, String)>, timeout: Duration) -> Self {
        CollectorTransport {
            request: Request {
                endpoint,
                auth,
                timeout,
            },
            worker: Mutex::new(None),
        }
    }

    pub(crate) fn endpoint(&self) -> String {
        redacted(&self.request.endpoint)
    }

    /// Posts `body` and waits for the collector's answer; blocks the calling thread.
    pub(crate) fn post(&self, body: Vec<u8>) -> Result<(), CollectorError> {
        let (reply, answer) = mpsc::channel();
        let mut job = Job { body, reply };
        let wait = self.request.timeout.saturating_add(GRACE);
        // A worker that died (a panic inside the HTTP client) is replaced once.
        for _ in 0..2 {
            let sender = self.sender()?;
            match sender.send(job) {
                Ok(()) => {
                    return match answer.recv_timeout(wait) {
                        Ok(result) => result,
                        Err(mpsc::RecvTimeoutError::Timeout) => Err(CollectorError::NoAnswer {
                            endpoint: self.endpoint(),
                            timeout: self.request.timeout,
                        }),
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            Err(CollectorError::WorkerStopped {
                                endpoint: self.endpoint(),
                            })
                        }
                    };
                }
                Err(mpsc::SendError(returned)) => {
                    job = returned;
                    *self.worker.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
            }
        }
        Err(CollectorError::WorkerGone {
            endpoint: self.endpoint(),
        })
    }

    /// Stops the worker thread (after any request in flight); a later `post` starts a new one.
    pub(crate) fn stop(&self) {
        self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn sender(&self) -> Result<mpsc::Sender<Job>, CollectorError> {
        let mut guard = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(sender) = guard.as_ref() {
            return Ok(sender.clone());
        }
        let (sender, jobs) = mpsc::channel();
        let request = self.request.clone();
        thread::Builder::new()
            .name("towerscope-jaeger-http".to_owned())
            .spawn(move || run_worker(&request, jobs))
            .map_err(|source| CollectorError::Spawn {
                endpoint: self.endpoint(),
                source,
            })?;
        *guard = Some(sender.clone());
        Ok(sender)
    }
}

fn run_worker(request: &Request, jobs: mpsc::Receiver<Job>) {
    let client = Client::builder()
        .timeout(request.timeout)
        .connect_timeout(request.timeout)
        .build()
        .map_err(Arc::new);
    for job in jobs {
        let result = match &client {
            Ok(client) => post_once(client, request, job.body),
            Err(source) => Err(CollectorError::Client {
                endpoint: redacted(&request.endpoint),
                source: source.clone(),
            }),
        };
        // The exporter may have given up waiting; nobody to tell then.
        let _ = job.reply.send(result);
    }
}

fn post_once(client: &Client, request: &Request, body: Vec<u8>) -> Result<(), CollectorError> {
    let endpoint = redacted(&request.endpoint);
    let mut builder = client
        .post(request.endpoint.clone())
        .header(CONTENT_TYPE, THRIFT_BINARY)
        .body(body);
    if let Some((username, password)) = &request.auth {
        builder = builder.basic_auth(username, Some(password));
    }
    let response = match builder.send() {
        Ok(response) => response,
        Err(e) => {
            return Err(CollectorError::Request {
                endpoint,
                source: e.without_url(),
            })
        }
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    // The body is read within the same client timeout; it only adds detail to the error.
    let body = response.bytes().unwrap_or_default();
    Err(CollectorError::Status {
        endpoint,
        status,
        excerpt: excerpt(body.trim_ascii_start(), BODY_EXCERPT),
    })
}

/// The URL without any credentials it carries, for messages.
pub(crate) fn redacted(url: &Url) -> String {
    let mut url = url.clone();
    if !url.username().is_empty() || url.password().is_some() {
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    url.to_string()
}
