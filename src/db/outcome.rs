//! [`Outcome`]: how a transaction ended.

use std::fmt;

/// How a transaction ended: the span's `outcome` and the metrics' `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Committed.
    Commit,
    /// Rolled back by [`TracedTransaction::rollback`](super::TracedTransaction::rollback).
    Rollback,
    /// Dropped without commit or rollback; sqlx rolls it back.
    RollbackOnDrop,
    /// Begin, commit or rollback failed.
    Error,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Outcome; 4] = [
        Outcome::Commit,
        Outcome::Rollback,
        Outcome::RollbackOnDrop,
        Outcome::Error,
    ];

    /// The label value: `commit`, `rollback`, `rollback_on_drop` or `error`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Commit => "commit",
            Self::Rollback => "rollback",
            Self::RollbackOnDrop => "rollback_on_drop",
            Self::Error => "error",
        }
    }

    pub(super) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_index_their_slots_in_label_order() {
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(outcome.index(), i);
        }
        assert_eq!(Outcome::RollbackOnDrop.to_string(), "rollback_on_drop");
    }
}
