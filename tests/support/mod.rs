//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame};
use opentelemetry_sdk::trace::InMemorySpanExporter;
use tokio::sync::mpsc;
use towerscope::{metrics::MetricsRegistry, trace::TracePipeline, Config, Telemetry};

#[cfg(feature = "tonic")]
pub mod grpc;
pub mod otlp_sink;

/// Log output written to a shared buffer: a `tracing_subscriber::fmt` writer
/// (`.with_writer(move || captured.clone())`).
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// What was written so far, leaving it in the buffer.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// What was written so far, emptying the buffer.
    pub fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

/// The value of the sample `series` (e.g. `m{a="b"}`) in exposition `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (head, value) = line.rsplit_once(' ')?;
        (head == series).then(|| value.parse().ok())?
    })
}

/// Number of sample lines (series samples) in `text`.
pub fn sample_lines(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// A response body fed from a channel: ends when the sender is dropped.
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// Telemetry from the YAML `config` whose spans go to an in-memory exporter (no collector).
pub fn in_memory_telemetry(config: &str) -> (Telemetry, InMemorySpanExporter) {
    let config = Config::from_yaml_str(config).unwrap();
    let registry = MetricsRegistry::new(&config.metric).unwrap();
    let exporter = InMemorySpanExporter::default();
    let pipeline = TracePipeline::with_exporter(
        &config.trace,
        exporter.clone(),
        "memory",
        &registry,
        &config.metric.prefix(),
    );
    let telemetry = Telemetry::with_pipeline(&config, registry, pipeline).unwrap();
    (telemetry, exporter)
}

/// The `promtool` binary (Debian package `prometheus`), or `None` with a skip message.
/// With `CI` set, a missing promtool is a failure: CI installs it.
pub fn promtool() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is required in CI: apt-get install prometheus"
        );
        eprintln!("promtool not found: skipping (apt-get install prometheus to run this check)");
    }
    found
}

/// Asserts that `promtool check metrics` accepts `text`.
pub fn promtool_check_metrics(promtool: &std::path::Path, text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejected the exposition:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Tests of one binary run in parallel, some with a thread-local subscriber and some with
/// none. A span callsite first registered while no subscriber exists anywhere caches the
/// interest "never", and the rebuild when another thread's subscriber appears can race with
/// it, so a span test sometimes saw its span disabled. A global no-op registry, installed before any test
/// creates a span, makes every callsite's interest "always"; each test's own subscriber still
/// receives its spans.
pub fn no_stale_span_interest() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    });
}
