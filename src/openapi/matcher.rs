//! Routing: path templates become matchit routes (parameters renamed by position), base paths
//! are normalized and stripped, and a request path is looked up with a trailing slash ignored
//! and `HEAD` falling back to `GET`.

use std::collections::HashSet;

use matchit::{InsertError, Router};

use super::{percent::normalize_literal, OpenApiError, OpenApiResolver, Operation, METHODS};
use crate::operation::OperationId;

/// Indexes of [`METHODS`] that [`OpenApiResolver::lookup`] treats specially.
const GET: usize = 0;
const HEAD: usize = 5;

/// The routes already registered, by index in [`METHODS`]: a second operation with the same
/// method and route is a duplicate, not a matchit conflict.
pub(super) type Seen = HashSet<(usize, String)>;

impl OpenApiResolver {
    /// Looks `path` (base path and one trailing slash stripped) up in the router of
    /// `METHODS[index]`; `HEAD` falls back to `GET`, the handler most servers answer it with.
    pub(super) fn lookup(&self, index: usize, path: &str) -> Option<&OperationId> {
        let at = |index: usize| {
            let router: &Router<OperationId> = self.routers.get(index)?;
            let matched = router.at(path).ok()?;
            // matchit lets a parameter match an empty segment before a `/` (`/projects//logs`)
            // but not at the end; an empty value is rejected everywhere, for consistency.
            let empty_parameter = matched.params.iter().any(|(_, value)| value.is_empty());
            (!empty_parameter).then_some(matched.value)
        };
        at(index).or_else(|| if index == HEAD { at(GET) } else { None })
    }

    /// Registers the operations of one path template (index in [`METHODS`] and
    /// `operationId`, in document order). An operation whose method and route are in `seen`
    /// is counted as a duplicate: the first in document order wins.
    pub(super) fn register(
        &mut self,
        template: &str,
        operations: Vec<(usize, String)>,
        seen: &mut Seen,
    ) -> Result<(), OpenApiError> {
        let Some(&(first, _)) = operations.first() else {
            return Ok(());
        };
        let invalid = |index: usize, reason| OpenApiError::InvalidTemplate {
            method: METHODS[index].clone(),
            path: template.to_owned(),
            reason,
        };
        // A template that cannot be routed is blamed on its first operation.
        let route = route_for_template(template).map_err(|reason| invalid(first, reason))?;
        for (index, id) in operations {
            if !seen.insert((index, route.clone())) {
                self.duplicates += 1;
                continue;
            }
            let id = OperationId::from(id);
            self.routers[index]
                .insert(route.clone(), id.clone())
                .map_err(|err| invalid(index, insert_error_reason(err)))?;
            self.operations.push(Operation {
                method: METHODS[index].clone(),
                template: template.into(),
                id,
            });
        }
        Ok(())
    }
}

/// Strips `base` (normalized, `""` for the root) from `path` at a segment boundary.
pub(super) fn strip_base_path<'p>(path: &'p str, base: &str) -> Option<&'p str> {
    match path.strip_prefix(base)? {
        "" => Some("/"),
        rest if rest.starts_with('/') => Some(rest),
        _ => None,
    }
}

/// Drops one trailing `/`, except from the root.
pub(super) fn strip_trailing_slash(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(stripped) if !stripped.is_empty() => stripped,
        _ => path,
    }
}

/// A base path in the form [`strip_base_path`] expects: a leading `/` and no trailing one.
pub(super) fn normalize_base_path(base_path: &str) -> String {
    let trimmed = base_path.trim_end_matches('/');
    let mut normalized = String::with_capacity(trimmed.len() + 1);
    if !trimmed.is_empty() && !trimmed.starts_with('/') {
        normalized.push('/');
    }
    normalized.push_str(&normalize_literal(trimmed));
    normalized
}

/// Deduplicates base paths and puts the longest first, so `/v1` is tried before `/`.
pub(super) fn sorted_base_paths(mut base_paths: Vec<String>) -> Vec<Box<str>> {
    if base_paths.is_empty() {
        base_paths.push(String::new());
    }
    base_paths.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    base_paths.dedup();
    base_paths.into_iter().map(String::into_boxed_str).collect()
}

/// Turns an OpenAPI path template into a matchit route: the n-th parameter (from the left)
/// becomes `{p<n>}`, so templates differing only in parameter names agree; literals are
/// normalized like request paths and one trailing slash is dropped.
fn route_for_template(template: &str) -> Result<String, String> {
    if !template.starts_with('/') {
        return Err("a path template must start with `/`".to_owned());
    }
    let mut rest = strip_trailing_slash(template);
    let mut route = String::with_capacity(rest.len() + 8);
    let mut parameters = 0;
    while let Some(open) = rest.find('{') {
        push_literal(&mut route, &rest[..open]);
        let after = &rest[open + 1..];
        let name = after
            .find('}')
            .map(|close| &after[..close])
            .filter(|name| !name.contains(['{', '/']))
            .ok_or_else(|| "a `{` without its `}` in the same path segment".to_owned())?;
        if name.is_empty() {
            return Err("a parameter without a name (`{}`)".to_owned());
        }
        parameters += 1;
        route.push_str(&format!("{{p{parameters}}}"));
        rest = &after[name.len() + 1..];
    }
    push_literal(&mut route, rest);
    Ok(route)
}

/// Appends a normalized template literal to a matchit route, escaping `}` (a `{` cannot
/// occur: it opens a parameter).
fn push_literal(route: &mut String, literal: &str) {
    for c in normalize_literal(literal).chars() {
        if c == '}' {
            route.push_str("}}");
        } else {
            route.push(c);
        }
    }
}

/// Why matchit refused a route, in terms of the OpenAPI template.
fn insert_error_reason(err: InsertError) -> String {
    match err {
        InsertError::InvalidParamSegment => "a path segment may hold one parameter, after an \
             optional static prefix (`/v{version}`), but no static suffix (`/{name}.json`) \
             nor a second parameter"
            .to_owned(),
        InsertError::Conflict { with } => {
            format!("it conflicts with the route `{with}` (parameters renamed p1, p2, ...)")
        }
        err => err.to_string(),
    }
}
