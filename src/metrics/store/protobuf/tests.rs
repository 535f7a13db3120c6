use metrics::{Key, Label, Level, Metadata, Recorder};
use opentelemetry::trace::{SpanId, TraceId};
use prost::Message as _;

use super::super::{with_exemplar, Settings, SpanIds, Store};
use crate::metrics::proto::client::{MetricFamily, MetricType};

static META: Metadata<'static> = Metadata::new("test", Level::INFO, None);

/// The answer decoded by the messages generated from Prometheus' `metrics.proto`; each
/// message encoded again by them must give back its bytes (the same fields, in field order,
/// with the same encodings: nothing the generated code would write otherwise).
fn decode(mut bytes: &[u8]) -> Vec<MetricFamily> {
    let mut families = Vec::new();
    while !bytes.is_empty() {
        let before = bytes;
        let family = MetricFamily::decode_length_delimited(&mut bytes).unwrap();
        let written = &before[..before.len() - bytes.len()];
        assert_eq!(
            family.encode_length_delimited_to_vec(),
            written,
            "{}",
            family.name()
        );
        families.push(family);
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

#[test]
fn long_messages_escaped_values_and_exemplar_times() {
    let store = Store::new(Settings {
        suffix_buckets: Some(("_seconds".into(), vec![0.5])),
        ..Settings::default()
    });
    // Values that take a length prefix of one, two and three bytes, and every escape.
    let values = ["short".to_owned(), "v".repeat(200), "w".repeat(20_000)];
    let escaped = "back\\slash \"quote\"\nline";
    for value in values.iter().map(String::as_str).chain([escaped]) {
        let key = Key::from_parts("c_total", vec![Label::new("v", value.to_owned())]);
        store.register_counter(&key, &META).increment(1);
    }
    // Enough series for the family's own length to take three bytes.
    for i in 0..3_000 {
        let key = Key::from_parts("many_total", vec![Label::new("i", i.to_string())]);
        store.register_counter(&key, &META).increment(i);
    }
    let ids = SpanIds {
        trace_id: TraceId::from(0xabcdef_u128 << 64 | 0x0123),
        span_id: SpanId::from(u64::MAX),
    };
    let h = store.register_histogram(&Key::from_name("d_seconds"), &META);
    with_exemplar(Some(ids), || h.record(0.25));

    let families = decode(&store.render_protobuf(|_| true));
    let by = |name: &str| families.iter().find(|f| f.name() == name).unwrap();
    let mut got: Vec<_> = by("c_total")
        .metric
        .iter()
        .map(|m| m.label[0].value().to_owned())
        .collect();
    let mut want: Vec<_> = values.to_vec();
    want.push(escaped.to_owned());
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(by("many_total").metric.len(), 3_000);
    let total: f64 = by("many_total")
        .metric
        .iter()
        .map(|m| m.counter.as_ref().unwrap().value())
        .sum();
    assert_eq!(total, (0..3_000).sum::<u64>() as f64);

    let bucket = &by("d_seconds").metric[0].histogram.as_ref().unwrap().bucket[0];
    let exemplar = bucket.exemplar.as_ref().unwrap();
    let labels: Vec<_> = exemplar
        .label
        .iter()
        .map(|l| (l.name(), l.value()))
        .collect();
    assert_eq!(
        labels,
        [
            ("trace_id", "0000000000abcdef0000000000000123"),
            ("span_id", "ffffffffffffffff")
        ]
    );
    assert_eq!(exemplar.value(), 0.25);
    let at = exemplar.timestamp.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    assert!((now.as_secs() as i64 - at.seconds).abs() < 60);
    assert!((0..1_000_000_000).contains(&at.nanos));
}
