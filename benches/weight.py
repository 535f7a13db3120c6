#!/usr/bin/env python3
"""The weight of a dependency: what a hello-world axum 0.8 app pays for towerscope, beside what
users assemble instead, measured side by side in one run.

For each tiny app (written into a scratch directory, towerscope by path from this checkout):

- `crates`: distinct crates (name and version) of its normal dependency graph
  (`cargo tree -e normal --prefix none`), the app itself left out;
- `build`: one clean `cargo build --release` (a fresh target directory per build, sources
  already downloaded), wall time;
- `binary`: the size of the release binary.

Builds alternate between the apps, round after round (`--rounds`), so that a slow spell of the
machine falls on all of them; the table gives each app's median build time and its ratio to
the baseline app's median in the same run.

    python3 benches/weight.py [--rounds 2] [--apps NAME,...] [--jobs N]

Apps: `axum` (the baseline: a bare axum router), `towerscope` (default features: the
`Telemetry` layer, metrics server, OTLP and Jaeger export), `towerscope_metrics`
(`default-features = false, features = ["axum"]`: request id and metrics), `stack`
(axum-tracing-opentelemetry 0.42 + opentelemetry-otlp 0.33 + tracing-opentelemetry 0.34 +
tracing-subscriber + tower-http's request-id layers: what users assemble for traces),
`axum_prometheus` (axum-prometheus 0.10: what users pick for metrics).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

AXUM = 'axum = { version = "0.8", default-features = false, features = ["http1", "tokio", "matched-path"] }\n' \
       'tokio = { version = "1", features = ["rt-multi-thread", "macros", "net"] }\n'

APPS = {
    "axum": (AXUM, r'''
use axum::{routing::get, Router};
#[tokio::main]
async fn main() {
    let app = Router::new().route("/hello", get(|| async { "hello" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    axum::serve(listener, app).await.unwrap();
}
'''),
    "towerscope": (AXUM + f'towerscope = {{ path = "{REPO}" }}\n', r'''
use axum::{routing::get, Router};
use towerscope::{Config, Telemetry};
#[tokio::main]
async fn main() {
    let config = Config::from_yaml_str("trace: { enabled: true, otel: { endpoint: '127.0.0.1:4318', insecure: true } }").unwrap();
    let telemetry = Telemetry::init(&config).unwrap();
    telemetry.init_subscriber().unwrap();
    let _metrics = telemetry.serve_metrics().await.unwrap();
    let app = Router::new().route("/hello", get(|| async { "hello" })).layer(telemetry.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    axum::serve(listener, app).await.unwrap();
}
'''),
    "towerscope_metrics": (AXUM + f'towerscope = {{ path = "{REPO}", default-features = false, features = ["axum"] }}\n', r'''
use axum::{routing::get, Router};
use towerscope::{Config, Telemetry};
#[tokio::main]
async fn main() {
    let telemetry = Telemetry::init(&Config::default()).unwrap();
    let _metrics = telemetry.serve_metrics().await.unwrap();
    let app = Router::new().route("/hello", get(|| async { "hello" })).layer(telemetry.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    axum::serve(listener, app).await.unwrap();
}
'''),
    "stack": (AXUM +
              'axum-tracing-opentelemetry = "0.42"\n'
              'opentelemetry = "0.33"\n'
              'opentelemetry_sdk = "0.33"\n'
              'opentelemetry-otlp = { version = "0.33", default-features = false, features = ["trace", "http-proto", "reqwest-blocking-client"] }\n'
              'tracing = "0.1"\n'
              'tracing-opentelemetry = "0.34"\n'
              'tracing-subscriber = { version = "0.3", features = ["env-filter"] }\n'
              'tower-http = { version = "0.7", features = ["request-id", "util"] }\n', r'''
use axum::{routing::get, Router};
use opentelemetry::trace::TracerProvider as _;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer as _};
#[tokio::main]
async fn main() {
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build().unwrap();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().with_batch_exporter(exporter).build();
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(EnvFilter::from_default_env()))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("app")))
        .init();
    let header = axum::http::HeaderName::from_static("x-request-id");
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .layer(axum_tracing_opentelemetry::middleware::OtelAxumLayer::default())
        .layer(PropagateRequestIdLayer::new(header.clone()))
        .layer(SetRequestIdLayer::new(header, MakeRequestUuid));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    axum::serve(listener, app).await.unwrap();
}
'''),
    "axum_prometheus": (AXUM + 'axum-prometheus = "0.10"\n', r'''
use axum::{routing::get, Router};
#[tokio::main]
async fn main() {
    let (layer, handle) = axum_prometheus::PrometheusMetricLayer::pair();
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/metrics", get(|| async move { handle.render() }))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    axum::serve(listener, app).await.unwrap();
}
'''),
}


def run(cmd, cwd, env=None):
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} in {cwd} failed:\n{out.stderr[-3000:]}")
    return out.stdout


def write_app(root, name):
    deps, main = APPS[name]
    path = os.path.join(root, name)
    os.makedirs(os.path.join(path, "src"), exist_ok=True)
    with open(os.path.join(path, "Cargo.toml"), "w") as f:
        f.write(f'[package]\nname = "weight-{name.replace("_", "-")}"\nversion = "0.0.0"\n'
                f'edition = "2021"\npublish = false\n\n[dependencies]\n{deps}\n[workspace]\n')
    with open(os.path.join(path, "src", "main.rs"), "w") as f:
        f.write(main)
    # The same versions as this checkout where they overlap: start from its lock file.
    shutil.copy(os.path.join(REPO, "Cargo.lock"), os.path.join(path, "Cargo.lock"))
    run(["cargo", "fetch"], path)
    return path


def crates(path):
    tree = run(["cargo", "tree", "-e", "normal", "--prefix", "none", "--offline"], path)
    names = {line.split(" (")[0].replace(" v", " ") for line in tree.splitlines() if line.strip()}
    return len({n for n in names if not n.startswith("weight-")})


def build(path, jobs):
    target = tempfile.mkdtemp(prefix="weight-target-")
    env = dict(os.environ, CARGO_TARGET_DIR=target, CARGO_INCREMENTAL="0")
    cmd = ["cargo", "build", "--release", "--offline", "--quiet"] + (["-j", str(jobs)] if jobs else [])
    started = time.monotonic()
    run(cmd, path, env)
    seconds = time.monotonic() - started
    binary = os.path.join(target, "release", "weight-" + os.path.basename(path).replace("_", "-"))
    size = os.path.getsize(binary)
    shutil.rmtree(target, ignore_errors=True)
    return seconds, size


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--apps", default=",".join(APPS))
    p.add_argument("--jobs", type=int, help="cargo -j (default: cargo's)")
    p.add_argument("--keep", help="write the apps here and keep them")
    args = p.parse_args()
    names = args.apps.split(",")
    root = args.keep or tempfile.mkdtemp(prefix="weight-apps-")
    paths = {n: write_app(root, n) for n in names}
    counts = {n: crates(paths[n]) for n in names}
    times = {n: [] for n in names}
    sizes = {}
    for r in range(args.rounds):
        order = names if r % 2 == 0 else list(reversed(names))
        for n in order:
            seconds, size = build(paths[n], args.jobs)
            times[n].append(seconds)
            sizes[n] = size
            print(f"weight: round {r + 1}: {n}: {seconds:.0f} s, {size / 1e6:.1f} MB", flush=True)
    base = names[0]
    base_time = statistics.median(times[base])
    print(f"\n| app | crates | clean release build (median of {args.rounds}) | vs {base} | binary |")
    print("|---|---|---|---|---|")
    for n in names:
        t = statistics.median(times[n])
        print(f"| {n} | {counts[n]} | {t:.0f} s | {t / base_time:.2f}x | {sizes[n] / 1e6:.1f} MB |")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
