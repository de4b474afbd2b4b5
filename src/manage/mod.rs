//! The partner's management calls, made safe to repeat and to script across hundreds of customers:
//!
//! - [`policy`]: whether a customer may see its charges (get, set, for one or all customers);
//! - [`budgets`]: budgets at partner and customer scope, and budgets as code (validate → plan → apply);
//! - [`query`]: aggregated costs (Cost Management query) as a table, CSV, JSON or a Parquet dataset.
//!
//! Every change is computed first (current vs desired) so a dry run shows exactly what would change,
//! and a partial failure reports what was done, what failed and what was not attempted.

pub mod budgets;
pub mod policy;
pub mod query;

/// The outcome of one intended change.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Unchanged,
    WouldChange,
    Changed,
    Failed(String),
    NotAttempted,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Unchanged => f.write_str("unchanged"),
            Outcome::WouldChange => f.write_str("would change"),
            Outcome::Changed => f.write_str("changed"),
            Outcome::Failed(e) => write!(f, "FAILED: {e}"),
            Outcome::NotAttempted => f.write_str("not attempted"),
        }
    }
}
