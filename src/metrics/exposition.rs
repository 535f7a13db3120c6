//! Canonical exposition text: families sorted by name, series by labels, filtered by family.
//!
//! `metrics-exporter-prometheus` renders families and series in hash-map order. Sorting makes
//! two scrapes of the same state byte-identical (diffable, testable), and the family structure
//! is what `?comp=` filters on.

/// One family block: its `# HELP`/`# TYPE` lines and its series, each series being the
/// consecutive lines of one label set (a summary's quantiles, `_sum` and `_count` together).
struct Family<'a> {
    name: &'a str,
    header: Vec<&'a str>,
    series: Vec<(&'a str, Vec<&'a str>)>,
}

/// Re-renders `text` with families sorted by name and series sorted by their labels, keeping
/// only the families for which `keep(name)` is true.
pub(crate) fn canonicalize(text: &str, keep: impl Fn(&str) -> bool) -> String {
    let mut families: Vec<Family<'_>> = Vec::new();
    let mut open = false;
    for line in text.lines() {
        if line.is_empty() {
            open = false;
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
        {
            let name = rest.split(' ').next().unwrap_or(rest);
            match families.last_mut() {
                Some(f) if open && f.name == name => f.header.push(line),
                _ => {
                    families.push(Family {
                        name,
                        header: vec![line],
                        series: Vec::new(),
                    });
                    open = true;
                }
            }
            continue;
        }
        if line.starts_with('#') {
            if let (true, Some(f)) = (open, families.last_mut()) {
                f.header.push(line);
            }
            continue;
        }
        let key = series_key(line);
        if !open {
            families.push(Family {
                name: sample_name(line),
                header: Vec::new(),
                series: Vec::new(),
            });
            open = true;
        }
        let Some(family) = families.last_mut() else {
            continue;
        };
        match family.series.last_mut() {
            Some((k, lines)) if *k == key => lines.push(line),
            _ => family.series.push((key, vec![line])),
        }
    }

    families.retain(|f| keep(f.name));
    families.sort_by(|a, b| a.name.cmp(b.name));
    let mut out = String::with_capacity(text.len());
    for family in &mut families {
        family.series.sort_by(|a, b| a.0.cmp(b.0));
        for line in &family.header {
            out.push_str(line);
            out.push('\n');
        }
        for (_, lines) in &family.series {
            for line in lines {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push('\n');
    }
    out
}

fn sample_name(line: &str) -> &str {
    let end = line.find(['{', ' ']).unwrap_or(line.len());
    &line[..end]
}

/// The label set of a sample line without the `quantile`/`le` label that the exporter appends
/// last; the same for all lines of one series.
fn series_key(line: &str) -> &str {
    let head = line.rsplit_once(' ').map_or(line, |(head, _)| head);
    let Some(open) = head.find('{') else {
        return "";
    };
    let labels = head[open + 1..]
        .strip_suffix('}')
        .unwrap_or(&head[open + 1..]);
    for (alone, after_others) in [("quantile=\"", ",quantile=\""), ("le=\"", ",le=\"")] {
        if labels.starts_with(alone) {
            return "";
        }
        if let Some(pos) = labels.rfind(after_others) {
            return &labels[..pos];
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAMBLED: &str = "\
# TYPE b_total counter
b_total{x=\"2\"} 2
b_total{x=\"1\"} 1

# HELP a_seconds Durations.
# TYPE a_seconds summary
a_seconds{op=\"z\",quantile=\"0.5\"} 1
a_seconds_sum{op=\"z\"} 1
a_seconds_count{op=\"z\"} 1
a_seconds{op=\"y\",quantile=\"0.5\"} 2
a_seconds_sum{op=\"y\"} 2
a_seconds_count{op=\"y\"} 1

# TYPE c_bucket_seconds histogram
c_bucket_seconds_bucket{le=\"1\"} 0
c_bucket_seconds_bucket{le=\"+Inf\"} 0
c_bucket_seconds_sum 0
c_bucket_seconds_count 0

";

    #[test]
    fn sorts_families_and_series_keeping_series_together() {
        let expected = "\
# HELP a_seconds Durations.
# TYPE a_seconds summary
a_seconds{op=\"y\",quantile=\"0.5\"} 2
a_seconds_sum{op=\"y\"} 2
a_seconds_count{op=\"y\"} 1
a_seconds{op=\"z\",quantile=\"0.5\"} 1
a_seconds_sum{op=\"z\"} 1
a_seconds_count{op=\"z\"} 1

# TYPE b_total counter
b_total{x=\"1\"} 1
b_total{x=\"2\"} 2

# TYPE c_bucket_seconds histogram
c_bucket_seconds_bucket{le=\"1\"} 0
c_bucket_seconds_bucket{le=\"+Inf\"} 0
c_bucket_seconds_sum 0
c_bucket_seconds_count 0

";
        assert_eq!(canonicalize(SCRAMBLED, |_| true), expected);
    }

    #[test]
    fn filters_by_family() {
        let out = canonicalize(SCRAMBLED, |name| name == "b_total");
        assert_eq!(
            out,
            "# TYPE b_total counter\nb_total{x=\"1\"} 1\nb_total{x=\"2\"} 2\n\n"
        );
        assert_eq!(canonicalize(SCRAMBLED, |_| false), "");
    }

    #[test]
    fn escaped_label_values_do_not_confuse_the_key() {
        let line = "m{op=\"a,quantile=\\\"x\\\" }\",quantile=\"0.9\"} 3";
        assert_eq!(series_key(line), "op=\"a,quantile=\\\"x\\\" }\"");
    }
}
