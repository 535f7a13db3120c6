//! Recording from several threads at once: towerscope's store beside
//! metrics-exporter-prometheus (what a user of the `metrics` crate picks), in one run.
//!
//! Run with:
//!
//! ```text
//! cargo bench --bench contention
//! ```
//!
//! Each iteration is one request's recording: a counter increment and a duration record (a
//! summary: Harbor's default). `T` threads (1, 2, 4, 8) start together and each records
//! `iters` times, either all into the **same** series (one shared pair of handles: the hot
//! series of a busy route) or each into **its own** (`T` series). The time reported is the
//! wall time per iteration: what one record costs a thread while the others record too (on a
//! machine with fewer cores than threads, it includes waiting for a core). After each group
//! the counters are read back from the render: they must equal the records made, exactly.

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented `pub fn benches`"
)]

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Barrier,
    },
    thread,
    time::{Duration, Instant},
};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::PrometheusBuilder;
use towerscope::{config::MetricConfig, metrics::MetricsRegistry};

const THREADS: [usize; 4] = [1, 2, 4, 8];
static META: Metadata<'static> = Metadata::new("contention", Level::INFO, None);

/// The handles of series `i`: a request counter and a duration.
fn handles(recorder: &dyn Recorder, i: usize) -> (Counter, Histogram) {
    let labels = || {
        vec![
            Label::new("method", "GET"),
            Label::new("operation", format!("op{i}")),
        ]
    };
    (
        recorder.register_counter(&Key::from_parts("req_total", labels()), &META),
        recorder.register_histogram(&Key::from_parts("req_duration_seconds", labels()), &META),
    )
}

/// `threads` threads record `iters` times each into `series` (thread `t` into
/// `series[t % len]`); the wall time from their common start to the last one's end.
fn record(series: &[(Counter, Histogram)], threads: usize, iters: u64) -> Duration {
    let start = Barrier::new(threads + 1);
    let began = thread::scope(|s| {
        for t in 0..threads {
            let (counter, histogram) = &series[t % series.len()];
            let start = &start;
            s.spawn(move || {
                start.wait();
                for i in 0..iters {
                    counter.increment(1);
                    histogram.record(0.001 * ((i % 1000) + 1) as f64);
                }
            });
        }
        start.wait();
        Instant::now()
    });
    began.elapsed()
}

/// The sum of the `req_total` samples in exposition `text`.
fn counted(text: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("req_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn contention(c: &mut Criterion) {
    for shared in [true, false] {
        let group_name = if shared { "same_series" } else { "own_series" };
        let mut group = c.benchmark_group(format!("contention/{group_name}"));
        group
            .measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(500))
            .sample_size(20);
        for threads in THREADS {
            let count = if shared { 1 } else { threads };
            let ours = MetricsRegistry::new(&MetricConfig::default()).expect("registry");
            let recorder = ours.recorder();
            let our_series: Vec<_> = (0..count).map(|i| handles(&*recorder, i)).collect();
            let theirs = PrometheusBuilder::new().build_recorder();
            let their_series: Vec<_> = (0..count).map(|i| handles(&theirs, i)).collect();
            let (ours_made, theirs_made) = (AtomicU64::new(0), AtomicU64::new(0));
            group.bench_with_input(
                BenchmarkId::new("towerscope", threads),
                &threads,
                |b, &t| {
                    b.iter_custom(|iters| {
                        ours_made.fetch_add(iters * t as u64, Ordering::Relaxed);
                        record(&our_series, t, iters)
                    })
                },
            );
            group.bench_with_input(
                BenchmarkId::new("metrics-exporter-prometheus", threads),
                &threads,
                |b, &t| {
                    b.iter_custom(|iters| {
                        theirs_made.fetch_add(iters * t as u64, Ordering::Relaxed);
                        record(&their_series, t, iters)
                    })
                },
            );
            // Exact: every increment of every thread is in the render.
            let (ours_made, theirs_made) = (ours_made.into_inner(), theirs_made.into_inner());
            if ours_made > 0 {
                assert_eq!(
                    counted(&ours.render()),
                    ours_made,
                    "towerscope, {threads} threads"
                );
            }
            if theirs_made > 0 {
                assert_eq!(
                    counted(&theirs.handle().render()),
                    theirs_made,
                    "metrics-exporter-prometheus, {threads} threads"
                );
            }
        }
        group.finish();
    }
}

criterion_group!(benches, contention);
criterion_main!(benches);
