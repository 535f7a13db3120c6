//! `metric.native_histogram`: the knobs of native histograms (client_golang's names and
//! defaults), for `metric.histogram: native` and `both`.

use serde::Deserialize;

use super::error::Problems;

/// `metric.native_histogram`: how native histograms bucket (`metric.histogram: native` or
/// `both`). The defaults are client_golang's, except `max_buckets`, which client_golang leaves
/// unlimited and recommends setting: 160 here.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NativeHistogramConfig {
    /// The largest growth from one bucket's upper bound to the next; the resolution is the
    /// finest power-of-two schema within it (1.1 gives 2^(1/8) ≈ 1.09, schema 3: any quantile
    /// within about 4.5 % of the truth). Above 1. Defaults to `1.1`.
    pub bucket_factor: f64,
    /// Observations whose absolute value is at most this count in the zero bucket. Defaults to
    /// 2^-128 (about 2.9e-39, client_golang's).
    pub zero_threshold: f64,
    /// Populated buckets a series exposes at most; a series with more is served at half the
    /// resolution (neighbours merged, exactly) until it fits, as client_golang widens.
    /// `0`: no limit. Defaults to `160`.
    pub max_buckets: u32,
    /// With `max_buckets`, a series over the limit whose last reset is at least this many
    /// seconds ago is reset instead (count, sum and buckets back to zero: a counter reset to
    /// Prometheus), so its resolution comes back; checked every 20 s. `0`: never reset, always
    /// widen. Defaults to `0`.
    pub min_reset_duration_secs: u64,
}

pub use crate::metrics::store::native::DEFAULT_ZERO_THRESHOLD;

impl Default for NativeHistogramConfig {
    fn default() -> Self {
        Self {
            bucket_factor: 1.1,
            zero_threshold: DEFAULT_ZERO_THRESHOLD,
            max_buckets: 160,
            min_reset_duration_secs: 0,
        }
    }
}

impl NativeHistogramConfig {
    pub(super) fn check(&self, p: &mut Problems<'_>) {
        if !(self.bucket_factor.is_finite() && self.bucket_factor > 1.0) {
            p.push(
                "bucket_factor",
                format!(
                    "must be a number above 1 (got {}); 1.1 is client_golang's default",
                    self.bucket_factor
                ),
            );
        }
        if !(self.zero_threshold.is_finite() && self.zero_threshold >= 0.0) {
            p.push(
                "zero_threshold",
                format!(
                    "must be a finite number, 0 or more (got {})",
                    self.zero_threshold
                ),
            );
        }
        if self.min_reset_duration_secs > 0 && self.max_buckets == 0 {
            p.push(
                "min_reset_duration_secs",
                "resets a series over max_buckets, which is 0 (no limit): set max_buckets",
            );
        }
    }
}
