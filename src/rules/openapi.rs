//! The operations of an OpenAPI (or Swagger) document, and the subjects the rules are written
//! for: each operation, or each tag with its operations.

use std::{collections::BTreeMap, path::Path};

use serde_json::Value;

use super::{
    promql::{quote, regex_literal, template_safe},
    GroupBy, RulesError,
};

/// The HTTP methods an OpenAPI path item may hold, in the order operations are listed.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// An operation of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiOperation {
    /// `operationId`.
    pub id: String,
    /// The method, upper case.
    pub method: String,
    /// The path template.
    pub path: String,
    /// `summary`, else `description`'s first line.
    pub summary: Option<String>,
    /// `tags`.
    pub tags: Vec<String>,
}

/// Reads a document from a file: JSON when the name ends in `.json`, YAML otherwise.
pub fn read_document(path: &Path) -> Result<Value, RulesError> {
    let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let is_json = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    if is_json {
        serde_json::from_str(&text)
            .map_err(|e| RulesError::Parse(format!("{}: {e}", path.display())))
    } else {
        serde_norway::from_str(&text)
            .map_err(|e| RulesError::Parse(format!("{}: {e}", path.display())))
    }
}

/// The operations of a Swagger 2.0 or OpenAPI 3.x document that have an `operationId`, sorted
/// by it; a repeated id keeps its first path (in path order).
pub fn operations(document: &Value) -> Result<Vec<ApiOperation>, RulesError> {
    let paths = document
        .get("paths")
        .and_then(Value::as_object)
        .ok_or_else(|| RulesError::Parse("the document has no `paths` object".to_owned()))?;
    let mut found: BTreeMap<String, ApiOperation> = BTreeMap::new();
    for (template, item) in paths {
        if template.starts_with("x-") {
            continue;
        }
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let Some(id) = op.get("operationId").and_then(Value::as_str) else {
                continue;
            };
            if id.is_empty() || found.contains_key(id) {
                continue;
            }
            let summary = op
                .get("summary")
                .and_then(Value::as_str)
                .or_else(|| {
                    op.get("description")
                        .and_then(Value::as_str)
                        .and_then(|d| d.lines().next())
                })
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
            let tags = op
                .get("tags")
                .and_then(Value::as_array)
                .map(|tags| {
                    tags.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            found.insert(
                id.to_owned(),
                ApiOperation {
                    id: id.to_owned(),
                    method: method.to_ascii_uppercase(),
                    path: template.clone(),
                    summary,
                    tags,
                },
            );
        }
    }
    if found.is_empty() {
        return Err(RulesError::Empty("operation with an operationId"));
    }
    Ok(found.into_values().collect())
}

/// What the rules are about: an operation or a tag, the selector of its raw series, and the
/// text of its runbook.
pub(super) struct Subject {
    pub(super) label: &'static str,
    pub(super) value: String,
    /// Selector of the raw series (tag mode: the tag's operations); empty by operation, where
    /// one `sum by (operation)` records every operation.
    pub(super) raw: String,
    pub(super) title: String,
    pub(super) runbook: String,
}

/// The subjects of `ops`: one per operation, or one per tag.
pub(super) fn subjects(
    ops: &[ApiOperation],
    group_by: GroupBy,
) -> Result<Vec<Subject>, RulesError> {
    match group_by {
        GroupBy::Operation => Ok(ops
            .iter()
            .map(|op| {
                let summary = op
                    .summary
                    .as_deref()
                    .unwrap_or("no summary in the document");
                Subject {
                    label: "operation",
                    value: op.id.clone(),
                    raw: String::new(),
                    title: format!("{} ({} {})", op.id, op.method, op.path),
                    runbook: template_safe(&format!(
                        "Operation {} ({} {}): {summary}",
                        op.id, op.method, op.path
                    )),
                }
            })
            .collect()),
        GroupBy::Tag => {
            let mut tags: BTreeMap<&str, Vec<&ApiOperation>> = BTreeMap::new();
            for op in ops {
                for tag in &op.tags {
                    tags.entry(tag).or_default().push(op);
                }
            }
            if tags.is_empty() {
                return Err(RulesError::Empty("tagged operation"));
            }
            Ok(tags
                .into_iter()
                .map(|(tag, ops)| {
                    let alternatives: Vec<String> =
                        ops.iter().map(|op| regex_literal(&op.id)).collect();
                    let listed: Vec<String> = ops
                        .iter()
                        .map(|op| match &op.summary {
                            Some(s) => format!("{} ({s})", op.id),
                            None => op.id.clone(),
                        })
                        .collect();
                    Subject {
                        label: "tag",
                        value: tag.to_owned(),
                        raw: format!(r#"operation=~"{}""#, quote(&alternatives.join("|"))),
                        title: format!("tag {tag} ({} operations)", ops.len()),
                        runbook: template_safe(&format!(
                            "Tag {tag}, {} operations: {}",
                            ops.len(),
                            listed.join("; ")
                        )),
                    }
                })
                .collect())
        }
    }
}
