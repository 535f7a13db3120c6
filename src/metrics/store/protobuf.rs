//! The protobuf render: every family as an `io.prometheus.client.MetricFamily` message,
//! length-delimited one after another, as Prometheus reads
//! `application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited`.
//!
//! The same walk as the text render (families by name, series by label set, under the family
//! map's read lock) with the same values: counters with their last exemplar, gauges,
//! summaries with their quantiles, histograms with their cumulative buckets (the `+Inf`
//! bucket included, though the format makes it optional, so that its exemplar has a place)
//! and each bucket's last exemplar. Help texts are the descriptions as given (no text-format escaping).

use std::sync::{atomic::Ordering, PoisonError};

use prost::Message as _;

use super::{
    exemplar::{Exemplar as Kept, ExemplarSlot},
    format::{parse_label_set, unescape_help},
    histogram::HistogramCell,
    summary::Scratch,
    utf8::{self, Names},
    Cell, Kind, Store,
};
use crate::metrics::proto::{
    client::{
        Bucket, BucketSpan, Counter, Exemplar, Gauge, Histogram, LabelPair, Metric, MetricFamily,
        MetricType, Quantile, Summary,
    },
    Timestamp,
};

impl Store {
    /// Renders the families for which `keep(name)` is true as delimited `MetricFamily`
    /// messages.
    pub(crate) fn render_protobuf(&self, keep: impl Fn(&str) -> bool) -> Vec<u8> {
        self.render_protobuf_names(keep, Names::Legacy)
    }

    /// [`render_protobuf`](Self::render_protobuf) with `names`: with [`Names::Utf8`], the
    /// conventions' families under their own names and attribute keys.
    pub(crate) fn render_protobuf_names(
        &self,
        keep: impl Fn(&str) -> bool,
        names: Names,
    ) -> Vec<u8> {
        let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
        let help = self.help.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::with_capacity(self.last_proto_len.load(Ordering::Relaxed));
        let mut read = Reader::default();
        for (name, family) in families.iter() {
            if family.series.is_empty() || !keep(name) {
                continue;
            }
            let utf8_name = names.family(name);
            read.utf8_labels = utf8_name.is_some();
            let metric = family
                .series
                .iter()
                .filter_map(|(labels, cell)| read.metric(self, &family.kind, labels, cell))
                .collect();
            let message = MetricFamily {
                name: Some(utf8_name.map_or_else(|| name.clone(), str::to_owned)),
                help: help.get(name).map(|h| unescape_help(h)),
                r#type: Some(metric_type(&family.kind) as i32),
                metric,
                unit: None,
            };
            // Encoding into a Vec cannot fail: it grows as needed.
            let _ = message.encode_length_delimited(&mut out);
        }
        self.last_proto_len.store(out.len(), Ordering::Relaxed);
        out
    }
}

fn metric_type(kind: &Kind) -> MetricType {
    match kind {
        Kind::Counter => MetricType::Counter,
        Kind::Gauge => MetricType::Gauge,
        Kind::Summary => MetricType::Summary,
        Kind::Histogram { .. } | Kind::Native { .. } => MetricType::Histogram,
    }
}

/// Buffers reused across the series of one render.
#[derive(Default)]
struct Reader {
    /// Whether label keys are the conventions' attribute keys (a UTF-8 name's family).
    utf8_labels: bool,
    scratch: Scratch,
    quantiles: Vec<f64>,
    buckets: Vec<(f64, u64)>,
}

impl Reader {
    /// One series as a `Metric`; `None` for a histogram cell under another kind (never made).
    fn metric(&mut self, store: &Store, kind: &Kind, labels: &str, cell: &Cell) -> Option<Metric> {
        let label = parse_label_set(labels)
            .into_iter()
            .map(|(name, value)| LabelPair {
                name: Some(match self.utf8_labels {
                    true => utf8::label_key(&name).to_owned(),
                    false => name,
                }),
                value: Some(value),
            })
            .collect();
        let mut metric = Metric {
            label,
            ..Metric::default()
        };
        match (cell, kind) {
            (Cell::Counter(c), _) => {
                metric.counter = Some(Counter {
                    value: Some(c.value.load(Ordering::Relaxed) as f64),
                    exemplar: exemplar(&c.exemplar),
                    created_timestamp: None,
                });
            }
            (Cell::Gauge(g), _) => {
                metric.gauge = Some(Gauge {
                    value: Some(f64::from_bits(g.load(Ordering::Relaxed))),
                });
            }
            (Cell::Summary(s), _) => {
                s.quantiles(
                    &store.settings.quantiles,
                    &store.quantile_order,
                    &mut self.scratch,
                    &mut self.quantiles,
                );
                let totals = s.totals();
                metric.summary = Some(Summary {
                    sample_count: Some(totals.count),
                    sample_sum: Some(totals.sum),
                    quantile: store
                        .settings
                        .quantiles
                        .iter()
                        .zip(&self.quantiles)
                        .map(|(q, v)| Quantile {
                            quantile: Some(*q),
                            value: Some(*v),
                        })
                        .collect(),
                    created_timestamp: None,
                });
            }
            (Cell::Histogram(h), Kind::Histogram { .. }) => {
                let (bucket, count, sum) = self.classic(h);
                metric.histogram = Some(Histogram {
                    sample_count: Some(count),
                    sample_sum: Some(sum),
                    bucket,
                    ..Histogram::default()
                });
            }
            (Cell::Native(n), Kind::Native { .. }) => {
                let native = n.read(&store.settings.native);
                let (positive_span, positive_delta) = spans_and_deltas(&native.positive);
                let (negative_span, negative_delta) = spans_and_deltas(&native.negative);
                let mut histogram = Histogram {
                    sample_count: Some(native.count),
                    sample_sum: Some(native.sum),
                    schema: Some(native.schema),
                    zero_threshold: Some(native.zero_threshold),
                    zero_count: Some(native.zero_count),
                    positive_span,
                    positive_delta,
                    negative_span,
                    negative_delta,
                    exemplars: n.exemplar_slots().filter_map(exemplar).collect(),
                    ..Histogram::default()
                };
                if histogram.positive_span.is_empty() && histogram.negative_span.is_empty() {
                    // An empty native histogram is told from a classic one by a span of no
                    // buckets (as client_golang marks it).
                    histogram.positive_span.push(BucketSpan {
                        offset: Some(0),
                        length: Some(0),
                    });
                }
                if let Some(h) = &n.classic {
                    histogram.bucket = self.classic(h).0;
                }
                metric.histogram = Some(histogram);
            }
            (Cell::Histogram(_) | Cell::Native(_), _) => return None,
        }
        Some(metric)
    }
}

impl Reader {
    /// A classic histogram's cumulative buckets (the `+Inf` one included, with its exemplar),
    /// count and sum.
    fn classic(&mut self, h: &HistogramCell) -> (Vec<Bucket>, u64, f64) {
        let (count, sum) = h.read(&mut self.buckets);
        let bucket = self
            .buckets
            .iter()
            .chain([&(f64::INFINITY, count)])
            .enumerate()
            .map(|(index, (bound, cumulative))| Bucket {
                cumulative_count: Some(*cumulative),
                upper_bound: Some(*bound),
                exemplar: h.exemplars.get(index).and_then(exemplar),
                ..Bucket::default()
            })
            .collect();
        (bucket, count, sum)
    }
}

/// Populated native buckets (`(index, count)`, ascending) as the format's spans (runs of
/// consecutive buckets: the first span's offset is its first index, each next one's the gap
/// since the previous span) and deltas (each count minus the one before it, the first minus
/// zero).
fn spans_and_deltas(buckets: &[(i64, u64)]) -> (Vec<BucketSpan>, Vec<i64>) {
    let mut spans: Vec<BucketSpan> = Vec::new();
    let mut deltas = Vec::with_capacity(buckets.len());
    let (mut last_index, mut last_count) = (None::<i64>, 0_u64);
    for &(index, count) in buckets {
        match last_index {
            Some(last) if index == last + 1 => {
                if let Some(span) = spans.last_mut() {
                    span.length = Some(span.length() + 1);
                }
            }
            _ => spans.push(BucketSpan {
                offset: Some(match last_index {
                    Some(last) => (index - last - 1) as i32,
                    None => index as i32,
                }),
                length: Some(1),
            }),
        }
        deltas.push(count as i64 - last_count as i64);
        (last_index, last_count) = (Some(index), count);
    }
    (spans, deltas)
}

/// A kept exemplar as the format's `Exemplar`: `trace_id` and `span_id` labels, the value,
/// the time.
fn exemplar(slot: &ExemplarSlot) -> Option<Exemplar> {
    let Kept { ids, value, at } = slot.get()?;
    let label = |name: &str, value: String| LabelPair {
        name: Some(name.to_owned()),
        value: Some(value),
    };
    Some(Exemplar {
        label: vec![
            label("trace_id", ids.trace_id.to_string()),
            label("span_id", ids.span_id.to_string()),
        ],
        value: Some(value),
        timestamp: Some(Timestamp::from_unix(at)),
    })
}

#[cfg(test)]
mod tests {
    use metrics::{Key, Label, Level, Metadata, Recorder};
    use opentelemetry::trace::{SpanId, TraceId};
    use prost::Message as _;

    use super::super::{with_exemplar, Settings, SpanIds, Store};
    use crate::metrics::proto::client::{MetricFamily, MetricType};

    static META: Metadata<'static> = Metadata::new("test", Level::INFO, None);

    fn decode(mut bytes: &[u8]) -> Vec<MetricFamily> {
        let mut families = Vec::new();
        while !bytes.is_empty() {
            families.push(MetricFamily::decode_length_delimited(&mut bytes).unwrap());
        }
        families
    }

    #[test]
    fn every_kind_as_metric_family_messages_with_exemplars() {
        let store = Store::new(Settings {
            quantiles: vec![0.5, 0.9],
            suffix_buckets: Some(("_seconds".into(), vec![0.1, 1.0])),
            ..Settings::default()
        });
        store.describe("req_total", "Requests.\nAll of them.");
        let key = |name: &'static str| Key::from_parts(name, vec![Label::new("op", "a\"b")]);
        let ids = SpanIds {
            trace_id: TraceId::from(7),
            span_id: SpanId::from(9),
        };
        let total = store.register_counter(&key("req_total"), &META);
        let h = store.register_histogram(&key("d_seconds"), &META);
        with_exemplar(Some(ids), || {
            total.increment(3);
            h.record(0.5);
        });
        h.record(5.0);
        store.register_gauge(&key("g"), &META).set(-2.5);
        store.register_histogram(&key("s"), &META).record(4.0);

        let families = decode(&store.render_protobuf(|_| true));
        let names: Vec<_> = families.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["d_seconds", "g", "req_total", "s"]);
        let by = |name: &str| families.iter().find(|f| f.name() == name).unwrap();

        let counter = by("req_total");
        assert_eq!(counter.r#type(), MetricType::Counter);
        assert_eq!(counter.help(), "Requests.\nAll of them.");
        let metric = &counter.metric[0];
        assert_eq!(
            (metric.label[0].name(), metric.label[0].value()),
            ("op", "a\"b")
        );
        let c = metric.counter.as_ref().unwrap();
        assert_eq!(c.value(), 3.0);
        let e = c.exemplar.as_ref().unwrap();
        let labels: Vec<_> = e.label.iter().map(|l| (l.name(), l.value())).collect();
        assert_eq!(
            labels,
            [
                ("trace_id", "00000000000000000000000000000007"),
                ("span_id", "0000000000000009")
            ]
        );
        assert_eq!(e.value(), 3.0);
        assert!(e.timestamp.unwrap().seconds > 1_700_000_000);

        let hist = by("d_seconds").metric[0].histogram.as_ref().unwrap();
        assert_eq!((hist.sample_count(), hist.sample_sum()), (2, 5.5));
        let buckets: Vec<_> = hist
            .bucket
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count(), b.exemplar.is_some()))
            .collect();
        assert_eq!(
            buckets,
            [(0.1, 0, false), (1.0, 1, true), (f64::INFINITY, 2, false)]
        );
        assert_eq!(by("g").metric[0].gauge.unwrap().value(), -2.5);
        let summary = by("s").metric[0].summary.as_ref().unwrap();
        assert_eq!(by("s").r#type(), MetricType::Summary);
        assert_eq!((summary.sample_count(), summary.sample_sum()), (1, 4.0));
        let quantiles: Vec<_> = summary.quantile.iter().map(|q| q.quantile()).collect();
        assert_eq!(quantiles, [0.5, 0.9]);
        // Filtered like the text render.
        assert_eq!(decode(&store.render_protobuf(|f| f == "g")).len(), 1);
    }

    #[test]
    fn a_native_histogram_as_spans_and_deltas_beside_its_classic_buckets() {
        use super::super::HistogramMode;
        use crate::metrics::proto::client::BucketSpan;

        let span = |offset, length| BucketSpan {
            offset: Some(offset),
            length: Some(length),
        };
        for mode in [HistogramMode::Native, HistogramMode::Both] {
            let store = Store::new(Settings {
                histogram: mode,
                suffix_buckets: (mode == HistogramMode::Both)
                    .then(|| ("_seconds".into(), vec![1.0, 2.0])),
                ..Settings::default()
            });
            let empty = store.register_histogram(&Key::from_name("idle_seconds"), &META);
            let h = store.register_histogram(&Key::from_name("d_seconds"), &META);
            let ids = SpanIds {
                trace_id: TraceId::from(7),
                span_id: SpanId::from(9),
            };
            with_exemplar(Some(ids), || h.record(1.2));
            for v in [0.0, 1.0, 1.05, 3.0, -0.25] {
                h.record(v);
            }
            drop(empty);

            let families = decode(&store.render_protobuf(|_| true));
            let hist = families[0].metric[0].histogram.as_ref().unwrap();
            assert_eq!(families[0].r#type(), MetricType::Histogram, "{mode:?}");
            assert_eq!((hist.sample_count(), hist.schema()), (6, 3));
            assert_eq!(
                (hist.zero_count(), hist.zero_threshold()),
                (1, 2f64.powi(-128))
            );
            // Buckets 0, 1, 3 and 13 of schema 3: (2^(-1/8), 1], (1, 2^(1/8)], ...
            assert_eq!(hist.positive_span, [span(0, 2), span(1, 1), span(9, 1)]);
            assert_eq!(hist.positive_delta, [1, 0, 0, 0]);
            assert_eq!(hist.negative_span, [span(-16, 1)]);
            assert_eq!(hist.negative_delta, [1]);
            assert_eq!(hist.exemplars.len(), 1, "the exemplar of 1.2 with its ids");
            assert_eq!(hist.exemplars[0].value(), 1.2);
            let classic: Vec<_> = hist.bucket.iter().map(|b| b.cumulative_count()).collect();
            match mode {
                HistogramMode::Both => assert_eq!(classic, [3, 5, 6]),
                _ => assert!(classic.is_empty()),
            }
            // An empty native histogram is marked by a span of no buckets.
            let idle = families[1].metric[0].histogram.as_ref().unwrap();
            assert_eq!((idle.sample_count(), idle.schema()), (0, 3));
            assert_eq!(idle.positive_span, [span(0, 0)]);
        }
    }

    #[test]
    fn utf8_names_are_carried_as_they_are() {
        use super::super::Names;

        let store = Store::new(Settings::default());
        let key = Key::from_parts(
            "http_server_request_duration_seconds",
            vec![
                Label::new("http_request_method", "GET"),
                Label::new("other", "x"),
            ],
        );
        store.register_histogram(&key, &META).record(0.1);
        let utf8 = decode(&store.render_protobuf_names(|_| true, Names::Utf8));
        assert_eq!(utf8[0].name(), "http.server.request.duration");
        let labels: Vec<_> = utf8[0].metric[0].label.iter().map(|l| l.name()).collect();
        assert_eq!(labels, ["http.request.method", "other"]);
        let legacy = decode(&store.render_protobuf(|_| true));
        assert_eq!(legacy[0].name(), "http_server_request_duration_seconds");
        assert_eq!(legacy[0].metric[0].label[0].name(), "http_request_method");
    }
}
