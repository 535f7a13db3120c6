//! A native histogram as an OTLP `ExponentialHistogramDataPoint`: the same scale and buckets.
//!
//! OTLP and Prometheus share the bucket boundaries `base^i`, `base = 2^(2^-scale)`, but not the
//! index: OTLP's bucket `i` is `(base^i, base^(i+1)]`, Prometheus' bucket `i` is
//! `(base^(i-1), base^i]`, so an OTLP index is the Prometheus one minus one (Prometheus' OTLP
//! receiver adds it back). OTLP buckets are dense from an offset; the gaps are zeros.

use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, ExponentialHistogramDataPoint,
};

use crate::metrics::store::snapshot::NativeSnapshot;

/// The point for `now`: cumulative, or, with `before` (what the last delivered push held), the
/// change since it. A delta across a reset (a count that went down) is the cumulative value,
/// as for the other kinds; a delta across a change of resolution is taken at the lower one
/// (widening is exact, so both sides merge to it).
pub(super) fn exponential_point(
    now: &NativeSnapshot,
    before: Option<&NativeSnapshot>,
) -> ExponentialHistogramDataPoint {
    match before {
        Some(before) if before.count <= now.count && before.zero_count <= now.zero_count => {
            let schema = now.schema.min(before.schema);
            let now = now.widened_to(schema);
            let before = before.widened_to(schema);
            ExponentialHistogramDataPoint {
                count: now.count - before.count,
                sum: Some(now.sum - before.sum),
                scale: schema,
                zero_count: now.zero_count - before.zero_count,
                zero_threshold: now.zero_threshold,
                positive: Some(dense(&subtract(&now.positive, &before.positive))),
                negative: Some(dense(&subtract(&now.negative, &before.negative))),
                ..ExponentialHistogramDataPoint::default()
            }
        }
        _ => ExponentialHistogramDataPoint {
            count: now.count,
            sum: Some(now.sum),
            scale: now.schema,
            zero_count: now.zero_count,
            zero_threshold: now.zero_threshold,
            positive: Some(dense(&now.positive)),
            negative: Some(dense(&now.negative)),
            ..ExponentialHistogramDataPoint::default()
        },
    }
}

/// `now - before`, bucket by bucket (both ascending by index); the buckets left empty dropped.
fn subtract(now: &[(i64, u64)], before: &[(i64, u64)]) -> Vec<(i64, u64)> {
    let mut before = before.iter().peekable();
    let mut out = Vec::with_capacity(now.len());
    for &(index, count) in now {
        while before.next_if(|(b, _)| *b < index).is_some() {}
        let earlier = before.next_if(|(b, _)| *b == index).map_or(0, |(_, n)| *n);
        let change = count.saturating_sub(earlier);
        if change > 0 {
            out.push((index, change));
        }
    }
    out
}

/// Sparse Prometheus buckets as OTLP's dense ones.
fn dense(buckets: &[(i64, u64)]) -> Buckets {
    let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else {
        return Buckets::default();
    };
    let mut counts = vec![0; (last.0 - first.0 + 1) as usize];
    for &(index, count) in buckets {
        counts[(index - first.0) as usize] = count;
    }
    Buckets {
        // Indices are bounded by the recording range (2^-128 to 2^1024 at schema 8).
        offset: i32::try_from(first.0 - 1).unwrap_or(i32::MIN),
        bucket_counts: counts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(schema: i32, positive: &[(i64, u64)], zero: u64, sum: f64) -> NativeSnapshot {
        let count = zero + positive.iter().map(|(_, n)| n).sum::<u64>();
        NativeSnapshot {
            schema,
            zero_threshold: 1e-9,
            zero_count: zero,
            positive: positive.to_vec(),
            negative: Vec::new(),
            count,
            sum,
        }
    }

    #[test]
    fn a_cumulative_point_has_the_same_scale_and_buckets_one_index_down() {
        let point = exponential_point(&snapshot(3, &[(0, 2), (3, 1)], 1, 4.5), None);
        assert_eq!(point.scale, 3);
        assert_eq!(
            (point.count, point.zero_count, point.sum),
            (4, 1, Some(4.5))
        );
        assert_eq!(point.zero_threshold, 1e-9);
        let positive = point.positive.unwrap();
        assert_eq!(
            positive.offset, -1,
            "Prometheus bucket 0 is (1/base, 1]: OTLP's -1"
        );
        assert_eq!(positive.bucket_counts, [2, 0, 0, 1]);
        assert_eq!(point.negative.unwrap(), Buckets::default());
    }

    #[test]
    fn a_delta_subtracts_bucket_by_bucket_at_the_lower_resolution() {
        let before = snapshot(3, &[(1, 1), (2, 1)], 0, 2.0);
        let now = snapshot(2, &[(1, 5), (2, 1)], 2, 9.0);
        // At schema 2, before's buckets 1 and 2 are bucket 1 (2 observations).
        let point = exponential_point(&now, Some(&before));
        assert_eq!(point.scale, 2);
        assert_eq!(
            (point.count, point.zero_count, point.sum),
            (6, 2, Some(7.0))
        );
        let positive = point.positive.unwrap();
        assert_eq!((positive.offset, positive.bucket_counts), (0, vec![3, 1]));
    }

    #[test]
    fn a_delta_across_a_reset_is_the_cumulative_value() {
        let before = snapshot(3, &[(1, 9)], 0, 9.0);
        let now = snapshot(3, &[(1, 2)], 0, 2.0);
        let point = exponential_point(&now, Some(&before));
        assert_eq!((point.count, point.sum), (2, Some(2.0)));
    }
}
