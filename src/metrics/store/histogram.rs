//! [`HistogramCell`]: a histogram series with fixed buckets, recorded with atomics only.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use super::{exemplar::BucketExemplars, summary::add_f64};

/// One histogram series: a count per bucket (not cumulative; the render accumulates), the
/// total count (the `+Inf` bucket) and the sum, all since the start.
pub(crate) struct HistogramCell {
    bounds: Arc<[f64]>,
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    /// The last exemplar of each bucket (`+Inf` last), when observed with span ids.
    pub(super) exemplars: BucketExemplars,
    keep_exemplars: bool,
}

impl HistogramCell {
    /// A histogram with `bounds` (finite, strictly increasing: the configuration checks them),
    /// keeping the exemplars of its buckets or not.
    pub(crate) fn new(bounds: Arc<[f64]>, keep_exemplars: bool) -> Self {
        let buckets = bounds.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            bounds,
            buckets,
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
            exemplars: BucketExemplars::default(),
            keep_exemplars,
        }
    }

    /// Records `value` in the first bucket whose bound is ≥ it (Prometheus's `le`); NaN is
    /// ignored.
    pub(crate) fn record(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        let index = self.bounds.partition_point(|bound| *bound < value);
        if let Some(bucket) = self.buckets.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        add_f64(&self.sum, value);
        if self.keep_exemplars {
            self.exemplars.observe(index, self.buckets.len(), value);
        }
    }

    /// The bounds with their cumulative counts, then the total count and the sum.
    pub(crate) fn read(&self, cumulative: &mut Vec<(f64, u64)>) -> (u64, f64) {
        cumulative.clear();
        let mut running = 0;
        for (bound, bucket) in self.bounds.iter().zip(self.buckets.iter()) {
            running += bucket.load(Ordering::Relaxed);
            cumulative.push((*bound, running));
        }
        // Read after the buckets: a concurrent record can only make the total larger, so the
        // `+Inf` bucket is never below the last finite one.
        let count = self.count.load(Ordering::Relaxed).max(running);
        (count, f64::from_bits(self.sum.load(Ordering::Relaxed)))
    }

    /// The total count and the sum, as [`read`](Self::read) gives them.
    pub(crate) fn totals(&self) -> (u64, f64) {
        (
            self.count.load(Ordering::Relaxed),
            f64::from_bits(self.sum.load(Ordering::Relaxed)),
        )
    }

    /// Sets every count and the sum back to zero (a native histogram's reset).
    pub(crate) fn reset(&self) {
        for bucket in self.buckets.iter() {
            bucket.store(0, Ordering::Relaxed);
        }
        self.count.store(0, Ordering::Relaxed);
        self.sum.store(0f64.to_bits(), Ordering::Relaxed);
    }

    /// Bytes this series holds.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.buckets.len() * std::mem::size_of::<AtomicU64>()
            + self.exemplars.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_le_is_inclusive() {
        let cell = HistogramCell::new(Arc::from([0.1, 1.0, 10.0]), true);
        for v in [0.05, 0.1, 0.5, 1.0, 20.0, f64::NAN, f64::INFINITY] {
            cell.record(v);
        }
        let mut buckets = Vec::new();
        let (count, sum) = cell.read(&mut buckets);
        assert_eq!(buckets, [(0.1, 2), (1.0, 4), (10.0, 4)]);
        assert_eq!(count, 6);
        assert_eq!(sum, f64::INFINITY);
    }
}
