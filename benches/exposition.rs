//! Rendering `/metrics`: towerscope's exposition against `metrics-exporter-prometheus` (what a
//! user of the `metrics` crate picks, and what towerscope used before 0.2), on the same data,
//! in one run.
//!
//! Run with:
//!
//! ```text
//! cargo bench --bench exposition
//! ```
//!
//! Each case holds N series of a request counter (`method`, `code`, `operation`) and N series
//! of a request-duration family (`method`, `operation`), every duration series with 32
//! observations between 1 ms and 3 s; durations are a summary (quantiles 0.5, 0.9, 0.99:
//! Harbor's default), a histogram (Prometheus's default 11 buckets), a native histogram
//! (`metric.histogram: native`, bucket factor 1.1) or both (native and the 11 buckets). N is
//! 100, 1,000 and 10,000. The group `exposition/{summary,histogram,native,both}/N` holds
//! `towerscope` (`MetricsRegistry::render`, the text format), `towerscope-protobuf`
//! (`MetricsRegistry::render_protobuf`, the format a native histogram is served in) and, for
//! summaries and histograms, `metrics-exporter-prometheus` (`PrometheusHandle::render`, whose
//! output is in hash-map order: towerscope's is sorted, which the timing includes). Before the
//! first case of each size it prints the bytes of the outputs and the bytes towerscope holds
//! per series (`MetricsRegistry::stats`).

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented `pub fn benches`"
)]

use std::{hint::black_box, time::Duration};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use metrics::{Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use towerscope::{
    config::MetricConfig,
    metrics::{HistogramMode, MetricsRegistry},
};

const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const SIZES: [usize; 3] = [100, 1_000, 10_000];
static META: Metadata<'static> = Metadata::new("bench", Level::INFO, None);

/// Records the case's series into `recorder`.
fn populate(recorder: &dyn Recorder, series: usize) {
    for i in 0..series {
        let op = format!("operation_{i:05}");
        let labels = |extra: &[(&'static str, &'static str)]| {
            let mut l = vec![Label::new("method", "GET")];
            l.extend(extra.iter().map(|(k, v)| Label::new(*k, *v)));
            l.push(Label::new("operation", op.clone()));
            l
        };
        let total = Key::from_parts("harbor_core_http_request_total", labels(&[("code", "200")]));
        recorder.register_counter(&total, &META).increment(32);
        let duration = Key::from_parts("harbor_core_http_request_duration_seconds", labels(&[]));
        let histogram = recorder.register_histogram(&duration, &META);
        for j in 0..32u32 {
            histogram.record(0.001 * f64::from(1 + (j * 97 + i as u32) % 3000));
        }
    }
}

/// How the case's durations are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durations {
    Summary,
    Histogram,
    Native,
    Both,
}

fn towerscope(durations: Durations, series: usize) -> MetricsRegistry {
    let mut config = MetricConfig::default();
    match durations {
        Durations::Summary => config.quantiles = Some(QUANTILES.to_vec()),
        Durations::Histogram => config.buckets = Some(BUCKETS.to_vec()),
        Durations::Native => config.histogram = HistogramMode::Native,
        Durations::Both => {
            config.histogram = HistogramMode::Both;
            config.buckets = Some(BUCKETS.to_vec());
        }
    }
    let registry = MetricsRegistry::new(&config).expect("valid settings");
    populate(&*registry.recorder(), series);
    registry
}

fn exporter(histogram: bool, series: usize) -> metrics_exporter_prometheus::PrometheusHandle {
    let mut builder = PrometheusBuilder::new()
        .set_quantiles(&QUANTILES)
        .expect("valid quantiles");
    if histogram {
        builder = builder
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
            .expect("valid buckets");
    }
    let recorder = builder.build_recorder();
    populate(&recorder, series);
    recorder.handle()
}

fn exposition(c: &mut Criterion) {
    use Durations::*;
    for durations in [Summary, Histogram, Native, Both] {
        let kind = format!("{durations:?}").to_lowercase();
        let mut group = c.benchmark_group(format!("exposition/{kind}"));
        group.sample_size(10).warm_up_time(Duration::from_secs(1));
        for series in SIZES {
            let ours = towerscope(durations, series);
            let theirs = matches!(durations, Summary | Histogram)
                .then(|| exporter(durations == Histogram, series));
            let stats = ours.stats();
            eprintln!(
                "exposition/{kind}/{series}: towerscope {} bytes of text, {} of protobuf, {} series holding {} bytes ({} per series); metrics-exporter-prometheus {} bytes of text",
                ours.render().len(),
                ours.render_protobuf(&[]).map_or(0, |b| b.len()),
                stats.series,
                stats.bytes,
                stats.bytes / stats.series.max(1),
                theirs.as_ref().map_or(0, |h| h.render().len()),
            );
            group.bench_with_input(BenchmarkId::new("towerscope", series), &ours, |b, r| {
                b.iter(|| black_box(r.render()))
            });
            group.bench_with_input(
                BenchmarkId::new("towerscope-protobuf", series),
                &ours,
                |b, r| b.iter(|| black_box(r.render_protobuf(&[]))),
            );
            if let Some(theirs) = &theirs {
                group.bench_with_input(
                    BenchmarkId::new("metrics-exporter-prometheus", series),
                    theirs,
                    |b, h| b.iter(|| black_box(h.render())),
                );
            }
        }
        group.finish();
    }
}

criterion_group!(benches, exposition);
criterion_main!(benches);
