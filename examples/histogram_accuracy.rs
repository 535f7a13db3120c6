//! Run with: cargo run --example histogram_accuracy -- --port 9464 [--samples 200000]
//!
//! Native histograms against classic buckets, on latency distributions whose quantiles are
//! known: records the same samples of each distribution (log-normal, bimodal, narrow) into a
//! `metric.histogram: both` registry, so one family carries a native histogram and
//! Prometheus' default classic buckets, and serves it on `--port` for a Prometheus 3 to
//! answer `histogram_quantile` from either. Prints one JSON line: the exact quantiles of the
//! samples and the bytes one series holds in each mode (classic, native, both). Stops on
//! Ctrl-C or SIGTERM.
//!
//! interop/prometheus3_native_e2e.py (part `accuracy`) asks Prometheus for p50, p90 and p99
//! of both and compares them with the exact ones.

use std::{collections::BTreeMap, error::Error};

use metrics::{Key, Label, Level, Metadata};
use towerscope::{
    metrics::{MetricsRegistry, MetricsServer},
    Config,
};

static META: Metadata<'static> = Metadata::new("histogram_accuracy", Level::INFO, None);

/// The family every distribution is recorded into, by `distribution`.
const FAMILY: &str = "accuracy_latency_seconds";
/// The quantiles compared.
const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];
/// Prometheus' default buckets, the classic ones of `both` without `buckets`.
const DEFAULT_BUCKETS: &str = "[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]";

/// splitmix64: a fixed seed, so every run records the same samples.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1_u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }
}

/// A distribution: its name and a sampler.
type Distribution = (&'static str, fn(&mut Rng) -> f64);

/// The distributions: a service's typical latency, a cache in front of a slow backend, and a
/// tight one that falls between two default buckets.
const DISTRIBUTIONS: [Distribution; 3] = [
    ("lognormal", |r| r.lognormal(0.05, 1.0)),
    ("bimodal", |r| {
        if r.uniform() < 0.8 {
            r.lognormal(0.004, 0.3)
        } else {
            r.lognormal(0.8, 0.3)
        }
    }),
    ("narrow", |r| 0.1 + 0.03 * r.uniform()),
];

fn registry(metric: &str) -> Result<MetricsRegistry, Box<dyn Error>> {
    let config = Config::from_json_str(&format!(r#"{{"metric": {metric}}}"#))?;
    Ok(MetricsRegistry::new(&config.metric)?)
}

fn record(registry: &MetricsRegistry, distribution: &'static str, samples: &[f64]) {
    let key = Key::from_parts(FAMILY, vec![Label::new("distribution", distribution)]);
    let histogram = registry.recorder().register_histogram(&key, &META);
    for v in samples {
        histogram.record(*v);
    }
}

/// The exact `q` quantile of sorted `samples` (nearest rank).
fn exact(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let (mut port, mut samples) = (9464_u16, 200_000_usize);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--port" => port = value.parse()?,
            "--samples" => samples = value.parse()?,
            _ => return Err(format!("unknown argument {arg}").into()),
        }
    }
    let served = registry(r#"{"histogram": "both"}"#)?;
    let modes = [
        ("classic", format!(r#"{{"buckets": {DEFAULT_BUCKETS}}}"#)),
        ("native", r#"{"histogram": "native"}"#.to_owned()),
        ("both", r#"{"histogram": "both"}"#.to_owned()),
    ];
    let mut bytes: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    let mut quantiles = BTreeMap::new();
    let mut rng = Rng(0x7063_7269_6e67);
    for (distribution, sample) in DISTRIBUTIONS {
        let mut values: Vec<f64> = (0..samples).map(|_| sample(&mut rng)).collect();
        record(&served, distribution, &values);
        for (mode, metric) in &modes {
            // One series per registry: its bytes are the series' own.
            let alone = registry(metric)?;
            record(&alone, distribution, &values);
            let stats = alone.stats();
            bytes
                .entry(mode)
                .or_default()
                .insert(distribution, stats.bytes / stats.series.max(1));
        }
        values.sort_by(f64::total_cmp);
        let exact: BTreeMap<String, f64> = QUANTILES
            .iter()
            .map(|q| (q.to_string(), exact(&values, *q)))
            .collect();
        quantiles.insert(distribution, exact);
    }
    let config = Config::from_json_str(&format!(r#"{{"metric": {{"port": {port}}}}}"#))?;
    let server = MetricsServer::bind(&config.metric, served.clone()).await?;
    println!(
        "{}",
        serde_json::json!({
            "family": FAMILY,
            "samples": samples,
            "exact": quantiles,
            "bytes_per_series": bytes,
            "metrics": format!("http://{}/metrics", server.local_addr()),
        })
    );
    shutdown().await;
    Ok(())
}

async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
