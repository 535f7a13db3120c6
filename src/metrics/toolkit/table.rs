//! [`LabelTable`]: the series of each value of one bounded label, with its cap and overflow.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, OnceLock, PoisonError, RwLock},
};

use metrics::{Counter, Key, SharedString};

use super::RecorderRef;
use crate::{labels::OVERFLOW_LABEL, operation::OperationId};

/// The series of each value of one bounded label (an operation, a peer, a job type), created
/// on first use, with a hard cap on distinct values.
///
/// The rule, the same in every family towerscope records:
///
/// - a value seen before gets its series back: one read-locked lookup of a short string;
/// - a new value gets a series while fewer than `max` values have one;
/// - `unknown` ([`OperationId::UNKNOWN`]) always gets its own series, cap or not: it is every
///   resolver's fallback, and hiding it under `_overflow` would hide the overflow's cause;
/// - any other value past the cap shares the one `_overflow` series, and each such lookup
///   increments the overflow counter. That counter is registered with the table, so it is
///   scraped as `0` before any overflow and `increase(..._overflow_total[1h]) > 0` has a
///   series to alert on. (Tables are built once, when a layer wraps its service, never in a
///   setter, so a replaced name leaves no stale zero series behind.)
///
/// ```
/// use towerscope::metrics::toolkit::{LabelTable, RecorderRef};
///
/// let table = LabelTable::new(2).with_overflow_counter(RecorderRef::Global, "peer_overflow_total");
/// let a = table.get("a", |label| label.to_string());
/// assert_eq!(*table.get("a", |_| unreachable!()), "a");
/// table.get("b", |label| label.to_string());
/// assert_eq!(*table.get("c", |label| label.to_string()), "_overflow");
/// assert_eq!(*table.get("unknown", |label| label.to_string()), "unknown");
/// assert_eq!(*a, "a");
/// ```
pub struct LabelTable<V> {
    max: usize,
    values: RwLock<HashMap<Box<str>, Arc<V>, foldhash::fast::RandomState>>,
    overflow: OnceLock<Arc<V>>,
    overflowed: Option<Counter>,
}

impl<V> fmt::Debug for LabelTable<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LabelTable")
            .field("max", &self.max)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<V> LabelTable<V> {
    /// An empty table giving at most `max` (at least 1) values their own series.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            values: RwLock::new(HashMap::default()),
            overflow: OnceLock::new(),
            overflowed: None,
        }
    }

    /// Counts lookups that went to `_overflow` in the counter `name` of `recorder`,
    /// registered now. Defaults to no counter.
    pub fn with_overflow_counter(
        mut self,
        recorder: RecorderRef,
        name: impl Into<SharedString>,
    ) -> Self {
        self.overflowed = Some(recorder.counter(&Key::from_name(name.into())));
        self
    }

    /// Counts lookups that went to `_overflow` in the counter `key` of `recorder` (a name
    /// with labels, such as `label_overflow_total{label="tenant"}`), registered now.
    pub fn with_overflow_counter_key(mut self, recorder: RecorderRef, key: Key) -> Self {
        self.overflowed = Some(recorder.counter(&key));
        self
    }

    /// The `_overflow` series (made by `make` on first use), counted as one overflowing
    /// lookup: for a value refused before lookup (too long to be a label value).
    pub fn overflowed(&self, make: impl FnOnce(SharedString) -> V) -> Arc<V> {
        if let Some(counter) = &self.overflowed {
            counter.increment(1);
        }
        self.overflow
            .get_or_init(|| Arc::new(make(SharedString::const_str(OVERFLOW_LABEL))))
            .clone()
    }

    /// The number of values with a series of their own.
    pub fn len(&self) -> usize {
        self.values
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no value has a series yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `f` of the series of `value` (see [`get`](Self::get)), without cloning the `Arc` of a
    /// series that exists: the hot path of a request whose series is known.
    pub fn with<R>(
        &self,
        value: &str,
        make: impl FnOnce(SharedString) -> V,
        f: impl FnOnce(&V) -> R,
    ) -> R {
        {
            let values = self.values.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(found) = values.get(value) {
                return f(found);
            }
        }
        f(&self.get(value, make))
    }

    /// The series of `value`, made by `make` from the label value on first use (`_overflow`
    /// past the cap).
    pub fn get(&self, value: &str, make: impl FnOnce(SharedString) -> V) -> Arc<V> {
        if let Some(found) = self
            .values
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(value)
        {
            return found.clone();
        }
        let mut values = self.values.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = values.get(value) {
            return found.clone();
        }
        if values.len() >= self.max && value != OperationId::UNKNOWN {
            drop(values);
            return self.overflowed(make);
        }
        let label = if value == OperationId::UNKNOWN {
            SharedString::const_str(OperationId::UNKNOWN)
        } else {
            SharedString::from(value.to_owned())
        };
        let series = Arc::new(make(label));
        values.insert(value.into(), series.clone());
        series
    }

    /// Calls `f` with every series made so far, the `_overflow` one last (for values computed
    /// at scrape time, such as the age of a queue's oldest job).
    pub fn for_each(&self, mut f: impl FnMut(&V)) {
        let values: Vec<Arc<V>> = self
            .values
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for value in values.iter().chain(self.overflow.get()) {
            f(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;

    fn counters(snapshotter: &metrics_util::debugging::Snapshotter) -> Vec<(String, u64)> {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter_map(|(key, _, _, value)| match value {
                DebugValue::Counter(n) => Some((key.key().name().to_owned(), n)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn values_past_the_cap_share_the_overflow_series_and_are_counted() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let table = LabelTable::new(2)
            .with_overflow_counter(RecorderRef::Shared(Arc::new(recorder)), "over_total");
        let a = table.get("a", |l| l.to_string());
        assert!(Arc::ptr_eq(&a, &table.get("a", |_| unreachable!("cached"))));
        table.get("b", |l| l.to_string());
        assert_eq!(counters(&snapshotter), vec![("over_total".to_owned(), 0)]);
        let c = table.get("c", |l| l.to_string());
        assert_eq!(*c, OVERFLOW_LABEL);
        assert!(Arc::ptr_eq(&c, &table.get("d", |_| unreachable!("shared"))));
        assert_eq!(counters(&snapshotter), vec![("over_total".to_owned(), 2)]);
        // Known values keep their series past the cap.
        assert!(Arc::ptr_eq(&a, &table.get("a", |_| unreachable!("cached"))));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn unknown_always_gets_its_own_series() {
        let table = LabelTable::new(1);
        table.get("a", |l| l.to_string());
        assert_eq!(
            *table.get(OperationId::UNKNOWN, |l| l.to_string()),
            "unknown"
        );
        assert_eq!(*table.get("b", |l| l.to_string()), OVERFLOW_LABEL);
    }

    #[test]
    fn a_zero_cap_still_gives_one_value_a_series() {
        let table = LabelTable::new(0);
        assert_eq!(*table.get("a", |l| l.to_string()), "a");
        assert_eq!(*table.get("b", |l| l.to_string()), OVERFLOW_LABEL);
    }
}
