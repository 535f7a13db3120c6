//! The text formats of a render: Prometheus text 0.0.4 and OpenMetrics 1.0.

use std::sync::{atomic::Ordering, PoisonError};

use super::{
    format, histogram::HistogramCell, summary::Scratch, utf8, utf8::Names, Cell, Format, Kind,
    Store,
};

impl Store {
    /// Renders the families for which `keep(name)` is true, in the text format 0.0.4: families
    /// by name, series by label set, one blank line after each family.
    ///
    /// Holds the family map's read lock for the walk: recording goes on meanwhile, creating a
    /// new series waits for the end of the render.
    ///
    /// In [`Format::OpenMetrics`]: a counter family `foo_total` is declared as `foo` (its
    /// sample keeps the name `foo_total`, so a series is named the same in both formats); a
    /// counter whose name does not end in `_total` is declared `unknown` (renaming it would
    /// change its series' name); help texts escape `"`; the counters' and buckets' last
    /// exemplars follow their samples; no blank lines; `# EOF` ends the text.
    pub(crate) fn render(&self, keep: impl Fn(&str) -> bool, format: Format) -> String {
        self.render_names(keep, format, Names::Legacy)
    }

    /// [`render`](Self::render) with `names`: with [`Names::Utf8`], the conventions' families
    /// under their own names, quoted (see [`utf8`]).
    pub(crate) fn render_names(
        &self,
        keep: impl Fn(&str) -> bool,
        format: Format,
        names: Names,
    ) -> String {
        let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
        let help = self.help.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::with_capacity(self.last_len.load(Ordering::Relaxed));
        let om = format == Format::OpenMetrics;
        let mut render = Render {
            exemplars: om,
            ..Render::default()
        };
        for (name, family) in families.iter() {
            if family.series.is_empty() || !keep(name) {
                continue;
            }
            let utf8_name = names.family(name);
            let (declared, type_name) = match (utf8_name, &family.kind, om) {
                (Some(utf8_name), kind, _) => (utf8_name, kind.type_name()),
                (None, Kind::Counter, true) => match name.strip_suffix("_total") {
                    Some(base) if !base.is_empty() => (base, "counter"),
                    _ => (name.as_str(), "unknown"),
                },
                (None, kind, _) => (name.as_str(), kind.type_name()),
            };
            let push_declared = |out: &mut String| match utf8_name {
                Some(_) => utf8::push_quoted(out, declared),
                None => out.push_str(declared),
            };
            render.exemplars =
                om && !(matches!(family.kind, Kind::Counter) && type_name == "unknown");
            render.quoted = utf8_name.is_some();
            if let Some(help) = help.get(name) {
                out.push_str("# HELP ");
                push_declared(&mut out);
                out.push(' ');
                if om {
                    out.push_str(&help.replace('"', "\\\""));
                } else {
                    out.push_str(help);
                }
                out.push('\n');
            }
            out.push_str("# TYPE ");
            push_declared(&mut out);
            out.push(' ');
            out.push_str(type_name);
            out.push('\n');
            let sample_name = utf8_name.unwrap_or(name);
            for (labels, cell) in &family.series {
                if render.quoted {
                    let labels = utf8::label_set(labels);
                    render.series(self, &mut out, sample_name, &family.kind, &labels, cell);
                } else {
                    render.series(self, &mut out, sample_name, &family.kind, labels, cell);
                }
            }
            if !om {
                out.push('\n');
            }
        }
        if om {
            out.push_str("# EOF\n");
        }
        self.last_len.store(out.len(), Ordering::Relaxed);
        out
    }
}

/// Buffers reused across the series of one render.
#[derive(Default)]
struct Render {
    /// Whether exemplars are written (OpenMetrics).
    exemplars: bool,
    /// Whether the family's name is quoted inside the braces (a UTF-8 name).
    quoted: bool,
    scratch: Scratch,
    quantiles: Vec<f64>,
    buckets: Vec<(f64, u64)>,
}

/// The writer of a sample line's head: `name{labels} ` or `{"name",labels} `.
type Head = fn(&mut String, &str, &str, &str, Option<(&str, &str)>);

impl Render {
    fn head(&self) -> Head {
        if self.quoted {
            utf8::push_sample_head
        } else {
            format::push_sample_head
        }
    }

    fn series(
        &mut self,
        store: &Store,
        out: &mut String,
        name: &str,
        kind: &Kind,
        labels: &str,
        cell: &Cell,
    ) {
        use format::{push_f64, push_u64};
        let head = self.head();
        match (cell, kind) {
            (Cell::Counter(c), _) => {
                head(out, name, "", labels, None);
                push_u64(out, c.value.load(Ordering::Relaxed));
                if self.exemplars {
                    c.exemplar.push(out);
                }
            }
            (Cell::Gauge(g), _) => {
                head(out, name, "", labels, None);
                push_f64(out, f64::from_bits(g.load(Ordering::Relaxed)));
            }
            (Cell::Summary(s), _) => {
                s.quantiles(
                    &store.settings.quantiles,
                    &store.quantile_order,
                    &mut self.scratch,
                    &mut self.quantiles,
                );
                for (q, value) in store.quantile_labels.iter().zip(&self.quantiles) {
                    head(out, name, "", labels, Some(("quantile", q)));
                    push_f64(out, *value);
                    out.push('\n');
                }
                let totals = s.totals();
                head(out, name, "_sum", labels, None);
                push_f64(out, totals.sum);
                out.push('\n');
                head(out, name, "_count", labels, None);
                push_u64(out, totals.count);
            }
            (Cell::Histogram(h), Kind::Histogram { le, .. }) => {
                self.classic(out, name, labels, h, le)
            }
            (Cell::Native(n), Kind::Native { classic }) => match (&n.classic, classic) {
                (Some(h), Some((_, le))) => self.classic(out, name, labels, h, le),
                // Native only: the text formats have no native buckets, the +Inf one holds
                // every observation (as client_golang writes such a histogram).
                _ => {
                    let (count, sum) = n.totals();
                    head(out, name, "_bucket", labels, Some(("le", "+Inf")));
                    push_u64(out, count);
                    out.push('\n');
                    head(out, name, "_sum", labels, None);
                    push_f64(out, sum);
                    out.push('\n');
                    head(out, name, "_count", labels, None);
                    push_u64(out, count);
                }
            },
            // A histogram cell is only ever created under its kind.
            (Cell::Histogram(_) | Cell::Native(_), _) => return,
        }
        out.push('\n');
    }

    /// A classic histogram's buckets (with their exemplars in OpenMetrics), sum and count.
    fn classic(
        &mut self,
        out: &mut String,
        name: &str,
        labels: &str,
        h: &HistogramCell,
        le: &[String],
    ) {
        use format::{push_f64, push_u64};
        let head = self.head();
        let (count, sum) = h.read(&mut self.buckets);
        let exemplar = |out: &mut String, index: usize| {
            if let Some(slot) = h.exemplars.get(index).filter(|_| self.exemplars) {
                slot.push(out);
            }
        };
        for (index, (le, (_, cumulative))) in le.iter().zip(&self.buckets).enumerate() {
            head(out, name, "_bucket", labels, Some(("le", le)));
            push_u64(out, *cumulative);
            exemplar(out, index);
            out.push('\n');
        }
        head(out, name, "_bucket", labels, Some(("le", "+Inf")));
        push_u64(out, count);
        exemplar(out, le.len());
        out.push('\n');
        head(out, name, "_sum", labels, None);
        push_f64(out, sum);
        out.push('\n');
        head(out, name, "_count", labels, None);
        push_u64(out, count);
    }
}
