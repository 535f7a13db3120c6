//! `--traffic`: for about a minute after start (`--traffic-seconds N`), realistic traffic
//! against the demo's own API with a plain reqwest client, so a newcomer sees numbers and
//! traces at once: pushes of small images (monolithic and chunked blob uploads, manifest PUT),
//! pulls (manifest GET, blob GET/HEAD), listings (catalog, tags, projects, repositories,
//! artifacts), a few errors (unknown manifest, bad digest) and one GC run. Failures are logged
//! and counted, never fatal.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use reqwest::{Client, Method, StatusCode};
use sha2::{Digest as _, Sha256};

static ENABLED: AtomicBool = AtomicBool::new(false);
static SECONDS: AtomicU64 = AtomicU64::new(60);

/// `--traffic`.
pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// `--traffic-seconds N`.
pub(crate) fn set_seconds(arg: &str) -> Result<(), String> {
    let seconds = arg
        .parse()
        .map_err(|_| format!("--traffic-seconds: {arg:?} is not a number of seconds"))?;
    SECONDS.store(seconds, Ordering::Relaxed);
    Ok(())
}

/// Starts the generator when `--traffic` was given.
pub(crate) fn start(listen: SocketAddr) -> Option<tokio::task::JoinHandle<()>> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    let seconds = SECONDS.load(Ordering::Relaxed);
    Some(tokio::spawn(run(
        format!("http://{listen}"),
        Duration::from_secs(seconds),
    )))
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const REPOSITORIES: [&str; 3] = ["traffic/web", "traffic/worker", "library/tools"];

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Counts what the server answered.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    by_class: [u64; 6],
    transport_errors: u64,
}

struct Traffic {
    client: Client,
    base: String,
    tally: Tally,
}

impl Traffic {
    /// One request; `None` on a transport error (logged).
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Option<(StatusCode, reqwest::header::HeaderMap, Vec<u8>)> {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let mut req = self.client.request(method.clone(), &url);
        if let Some(content_type) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        self.tally.requests += 1;
        match req.send().await {
            Ok(res) => {
                let status = res.status();
                self.tally.by_class[usize::from(status.as_u16() / 100).min(5)] += 1;
                if status.is_server_error() {
                    println!("traffic: {method} {path}: server error {status}");
                }
                let headers = res.headers().clone();
                let body = res.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                Some((status, headers, body))
            }
            Err(err) => {
                self.tally.transport_errors += 1;
                println!("traffic: {method} {path}: {err}");
                None
            }
        }
    }

    /// Monolithic upload (`POST ?digest=`).
    async fn push_monolithic(&mut self, repo: &str, data: &[u8]) -> String {
        let digest = digest_of(data);
        self.send(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            Some("application/octet-stream"),
            Some(data.to_vec()),
        )
        .await;
        digest
    }

    /// Chunked upload: POST, PATCH the first half, PUT the rest with the digest.
    async fn push_chunked(&mut self, repo: &str, data: &[u8]) -> String {
        let digest = digest_of(data);
        let location = |headers: &reqwest::header::HeaderMap| {
            headers
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let Some((_, headers, _)) = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                None,
                None,
            )
            .await
        else {
            return digest;
        };
        let Some(at) = location(&headers) else {
            return digest;
        };
        let (first, rest) = data.split_at(data.len() / 2);
        let Some((_, headers, _)) = self
            .send(
                Method::PATCH,
                &at,
                Some("application/octet-stream"),
                Some(first.to_vec()),
            )
            .await
        else {
            return digest;
        };
        let Some(at) = location(&headers) else {
            return digest;
        };
        let sep = if at.contains('?') { '&' } else { '?' };
        self.send(
            Method::PUT,
            &format!("{at}{sep}digest={digest}"),
            Some("application/octet-stream"),
            Some(rest.to_vec()),
        )
        .await;
        digest
    }

    /// Pushes a one-layer image as `repo:tag`; returns the layer's digest.
    async fn push_image(&mut self, repo: &str, tag: &str, seed: u64) -> String {
        let layer: Vec<u8> = format!("layer {seed} {}\n", uuid::Uuid::new_v4())
            .repeat(64)
            .into_bytes();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": { "Cmd": ["/bin/app"], "Labels": { "seed": seed.to_string() } },
            "rootfs": { "type": "layers", "diff_ids": [digest_of(&layer)] },
        }))
        .unwrap_or_default();
        let layer_digest = self.push_monolithic(repo, &layer).await;
        let config_digest = self.push_chunked(repo, &config).await;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest, "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest, "size": layer.len(),
            }],
        }))
        .unwrap_or_default();
        self.send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{tag}"),
            Some(OCI_MANIFEST),
            Some(manifest),
        )
        .await;
        layer_digest
    }

    /// Pulls `repo:tag`: manifest, then its blobs.
    async fn pull_image(&mut self, repo: &str, tag: &str) {
        let Some((status, _, body)) = self
            .send(
                Method::GET,
                &format!("/v2/{repo}/manifests/{tag}"),
                None,
                None,
            )
            .await
        else {
            return;
        };
        if !status.is_success() {
            return;
        }
        let Ok(manifest) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return;
        };
        let config = manifest["config"]["digest"].as_str().map(str::to_owned);
        let layers: Vec<String> = manifest["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["digest"].as_str().map(str::to_owned))
            .collect();
        if let Some(config) = config {
            self.send(
                Method::GET,
                &format!("/v2/{repo}/blobs/{config}"),
                None,
                None,
            )
            .await;
        }
        for layer in layers {
            self.send(
                Method::HEAD,
                &format!("/v2/{repo}/blobs/{layer}"),
                None,
                None,
            )
            .await;
            self.send(
                Method::GET,
                &format!("/v2/{repo}/blobs/{layer}"),
                None,
                None,
            )
            .await;
        }
    }

    async fn list(&mut self, repo: &str) {
        let (project, name) = repo.split_once('/').unwrap_or(("library", repo));
        for path in [
            "/v2/".to_owned(),
            "/v2/_catalog".to_owned(),
            format!("/v2/{repo}/tags/list"),
            "/api/v2.0/projects".to_owned(),
            format!("/api/v2.0/projects/{project}/repositories"),
            format!("/api/v2.0/projects/{project}/repositories/{name}/artifacts"),
            "/api/v2.0/health".to_owned(),
        ] {
            self.send(Method::GET, &path, None, None).await;
        }
    }

    async fn errors(&mut self, repo: &str) {
        // An unknown manifest, and an upload whose digest does not match.
        self.send(
            Method::GET,
            &format!("/v2/{repo}/manifests/does-not-exist"),
            None,
            None,
        )
        .await;
        let wrong = format!("sha256:{}", "0".repeat(64));
        self.send(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={wrong}"),
            Some("application/octet-stream"),
            Some(b"not what the digest says".to_vec()),
        )
        .await;
    }
}

async fn run(base: String, duration: Duration) {
    // With towerscope's `tls` feature reqwest is built without a crypto provider of its own
    // (plain http here, but the builder needs one): install ring's unless one is installed.
    #[cfg(feature = "tls")]
    // ring, as towerscope installs it (src/tls.rs says why despite rustls' deprecation).
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(client) => client,
        Err(err) => {
            println!("traffic: cannot build a client: {err}");
            return;
        }
    };
    let mut t = Traffic {
        client,
        base,
        tally: Tally::default(),
    };
    println!("traffic: generating for {} s", duration.as_secs());
    let start = Instant::now();
    t.send(
        Method::POST,
        "/api/v2.0/projects",
        Some("application/json"),
        Some(br#"{"project_name":"traffic","metadata":{"public":"false"}}"#.to_vec()),
    )
    .await;
    let mut round: u64 = 0;
    let mut gc_done = false;
    let mut last_log = Instant::now();
    while start.elapsed() < duration {
        let repo = REPOSITORIES[(round % REPOSITORIES.len() as u64) as usize];
        let tag = format!("v{}", round % 4);
        t.push_image(repo, &tag, round).await;
        t.pull_image(repo, &tag).await;
        t.pull_image(repo, &tag).await;
        t.list(repo).await;
        if round.is_multiple_of(3) {
            t.errors(repo).await;
        }
        if !gc_done && start.elapsed() >= duration / 2 {
            gc_done = true;
            t.send(
                Method::POST,
                "/api/v2.0/system/gc/schedule",
                Some("application/json"),
                Some(br#"{"schedule":{"type":"Manual"}}"#.to_vec()),
            )
            .await;
            println!("traffic: garbage collection scheduled");
        }
        round += 1;
        if last_log.elapsed() >= Duration::from_secs(5) {
            last_log = Instant::now();
            println!(
                "traffic: {} s, {} rounds, {} requests",
                start.elapsed().as_secs(),
                round,
                t.tally.requests
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = &t.tally.by_class;
    println!(
        "traffic: done: {} rounds, {} requests (2xx {}, 3xx {}, 4xx {}, 5xx {}), {} transport errors",
        round, t.tally.requests, c[2], c[3], c[4], c[5], t.tally.transport_errors
    );
}
