//! [`ConfigError`]: every problem of a configuration, each with the field it is about.

use std::fmt;

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The field path, e.g. `metric.quantiles[0]`.
    pub field: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// An invalid configuration: every problem found, each with its field.
///
/// Fix each listed field (or `$VARIABLE`, for an environment override) as its message says;
/// [`Config::validate`](super::Config::validate) reports them all at once.
///
/// `{:?}` prints the message as `{}` does (so an error returned from `main` reads as
/// sentences, each problem with its field); `{:#?}` prints the structure.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in the order the fields appear.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            f.debug_struct("ConfigError")
                .field("problems", &self.problems)
                .finish()
        } else {
            fmt::Display::fmt(self, f)
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration:")?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    pub(super) fn one(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            problems: vec![ConfigProblem {
                field: field.into(),
                message: message.into(),
            }],
        }
    }

    /// `Ok` when nothing was found, otherwise all of `problems`.
    pub(super) fn check(problems: Vec<ConfigProblem>) -> Result<(), Self> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Self { problems })
        }
    }

    pub(super) fn from_path_error<E: fmt::Display>(err: serde_path_to_error::Error<E>) -> Self {
        let path = err.path().to_string();
        let field = if path == "." {
            "(root)".to_owned()
        } else {
            path
        };
        let message = err.into_inner().to_string();
        // serde_norway prefixes some messages with (part of) the path already.
        let message = match message.split_once(": ") {
            Some((prefix, rest)) if !prefix.contains(' ') && field.starts_with(prefix) => {
                rest.to_owned()
            }
            _ => message,
        };
        Self::one(field, message)
    }
}

/// Collects the problems of one block, naming each field under the block's path
/// (`metric` + `path` is `metric.path`; an empty field names the block itself, an empty
/// block leaves the field as it is).
pub(super) struct Problems<'a> {
    out: &'a mut Vec<ConfigProblem>,
    block: String,
}

impl<'a> Problems<'a> {
    pub(super) fn new(out: &'a mut Vec<ConfigProblem>, block: impl Into<String>) -> Self {
        Self {
            out,
            block: block.into(),
        }
    }

    /// The problems of a sub-block, e.g. `trace` + `jaeger` is `trace.jaeger`.
    pub(super) fn block(&mut self, sub: &str) -> Problems<'_> {
        Problems {
            block: self.field(sub),
            out: self.out,
        }
    }

    /// Records that `field` (relative to the block) is wrong, and why.
    pub(super) fn push(&mut self, field: &str, message: impl Into<String>) {
        let field = self.field(field);
        self.out.push(ConfigProblem {
            field,
            message: message.into(),
        });
    }

    fn field(&self, field: &str) -> String {
        match (self.block.is_empty(), field.is_empty()) {
            (_, true) => self.block.clone(),
            (true, false) => field.to_owned(),
            (false, false) => format!("{}.{field}", self.block),
        }
    }
}
