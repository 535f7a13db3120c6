//! [`NativeCell`]: a Prometheus native histogram series (exponential buckets, no `le` guess),
//! recorded with atomics only, beside or instead of classic buckets.
//!
//! Buckets follow Prometheus' schema `s`: bucket `i` holds the values in
//! `(2^((i-1)/2^s), 2^(i/2^s)]` (the negative side mirrored), values with an absolute value at
//! most the zero threshold go to the zero bucket. The schema is the largest whose bucket growth
//! stays within the configured bucket factor (client_golang's rule: 1.1 gives schema 3, a
//! growth of 2^(1/8) ≈ 1.09), between -4 and 8.
//!
//! Recording is at the schema's resolution, or at schema 0 for the coarse negative schemas, into
//! pages of `2^s` counters, one page per power of two a value fell in, allocated on the first
//! value of that power of two and kept: once a series has seen its range, recording is a frexp,
//! a search in a table of `2^s` bounds and three atomic adds. The pages hang from a directory of
//! groups of 32 powers of two covering 2^-128 to 2^1024 (values beyond either end count in the
//! outermost bucket; the default zero threshold is 2^-128).
//!
//! The bucket limit (client_golang's `NativeHistogramMaxBucketNumber`) is applied to what is
//! exposed: a render whose series has more populated buckets than the limit halves the
//! resolution (merges neighbours: schema `s` to `s - 1`, exactly) until it fits, as
//! client_golang widens. With a minimum reset duration, the upkeep thread instead resets a
//! series over the limit once that long has passed since its last reset (a counter reset to
//! Prometheus), so that its resolution comes back.

use std::{
    sync::{
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
        OnceLock,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::{
    exemplar::{self, ExemplarSlot},
    histogram::HistogramCell,
    summary::add_f64,
};

/// The native histogram settings of a store (`metric.native_histogram`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NativeSettings {
    /// Prometheus' schema, -4 to 8.
    pub(crate) schema: i32,
    /// Values whose absolute value is at most this go to the zero bucket.
    pub(crate) zero_threshold: f64,
    /// Populated buckets a render exposes at most (0: no limit).
    pub(crate) max_buckets: u32,
    /// With a limit, how long after its last reset a series over the limit is reset rather
    /// than widened (zero: never reset).
    pub(crate) min_reset: Duration,
}

impl NativeSettings {
    /// client_golang's defaults: bucket factor 1.1 (schema 3), zero threshold 2^-128, and a
    /// limit of 160 buckets widened, never reset.
    pub(crate) fn new(bucket_factor: f64) -> Self {
        Self {
            schema: schema_for(bucket_factor),
            zero_threshold: DEFAULT_ZERO_THRESHOLD,
            max_buckets: 160,
            min_reset: Duration::ZERO,
        }
    }
}

/// 2^-128, client_golang's `DefNativeHistogramZeroThreshold`: the default
/// `metric.native_histogram.zero_threshold`.
pub const DEFAULT_ZERO_THRESHOLD: f64 = 2.938_735_877_055_719e-39;

/// The largest schema whose bucket growth `2^(2^-s)` is at most `factor` (client_golang's
/// `pickSchema`), between -4 and 8; `factor` must be above 1.
pub(crate) fn schema_for(factor: f64) -> i32 {
    let floor = factor.log2().log2().floor();
    if floor <= -8.0 {
        8
    } else if floor >= 4.0 {
        -4
    } else {
        -(floor as i32)
    }
}

/// The lowest power of two with pages, and how many groups of 32 there are.
const MIN_EXP: i32 = -128;
const GROUP: i32 = 32;
const GROUPS: usize = ((1024 - MIN_EXP) / GROUP) as usize;
// The populated groups and pages are bit sets of 64 and 32 bits.
const _: () = assert!(GROUPS <= 64 && GROUP <= 32);
/// Exemplars kept per series (the most recent, round robin).
pub(crate) const EXEMPLARS: usize = 4;

/// The counters of one power of two: `2^schema` buckets.
type Page = Box<[AtomicU64]>;

/// 32 powers of two.
struct Group {
    pages: [OnceLock<Page>; GROUP as usize],
    /// Bit `p` set once page `p` is made: a read visits the populated pages only (each a
    /// cache miss in a large store).
    populated: AtomicU32,
}

/// One side's buckets (positive or negative values).
struct Side {
    groups: [OnceLock<Box<Group>>; GROUPS],
    /// Bit `g` set once group `g` is made.
    populated: AtomicU64,
}

/// The indices of the bits set in `bits`, ascending.
fn set_bits(mut bits: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let bit = bits.trailing_zeros() as usize;
        bits &= bits.wrapping_sub(1);
        (bit < 64).then_some(bit)
    })
}

impl Side {
    fn new() -> Self {
        Self {
            groups: [const { OnceLock::new() }; GROUPS],
            populated: AtomicU64::new(0),
        }
    }

    /// Adds one to bucket `index` at recording schema `schema` (≥ 0).
    fn add(&self, index: i64, schema: i32) {
        let per_page = 1_i64 << schema;
        // Bucket `index` is in the page of the power of two its upper bound is in.
        let page = (index + per_page - 1).div_euclid(per_page);
        let (page, offset) = if page < i64::from(MIN_EXP) {
            (i64::from(MIN_EXP), 0)
        } else if page >= 1024 {
            (1023, per_page - 1)
        } else {
            (page, index - (page - 1) * per_page - 1)
        };
        let slot = (page - i64::from(MIN_EXP)) as usize;
        let (g, p) = (slot / GROUP as usize, slot % GROUP as usize);
        // Each bit is set once, by the thread that makes the group or page: no cost per record.
        let group = self.groups[g].get_or_init(|| {
            self.populated.fetch_or(1 << g, Ordering::Relaxed);
            Box::new(Group {
                pages: [const { OnceLock::new() }; GROUP as usize],
                populated: AtomicU32::new(0),
            })
        });
        let counts = group.pages[p].get_or_init(|| {
            group.populated.fetch_or(1 << p, Ordering::Relaxed);
            (0..per_page).map(|_| AtomicU64::new(0)).collect()
        });
        counts[offset as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Every populated bucket, `(index, count)` in ascending index, at recording schema
    /// `schema`.
    fn read(&self, schema: i32, out: &mut Vec<(i64, u64)>) {
        let per_page = 1_i64 << schema;
        // A bit is set just before its group or page is stored: one not yet there is skipped,
        // as a record not yet made.
        for g in set_bits(self.populated.load(Ordering::Relaxed)) {
            let Some(group) = self.groups[g].get() else {
                continue;
            };
            // The pages' addresses first, then their counts without a branch per bucket: the
            // loads of a series' pages, each a cache miss in a large store, overlap.
            let mut pages = [None; GROUP as usize];
            for p in set_bits(u64::from(group.populated.load(Ordering::Relaxed))) {
                pages[p] = group.pages[p].get();
            }
            for (p, counts) in pages.iter().enumerate() {
                let Some(counts) = counts else { continue };
                let page = i64::from(MIN_EXP) + (g * GROUP as usize + p) as i64;
                let first = (page - 1) * per_page + 1;
                let mut kept = out.len();
                out.resize(kept + counts.len(), (0, 0));
                for (index, count) in (first..).zip(counts.iter()) {
                    let n = count.load(Ordering::Relaxed);
                    out[kept] = (index, n);
                    kept += usize::from(n > 0);
                }
                out.truncate(kept);
            }
        }
    }

    fn reset(&self) {
        for group in self.groups.iter().filter_map(OnceLock::get) {
            for counts in group.pages.iter().filter_map(OnceLock::get) {
                for count in counts.iter() {
                    count.store(0, Ordering::Relaxed);
                }
            }
        }
    }

    /// The bytes of the side's groups and pages (not the side's own, counted where it is).
    fn heap_bytes(&self) -> usize {
        let mut bytes = 0;
        for group in self.groups.iter().filter_map(OnceLock::get) {
            bytes += std::mem::size_of::<Group>();
            for counts in group.pages.iter().filter_map(OnceLock::get) {
                bytes += counts.len() * std::mem::size_of::<AtomicU64>();
            }
        }
        bytes
    }
}

/// The bounds `2^(m/2^s)`, `m` from `-2^s` to `-1`, of each recording schema's table: the
/// fraction of a value (its mantissa in `[0.5, 1)`) is above `k` of them in bucket `k - 2^s`
/// of its power of two.
fn bounds(schema: i32) -> &'static [f64] {
    static TABLES: [OnceLock<Box<[f64]>>; 9] = [const { OnceLock::new() }; 9];
    TABLES[schema as usize].get_or_init(|| {
        let n = 1_i32 << schema;
        (-n..0)
            .map(|m| (f64::from(m) / f64::from(n)).exp2())
            .collect()
    })
}

/// The bucket of `value` (> 0, finite, normal) at recording schema `schema` (0 to 8).
fn index_of(value: f64, schema: i32) -> i64 {
    // frexp: value = fraction * 2^exponent, fraction in [0.5, 1).
    let bits = value.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64 - 1022;
    let fraction = f64::from_bits((bits & ((1 << 52) - 1)) | (1022 << 52));
    let n = 1_i64 << schema;
    let above = bounds(schema).partition_point(|b| *b < fraction) as i64;
    exponent * n + above - n
}

/// One native histogram series, with the classic buckets of `both` beside it.
pub(crate) struct NativeCell {
    /// The classic buckets (`metric.histogram: both`), which then keep the count and sum.
    pub(super) classic: Option<HistogramCell>,
    count: AtomicU64,
    sum: AtomicU64,
    zero: AtomicU64,
    positive: Side,
    negative: OnceLock<Box<Side>>,
    /// The schema buckets are recorded at: the exposed one, or 0 for a negative one.
    recording_schema: i32,
    zero_threshold: f64,
    pub(super) exemplars: Option<Box<[ExemplarSlot; EXEMPLARS]>>,
    next_exemplar: AtomicUsize,
    /// Unix seconds of the last reset (or of the creation).
    last_reset: AtomicU64,
}

/// A native histogram as a render exposes it.
#[cfg_attr(not(any(feature = "protobuf", feature = "otlp")), allow(dead_code))]
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct NativeSnapshot {
    pub(crate) schema: i32,
    pub(crate) zero_threshold: f64,
    pub(crate) zero_count: u64,
    /// Populated buckets, `(index, count)` in ascending index.
    pub(crate) positive: Vec<(i64, u64)>,
    pub(crate) negative: Vec<(i64, u64)>,
    /// Observations, at least the buckets' total.
    pub(crate) count: u64,
    pub(crate) sum: f64,
}

impl NativeCell {
    pub(crate) fn new(
        settings: &NativeSettings,
        classic: Option<HistogramCell>,
        keep_exemplars: bool,
    ) -> Self {
        Self {
            classic,
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
            zero: AtomicU64::new(0),
            positive: Side::new(),
            negative: OnceLock::new(),
            recording_schema: settings.schema.max(0),
            zero_threshold: settings.zero_threshold,
            exemplars: keep_exemplars.then(|| Box::new([const { ExemplarSlot::new() }; EXEMPLARS])),
            next_exemplar: AtomicUsize::new(0),
            last_reset: AtomicU64::new(unix_now()),
        }
    }

    /// Records `value`; NaN is ignored.
    pub(crate) fn record(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        match &self.classic {
            Some(classic) => classic.record(value),
            None => {
                self.count.fetch_add(1, Ordering::Relaxed);
                add_f64(&self.sum, value);
            }
        }
        let magnitude = value.abs();
        if magnitude <= self.zero_threshold || !magnitude.is_normal() && magnitude.is_finite() {
            self.zero.fetch_add(1, Ordering::Relaxed);
        } else {
            let index = if magnitude.is_infinite() {
                i64::MAX / 2
            } else {
                index_of(magnitude, self.recording_schema)
            };
            let side = if value > 0.0 {
                &self.positive
            } else {
                self.negative.get_or_init(|| Box::new(Side::new()))
            };
            side.add(index, self.recording_schema);
        }
        if let Some(slots) = &self.exemplars {
            // The ring moves on for a sampled observation only.
            if let Some((ids, at)) = exemplar::current() {
                let slot = self.next_exemplar.fetch_add(1, Ordering::Relaxed) % EXEMPLARS;
                slots[slot].set(ids, value, at);
            }
        }
    }

    /// The series as exposed under `settings`: widened until it has at most
    /// `settings.max_buckets` populated buckets.
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    pub(crate) fn read(&self, settings: &NativeSettings) -> NativeSnapshot {
        let mut snapshot = NativeSnapshot::default();
        self.read_into(settings, &mut snapshot);
        snapshot
    }

    /// [`read`](Self::read) into `snapshot`, reusing its buffers (a render's, across series).
    #[cfg_attr(not(any(feature = "protobuf", feature = "otlp")), allow(dead_code))]
    pub(crate) fn read_into(&self, settings: &NativeSettings, snapshot: &mut NativeSnapshot) {
        snapshot.zero_threshold = self.zero_threshold;
        snapshot.positive.clear();
        snapshot.negative.clear();
        self.positive
            .read(self.recording_schema, &mut snapshot.positive);
        if let Some(negative) = self.negative.get() {
            negative.read(self.recording_schema, &mut snapshot.negative);
        }
        snapshot.zero_count = self.zero.load(Ordering::Relaxed);
        let (count, sum) = self.totals();
        let mut schema = self.recording_schema;
        while schema > settings.schema {
            schema = widen(snapshot, schema);
        }
        let limit = settings.max_buckets as usize;
        while limit > 0 && schema > -4 && snapshot.positive.len() + snapshot.negative.len() > limit
        {
            schema = widen(snapshot, schema);
        }
        snapshot.schema = schema;
        let in_buckets = snapshot.zero_count
            + snapshot
                .positive
                .iter()
                .chain(&snapshot.negative)
                .map(|(_, n)| n)
                .sum::<u64>();
        // Read after the buckets: a record landing meanwhile only makes the count larger; a
        // count below the buckets' total would make Prometheus refuse the histogram.
        snapshot.count = count.max(in_buckets);
        snapshot.sum = sum;
    }

    /// The count and sum (the classic buckets' when there are some).
    pub(crate) fn totals(&self) -> (u64, f64) {
        match &self.classic {
            Some(classic) => classic.totals(),
            None => (
                self.count.load(Ordering::Relaxed),
                f64::from_bits(self.sum.load(Ordering::Relaxed)),
            ),
        }
    }

    /// The most recent exemplars, oldest first.
    #[cfg(feature = "protobuf")]
    pub(super) fn exemplar_slots(&self) -> impl Iterator<Item = &ExemplarSlot> {
        let next = self.next_exemplar.load(Ordering::Relaxed);
        self.exemplars
            .iter()
            .flat_map(move |slots| (0..EXEMPLARS).map(move |i| &slots[(next + i) % EXEMPLARS]))
    }

    /// The upkeep's rule: a series with more populated buckets than the limit, whose last
    /// reset is at least the minimum reset duration ago, is reset (count, sum, every bucket,
    /// the classic ones too). Returns whether it was.
    pub(crate) fn reset_if_due(&self, settings: &NativeSettings) -> bool {
        if settings.max_buckets == 0 || settings.min_reset.is_zero() {
            return false;
        }
        let now = unix_now();
        if now.saturating_sub(self.last_reset.load(Ordering::Relaxed))
            < settings.min_reset.as_secs()
        {
            return false;
        }
        let mut populated = Vec::new();
        self.positive.read(self.recording_schema, &mut populated);
        if let Some(negative) = self.negative.get() {
            negative.read(self.recording_schema, &mut populated);
        }
        if populated.len() <= settings.max_buckets as usize {
            return false;
        }
        self.positive.reset();
        if let Some(negative) = self.negative.get() {
            negative.reset();
        }
        self.zero.store(0, Ordering::Relaxed);
        self.count.store(0, Ordering::Relaxed);
        self.sum.store(0f64.to_bits(), Ordering::Relaxed);
        if let Some(classic) = &self.classic {
            classic.reset();
        }
        self.last_reset.store(now, Ordering::Relaxed);
        true
    }

    /// Bytes this series holds.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.classic.as_ref().map_or(0, HistogramCell::heap_bytes)
            + self.positive.heap_bytes()
            + self
                .negative
                .get()
                .map_or(0, |side| std::mem::size_of::<Side>() + side.heap_bytes())
            + self
                .exemplars
                .as_ref()
                .map_or(0, |_| EXEMPLARS * std::mem::size_of::<ExemplarSlot>())
    }
}

#[cfg(feature = "otlp")]
impl NativeSnapshot {
    /// This histogram at the lower resolution `schema` (exact: neighbours merge).
    pub(crate) fn widened_to(&self, schema: i32) -> Self {
        let mut out = self.clone();
        while out.schema > schema {
            let schema = out.schema;
            out.schema = widen(&mut out, schema);
        }
        out
    }
}

#[cfg_attr(not(any(feature = "protobuf", feature = "otlp")), allow(dead_code))]
/// Halves the resolution of `snapshot`'s buckets, from `schema` to `schema - 1`: buckets
/// `2j - 1` and `2j` become bucket `j`, in place. Returns the new schema.
fn widen(snapshot: &mut NativeSnapshot, schema: i32) -> i32 {
    for side in [&mut snapshot.positive, &mut snapshot.negative] {
        // The merged buckets are written over the ones already read: `kept <= read`.
        let mut kept = 0_usize;
        for read in 0..side.len() {
            let (index, count) = side[read];
            let index = (index + 1) >> 1;
            match kept.checked_sub(1).map(|last| &mut side[last]) {
                Some(last) if last.0 == index => last.1 += count,
                _ => {
                    side[kept] = (index, count);
                    kept += 1;
                }
            }
        }
        side.truncate(kept);
    }
    schema - 1
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_is_client_golang_s() {
        assert_eq!(schema_for(1.1), 3);
        assert_eq!(schema_for(1.00271), 8);
        assert_eq!(schema_for(1.0001), 8);
        assert_eq!(schema_for(2.0), 0);
        assert_eq!(schema_for(1.5), 1);
        assert_eq!(schema_for(4.0), -1);
        assert_eq!(schema_for(1e6), -4);
    }

    #[test]
    fn a_value_lands_in_the_bucket_whose_bounds_hold_it() {
        for schema in 0..=8 {
            let base = 2_f64.powf(2_f64.powi(-schema));
            for value in [1e-9, 0.001, 0.0123, 0.5, 1.0, 1.0001, 3.7, 1024.0, 1e9] {
                let index = index_of(value, schema);
                let upper = base.powf(index as f64);
                let lower = base.powf(index as f64 - 1.0);
                let slack = 1e-12 * upper;
                assert!(
                    lower - slack < value && value <= upper + slack,
                    "schema {schema}: {value} in bucket {index} ({lower}, {upper}]"
                );
            }
        }
        // A power of two is the upper bound of its bucket (upper bounds are inclusive).
        assert_eq!(index_of(1.0, 3), 0);
        assert_eq!(index_of(2.0, 3), 8);
        assert_eq!(index_of(0.5, 0), -1);
    }

    #[test]
    fn recorded_buckets_read_back_and_widen_exactly() {
        let settings = NativeSettings {
            max_buckets: 0,
            ..NativeSettings::new(1.1)
        };
        let cell = NativeCell::new(&settings, None, false);
        for v in [0.0, 1.0, 1.05, 1.2, 3.0, -0.25, 1e-40] {
            cell.record(v);
        }
        let s = cell.read(&settings);
        assert_eq!(s.schema, 3);
        assert_eq!(s.zero_count, 2, "0 and 1e-40 are within the zero threshold");
        assert_eq!(s.positive, [(0, 1), (1, 1), (3, 1), (13, 1)]);
        assert_eq!(s.negative, [(-16, 1)]);
        assert_eq!(s.count, 7);
        assert!((s.sum - 6.0).abs() < 1e-12, "{}", s.sum);
        // Three buckets at most: halved from schema 3 down to -1 (buckets of 4): (1/4, 1],
        // (1, 4] and, negative, [-1, -1/4).
        let narrow = NativeSettings {
            max_buckets: 3,
            ..settings.clone()
        };
        let w = cell.read(&narrow);
        assert_eq!(w.schema, -1);
        assert_eq!(w.positive, [(0, 1), (1, 3)]);
        assert_eq!(w.negative, [(-1, 1)]);
        assert_eq!(w.count, 7);
    }

    #[test]
    fn a_negative_schema_records_at_zero_and_exposes_its_own() {
        let settings = NativeSettings {
            max_buckets: 0,
            ..NativeSettings::new(16.0)
        };
        assert_eq!(settings.schema, -2);
        let cell = NativeCell::new(&settings, None, false);
        for v in [1.0, 3.0, 10.0, 100.0] {
            cell.record(v);
        }
        let s = cell.read(&settings);
        assert_eq!(s.schema, -2);
        // Buckets of 2^4: (1/16, 1], (1, 16], (16, 256].
        assert_eq!(s.positive, [(0, 1), (1, 2), (2, 1)]);
    }

    #[test]
    fn a_series_over_the_limit_is_reset_once_the_minimum_duration_passed() {
        let settings = NativeSettings {
            max_buckets: 2,
            min_reset: Duration::from_secs(1),
            ..NativeSettings::new(1.1)
        };
        let cell = NativeCell::new(&settings, None, false);
        for v in [1.0, 2.0, 4.0] {
            cell.record(v);
        }
        assert!(
            !cell.reset_if_due(&settings),
            "not yet a second since the start"
        );
        cell.last_reset.store(0, Ordering::Relaxed);
        assert!(cell.reset_if_due(&settings));
        let s = cell.read(&settings);
        assert_eq!((s.count, s.positive.len()), (0, 0));
        assert!(!cell.reset_if_due(&settings));
    }
}
