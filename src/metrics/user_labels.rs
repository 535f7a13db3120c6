//! Metric labels of the user's own ([`MetricLabel`]): a value taken from each request's head
//! (a header, or a hook), passed through a capped table per label.
//!
//! Every value a label has seen gets its own series while the label has fewer than its
//! [`max_values`](MetricLabel::with_max_values) values (default
//! [`DEFAULT_MAX_LABEL_VALUES`]); later values, and values longer than
//! [`MAX_LABEL_VALUE_LEN`] bytes, share `_overflow` and are counted in
//! `{prefix}http_request_label_overflow_total{label="<name>"}`, the operations' rule. A request
//! without a value (no header, a header that is not visible ASCII, an empty value, a hook
//! answering `None`) records its series without the label, which Prometheus reads as the
//! label being empty. So a layer with labels `l1..ln` holds at most
//! `Π(max_values(li) + 2)` label combinations, each with the layer's operations and methods.

use std::{
    borrow::Cow,
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, PoisonError, RwLock},
};

use http::{HeaderName, Request};
use metrics::{Key, Label, SharedString};

use super::toolkit::{LabelTable, RecorderRef};
use crate::head::RequestHead;

/// At most this many labels of the user's own per layer.
pub const MAX_METRIC_LABELS: usize = 4;

/// Distinct values a label keeps by default before `_overflow`.
pub const DEFAULT_MAX_LABEL_VALUES: usize = 100;

/// Values longer than this many bytes are counted as `_overflow`.
pub const MAX_LABEL_VALUE_LEN: usize = 128;

/// Label names the request families already use, in either naming, or that Prometheus gives
/// a meaning.
const RESERVED: [&str; 11] = [
    "method",
    "operation",
    "code",
    "le",
    "quantile",
    "http_request_method",
    "http_route",
    "http_response_status_code",
    "error_type",
    "network_protocol_version",
    "url_scheme",
];

type Hook = dyn for<'a> Fn(&RequestHead<'a>) -> Option<Cow<'a, str>> + Send + Sync;

#[derive(Clone)]
enum Source {
    Header(HeaderName),
    Hook(Arc<Hook>),
}

/// A metric label of the user's own on the HTTP server families, its value taken from each
/// request's head.
///
/// Every value the label has seen gets its own series while it has fewer than
/// [`max_values`](Self::with_max_values) values; later values, and values longer than
/// [`MAX_LABEL_VALUE_LEN`] bytes, share `_overflow` and are counted in
/// `{prefix}http_request_label_overflow_total{label="<name>"}`. A request without a value
/// records its series without the label.
///
/// ```
/// use std::borrow::Cow;
/// use towerscope::metrics::MetricLabel;
///
/// // The value of a header the gateway sets.
/// let tenant = MetricLabel::from_header("tenant", "x-tenant-id").unwrap().with_max_values(50);
/// // A value computed from the head: the first path segment.
/// let area = MetricLabel::new("area", |head| {
///     head.path().split('/').nth(1).map(Cow::Borrowed)
/// })
/// .unwrap();
/// assert_eq!(area.name(), "area");
/// assert!(MetricLabel::from_header("operation", "x-op").is_err()); // taken by the families
/// ```
#[derive(Clone)]
pub struct MetricLabel {
    name: String,
    source: Source,
    max_values: usize,
}

impl fmt::Debug for MetricLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Header(header) => header.as_str(),
            Source::Hook(_) => "<hook>",
        };
        f.debug_struct("MetricLabel")
            .field("name", &self.name)
            .field("source", &source)
            .field("max_values", &self.max_values)
            .finish()
    }
}

/// Why a [`MetricLabel`] cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricLabelError(String);

impl fmt::Display for MetricLabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MetricLabelError {}

/// Why `name` cannot be a label of the user's own, if it cannot.
pub(crate) fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "`{name}` is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"
        ));
    }
    if name.starts_with("__") {
        return Err(format!(
            "`{name}`: names starting with `__` are Prometheus' own"
        ));
    }
    if RESERVED.contains(&name) {
        return Err(format!(
            "`{name}` is a label of the request families already"
        ));
    }
    Ok(())
}

impl MetricLabel {
    /// The label `name`, valued by `value` from each request's head (`None` or an empty
    /// value: the series has no such label). The hook runs on every measured request: keep it
    /// cheap, and return [`Cow::Borrowed`] from the head to stay allocation-free.
    pub fn new(
        name: &str,
        value: impl for<'a> Fn(&RequestHead<'a>) -> Option<Cow<'a, str>> + Send + Sync + 'static,
    ) -> Result<Self, MetricLabelError> {
        Self::with_source(name, Source::Hook(Arc::new(value)))
    }

    /// The label `name`, valued by the request header `header` (its first value, when it is
    /// visible ASCII).
    pub fn from_header(name: &str, header: &str) -> Result<Self, MetricLabelError> {
        let header = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
            MetricLabelError(format!(
                "metric label `{name}`: `{header}` is not a header name"
            ))
        })?;
        Self::with_source(name, Source::Header(header))
    }

    fn with_source(name: &str, source: Source) -> Result<Self, MetricLabelError> {
        check_label_name(name).map_err(|e| MetricLabelError(format!("metric label {e}")))?;
        Ok(Self {
            name: name.to_owned(),
            source,
            max_values: DEFAULT_MAX_LABEL_VALUES,
        })
    }

    /// Keeps at most `max` (at least 1) distinct values; later ones are `_overflow`. Defaults
    /// to [`DEFAULT_MAX_LABEL_VALUES`].
    pub fn with_max_values(mut self, max: usize) -> Self {
        self.max_values = max.max(1);
        self
    }

    /// The label's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cap on distinct values.
    pub fn max_values(&self) -> usize {
        self.max_values
    }

    fn value<'a>(&self, head: &RequestHead<'a>) -> Option<Cow<'a, str>> {
        match &self.source {
            Source::Header(header) => head
                .headers()
                .get(header)
                .and_then(|v| v.to_str().ok())
                .map(Cow::Borrowed),
            Source::Hook(hook) => hook(head),
        }
    }
}

/// One value of a label: its index in the combination key.
#[derive(Debug)]
struct Value {
    index: u32,
}

/// The values of one label, capped.
struct LabelValues {
    label: MetricLabel,
    values: LabelTable<Value>,
    /// The label value of each index after 0 ("no value"), in the order they were made.
    by_index: Mutex<Vec<SharedString>>,
}

impl LabelValues {
    fn make(&self, label: SharedString) -> Value {
        let mut by_index = self.by_index.lock().unwrap_or_else(PoisonError::into_inner);
        by_index.push(label);
        Value {
            index: by_index.len() as u32,
        }
    }

    /// The index of the value `value` (0: none).
    fn index(&self, value: Option<&str>) -> u32 {
        match value {
            None | Some("") => 0,
            Some(v) if v.len() > MAX_LABEL_VALUE_LEN => {
                self.values.overflowed(|l| self.make(l)).index
            }
            Some(v) => self.values.with(v, |l| self.make(l), |value| value.index),
        }
    }

    /// The label of the value at `index`, `None` for 0 (no value).
    fn label(&self, index: u32) -> Option<Label> {
        let by_index = self.by_index.lock().unwrap_or_else(PoisonError::into_inner);
        let value = by_index.get((index as usize).checked_sub(1)?)?;
        Some(Label::new(self.label.name.clone(), value.clone()))
    }
}

type Combination = [u32; MAX_METRIC_LABELS];

/// The series tables of a layer with labels of the user's own: one table `T` per combination
/// of their values, built by `build` with those labels on every key.
pub(crate) struct LabeledTables<T> {
    labels: Box<[LabelValues]>,
    tables: RwLock<HashMap<Combination, T, foldhash::fast::RandomState>>,
    build: Box<dyn Fn(Arc<[Label]>) -> T + Send + Sync>,
}

impl<T> fmt::Debug for LabeledTables<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.labels.iter().map(|l| l.label.name()).collect();
        f.debug_struct("LabeledTables")
            .field("labels", &names)
            .finish_non_exhaustive()
    }
}

impl<T: Clone> LabeledTables<T> {
    /// Tables for `labels` (the first [`MAX_METRIC_LABELS`]), each label's overflow counted in
    /// `overflow{label="<name>"}` of `recorder`, registered now.
    pub(crate) fn new(
        labels: &[MetricLabel],
        recorder: &RecorderRef,
        overflow: &str,
        build: impl Fn(Arc<[Label]>) -> T + Send + Sync + 'static,
    ) -> Self {
        let labels = labels
            .iter()
            .take(MAX_METRIC_LABELS)
            .map(|label| LabelValues {
                values: LabelTable::new(label.max_values).with_overflow_counter_key(
                    recorder.clone(),
                    Key::from_parts(
                        overflow.to_owned(),
                        vec![Label::new("label", label.name.clone())],
                    ),
                ),
                label: label.clone(),
                by_index: Mutex::default(),
            })
            .collect();
        Self {
            labels,
            tables: RwLock::new(HashMap::default()),
            build: Box::new(build),
        }
    }

    /// `f` of the table of `req`'s label values, built on first use.
    pub(crate) fn with<B, R>(&self, req: &Request<B>, f: impl FnOnce(&T) -> R) -> R {
        let head = RequestHead::of(req);
        let mut key = Combination::default();
        for (slot, label) in key.iter_mut().zip(&*self.labels) {
            *slot = label.index(label.label.value(&head).as_deref());
        }
        {
            let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(table) = tables.get(&key) {
                return f(table);
            }
        }
        let extra: Arc<[Label]> = self
            .labels
            .iter()
            .zip(key)
            .filter_map(|(label, index)| label.label(index))
            .collect();
        let table = self
            .tables
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_insert_with(|| (self.build)(extra))
            .clone();
        f(&table)
    }
}
