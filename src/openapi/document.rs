//! Reading the document: hand-written serde visitors for the few fields the resolver uses
//! (version, `basePath`, `servers`, `paths`), and the base paths of OpenAPI 3 server URLs.

use std::{
    borrow::{Borrow, Cow},
    collections::BTreeMap,
    fmt,
};

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{matcher::normalize_base_path, OpenApiError, METHOD_KEYS};

// What the resolver reads from a document. Hand-written visitors keep document order, ignore
// everything else without building it, and accept non-string YAML scalars where a string is
// expected (`openapi: 3.0`, `default: 8080`).

enum Spec {
    Swagger2,
    OpenApi3,
}

/// The top-level fields the resolver reads; the others are skipped unparsed.
#[derive(Default)]
pub(super) struct RawDocument {
    swagger: Option<Text>,
    openapi: Option<Text>,
    base_path: Option<String>,
    servers: Option<Vec<RawServer>>,
    paths: Option<RawPaths>,
}

impl RawDocument {
    /// The base paths the document declares, normalized, before sorting: `basePath` (default
    /// `/`) for Swagger 2.0, the path of each top-level server URL for OpenAPI 3.x.
    pub(super) fn base_paths(&self) -> Result<Vec<String>, OpenApiError> {
        match self.spec()? {
            Spec::Swagger2 => Ok(vec![normalize_base_path(
                self.base_path.as_deref().unwrap_or("/"),
            )]),
            Spec::OpenApi3 => self
                .servers
                .iter()
                .flatten()
                .map(|server| server_base_path(&server.url.0, server.variables.as_ref()))
                .collect(),
        }
    }

    /// Each path template with its operations that have a non-empty `operationId` (index in
    /// [`METHODS`](super::METHODS) and id), in document order. `x-...` keys and templates
    /// without such an operation are skipped.
    pub(super) fn into_operations(self) -> impl Iterator<Item = (String, Vec<(usize, String)>)> {
        let paths = self.paths.map(|paths| paths.0).unwrap_or_default();
        paths.into_iter().filter_map(|(Text(template), item)| {
            if template.starts_with("x-") {
                return None;
            }
            let operations: Vec<(usize, String)> = item
                .map(|item| item.0)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(index, operation)| Some((index, operation.operation_id?.0)))
                .filter(|(_, id)| !id.is_empty())
                .collect();
            (!operations.is_empty()).then_some((template, operations))
        })
    }

    /// Which specification the document follows; the `openapi` field wins over `swagger`.
    fn spec(&self) -> Result<Spec, OpenApiError> {
        if let Some(Text(version)) = &self.openapi {
            if version == "3" || version.starts_with("3.") {
                return Ok(Spec::OpenApi3);
            }
            return Err(OpenApiError::UnsupportedVersion {
                field: "openapi",
                version: version.clone(),
            });
        }
        if let Some(Text(version)) = &self.swagger {
            // `swagger: 2.0` unquoted is the YAML float 2.
            if version == "2.0" || version == "2" {
                return Ok(Spec::Swagger2);
            }
            return Err(OpenApiError::UnsupportedVersion {
                field: "swagger",
                version: version.clone(),
            });
        }
        Err(OpenApiError::NotOpenApi)
    }
}

impl<'de> Deserialize<'de> for RawDocument {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DocumentVisitor)
    }
}

struct DocumentVisitor;

/// Anything but a mapping is a document without `swagger` or `openapi`: that error says more
/// than a type error.
macro_rules! not_a_document {
    ($($method:ident($ty:ty)),*) => {$(
        fn $method<E: de::Error>(self, _: $ty) -> Result<RawDocument, E> {
            Ok(RawDocument::default())
        }
    )*};
}

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = RawDocument;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an OpenAPI document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawDocument, A::Error> {
        let mut document = RawDocument::default();
        while let Some(Text(key)) = map.next_key()? {
            match key.as_str() {
                "swagger" => document.swagger = map.next_value()?,
                "openapi" => document.openapi = map.next_value()?,
                "basePath" => document.base_path = map.next_value::<Option<Text>>()?.map(|t| t.0),
                "servers" => document.servers = map.next_value()?,
                "paths" => document.paths = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(document)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawDocument, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(RawDocument::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<RawDocument, E> {
        Ok(RawDocument::default())
    }

    fn visit_none<E: de::Error>(self) -> Result<RawDocument, E> {
        Ok(RawDocument::default())
    }

    not_a_document!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64),
        visit_str(&str)
    );
}

#[derive(serde::Deserialize)]
#[serde(expecting = "a server object")]
struct RawServer {
    url: Text,
    #[serde(default)]
    variables: Option<BTreeMap<Text, RawServerVariable>>,
}

#[derive(serde::Deserialize)]
#[serde(expecting = "a server variable object")]
struct RawServerVariable {
    #[serde(default)]
    default: Option<Text>,
}

/// `paths`, in document order.
struct RawPaths(Vec<(Text, Option<RawPathItem>)>);

/// The operations of a path item: index in [`METHODS`](super::METHODS) and operation, in
/// document order.
struct RawPathItem(Vec<(usize, RawOperation)>);

#[derive(serde::Deserialize)]
#[serde(expecting = "an operation object")]
struct RawOperation {
    #[serde(default, rename = "operationId")]
    operation_id: Option<Text>,
}

impl<'de> Deserialize<'de> for RawPaths {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PathsVisitor;
        impl<'de> Visitor<'de> for PathsVisitor {
            type Value = RawPaths;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a paths object (a mapping of path templates)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPaths, A::Error> {
                let mut paths = Vec::new();
                while let Some(template) = map.next_key()? {
                    paths.push((template, map.next_value()?));
                }
                Ok(RawPaths(paths))
            }
        }
        deserializer.deserialize_map(PathsVisitor)
    }
}

impl<'de> Deserialize<'de> for RawPathItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PathItemVisitor;
        impl<'de> Visitor<'de> for PathItemVisitor {
            type Value = RawPathItem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path item object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPathItem, A::Error> {
                let mut operations = Vec::new();
                while let Some(Text(key)) = map.next_key()? {
                    match METHOD_KEYS.iter().position(|method| *method == key) {
                        Some(index) => {
                            if let Some(operation) = map.next_value()? {
                                operations.push((index, operation));
                            }
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(RawPathItem(operations))
            }
        }
        deserializer.deserialize_map(PathItemVisitor)
    }
}

/// A string, or a number or boolean taken as the YAML text it came from, more or less
/// (`3.0` reads as `3`). Also used for mapping keys, which YAML does not restrict to strings.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Text(String);

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl Visitor<'_> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(TextVisitor)
    }
}

/// The base path of an OpenAPI 3 server URL: the path of an absolute URL, or the relative
/// URL itself, after substituting the server variables' defaults.
fn server_base_path(
    url: &str,
    variables: Option<&BTreeMap<Text, RawServerVariable>>,
) -> Result<String, OpenApiError> {
    let substituted = substitute_variables(url, variables);
    let without_query = substituted.split(['?', '#']).next().unwrap_or_default();
    let path = match strip_scheme_and_authority(without_query) {
        Some(path) => path,
        // A relative URL; `.` and `./v1` are relative to the root.
        None => without_query
            .strip_prefix('.')
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            .unwrap_or(without_query),
    };
    if path.contains(['{', '}']) {
        return Err(OpenApiError::InvalidServerUrl {
            url: url.to_owned(),
            reason: format!(
                "its path `{path}` uses a variable that `variables` does not define with a `default`"
            ),
        });
    }
    Ok(normalize_base_path(path))
}

/// The path of an absolute (`scheme://authority/path`) or network-path (`//authority/path`)
/// URL; `None` for a relative path.
fn strip_scheme_and_authority(url: &str) -> Option<&str> {
    let after_scheme = url.strip_prefix("//").or_else(|| {
        let (scheme, rest) = url.split_once("://")?;
        let mut chars = scheme.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        valid.then_some(rest)
    })?;
    Some(after_scheme.find('/').map_or("", |i| &after_scheme[i..]))
}

/// Replaces each `{name}` with the `default` of the server variable `name`; undefined ones
/// are left in place.
fn substitute_variables<'a>(
    url: &'a str,
    variables: Option<&BTreeMap<Text, RawServerVariable>>,
) -> Cow<'a, str> {
    if !url.contains('{') {
        return Cow::Borrowed(url);
    }
    let mut substituted = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(open) = rest.find('{') {
        substituted.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            rest = &rest[open..];
            break;
        };
        let name = &after[..close];
        let default = variables
            .and_then(|variables| variables.get(name))
            .and_then(|variable| variable.default.as_ref());
        match default {
            Some(Text(default)) => substituted.push_str(default),
            None => substituted.push_str(&rest[open..open + close + 2]),
        }
        rest = &after[close + 1..];
    }
    substituted.push_str(rest);
    Cow::Owned(substituted)
}
