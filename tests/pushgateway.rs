//! The Pushgateway pusher against a real Pushgateway (Debian package `prometheus-pushgateway`).
//!
//! Each test starts its own Pushgateway on a free loopback port, without persistence, and kills
//! it when done. `.ci/run` installs the package, and with `CI` set a missing binary fails the
//! tests; on a developer machine without it they say so and pass. Cases that need to see the
//! request itself (headers, counts, odd answers) use a small capture server instead.
#![cfg(feature = "pushgateway")]

mod support;

use std::{
    net::TcpListener as StdListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Body, extract::Request, response::Response, Router};
use http::StatusCode;
use support::sample;
use towerscope::{
    config::MetricConfig,
    metrics::{
        push::{PushError, PushMethod, Pushgateway},
        MetricsRegistry,
    },
};

const BINARY: &str = "prometheus-pushgateway";

/// The Pushgateway binary: `/usr/bin/prometheus-pushgateway` or one on `PATH`.
fn binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(BINARY))
            .find(|p| p.is_file())
    });
    let found = on_path.or_else(|| {
        let p = PathBuf::from("/usr/bin").join(BINARY);
        p.is_file().then_some(p)
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{BINARY} is required in CI: apt-get install prometheus-pushgateway"
        );
        eprintln!("{BINARY} not found: skipping (apt-get install prometheus-pushgateway to run)");
    }
    found
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running Pushgateway, killed (and its files removed) on drop.
struct Gateway {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Gateway {
    /// Starts a Pushgateway, or returns `None` when the binary is missing outside CI.
    /// `web_config` is the content of a `--web.config.file` (basic auth users).
    async fn start(web_config: Option<&str>) -> Option<Gateway> {
        let binary = binary()?;
        // A port found free can be taken before the Pushgateway binds it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "towerscope-pushgateway-{}-{port}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let mut command = Command::new(&binary);
            command
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                // The Debian default persists to /var/lib: every test starts empty instead.
                .arg(format!(
                    "--persistence.file={}",
                    dir.join("pushgateway.data").display()
                ))
                .arg("--log.level=warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some(config) = web_config {
                let path = dir.join("web.yml");
                std::fs::write(&path, config).unwrap();
                command.arg(format!("--web.config.file={}", path.display()));
            }
            let mut gateway = Gateway {
                child: command.spawn().unwrap(),
                url: format!("http://127.0.0.1:{port}"),
                dir,
            };
            if gateway.wait_ready(web_config.is_some()).await {
                return Some(gateway);
            }
        }
        panic!("the Pushgateway did not start");
    }

    /// Waits until the Pushgateway answers (401 counts when it asks for auth); false if it
    /// exited, as it does when the port was taken.
    async fn wait_ready(&mut self, auth: bool) -> bool {
        let client = client();
        for _ in 0..200 {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if let Ok(res) = client.get(format!("{}/-/ready", self.url)).send().await {
                if res.status().is_success() || (auth && res.status() == StatusCode::UNAUTHORIZED) {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the Pushgateway at {} never became ready", self.url);
    }

    async fn scrape(&self) -> String {
        let res = client()
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.text().await.unwrap()
    }
}

/// A plain client for the tests' own requests to the Pushgateway. reqwest is built without a
/// TLS provider of its own when the `tls` feature is on, and refuses to build a client until
/// one is installed.
fn client() -> reqwest::Client {
    #[cfg(feature = "tls")]
    // ring, as towerscope installs it (src/tls.rs says why despite rustls' deprecation).
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn registry() -> MetricsRegistry {
    MetricsRegistry::new(&MetricConfig::default()).unwrap()
}

fn record(registry: &MetricsRegistry, f: impl FnOnce()) {
    metrics::with_local_recorder(&*registry.recorder(), f);
}

#[tokio::test]
async fn put_pushes_counter_and_summary_under_job_and_grouping_labels() {
    let Some(gw) = Gateway::start(None).await else {
        return;
    };
    let registry = registry();
    record(&registry, || {
        metrics::describe_counter!("backup_files_total", "Files backed up.");
        metrics::counter!("backup_files_total", "kind" => "full").increment(3);
        for seconds in [1.0, 2.0, 3.0] {
            metrics::histogram!("backup_file_seconds").record(seconds);
        }
    });
    let pusher = Pushgateway::new(&gw.url, "nightly backup")
        .unwrap()
        .with_grouping("instance", "db-1")
        .unwrap()
        .with_grouping("path", "/var/tmp")
        .unwrap();
    assert!(
        pusher
            .url()
            .ends_with("/instance/db-1/path@base64/L3Zhci90bXA="),
        "{}",
        pusher.url()
    );
    pusher.push(&registry).await.unwrap();

    let text = gw.scrape().await;
    let group = r#"instance="db-1",job="nightly backup",path="/var/tmp""#;
    assert_eq!(
        // The Pushgateway sorts labels by name.
        sample(
            &text,
            r#"backup_files_total{instance="db-1",job="nightly backup",kind="full",path="/var/tmp"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert!(text.contains("# HELP backup_files_total Files backed up."));
    assert!(text.contains("# TYPE backup_file_seconds summary"));
    assert_eq!(
        sample(&text, &format!("backup_file_seconds_count{{{group}}}")),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, &format!("backup_file_seconds_sum{{{group}}}")),
        Some(6.0)
    );
    let median = sample(
        &text,
        &format!(r#"backup_file_seconds{{{group},quantile="0.5"}}"#),
    )
    .unwrap();
    assert!((1.0..=3.0).contains(&median), "{median}");
    // The Pushgateway stamps the group with the time of its last successful push.
    assert!(sample(&text, &format!("push_time_seconds{{{group}}}")).unwrap() > 0.0);
}

#[tokio::test]
async fn grouping_values_round_trip_through_the_pushgateway() {
    let Some(gw) = Gateway::start(None).await else {
        return;
    };
    let registry = registry();
    record(&registry, || metrics::gauge!("batch_ok").set(1.0));
    let odd = "a b%?#é\\";
    Pushgateway::new(&gw.url, "j/1")
        .unwrap()
        .with_grouping("odd", odd)
        .unwrap()
        .with_grouping("dots", "..")
        .unwrap()
        .with_grouping("slashes", "//x//")
        .unwrap()
        .push(&registry)
        .await
        .unwrap();
    let text = gw.scrape().await;
    let series = r#"batch_ok{dots="..",instance="",job="j/1",odd="a b%?#é\\",slashes="//x//"}"#;
    assert_eq!(sample(&text, series), Some(1.0), "{text}");
}

#[tokio::test]
async fn put_replaces_the_group_and_post_only_the_pushed_families() {
    let Some(gw) = Gateway::start(None).await else {
        return;
    };
    let both = registry();
    record(&both, || {
        metrics::gauge!("step_a").set(1.0);
        metrics::gauge!("step_b").set(1.0);
    });
    let only_a = registry();
    record(&only_a, || metrics::gauge!("step_a").set(2.0));

    for (job, method, b_left) in [
        ("put", PushMethod::Put, None),
        ("post", PushMethod::Post, Some(1.0)),
    ] {
        let pusher = Pushgateway::new(&gw.url, job).unwrap().with_method(method);
        pusher.push(&both).await.unwrap();
        pusher.push(&only_a).await.unwrap();
        let text = gw.scrape().await;
        let a = format!(r#"step_a{{instance="",job="{job}"}}"#);
        let b = format!(r#"step_b{{instance="",job="{job}"}}"#);
        assert_eq!(sample(&text, &a), Some(2.0), "{method:?}: {text}");
        assert_eq!(sample(&text, &b), b_left, "{method:?}: {text}");
    }
}

#[tokio::test]
async fn delete_removes_the_group_only() {
    let Some(gw) = Gateway::start(None).await else {
        return;
    };
    let registry = registry();
    record(&registry, || metrics::gauge!("batch_ok").set(1.0));
    let first = Pushgateway::new(&gw.url, "batch")
        .unwrap()
        .with_grouping("instance", "one")
        .unwrap();
    let second = first.clone().with_grouping("instance", "two").unwrap();
    first.push(&registry).await.unwrap();
    second.push(&registry).await.unwrap();

    first.delete().await.unwrap();
    let text = gw.scrape().await;
    assert_eq!(
        sample(&text, r#"batch_ok{instance="one",job="batch"}"#),
        None
    );
    assert_eq!(
        sample(&text, r#"batch_ok{instance="two",job="batch"}"#),
        Some(1.0)
    );
    // Deleting a group that is gone is no error.
    first.delete().await.unwrap();
}

#[tokio::test]
async fn with_component_pushes_only_that_components_families() {
    let Some(gw) = Gateway::start(None).await else {
        return;
    };
    let registry = registry();
    registry.register_component("jobs", ["job_runs_total"]);
    record(&registry, || {
        metrics::counter!("job_runs_total").increment(2);
        metrics::counter!("other_total").increment(5);
    });
    let pusher = Pushgateway::new(&gw.url, "jobs")
        .unwrap()
        .with_component("jobs");
    pusher.push(&registry).await.unwrap();
    let text = gw.scrape().await;
    assert_eq!(
        sample(&text, r#"job_runs_total{instance="",job="jobs"}"#),
        Some(2.0)
    );
    assert!(!text.contains("other_total"), "{text}");

    let unknown = pusher.with_component("nope").push(&registry).await;
    assert!(
        matches!(unknown, Err(PushError::UnknownComponent(_))),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn a_type_conflict_is_a_status_error_with_the_pushgateways_reason() {
    let Some(gw) = Gateway::start(None).await else {
        return;
    };
    let counter = registry();
    record(&counter, || metrics::counter!("shared_total").increment(1));
    let gauge = registry();
    record(&gauge, || metrics::gauge!("shared_total").set(1.0));

    Pushgateway::new(&gw.url, "a")
        .unwrap()
        .push(&counter)
        .await
        .unwrap();
    let err = Pushgateway::new(&gw.url, "b")
        .unwrap()
        .push(&gauge)
        .await
        .unwrap_err();
    match &err {
        PushError::Status { status, body } => {
            assert_eq!(*status, StatusCode::BAD_REQUEST);
            assert!(body.contains("inconsistent"), "{body}");
            assert!(body.contains("shared_total"), "{body}");
        }
        other => panic!("expected a status error, got {other:?}"),
    }
    assert!(err.to_string().contains("400"), "{err}");
}

#[tokio::test]
async fn a_series_with_a_grouping_or_job_label_is_refused_before_sending() {
    let capture = Capture::start(StatusCode::OK, String::new()).await;
    let registry = registry();
    record(&registry, || {
        metrics::counter!("copied_total", "path" => "/a").increment(1);
    });
    let err = Pushgateway::new(&capture.url, "j")
        .unwrap()
        .with_grouping("path", "/b")
        .unwrap()
        .push(&registry)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PushError::LabelConflict { metric, label } if metric == "copied_total" && label == "path"),
        "{err:?}"
    );

    let with_job = self::registry();
    record(&with_job, || {
        metrics::counter!("runs_total", "job" => "x").increment(1);
    });
    let err = Pushgateway::new(&capture.url, "j")
        .unwrap()
        .push(&with_job)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PushError::LabelConflict { label, .. } if label == "job"),
        "{err:?}"
    );
    assert!(capture.requests().is_empty());
}

#[tokio::test]
async fn basic_auth_is_accepted_by_a_pushgateway_that_requires_it() {
    // bcrypt (cost 4) of "s3cret".
    let config = "basic_auth_users:\n  pusher: $2b$04$3yF4sbc1RfeeEt8nzF7b5unDQrt76eeH/FVlLBhV8Gkp1CITPN3lO\n";
    let Some(gw) = Gateway::start(Some(config)).await else {
        return;
    };
    let registry = registry();
    record(&registry, || metrics::gauge!("secured").set(7.0));

    let anonymous = Pushgateway::new(&gw.url, "auth").unwrap();
    match anonymous.push(&registry).await {
        Err(PushError::Status { status, .. }) => assert_eq!(status, StatusCode::UNAUTHORIZED),
        other => panic!("expected 401, got {other:?}"),
    }
    let wrong = anonymous.clone().with_basic_auth("pusher", "wrong");
    assert!(matches!(
        wrong.push(&registry).await,
        Err(PushError::Status {
            status: StatusCode::UNAUTHORIZED,
            ..
        })
    ));
    anonymous
        .with_basic_auth("pusher", "s3cret")
        .push(&registry)
        .await
        .unwrap();
    // Credentials in the URL work the same.
    let in_url = gw.url.replace("http://", "http://pusher:s3cret@");
    Pushgateway::new(&in_url, "auth-url")
        .unwrap()
        .push(&registry)
        .await
        .unwrap();

    let text = client()
        .get(format!("{}/metrics", gw.url))
        .basic_auth("pusher", Some("s3cret"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        sample(&text, r#"secured{instance="",job="auth"}"#),
        Some(7.0)
    );
    assert_eq!(
        sample(&text, r#"secured{instance="",job="auth-url"}"#),
        Some(7.0)
    );
}

#[tokio::test]
async fn the_request_carries_method_content_type_auth_and_the_exposition() {
    let capture = Capture::start(StatusCode::OK, String::new()).await;
    let registry = registry();
    record(&registry, || metrics::counter!("seen_total").increment(4));
    let pusher = Pushgateway::new(&capture.url, "j")
        .unwrap()
        .with_grouping("instance", "i")
        .unwrap()
        .with_basic_auth("user", "pa:ss")
        .with_method(PushMethod::Post);
    pusher.push(&registry).await.unwrap();
    pusher.delete().await.unwrap();

    let requests = capture.requests();
    assert_eq!(requests.len(), 2);
    let push = &requests[0];
    assert_eq!(push.method, "POST");
    assert_eq!(push.path, "/metrics/job/j/instance/i");
    // base64("user:pa:ss")
    assert_eq!(push.auth.as_deref(), Some("Basic dXNlcjpwYTpzcw=="));
    assert_eq!(
        push.content_type.as_deref(),
        Some("text/plain; version=0.0.4")
    );
    assert_eq!(push.body, registry.render());
    assert!(push.body.contains("seen_total 4"));
    let delete = &requests[1];
    assert_eq!(delete.method, "DELETE");
    assert_eq!(delete.path, "/metrics/job/j/instance/i");
    assert_eq!(delete.auth.as_deref(), Some("Basic dXNlcjpwYTpzcw=="));
    assert!(delete.body.is_empty());
}

#[tokio::test]
async fn a_pushgateway_that_is_down_is_a_transport_error() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let pusher = Pushgateway::new(&url, "j").unwrap();
    let err = pusher.push(&registry()).await.unwrap_err();
    match &err {
        PushError::Transport(e) => assert!(e.is_connect(), "{e:?}"),
        other => panic!("expected a transport error, got {other:?}"),
    }
    // The message names the cause, not only the URL.
    assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
    assert!(matches!(
        pusher.delete().await,
        Err(PushError::Transport(_))
    ));
}

#[tokio::test]
async fn a_pushgateway_that_never_answers_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Accepts connections and holds them without a word.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let started = std::time::Instant::now();
    let err = Pushgateway::new(&url, "j")
        .unwrap()
        .with_timeout(Duration::from_millis(300))
        .push(&registry())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PushError::Transport(e) if e.is_timeout()),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    silent.abort();
}

#[tokio::test]
async fn an_error_answer_keeps_at_most_one_kib_of_its_body() {
    let capture = Capture::start(StatusCode::UNPROCESSABLE_ENTITY, "x".repeat(10_000)).await;
    let err = Pushgateway::new(&capture.url, "j")
        .unwrap()
        .push(&registry())
        .await
        .unwrap_err();
    match err {
        PushError::Status { status, body } => {
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(body.len(), 1024);
        }
        other => panic!("expected a status error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let capture = Capture::start(StatusCode::MOVED_PERMANENTLY, String::new()).await;
    let err = Pushgateway::new(&capture.url, "j")
        .unwrap()
        .push(&registry())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PushError::Status {
                status: StatusCode::MOVED_PERMANENTLY,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(capture.requests().len(), 1);
}

#[tokio::test]
async fn spawn_interval_pushes_repeatedly_and_stop_pushes_once_more() {
    let Some(gw) = Gateway::start(None).await else {
        return;
    };
    let registry = registry();
    record(&registry, || metrics::counter!("ticks_total").increment(1));
    let series = r#"push_time_seconds{instance="",job="interval"}"#;
    let task = Pushgateway::new(&gw.url, "interval")
        .unwrap()
        .spawn_interval(registry.clone(), Duration::from_millis(100));

    // push_time_seconds changes with every push the Pushgateway takes.
    let mut seen = Vec::new();
    for _ in 0..100 {
        if let Some(t) = sample(&gw.scrape().await, series) {
            if seen.last() != Some(&t) {
                seen.push(t);
            }
        }
        if seen.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen.len() >= 3, "push times seen: {seen:?}");
    assert!(task.pushes() >= 3);
    assert_eq!(task.failures(), 0);
    assert_eq!(task.last_error(), None);

    record(&registry, || metrics::counter!("ticks_total").increment(1));
    task.stop().await.unwrap();
    let text = gw.scrape().await;
    // The final push carried the state at stop time.
    assert_eq!(
        sample(&text, r#"ticks_total{instance="",job="interval"}"#),
        Some(2.0)
    );
    let last = sample(&text, series).unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        sample(&gw.scrape().await, series),
        Some(last),
        "pushed after stop"
    );
}

#[tokio::test]
async fn spawn_interval_counts_failures_and_goes_on() {
    let capture = Capture::start(StatusCode::INTERNAL_SERVER_ERROR, "down for repair".into()).await;
    let task = Pushgateway::new(&capture.url, "j")
        .unwrap()
        .spawn_interval(registry(), Duration::from_millis(50));
    for _ in 0..100 {
        if task.failures() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(task.failures() >= 3, "failures: {}", task.failures());
    assert_eq!(task.pushes(), 0);
    let last = task.last_error().unwrap();
    assert!(
        last.contains("500") && last.contains("down for repair"),
        "{last}"
    );

    let before = capture.requests().len();
    let err = task.stop().await.unwrap_err();
    assert!(matches!(err, PushError::Status { .. }), "{err:?}");
    let after = capture.requests().len();
    assert!(after > before, "stop pushed once more");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(capture.requests().len(), after, "no push after stop");
}

/// A request as the capture server saw it.
#[derive(Debug, Clone)]
struct Captured {
    method: String,
    path: String,
    auth: Option<String>,
    content_type: Option<String>,
    body: String,
}

/// A local HTTP server that records every request and answers each with one status and body.
struct Capture {
    url: String,
    seen: Arc<Mutex<Vec<Captured>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Capture {
    async fn start(status: StatusCode, answer: String) -> Capture {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let app = Router::new().fallback(move |req: Request| {
            let log = Arc::clone(&log);
            let answer = answer.clone();
            async move {
                // Read the headers first: a borrow of the request held across an await would
                // make the handler's future not Send (the body is not Sync).
                let (parts, body) = req.into_parts();
                let header = |name: http::HeaderName| {
                    parts
                        .headers
                        .get(name)
                        .map(|v| v.to_str().unwrap().to_owned())
                };
                let mut captured = Captured {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    auth: header(http::header::AUTHORIZATION),
                    content_type: header(http::header::CONTENT_TYPE),
                    body: String::new(),
                };
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                captured.body = String::from_utf8(body.to_vec()).unwrap();
                log.lock().unwrap().push(captured);
                let mut res = Response::new(Body::from(answer));
                *res.status_mut() = status;
                if status.is_redirection() {
                    res.headers_mut()
                        .insert(http::header::LOCATION, "/elsewhere".parse().unwrap());
                }
                res
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Capture { url, seen, server }
    }

    fn requests(&self) -> Vec<Captured> {
        self.seen.lock().unwrap().clone()
    }
}
