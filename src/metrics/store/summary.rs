//! [`SummaryCell`]: a summary series, recorded without locks or allocations.
//!
//! Quantiles come from a log-linear sketch: every positive value falls in one of 32 sub-buckets
//! of its power of two (the top five bits of its mantissa), so a bucket spans at most 1/32 of its
//! lower bound and the middle of a bucket is within 1.6 % of any value in it. The estimate is
//! also clamped to the smallest and largest value seen in the window, so a series with one
//! value, or all values equal, reports that value exactly.
//!
//! The window: [`SLOTS`] slots, each collecting for one rotation period; a rotation clears the
//! oldest slot and makes it current. Quantiles are over all slots, so they cover between two and
//! three periods (40–60 s with the default 20 s). `_sum` and `_count` are since the start, as
//! Prometheus expects of a summary.
//!
//! Memory: a table of 64 lazily filled octave pages (2⁻³⁰ to 2³⁴, which covers nanoseconds to
//! centuries in seconds and bytes up to 16 GiB), one 384-byte page of sub-bucket counts per
//! octave a value fell in, and each octave's count over the window in the cell itself. A page,
//! once there, stays: recording into it never allocates again.
//!
//! The octave counts are in the cell, not in the pages, because a render finds the octave of
//! each quantile from them: reading them from the pages cost a cache miss per octave a series
//! ever used (a dozen for durations from a millisecond to seconds), most of the time of
//! rendering thousands of summaries.

use std::sync::{
    atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    Arc, OnceLock,
};

/// Number of window slots.
pub(crate) const SLOTS: usize = 3;
const SUB_BITS: u32 = 5;
const SUBS: usize = 1 << SUB_BITS;
/// Exponent of the first octave: values below 2⁻³⁰ (about a nanosecond) count as the smallest.
const MIN_EXP: i32 = -30;
const OCTAVES: usize = 64;

/// Counts of one octave's sub-buckets, per slot.
struct Page {
    counts: [[AtomicU32; SUBS]; SLOTS],
}

/// The smallest and largest positive value of a slot, as f64 bits (for non-negative floats,
/// bit order is numeric order, so `fetch_min`/`fetch_max` work on the bits).
struct Extremes {
    min: AtomicU64,
    max: AtomicU64,
    /// Values ≤ 0 (they have no octave; their quantile is 0).
    non_positive: AtomicU32,
}

impl Extremes {
    const fn new() -> Self {
        Self {
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
            non_positive: AtomicU32::new(0),
        }
    }

    fn clear(&self) {
        self.min.store(u64::MAX, Ordering::Relaxed);
        self.max.store(0, Ordering::Relaxed);
        self.non_positive.store(0, Ordering::Relaxed);
    }
}

/// One summary series: count and sum since the start, and the windowed sketch.
pub(crate) struct SummaryCell {
    count: AtomicU64,
    sum: AtomicU64,
    /// The current slot, shared by every summary of the store (rotated together).
    clock: Arc<AtomicUsize>,
    extremes: [Extremes; SLOTS],
    /// Bit `o` is set once `pages[o]` exists: a render reads only the pages there are, not
    /// the whole table (which is what kept 10,000 series out of the cache).
    present: AtomicU64,
    /// Each octave's count over the window (the sum of its page's counts), so that a quantile
    /// walk finds its octaves without touching the pages it skips.
    totals: [AtomicU32; OCTAVES],
    pages: [OnceLock<Box<Page>>; OCTAVES],
}

/// What a render needs of a summary: its quantile values, sum and count.
pub(crate) struct SummarySnapshot {
    pub(crate) count: u64,
    pub(crate) sum: f64,
}

impl SummaryCell {
    pub(crate) fn new(clock: Arc<AtomicUsize>) -> Self {
        Self {
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
            clock,
            extremes: [const { Extremes::new() }; SLOTS],
            present: AtomicU64::new(0),
            totals: [const { AtomicU32::new(0) }; OCTAVES],
            pages: [const { OnceLock::new() }; OCTAVES],
        }
    }

    /// Records `value`. NaN is ignored (it has no rank and would poison the sum).
    pub(crate) fn record(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        add_f64(&self.sum, value);
        let slot = self.clock.load(Ordering::Relaxed) % SLOTS;
        let extremes = &self.extremes[slot];
        if value <= 0.0 {
            extremes.non_positive.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let bits = value.to_bits();
        extremes.min.fetch_min(bits, Ordering::Relaxed);
        extremes.max.fetch_max(bits, Ordering::Relaxed);
        let (octave, sub) = position(value);
        let page = match self.pages[octave].get() {
            Some(page) => page,
            None => {
                let page = self.pages[octave].get_or_init(new_page);
                self.present.fetch_or(1 << octave, Ordering::Release);
                page
            }
        };
        page.counts[slot][sub].fetch_add(1, Ordering::Relaxed);
        self.totals[octave].fetch_add(1, Ordering::Relaxed);
    }

    /// Clears `slot` (the one about to become current).
    pub(crate) fn clear_slot(&self, slot: usize) {
        self.extremes[slot].clear();
        for (octave, page) in self.existing_pages() {
            // What each count held when it was taken out is what leaves the octave's total: a
            // record that lands meanwhile stays in both.
            let removed: u32 = page.counts[slot]
                .iter()
                .map(|count| count.swap(0, Ordering::Relaxed))
                .fold(0, u32::wrapping_add);
            self.totals[octave].fetch_sub(removed, Ordering::Relaxed);
        }
    }

    /// Count and sum since the start.
    pub(crate) fn totals(&self) -> SummarySnapshot {
        SummarySnapshot {
            count: self.count.load(Ordering::Relaxed),
            sum: f64::from_bits(self.sum.load(Ordering::Relaxed)),
        }
    }

    /// Writes the value of each of `quantiles` into `out` (in the same order), over the
    /// window: 0 for every quantile when the window holds no value. `order` lists the indices
    /// of `quantiles` from the smallest quantile to the largest; `scratch` is reused between
    /// calls (a render passes the same one for every series).
    pub(crate) fn quantiles(
        &self,
        quantiles: &[f64],
        order: &[usize],
        scratch: &mut Scratch,
        out: &mut Vec<f64>,
    ) {
        out.clear();
        out.resize(quantiles.len(), 0.0);
        let mut non_positive = 0u64;
        let (mut min, mut max) = (u64::MAX, 0u64);
        for e in &self.extremes {
            non_positive += u64::from(e.non_positive.load(Ordering::Relaxed));
            min = min.min(e.min.load(Ordering::Relaxed));
            max = max.max(e.max.load(Ordering::Relaxed));
        }
        // The octaves that have a page, with their count over the slots.
        let pages = &mut scratch.0;
        pages.clear();
        let mut total = non_positive;
        for octave in self.present_octaves() {
            let count = u64::from(self.totals[octave].load(Ordering::Relaxed));
            if count > 0 {
                pages.push((octave, count));
                total += count;
            }
        }
        if total == 0 {
            return;
        }
        let (lo, hi) = (f64::from_bits(min), f64::from_bits(max));
        // One walk for all quantiles, smallest first: each is the smallest value whose rank
        // (from 1) reaches q·total.
        let mut wanted = order.iter().map(|&i| {
            let rank = ((quantiles[i] * total as f64).ceil() as u64).clamp(1, total);
            (i, rank)
        });
        let mut next = wanted.next();
        // Ranks within the values ≤ 0 stay 0.
        while next.is_some_and(|(_, rank)| rank <= non_positive) {
            next = wanted.next();
        }
        let mut seen = non_positive;
        'pages: for &(octave, count) in pages.iter() {
            if next.is_some_and(|(_, rank)| seen + count < rank) {
                seen += count;
                continue;
            }
            let Some(page) = self.pages[octave].get() else {
                continue;
            };
            for sub in 0..SUBS {
                seen += page
                    .counts
                    .iter()
                    .map(|slot| u64::from(slot[sub].load(Ordering::Relaxed)))
                    .sum::<u64>();
                while let Some((i, _)) = next.filter(|(_, rank)| seen >= *rank) {
                    // Only positive values reach the pages, so min/max are set here.
                    out[i] = middle(octave, sub, lo, hi).clamp(lo, hi);
                    next = wanted.next();
                }
                if next.is_none() {
                    break 'pages;
                }
            }
        }
        // Records that arrived during the walk can leave the last ranks unreached.
        while let Some((i, _)) = next {
            out[i] = hi;
            next = wanted.next();
        }
    }

    /// The octaves that have a page, without reading the pages.
    fn present_octaves(&self) -> impl Iterator<Item = usize> {
        let mut bits = self.present.load(Ordering::Acquire);
        std::iter::from_fn(move || {
            (bits != 0).then(|| {
                let octave = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                octave
            })
        })
    }

    /// The pages there are, by octave.
    fn existing_pages(&self) -> impl Iterator<Item = (usize, &Page)> {
        self.present_octaves()
            .filter_map(|octave| self.pages[octave].get().map(|page| (octave, &**page)))
    }

    /// Bytes this series holds (the cell and its pages).
    pub(crate) fn heap_bytes(&self) -> usize {
        let pages = self.existing_pages().count();
        std::mem::size_of::<Self>() + pages * std::mem::size_of::<Page>()
    }
}

/// Working memory of [`SummaryCell::quantiles`], kept across the series of one render.
#[derive(Default)]
pub(crate) struct Scratch(Vec<(usize, u64)>);

fn new_page() -> Box<Page> {
    Box::new(Page {
        counts: [const { [const { AtomicU32::new(0) }; SUBS] }; SLOTS],
    })
}

/// The indices of `quantiles` from the smallest quantile to the largest.
pub(crate) fn ascending(quantiles: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..quantiles.len()).collect();
    order.sort_by(|a, b| quantiles[*a].total_cmp(&quantiles[*b]));
    order
}

/// The octave and sub-bucket of a positive value, clamped to the table's range.
fn position(value: f64) -> (usize, usize) {
    let bits = value.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1023;
    if exp < MIN_EXP {
        return (0, 0);
    }
    let octave = (exp - MIN_EXP) as usize;
    if octave >= OCTAVES {
        return (OCTAVES - 1, SUBS - 1);
    }
    let sub = ((bits >> (52 - SUB_BITS)) as usize) & (SUBS - 1);
    (octave, sub)
}

/// The middle of a bucket; the smallest and largest value seen for the first and the last
/// bucket, which also hold the values below and above the table's range.
fn middle(octave: usize, sub: usize, lo: f64, hi: f64) -> f64 {
    if (octave, sub) == (0, 0) {
        return lo;
    }
    if (octave, sub) == (OCTAVES - 1, SUBS - 1) {
        return hi;
    }
    let base = 2f64.powi(octave as i32 + MIN_EXP);
    base * (1.0 + (sub as f64 + 0.5) / SUBS as f64)
}

/// Adds `value` to the f64 stored as bits in `cell`.
pub(crate) fn add_f64(cell: &AtomicU64, value: f64) {
    let mut current = cell.load(Ordering::Relaxed);
    loop {
        let next = (f64::from_bits(current) + value).to_bits();
        match cell.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(actual) => current = actual,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell() -> (SummaryCell, Arc<AtomicUsize>) {
        let clock = Arc::new(AtomicUsize::new(0));
        (SummaryCell::new(clock.clone()), clock)
    }

    fn q(cell: &SummaryCell, qs: &[f64]) -> Vec<f64> {
        let mut out = Vec::new();
        cell.quantiles(qs, &ascending(qs), &mut Scratch::default(), &mut out);
        out
    }

    #[test]
    fn empty_window_reports_zero() {
        let (c, _) = cell();
        assert_eq!(q(&c, &[0.5, 0.99]), [0.0, 0.0]);
        assert_eq!(c.totals().count, 0);
    }

    #[test]
    fn one_value_is_exact() {
        let (c, _) = cell();
        c.record(0.25);
        assert_eq!(q(&c, &[0.0, 0.5, 1.0]), [0.25, 0.25, 0.25]);
        let t = c.totals();
        assert_eq!((t.count, t.sum), (1, 0.25));
    }

    #[test]
    fn quantiles_are_within_the_relative_error() {
        let (c, _) = cell();
        // 1..=10000 ms, uniform: the true q-quantile is q·10 s.
        for i in 1..=10_000u32 {
            c.record(f64::from(i) / 1000.0);
        }
        for (got, want) in q(&c, &[0.5, 0.9, 0.99]).into_iter().zip([5.0, 9.0, 9.9]) {
            assert!((got - want).abs() / want < 0.017, "{got} vs {want}");
        }
        assert_eq!(c.totals().count, 10_000);
    }

    #[test]
    fn rotation_forgets_the_oldest_slot_but_keeps_totals() {
        let (c, clock) = cell();
        c.record(10.0);
        for _ in 0..SLOTS - 1 {
            let next = clock.load(Ordering::Relaxed) + 1;
            c.clear_slot(next % SLOTS);
            clock.store(next, Ordering::Relaxed);
            c.record(1.0);
        }
        assert_eq!(q(&c, &[1.0]), [10.0], "still in the window");
        let next = clock.load(Ordering::Relaxed) + 1;
        c.clear_slot(next % SLOTS);
        clock.store(next, Ordering::Relaxed);
        assert_eq!(q(&c, &[1.0]), [1.0], "the 10 s value left the window");
        assert_eq!(c.totals().count, SLOTS as u64);
    }

    #[test]
    fn octave_totals_stay_the_sum_of_their_pages_across_rotations() {
        let (c, clock) = cell();
        for round in 0..7u32 {
            for i in 0..100u32 {
                c.record(f64::from(1 + (i * 37 + round * 11) % 5000) / 1000.0);
            }
            for (octave, page) in c.existing_pages() {
                let counted: u32 = page
                    .counts
                    .iter()
                    .flatten()
                    .map(|n| n.load(Ordering::Relaxed))
                    .sum();
                assert_eq!(
                    c.totals[octave].load(Ordering::Relaxed),
                    counted,
                    "octave {octave}"
                );
            }
            let next = clock.load(Ordering::Relaxed) + 1;
            c.clear_slot(next % SLOTS);
            clock.store(next, Ordering::Relaxed);
        }
        // The window holds the last two rounds (the third slot was just cleared).
        let in_window: u32 = c.totals.iter().map(|t| t.load(Ordering::Relaxed)).sum();
        assert_eq!(in_window, 200);
    }

    #[test]
    fn quantiles_in_any_order_get_their_own_values() {
        let (c, _) = cell();
        for i in 1..=100u32 {
            c.record(f64::from(i));
        }
        let got = q(&c, &[0.99, 0.1, 0.5]);
        for (got, want) in got.into_iter().zip([99.0, 10.0, 50.0]) {
            assert!((got - want).abs() / want < 0.017, "{got} vs {want}");
        }
    }

    #[test]
    fn hostile_values_are_safe() {
        let (c, _) = cell();
        for v in [
            f64::NAN,
            -1.0,
            0.0,
            f64::MIN_POSITIVE,
            1e-300,
            1e300,
            f64::INFINITY,
        ] {
            c.record(v);
        }
        let out = q(&c, &[0.0, 0.5, 1.0]);
        assert_eq!(out[0], 0.0);
        assert_eq!(out[2], f64::INFINITY, "clamped to the largest value seen");
        assert_eq!(c.totals().count, 6, "NaN is not counted");
    }

    #[test]
    fn recording_into_a_known_octave_does_not_allocate_pages() {
        let (c, _) = cell();
        c.record(0.003);
        let before = c.heap_bytes();
        for i in 0..100 {
            c.record(0.003 + f64::from(i) * 1e-6);
        }
        assert_eq!(c.heap_bytes(), before);
    }
}
