//! Customer view-charges policy: read it, and set it for one customer or all of them, idempotently.

use super::Outcome;
use crate::azure::{AzureClient, AzureError};

#[derive(Clone, Debug, serde::Serialize)]
pub struct PolicyRow {
    pub customer_id: String,
    pub display_name: String,
    pub view_charges: String,
    pub desired: Option<String>,
    pub outcome: Option<Outcome>,
}

/// `allowed` / `not-allowed` (any case, with or without the dash) → the API's `Allowed` / `NotAllowed`.
pub fn parse_view_charges(s: &str) -> Option<&'static str> {
    match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
        "allowed" => Some("Allowed"),
        "notallowed" => Some("NotAllowed"),
        _ => None,
    }
}

/// The customers to act on: one (checked to exist) or all.
async fn customers(
    client: &AzureClient,
    ba: &str,
    one: Option<&str>,
) -> Result<Vec<(String, String)>, AzureError> {
    let all = client.customers(ba).await?;
    let list: Vec<(String, String)> = all
        .into_iter()
        .map(|c| (c.name.clone(), c.props().display_name.unwrap_or_default()))
        .collect();
    match one {
        None => Ok(list),
        Some(id) => match list.into_iter().find(|(c, _)| c.eq_ignore_ascii_case(id)) {
            Some(c) => Ok(vec![c]),
            None => Err(AzureError::Invalid(format!(
                "customer `{id}` is not a customer of billing account {ba}; `costlake customers` lists them"
            ))),
        },
    }
}

pub async fn get(
    client: &AzureClient,
    ba: &str,
    customer: Option<&str>,
) -> Result<Vec<PolicyRow>, AzureError> {
    let mut out = Vec::new();
    for (id, name) in customers(client, ba, customer).await? {
        let p = client.customer_policy(ba, &id).await?;
        out.push(PolicyRow {
            customer_id: id,
            display_name: name,
            view_charges: p.props().view_charges.unwrap_or_default(),
            desired: None,
            outcome: None,
        });
    }
    Ok(out)
}

/// Sets `view_charges` where it differs; with `dry_run`, only says what would change. Keeps going
/// after a failure and reports every customer's outcome.
pub async fn set(
    client: &AzureClient,
    ba: &str,
    customer: Option<&str>,
    view_charges: &str,
    dry_run: bool,
) -> Result<Vec<PolicyRow>, AzureError> {
    let mut rows = get(client, ba, customer).await?;
    for r in &mut rows {
        r.desired = Some(view_charges.to_owned());
        let outcome = if r.view_charges.eq_ignore_ascii_case(view_charges) {
            Outcome::Unchanged
        } else if dry_run {
            Outcome::WouldChange
        } else {
            match client
                .set_customer_policy(ba, &r.customer_id, view_charges)
                .await
            {
                Ok(p) => {
                    r.view_charges = p.props().view_charges.unwrap_or_default();
                    Outcome::Changed
                }
                Err(e) => Outcome::Failed(e.to_string()),
            }
        };
        r.outcome = Some(outcome);
    }
    Ok(rows)
}
