//! `metric.labels`: labels of the user's own on the HTTP server families, valued from a
//! request header (see [`MetricLabel`]).

use serde::Deserialize;

use super::error::Problems;
use crate::metrics::{check_label_name, MetricLabel, DEFAULT_MAX_LABEL_VALUES, MAX_METRIC_LABELS};

/// One entry of `metric.labels`: the label `name`, valued by the request header `header`,
/// with at most `max_values` distinct values (the rest `_overflow`).
///
/// ```yaml
/// metric:
///   labels:
///     - { name: tenant, header: x-tenant-id, max_values: 50 }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricLabelConfig {
    /// The label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not one the request families have.
    pub name: String,
    /// The request header whose (first) value is the label's.
    pub header: String,
    /// Distinct values kept before `_overflow`. Defaults to 100.
    #[serde(default = "default_max_values")]
    pub max_values: usize,
}

fn default_max_values() -> usize {
    DEFAULT_MAX_LABEL_VALUES
}

impl MetricLabelConfig {
    /// The label of this entry, if it is valid.
    pub fn label(&self) -> Option<MetricLabel> {
        MetricLabel::from_header(&self.name, &self.header)
            .ok()
            .map(|label| label.with_max_values(self.max_values))
    }
}

/// Checks `metric.labels`: each entry, the count, and that names are distinct.
pub(super) fn check(labels: &[MetricLabelConfig], p: &mut Problems<'_>) {
    if labels.len() > MAX_METRIC_LABELS {
        p.push(
            "labels",
            format!(
                "at most {MAX_METRIC_LABELS} labels (got {}): each multiplies the series",
                labels.len()
            ),
        );
    }
    for (i, label) in labels.iter().enumerate() {
        let mut p = p.block(&format!("labels[{i}]"));
        if let Err(e) = check_label_name(&label.name) {
            p.push("name", e);
        } else if labels[..i].iter().any(|l| l.name == label.name) {
            p.push("name", format!("`{}` is given twice", label.name));
        }
        if http::HeaderName::from_bytes(label.header.as_bytes()).is_err() {
            p.push("header", format!("`{}` is not a header name", label.header));
        }
        if label.max_values == 0 {
            p.push("max_values", "must be at least 1");
        }
    }
}
