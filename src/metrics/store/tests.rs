use metrics::{Key, Label, Level, Metadata, Recorder};

use super::{Settings, Store};

static META: Metadata<'static> = Metadata::new("test", Level::INFO, None);

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    Key::from_parts(
        name,
        labels
            .iter()
            .map(|(k, v)| Label::new(*k, *v))
            .collect::<Vec<_>>(),
    )
}

fn summaries() -> Store {
    Store::new(Settings {
        quantiles: vec![0.5, 0.99],
        ..Settings::default()
    })
}

#[test]
fn renders_families_by_name_and_series_by_labels() {
    let store = summaries();
    store.describe("b_total", "Bees.\nMany.");
    store
        .register_counter(&key("b_total", &[("x", "2")]), &META)
        .increment(2);
    store
        .register_counter(&key("b_total", &[("x", "1")]), &META)
        .increment(1);
    store
        .register_gauge(&key("a_inflight", &[]), &META)
        .set(-1.5);
    let h = store.register_histogram(&key("c_seconds", &[("op", "z")]), &META);
    h.record(0.25);
    assert_eq!(
        store.render(|_| true),
        "\
# TYPE a_inflight gauge
a_inflight -1.5

# HELP b_total Bees.\\nMany.
# TYPE b_total counter
b_total{x=\"1\"} 1
b_total{x=\"2\"} 2

# TYPE c_seconds summary
c_seconds{op=\"z\",quantile=\"0.5\"} 0.25
c_seconds{op=\"z\",quantile=\"0.99\"} 0.25
c_seconds_sum{op=\"z\"} 0.25
c_seconds_count{op=\"z\"} 1

"
    );
    assert_eq!(
        store.render(|name| name == "b_total").lines().count(),
        5,
        "the filter keeps one family"
    );
}

#[test]
fn histograms_by_suffix_and_by_full_name() {
    let store = Store::new(Settings {
        quantiles: vec![0.5],
        suffix_buckets: Some(("_seconds".into(), vec![0.1, 1.0])),
        family_buckets: [("own_seconds".to_owned(), vec![5.0])].into(),
    });
    store
        .register_histogram(&key("req_seconds", &[]), &META)
        .record(0.5);
    store
        .register_histogram(&key("own_seconds", &[]), &META)
        .record(0.5);
    store
        .register_histogram(&key("size_bytes", &[]), &META)
        .record(10.0);
    let text = store.render(|_| true);
    assert!(text.contains(
        "# TYPE req_seconds histogram\nreq_seconds_bucket{le=\"0.1\"} 0\nreq_seconds_bucket{le=\"1\"} 1\nreq_seconds_bucket{le=\"+Inf\"} 1\nreq_seconds_sum 0.5\nreq_seconds_count 1\n"
    ), "{text}");
    assert!(text.contains("own_seconds_bucket{le=\"5\"} 1\n"), "{text}");
    assert!(text.contains("# TYPE size_bytes summary\n"), "{text}");
}

#[test]
fn the_same_key_shares_one_series_and_names_are_sanitized() {
    let store = summaries();
    store
        .register_counter(&key("a.total", &[]), &META)
        .increment(1);
    store
        .register_counter(&key("a.total", &[]), &META)
        .increment(1);
    store
        .register_counter(&key("a_total", &[]), &META)
        .increment(1);
    assert_eq!(
        store.render(|_| true),
        "# TYPE a_total counter\na_total 3\n\n"
    );
    assert_eq!(store.stats().series, 1);
}

#[test]
fn another_type_under_a_family_name_is_dropped_not_mixed() {
    let store = summaries();
    store.register_counter(&key("x", &[]), &META).increment(1);
    store
        .register_gauge(&key("x", &[("a", "b")]), &META)
        .set(5.0);
    store.register_histogram(&key("x", &[]), &META).record(1.0);
    assert_eq!(store.render(|_| true), "# TYPE x counter\nx 1\n\n");
}

#[test]
fn hostile_label_values_stay_inside_their_quotes() {
    let store = summaries();
    store
        .register_counter(&key("t", &[("op", "a\"} 1\nevil 2")]), &META)
        .increment(1);
    assert_eq!(
        store.render(|_| true),
        "# TYPE t counter\nt{op=\"a\\\"} 1\\nevil 2\"} 1\n\n"
    );
}

#[test]
fn rotation_moves_every_summary_window() {
    let store = summaries();
    let h = store.register_histogram(&key("d_seconds", &[]), &META);
    h.record(2.0);
    for _ in 0..super::SLOTS {
        store.rotate();
    }
    h.record(1.0);
    let text = store.render(|_| true);
    assert!(text.contains("d_seconds{quantile=\"0.99\"} 1\n"), "{text}");
    assert!(text.contains("d_seconds_count 2\n"), "{text}");
}

#[test]
fn stats_count_series_and_their_bytes() {
    let store = summaries();
    for op in ["a", "b", "c"] {
        store
            .register_histogram(&key("d_seconds", &[("op", op)]), &META)
            .record(0.01);
    }
    let stats = store.stats();
    assert_eq!((stats.families, stats.series), (1, 3));
    assert!(
        stats.bytes > 3 * 1000,
        "a summary holds its page table: {stats:?}"
    );
}
