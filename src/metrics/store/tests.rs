use metrics::{Key, Label, Level, Metadata, Recorder};

use super::{with_exemplar, Format, Settings, SpanIds, Store};

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
        store.render(|_| true, Format::Text),
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
        store
            .render(|name| name == "b_total", Format::Text)
            .lines()
            .count(),
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
        ..Settings::default()
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
    let text = store.render(|_| true, Format::Text);
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
        store.render(|_| true, Format::Text),
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
    assert_eq!(
        store.render(|_| true, Format::Text),
        "# TYPE x counter\nx 1\n\n"
    );
}

#[test]
fn hostile_label_values_stay_inside_their_quotes() {
    let store = summaries();
    store
        .register_counter(&key("t", &[("op", "a\"} 1\nevil 2")]), &META)
        .increment(1);
    assert_eq!(
        store.render(|_| true, Format::Text),
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
    let text = store.render(|_| true, Format::Text);
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

fn ids(span: u64) -> SpanIds {
    use opentelemetry::trace::{SpanId, TraceId};
    SpanIds {
        trace_id: TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128),
        span_id: SpanId::from(span),
    }
}

/// The rendering with the exemplar timestamps (the last field of a `# {...} v ts` tail) cut.
fn without_timestamps(text: &str) -> String {
    text.lines()
        .map(|line| match line.split_once(" # {") {
            Some((sample, exemplar)) => {
                let (head, _ts) = exemplar.rsplit_once(' ').unwrap();
                format!("{sample} # {{{head} TS")
            }
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn openmetrics_declares_counters_without_total_keeps_names_and_ends_with_eof() {
    let store = Store::new(Settings {
        quantiles: vec![0.5],
        suffix_buckets: Some(("_seconds".into(), vec![0.1, 1.0])),
        ..Settings::default()
    });
    store.describe("req_total", "Requests, \"all\" of them.");
    store
        .register_counter(&key("req_total", &[("code", "200")]), &META)
        .increment(3);
    store.register_counter(&key("odd", &[]), &META).increment(1);
    store
        .register_gauge(&key("project_total", &[]), &META)
        .set(2.0);
    let h = store.register_histogram(&key("d_seconds", &[]), &META);
    h.record(0.05);
    h.record(5.0);
    let text = store.render(|_| true, Format::OpenMetrics);
    assert_eq!(
        text,
        "# TYPE d_seconds histogram\n\
         d_seconds_bucket{le=\"0.1\"} 1\n\
         d_seconds_bucket{le=\"1\"} 1\n\
         d_seconds_bucket{le=\"+Inf\"} 2\n\
         d_seconds_sum 5.05\n\
         d_seconds_count 2\n\
         # TYPE odd unknown\n\
         odd 1\n\
         # TYPE project_total gauge\n\
         project_total 2\n\
         # HELP req Requests, \\\"all\\\" of them.\n\
         # TYPE req counter\n\
         req_total{code=\"200\"} 3\n\
         # EOF\n"
    );
    assert!(!text.contains(" # {"), "no exemplar was recorded");
}

#[test]
fn exemplars_are_the_last_sampled_observation_of_each_bucket_and_counter() {
    let store = Store::new(Settings {
        quantiles: vec![0.5],
        suffix_buckets: Some(("_seconds".into(), vec![0.1, 1.0])),
        ..Settings::default()
    });
    let total = store.register_counter(&key("req_total", &[]), &META);
    let h = store.register_histogram(&key("d_seconds", &[]), &META);
    let s = store.register_histogram(&key("q", &[]), &META);
    with_exemplar(Some(ids(1)), || {
        total.increment(1);
        h.record(0.05);
        s.record(0.05);
    });
    with_exemplar(Some(ids(2)), || h.record(0.07));
    with_exemplar(Some(ids(3)), || h.record(7.0));
    // Not sampled: counted, no exemplar.
    with_exemplar(None, || {
        total.increment(1);
        h.record(0.5);
    });
    let text = without_timestamps(&store.render(|_| true, Format::OpenMetrics));
    let tid = "4bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(
        text,
        format!(
            "# TYPE d_seconds histogram\n\
             d_seconds_bucket{{le=\"0.1\"}} 2 # {{trace_id=\"{tid}\",span_id=\"0000000000000002\"}} 0.07 TS\n\
             d_seconds_bucket{{le=\"1\"}} 3\n\
             d_seconds_bucket{{le=\"+Inf\"}} 4 # {{trace_id=\"{tid}\",span_id=\"0000000000000003\"}} 7 TS\n\
             d_seconds_sum 7.62\n\
             d_seconds_count 4\n\
             # TYPE q summary\n\
             q{{quantile=\"0.5\"}} 0.05\n\
             q_sum 0.05\n\
             q_count 1\n\
             # TYPE req counter\n\
             req_total 2 # {{trace_id=\"{tid}\",span_id=\"0000000000000001\"}} 1 TS\n\
             # EOF"
        )
    );
    assert!(
        !store.render(|_| true, Format::Text).contains(" # {"),
        "no exemplars in 0.0.4"
    );
    let rendered = store.render(|_| true, Format::OpenMetrics);
    let ts: f64 = rendered
        .lines()
        .find(|l| l.starts_with("req_total"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - ts).abs() < 60.0, "a Unix timestamp in seconds: {ts}");
}

#[test]
fn with_exemplars_off_the_cells_keep_none() {
    let store = Store::new(Settings {
        quantiles: vec![0.5],
        suffix_buckets: Some(("_seconds".into(), vec![0.1])),
        no_exemplars: true,
        ..Settings::default()
    });
    let total = store.register_counter(&key("req_total", &[]), &META);
    let h = store.register_histogram(&key("d_seconds", &[]), &META);
    with_exemplar(Some(ids(1)), || {
        total.increment(1);
        h.record(0.05);
    });
    let text = store.render(|_| true, Format::OpenMetrics);
    assert!(
        text.contains("req_total 1\n") && text.contains("d_seconds_count 1\n"),
        "{text}"
    );
    assert!(!text.contains(" # {"), "{text}");
}

#[test]
fn native_histograms_show_their_count_in_the_text_formats_and_classic_buckets_with_both() {
    use super::HistogramMode;

    let native = Store::new(Settings {
        histogram: HistogramMode::Native,
        ..Settings::default()
    });
    let h = native.register_histogram(&key("d_seconds", &[("op", "a")]), &META);
    h.record(0.25);
    h.record(3.0);
    assert_eq!(
        native.render(|_| true, Format::Text),
        "# TYPE d_seconds histogram\n\
         d_seconds_bucket{op=\"a\",le=\"+Inf\"} 2\n\
         d_seconds_sum{op=\"a\"} 3.25\n\
         d_seconds_count{op=\"a\"} 2\n\n"
    );
    let both = Store::new(Settings {
        histogram: HistogramMode::Both,
        ..Settings::default()
    });
    let h = both.register_histogram(&key("d_seconds", &[]), &META);
    h.record(0.25);
    let text = both.render(|_| true, Format::Text);
    assert!(
        text.contains("d_seconds_bucket{le=\"0.1\"} 0\nd_seconds_bucket{le=\"0.25\"} 1\n"),
        "Prometheus' default buckets when none are configured:\n{text}"
    );
    assert!(text.contains("d_seconds_count 1\n"), "{text}");
}

#[test]
fn utf8_names_are_the_conventions_own_quoted_and_other_families_keep_theirs() {
    use super::{HistogramMode, Names};

    let store = Store::new(Settings {
        histogram: HistogramMode::Both,
        ..Settings::default()
    });
    store.describe(
        "http_server_request_duration_seconds",
        "Duration of HTTP server requests.",
    );
    store
        .register_histogram(
            &key(
                "http_server_request_duration_seconds",
                &[
                    ("http_request_method", "GET"),
                    ("http_response_status_code", "200"),
                ],
            ),
            &META,
        )
        .record(0.003);
    store
        .register_gauge(
            &key("http_server_active_requests", &[("url_scheme", "http")]),
            &META,
        )
        .set(1.0);
    store
        .register_counter(&key("app_jobs_total", &[("queue", "q")]), &META)
        .increment(1);
    let om = store.render_names(|_| true, Format::OpenMetrics, Names::Utf8);
    for expected in [
        "# HELP \"http.server.request.duration\" Duration of HTTP server requests.\n",
        "# TYPE \"http.server.request.duration\" histogram\n",
        "{\"http.server.request.duration_bucket\",\"http.request.method\"=\"GET\",\"http.response.status_code\"=\"200\",le=\"0.005\"} 1\n",
        "{\"http.server.request.duration_count\",\"http.request.method\"=\"GET\",\"http.response.status_code\"=\"200\"} 1\n",
        "# TYPE \"http.server.active_requests\" gauge\n{\"http.server.active_requests\",\"url.scheme\"=\"http\"} 1\n",
        "# TYPE app_jobs counter\napp_jobs_total{queue=\"q\"} 1\n",
    ] {
        assert!(om.contains(expected), "{expected}\nnot in\n{om}");
    }
    // Legacy names are today's, whatever the store holds.
    let legacy = store.render(|_| true, Format::OpenMetrics);
    assert!(
        legacy.contains("http_server_request_duration_seconds_count{http_request_method=\"GET\"")
    );
    assert!(!legacy.contains("http.server"), "{legacy}");
}
