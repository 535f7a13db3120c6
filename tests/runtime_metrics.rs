//! Build info, process and tokio runtime metrics: present right after start, plausible,
//! collected on the interval until the handle drops, and accepted by `promtool check metrics`.

mod support;

use support::sample;
use towerscope::{
    config::MetricConfig,
    metrics::{
        runtime::{self, BuildInfoError},
        MetricsRegistry,
    },
};

fn registry() -> MetricsRegistry {
    MetricsRegistry::new(&MetricConfig::default()).unwrap()
}

#[test]
fn build_info_is_one_with_its_labels() {
    let registry = registry();
    runtime::build_info(
        &registry,
        "harbor_",
        "v2.11.0-1a2b3c4d",
        &[("git_commit", "1a2b3c4d"), ("rustc", "1.85.0")],
    )
    .unwrap();
    let text = registry.render_components(&["runtime"]).unwrap();
    assert_eq!(
        sample(
            &text,
            r#"harbor_build_info{version="v2.11.0-1a2b3c4d",git_commit="1a2b3c4d",rustc="1.85.0"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains("# TYPE harbor_build_info gauge"));
    assert!(text.contains("# HELP harbor_build_info "));
}

#[test]
fn build_info_refuses_bad_and_duplicate_label_names() {
    let registry = registry();
    for (name, err) in [
        (
            "git-commit",
            BuildInfoError::InvalidLabelName("git-commit".into()),
        ),
        (
            "__name__",
            BuildInfoError::InvalidLabelName("__name__".into()),
        ),
        ("1st", BuildInfoError::InvalidLabelName("1st".into())),
        ("", BuildInfoError::InvalidLabelName("".into())),
        ("version", BuildInfoError::DuplicateLabel("version".into())),
    ] {
        assert_eq!(
            runtime::build_info(&registry, "", "1", &[(name, "x")]),
            Err(err)
        );
    }
    assert_eq!(
        runtime::build_info(&registry, "", "1", &[("a", "x"), ("a", "y")]),
        Err(BuildInfoError::DuplicateLabel("a".into()))
    );
    assert!(!registry.render().contains("build_info"));
}

#[cfg(feature = "process")]
mod process {
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use towerscope::metrics::runtime::RuntimeMetrics;

    use super::*;

    fn value(text: &str, series: &str) -> f64 {
        sample(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
    }

    fn now_secs() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scrape_right_after_start_has_plausible_process_and_tokio_values() {
        let registry = registry();
        let _metrics = RuntimeMetrics::start(&registry, Duration::from_secs(3600)).unwrap();
        let text = registry.render();

        assert!(value(&text, "process_resident_memory_bytes") > 0.0);
        assert!(
            value(&text, "process_virtual_memory_bytes")
                >= value(&text, "process_resident_memory_bytes")
        );
        let open = value(&text, "process_open_fds");
        assert!(open >= 1.0, "{open}");
        assert!(value(&text, "process_max_fds") >= open);
        let start = value(&text, "process_start_time_seconds");
        assert!(
            start <= now_secs() + 1.0 && start > now_secs() - 86_400.0,
            "{start}"
        );
        assert!(value(&text, "process_threads") >= 3.0); // main, 2 workers, ...
        assert!(value(&text, "process_cpu_seconds_total") >= 0.0);

        assert_eq!(value(&text, "tokio_workers"), 2.0);
        assert!(value(&text, "tokio_alive_tasks") >= 0.0);
        assert!(value(&text, "tokio_global_queue_depth") >= 0.0);
        assert!(value(&text, "tokio_worker_park_total") >= 0.0);
        // A ratio needs two samples.
        assert_eq!(sample(&text, "tokio_workers_busy_ratio"), None);

        for (family, kind) in [
            ("process_cpu_seconds_total", "counter"),
            ("process_resident_memory_bytes", "gauge"),
            ("process_virtual_memory_bytes", "gauge"),
            ("process_open_fds", "gauge"),
            ("process_max_fds", "gauge"),
            ("process_start_time_seconds", "gauge"),
            ("process_threads", "gauge"),
            ("tokio_workers", "gauge"),
            ("tokio_alive_tasks", "gauge"),
            ("tokio_global_queue_depth", "gauge"),
            ("tokio_worker_park_total", "counter"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} {kind}\n")),
                "{family}"
            );
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
        }

        let process = registry.render_components(&["process"]).unwrap();
        assert!(process.contains("process_open_fds "));
        assert!(!process.contains("tokio_"));
        let tokio = registry.render_components(&["runtime"]).unwrap();
        assert!(tokio.contains("tokio_workers 2"));
        assert!(!tokio.contains("process_"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn collect_sees_new_tasks_and_the_busy_ratio() {
        let registry = registry();
        let metrics = RuntimeMetrics::start(&registry, Duration::from_secs(3600)).unwrap();
        let before = value(&registry.render(), "tokio_alive_tasks");
        let (tx, _) = tokio::sync::broadcast::channel::<()>(1);
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let mut rx = tx.subscribe();
                tokio::spawn(async move {
                    let _ = rx.recv().await;
                })
            })
            .collect();
        metrics.collect();
        let text = registry.render();
        assert!(value(&text, "tokio_alive_tasks") >= before + 50.0, "{text}");
        let ratio = value(&text, "tokio_workers_busy_ratio");
        assert!((0.0..=1.0).contains(&ratio), "{ratio}");
        drop(tx);
        for task in tasks {
            task.await.unwrap();
        }
    }

    /// Waits up to `limit` for `tokio_alive_tasks` to satisfy `f`.
    async fn alive_tasks_until(
        registry: &MetricsRegistry,
        limit: Duration,
        f: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + limit;
        loop {
            let alive = value(&registry.render(), "tokio_alive_tasks");
            if f(alive) || Instant::now() > deadline {
                return alive;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn collects_on_the_interval_until_dropped() {
        let registry = registry();
        let metrics = RuntimeMetrics::start(&registry, Duration::from_millis(100)).unwrap();
        let before = value(&registry.render(), "tokio_alive_tasks");

        let (tx, _) = tokio::sync::broadcast::channel::<()>(1);
        let spawn_waiting = |n: usize| -> Vec<_> {
            (0..n)
                .map(|_| {
                    let mut rx = tx.subscribe();
                    tokio::spawn(async move {
                        let _ = rx.recv().await;
                    })
                })
                .collect()
        };
        let mut tasks = spawn_waiting(40);
        let seen =
            alive_tasks_until(&registry, Duration::from_secs(10), |a| a >= before + 40.0).await;
        assert!(
            seen >= before + 40.0,
            "the collector thread never ran: {seen}"
        );

        drop(metrics);
        // Let a collection that was under way when the handle dropped finish.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after_drop = value(&registry.render(), "tokio_alive_tasks");
        tasks.extend(spawn_waiting(40));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(value(&registry.render(), "tokio_alive_tasks"), after_drop);

        drop(tx);
        for task in tasks {
            task.await.unwrap();
        }
    }

    #[test]
    fn outside_a_runtime_only_process_metrics_are_collected() {
        let registry = registry();
        let _metrics = RuntimeMetrics::start(&registry, Duration::from_secs(3600)).unwrap();
        let text = registry.render();
        assert!(value(&text, "process_resident_memory_bytes") > 0.0);
        assert!(!text.contains("tokio_"), "{text}");
        assert_eq!(registry.components(), ["process"]);
    }

    #[tokio::test]
    async fn promtool_accepts_the_runtime_exposition() {
        let Some(promtool) = support::promtool() else {
            return;
        };
        let registry = registry();
        runtime::build_info(
            &registry,
            "harbor_",
            "v2.11.0",
            &[("git_commit", "1a2b3c4d")],
        )
        .unwrap();
        let metrics = RuntimeMetrics::start(&registry, Duration::from_secs(3600)).unwrap();
        metrics.collect(); // the busy ratio too
        let text = registry.render();
        assert!(text.contains("tokio_workers_busy_ratio "), "{text}");
        support::promtool_check_metrics(&promtool, &text);
    }
}

#[test]
fn promtool_accepts_the_build_info() {
    let Some(promtool) = support::promtool() else {
        return;
    };
    let registry = registry();
    runtime::build_info(
        &registry,
        "harbor_",
        "v2.11.0",
        &[("git_commit", "1a2b3c4d")],
    )
    .unwrap();
    support::promtool_check_metrics(&promtool, &registry.render());
}
