//! [`Store::snapshot`]: every series' current value as data, for exporters that are not the
//! Prometheus text (OTLP metrics push).

use std::sync::{atomic::Ordering, Arc, PoisonError};

pub(crate) use super::native::NativeSnapshot;
use super::{
    format::{parse_label_set, unescape_help},
    summary::Scratch,
    Cell, Kind, Store,
};

/// One family: its name, help text and series.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FamilySnapshot {
    pub(crate) name: String,
    /// The description given with `describe_*`, unescaped.
    pub(crate) help: Option<String>,
    pub(crate) series: Vec<SeriesSnapshot>,
}

/// One series: its labels in their order and its value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SeriesSnapshot {
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) value: ValueSnapshot,
}

/// A series' value, since the start of the process.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ValueSnapshot {
    Counter(u64),
    Gauge(f64),
    Histogram {
        bounds: Arc<[f64]>,
        /// Per bucket (not cumulative), one more than `bounds`: the last counts values above
        /// every bound.
        counts: Vec<u64>,
        count: u64,
        sum: f64,
    },
    /// A native histogram (with or without classic buckets beside it): an OTLP exponential
    /// histogram.
    Exponential(NativeSnapshot),
    /// The quantiles over the sliding window; `count` and `sum` since the start.
    Summary {
        quantiles: Vec<(f64, f64)>,
        count: u64,
        sum: f64,
    },
}

impl Store {
    /// Reads every series whose family `keep` accepts, families by name and series by label
    /// set, as the render does (it holds the family map's read lock for the walk).
    pub(crate) fn snapshot(&self, keep: impl Fn(&str) -> bool) -> Vec<FamilySnapshot> {
        let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
        let help = self.help.read().unwrap_or_else(PoisonError::into_inner);
        let mut scratch = Scratch::default();
        let mut quantiles = Vec::new();
        let mut buckets = Vec::new();
        let mut out = Vec::with_capacity(families.len());
        for (name, family) in families.iter() {
            if family.series.is_empty() || !keep(name) {
                continue;
            }
            let mut series = Vec::with_capacity(family.series.len());
            for (labels, cell) in &family.series {
                let value = match (cell, &family.kind) {
                    (Cell::Counter(c), _) => {
                        ValueSnapshot::Counter(c.value.load(Ordering::Relaxed))
                    }
                    (Cell::Gauge(g), _) => {
                        ValueSnapshot::Gauge(f64::from_bits(g.load(Ordering::Relaxed)))
                    }
                    (Cell::Summary(s), _) => {
                        s.quantiles(
                            &self.settings.quantiles,
                            &self.quantile_order,
                            &mut scratch,
                            &mut quantiles,
                        );
                        let totals = s.totals();
                        ValueSnapshot::Summary {
                            quantiles: self
                                .settings
                                .quantiles
                                .iter()
                                .copied()
                                .zip(quantiles.iter().copied())
                                .collect(),
                            count: totals.count,
                            sum: totals.sum,
                        }
                    }
                    (Cell::Histogram(h), Kind::Histogram { bounds, .. }) => {
                        let (count, sum) = h.read(&mut buckets);
                        let mut counts = Vec::with_capacity(buckets.len() + 1);
                        let mut below = 0;
                        for (_, cumulative) in &buckets {
                            counts.push(cumulative - below);
                            below = *cumulative;
                        }
                        counts.push(count - below);
                        ValueSnapshot::Histogram {
                            bounds: bounds.clone(),
                            counts,
                            count,
                            sum,
                        }
                    }
                    (Cell::Native(n), Kind::Native { .. }) => {
                        ValueSnapshot::Exponential(n.read(&self.settings.native))
                    }
                    // A histogram cell is only ever created under its kind.
                    (Cell::Histogram(_) | Cell::Native(_), _) => continue,
                };
                series.push(SeriesSnapshot {
                    labels: parse_label_set(labels),
                    value,
                });
            }
            out.push(FamilySnapshot {
                name: name.clone(),
                help: help.get(name).map(|h| unescape_help(h)),
                series,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::store::Settings;
    use metrics::{Key, Label, Recorder};

    #[test]
    fn a_snapshot_reads_every_kind() {
        let store = Store::new(Settings {
            quantiles: vec![0.5, 0.99],
            family_buckets: [("h_seconds".to_owned(), vec![0.1, 1.0])].into(),
            ..Settings::default()
        });
        let meta = metrics::Metadata::new("t", metrics::Level::INFO, None);
        let key = |name: &'static str| Key::from_parts(name, vec![Label::new("k", "v\"1")]);
        store.describe_counter("c_total".into(), None, "Line one\nline two".into());
        store.register_counter(&key("c_total"), &meta).increment(3);
        store.register_gauge(&key("g"), &meta).set(-2.5);
        let h = store.register_histogram(&key("h_seconds"), &meta);
        for v in [0.05, 0.5, 0.7, 5.0] {
            h.record(v);
        }
        store
            .register_histogram(&key("s_seconds"), &meta)
            .record(0.25);
        let snapshot = store.snapshot(|_| true);
        let names: Vec<&str> = snapshot.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["c_total", "g", "h_seconds", "s_seconds"]);
        assert_eq!(snapshot[0].help.as_deref(), Some("Line one\nline two"));
        assert_eq!(
            snapshot[0].series[0].labels,
            [("k".to_owned(), "v\"1".to_owned())]
        );
        assert_eq!(snapshot[0].series[0].value, ValueSnapshot::Counter(3));
        assert_eq!(snapshot[1].series[0].value, ValueSnapshot::Gauge(-2.5));
        match &snapshot[2].series[0].value {
            ValueSnapshot::Histogram {
                bounds,
                counts,
                count,
                sum,
            } => {
                assert_eq!(&**bounds, [0.1, 1.0]);
                assert_eq!(counts, &[1, 2, 1]);
                assert_eq!((*count, *sum), (4, 6.25));
            }
            other => panic!("{other:?}"),
        }
        match &snapshot[3].series[0].value {
            ValueSnapshot::Summary {
                quantiles,
                count,
                sum,
            } => {
                assert_eq!((*count, *sum), (1, 0.25));
                assert_eq!(quantiles.len(), 2);
                assert!((quantiles[0].1 - 0.25).abs() < 0.01, "{quantiles:?}");
            }
            other => panic!("{other:?}"),
        }
        assert!(store.snapshot(|name| name == "g").len() == 1);
    }
}
