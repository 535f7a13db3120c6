//! The protobuf render: every family as an `io.prometheus.client.MetricFamily` message,
//! length-delimited one after another, as Prometheus reads
//! `application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited`.
//!
//! The same walk as the text render (families by name, series by label set, under the family
//! map's read lock) with the same values: counters with their last exemplar, gauges,
//! summaries with their quantiles, histograms with their cumulative buckets (the `+Inf`
//! bucket included, though the format makes it optional, so that its exemplar has a place)
//! and each bucket's last exemplar, native histograms as spans and deltas with their most
//! recent exemplars. Help texts are the descriptions as given (no text-format escaping).
//!
//! The messages are written field by field into the answer ([`wire`]), not built as the
//! generated `io.prometheus.client` structs and encoded: building them cost a `String` per
//! label, a `Vec` per series and a length computed again at every level, 45 ms for 10,000
//! native series against the 20 ms target. The field numbers below are `metrics.proto`'s; the
//! tests decode every answer with the generated messages and check that encoding what they
//! decoded gives back the same bytes.

mod wire;

use std::sync::{atomic::Ordering, PoisonError};

use super::{
    exemplar::{Exemplar as Kept, ExemplarSlot},
    format::unescape_help,
    histogram::HistogramCell,
    native::NativeSnapshot,
    summary::Scratch,
    utf8::{self, Names},
    Cell, Kind, Store,
};
use wire::Wire;

/// `metrics.proto`'s field numbers, by message.
mod field {
    pub(super) mod family {
        pub(crate) const NAME: u32 = 1;
        pub(crate) const HELP: u32 = 2;
        pub(crate) const TYPE: u32 = 3;
        pub(crate) const METRIC: u32 = 4;
    }
    pub(super) mod metric {
        pub(crate) const LABEL: u32 = 1;
        pub(crate) const GAUGE: u32 = 2;
        pub(crate) const COUNTER: u32 = 3;
        pub(crate) const SUMMARY: u32 = 4;
        pub(crate) const HISTOGRAM: u32 = 7;
    }
    /// `LabelPair`.
    pub(super) mod label {
        pub(crate) const NAME: u32 = 1;
        pub(crate) const VALUE: u32 = 2;
    }
    /// `Counter` and `Gauge` (`value` only).
    pub(super) mod counter {
        pub(crate) const VALUE: u32 = 1;
        pub(crate) const EXEMPLAR: u32 = 2;
    }
    /// `Summary` and its `Quantile`s.
    pub(super) mod summary {
        pub(crate) const SAMPLE_COUNT: u32 = 1;
        pub(crate) const SAMPLE_SUM: u32 = 2;
        pub(crate) const QUANTILE: u32 = 3;
        pub(crate) const QUANTILE_QUANTILE: u32 = 1;
        pub(crate) const QUANTILE_VALUE: u32 = 2;
    }
    pub(super) mod histogram {
        pub(crate) const SAMPLE_COUNT: u32 = 1;
        pub(crate) const SAMPLE_SUM: u32 = 2;
        pub(crate) const BUCKET: u32 = 3;
        pub(crate) const SCHEMA: u32 = 5;
        pub(crate) const ZERO_THRESHOLD: u32 = 6;
        pub(crate) const ZERO_COUNT: u32 = 7;
        pub(crate) const NEGATIVE_SPAN: u32 = 9;
        pub(crate) const NEGATIVE_DELTA: u32 = 10;
        pub(crate) const POSITIVE_SPAN: u32 = 12;
        pub(crate) const POSITIVE_DELTA: u32 = 13;
        pub(crate) const EXEMPLARS: u32 = 16;
    }
    /// `Bucket` (classic) and `BucketSpan` (native).
    pub(super) mod bucket {
        pub(crate) const CUMULATIVE_COUNT: u32 = 1;
        pub(crate) const UPPER_BOUND: u32 = 2;
        pub(crate) const EXEMPLAR: u32 = 3;
        pub(crate) const SPAN_OFFSET: u32 = 1;
        pub(crate) const SPAN_LENGTH: u32 = 2;
    }
    /// `Exemplar` and its `google.protobuf.Timestamp`.
    pub(super) mod exemplar {
        pub(crate) const LABEL: u32 = 1;
        pub(crate) const VALUE: u32 = 2;
        pub(crate) const TIMESTAMP: u32 = 3;
        pub(crate) const SECONDS: u32 = 1;
        pub(crate) const NANOS: u32 = 2;
    }
}

/// `MetricType`'s values.
#[derive(Clone, Copy)]
#[repr(u8)]
enum MetricType {
    Counter = 0,
    Gauge = 1,
    Summary = 2,
    Histogram = 4,
}

impl Store {
    /// Renders the families for which `keep(name)` is true as delimited `MetricFamily`
    /// messages.
    pub(crate) fn render_protobuf(&self, keep: impl Fn(&str) -> bool) -> Vec<u8> {
        self.render_protobuf_names(keep, Names::Legacy)
    }

    /// [`render_protobuf`](Self::render_protobuf) with `names`: with [`Names::Utf8`], the
    /// conventions' families under their own names and attribute keys.
    pub(crate) fn render_protobuf_names(
        &self,
        keep: impl Fn(&str) -> bool,
        names: Names,
    ) -> Vec<u8> {
        let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
        let help = self.help.read().unwrap_or_else(PoisonError::into_inner);
        let mut writer = Writer {
            store: self,
            // The last answer's length and room for the families' longer length prefixes:
            // growing the buffer at the end would copy all of it into fresh pages.
            w: Wire::with_capacity(self.last_proto_len.load(Ordering::Relaxed) * 65 / 64 + 1024),
            utf8_labels: false,
            value: String::new(),
            scratch: Scratch::default(),
            quantiles: Vec::new(),
            buckets: Vec::new(),
            native: NativeSnapshot::default(),
        };
        for (name, family) in families.iter() {
            if family.series.is_empty() || !keep(name) {
                continue;
            }
            let utf8_name = names.family(name);
            writer.utf8_labels = utf8_name.is_some();
            let message = writer.w.begin_delimited();
            writer
                .w
                .string(field::family::NAME, utf8_name.unwrap_or(name));
            if let Some(help) = help.get(name) {
                writer.w.string(field::family::HELP, &unescape_help(help));
            }
            writer
                .w
                .uint64(field::family::TYPE, metric_type(&family.kind) as u64);
            for (labels, cell) in &family.series {
                writer.metric(&family.kind, labels, cell);
            }
            writer.w.end(message);
        }
        let out = writer.w.buf;
        self.last_proto_len.store(out.len(), Ordering::Relaxed);
        out
    }
}

fn metric_type(kind: &Kind) -> MetricType {
    match kind {
        Kind::Counter => MetricType::Counter,
        Kind::Gauge => MetricType::Gauge,
        Kind::Summary => MetricType::Summary,
        Kind::Histogram { .. } | Kind::Native { .. } => MetricType::Histogram,
    }
}

/// One render: the answer and the buffers reused across its series.
struct Writer<'a> {
    store: &'a Store,
    w: Wire,
    /// Whether label keys are the conventions' attribute keys (a UTF-8 name's family).
    utf8_labels: bool,
    /// A label value unescaped.
    value: String,
    scratch: Scratch,
    quantiles: Vec<f64>,
    buckets: Vec<(f64, u64)>,
    native: NativeSnapshot,
}

impl Writer<'_> {
    /// One series as a `Metric` field of its family; nothing for a histogram cell under
    /// another kind (never made).
    fn metric(&mut self, kind: &Kind, labels: &str, cell: &Cell) {
        if matches!(
            (cell, kind),
            (Cell::Histogram(_), k) if !matches!(k, Kind::Histogram { .. })
        ) || matches!((cell, kind), (Cell::Native(_), k) if !matches!(k, Kind::Native { .. }))
        {
            return;
        }
        let metric = self.w.begin(field::family::METRIC);
        self.labels(labels);
        match cell {
            Cell::Counter(c) => {
                let counter = self.w.begin(field::metric::COUNTER);
                let value = c.value.load(Ordering::Relaxed) as f64;
                self.w.double(field::counter::VALUE, value);
                exemplar(&mut self.w, field::counter::EXEMPLAR, &c.exemplar);
                self.w.end(counter);
            }
            Cell::Gauge(g) => {
                let value = f64::from_bits(g.load(Ordering::Relaxed));
                self.w.message(field::metric::GAUGE, |w| {
                    w.double(field::counter::VALUE, value)
                });
            }
            Cell::Summary(s) => {
                let settings = &self.store.settings;
                s.quantiles(
                    &settings.quantiles,
                    &self.store.quantile_order,
                    &mut self.scratch,
                    &mut self.quantiles,
                );
                let totals = s.totals();
                let summary = self.w.begin(field::metric::SUMMARY);
                self.w.uint64(field::summary::SAMPLE_COUNT, totals.count);
                self.w.double(field::summary::SAMPLE_SUM, totals.sum);
                for (q, v) in settings.quantiles.iter().zip(&self.quantiles) {
                    self.w.message(field::summary::QUANTILE, |w| {
                        w.double(field::summary::QUANTILE_QUANTILE, *q);
                        w.double(field::summary::QUANTILE_VALUE, *v);
                    });
                }
                self.w.end(summary);
            }
            Cell::Histogram(h) => {
                let histogram = self.w.begin(field::metric::HISTOGRAM);
                let (count, sum) = h.read(&mut self.buckets);
                self.w.uint64(field::histogram::SAMPLE_COUNT, count);
                self.w.double(field::histogram::SAMPLE_SUM, sum);
                self.classic_buckets(h, count);
                self.w.end(histogram);
            }
            Cell::Native(n) => {
                let histogram = self.w.begin(field::metric::HISTOGRAM);
                n.read_into(&self.store.settings.native, &mut self.native);
                self.w
                    .uint64(field::histogram::SAMPLE_COUNT, self.native.count);
                self.w.double(field::histogram::SAMPLE_SUM, self.native.sum);
                if let Some(classic) = &n.classic {
                    // Read again: the classic buckets' own count, which the buckets add up to.
                    let (count, _) = classic.read(&mut self.buckets);
                    self.classic_buckets(classic, count);
                }
                self.native_buckets();
                for slot in n.exemplar_slots() {
                    exemplar(&mut self.w, field::histogram::EXEMPLARS, slot);
                }
                self.w.end(histogram);
            }
        }
        self.w.end(metric);
    }

    /// The `LabelPair`s of a rendered label set (`k="v",...`), values unescaped.
    fn labels(&mut self, set: &str) {
        let mut rest = set;
        // A key is a label name: no `=` in it; its value follows in quotes.
        while let Some((key, after)) = rest
            .split_once('=')
            .and_then(|(key, after)| Some((key, after.strip_prefix('"')?)))
        {
            // The value ends at the first quote not escaped by a backslash; most values have
            // no backslash at all.
            let end = match after.find('"') {
                Some(quote) if !after[..quote].contains('\\') => quote,
                _ => closing_quote(after),
            };
            let raw = &after[..end];
            let value = match raw.contains('\\') {
                false => raw,
                true => {
                    unescape_into(raw, &mut self.value);
                    &self.value
                }
            };
            let key = match self.utf8_labels {
                true => utf8::label_key(key),
                false => key,
            };
            self.w.message(field::metric::LABEL, |w| {
                w.string(field::label::NAME, key);
                w.string(field::label::VALUE, value);
            });
            let next = &after[(end + 1).min(after.len())..];
            rest = next.strip_prefix(',').unwrap_or(next);
        }
    }

    /// A classic histogram's cumulative buckets, read into `self.buckets`, and the `+Inf`
    /// one (`count`), each with its exemplar.
    fn classic_buckets(&mut self, h: &HistogramCell, count: u64) {
        let bounds = self.buckets.iter().copied().chain([(f64::INFINITY, count)]);
        for (index, (bound, cumulative)) in bounds.enumerate() {
            let bucket = self.w.begin(field::histogram::BUCKET);
            self.w.uint64(field::bucket::CUMULATIVE_COUNT, cumulative);
            self.w.double(field::bucket::UPPER_BOUND, bound);
            if let Some(slot) = h.exemplars.get(index) {
                exemplar(&mut self.w, field::bucket::EXEMPLAR, slot);
            }
            self.w.end(bucket);
        }
    }

    /// The native fields of `self.native`: schema, zero bucket, spans and deltas (an empty
    /// histogram keeps a span of no buckets, which tells it from a classic one, as
    /// client_golang marks it).
    fn native_buckets(&mut self) {
        use field::histogram::*;
        let native = &self.native;
        self.w.sint64(SCHEMA, i64::from(native.schema));
        self.w.double(ZERO_THRESHOLD, native.zero_threshold);
        self.w.uint64(ZERO_COUNT, native.zero_count);
        spans_and_deltas(&mut self.w, &native.negative, NEGATIVE_SPAN, NEGATIVE_DELTA);
        if native.positive.is_empty() && native.negative.is_empty() {
            self.w.message(POSITIVE_SPAN, |w| {
                w.sint64(field::bucket::SPAN_OFFSET, 0);
                w.uint64(field::bucket::SPAN_LENGTH, 0);
            });
        }
        spans_and_deltas(&mut self.w, &native.positive, POSITIVE_SPAN, POSITIVE_DELTA);
    }
}

/// Where the quote that closes a label value (`after` starts with its first character) is: the
/// first not escaped by a backslash (the end when there is none).
fn closing_quote(after: &str) -> usize {
    let mut escaped = false;
    for (i, b) in after.bytes().enumerate() {
        match b {
            b'\\' if !escaped => escaped = true,
            b'"' if !escaped => return i,
            _ => escaped = false,
        }
    }
    after.len()
}

/// A label value's escapes (`\\`, `\"`, `\n`) undone into `out`.
fn unescape_into(raw: &str, out: &mut String) {
    out.clear();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => {}
            },
            c => out.push(c),
        }
    }
}

/// Populated native buckets (`(index, count)`, ascending) as the format's spans (runs of
/// consecutive buckets: the first span's offset is its first index, each next one's the gap
/// since the previous span) and then its deltas (each count minus the one before it, the
/// first minus zero).
fn spans_and_deltas(w: &mut Wire, buckets: &[(i64, u64)], span_field: u32, delta_field: u32) {
    let mut previous = None::<i64>;
    let mut run = buckets;
    while let Some(&(first, _)) = run.first() {
        let length = run
            .iter()
            .zip(first..)
            .take_while(|((index, _), expected)| index == expected)
            .count();
        let offset = previous.map_or(first, |last| first - last - 1);
        w.message(span_field, |w| {
            w.sint64(field::bucket::SPAN_OFFSET, offset);
            w.uint64(field::bucket::SPAN_LENGTH, length as u64);
        });
        previous = Some(first + length as i64 - 1);
        run = &run[length..];
    }
    let mut last = 0_i64;
    for &(_, count) in buckets {
        w.sint64(delta_field, count as i64 - last);
        last = count as i64;
    }
}

/// A kept exemplar as the format's `Exemplar` field: `trace_id` and `span_id` labels, the
/// value, the time; nothing when the slot is empty.
fn exemplar(w: &mut Wire, field: u32, slot: &ExemplarSlot) {
    use field::exemplar::*;
    let Some(Kept { ids, value, at }) = slot.get() else {
        return;
    };
    let message = w.begin(field);
    let mut hex = [0_u8; 32];
    for (name, id) in [
        ("trace_id", &ids.trace_id.to_bytes()[..]),
        ("span_id", &ids.span_id.to_bytes()[..]),
    ] {
        w.message(LABEL, |w| {
            w.string(field::label::NAME, name);
            w.string(field::label::VALUE, lower_hex(id, &mut hex));
        });
    }
    w.double(VALUE, value);
    // google.protobuf.Timestamp is proto3: fields at zero are left out.
    let seconds = at.floor();
    let nanos = ((at - seconds) * 1e9).round().min(999_999_999.0) as i64;
    w.message(TIMESTAMP, |w| {
        if seconds != 0.0 {
            w.int64(SECONDS, seconds as i64);
        }
        if nanos != 0 {
            w.int64(NANOS, nanos);
        }
    });
    w.end(message);
}

/// `bytes` as lowercase hexadecimal, in `out`.
fn lower_hex<'a>(bytes: &[u8], out: &'a mut [u8; 32]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&out[..2 * bytes.len()]).unwrap_or_default()
}

#[cfg(test)]
mod tests;
