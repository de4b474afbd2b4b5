//! Budgets at partner scope (billing account, Cost Management provider) and customer scope
//! (Consumption provider), and budgets as code: a file of `[[budgets]]` is the desired state of the
//! billing account; `plan` diffs it against Azure (create / update / delete / unchanged) and `apply`
//! makes Azure match, updating with each budget's current eTag.
//!
//! Everything is validated before any call (contract §9): name `^[A-Za-z0-9_-]{1,63}$`, amount > 0,
//! time grain Monthly / Quarterly / Annually (the Billing* grains are Web-Direct only), start on the
//! first of a month, at most 5 notifications, thresholds in (0, 1000], at least one contact email.

use super::Outcome;
use crate::azure::{AzureClient, AzureError};
use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    #[error("{file}: {} problem(s), nothing was sent to Azure:\n  - {}", .problems.len(), .problems.join("\n  - "))]
    Invalid { file: String, problems: Vec<String> },
    #[error("{0}")]
    Azure(#[from] AzureError),
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotificationSpec {
    pub threshold: toml::Value,
    #[serde(default = "gt")]
    pub operator: String,
    #[serde(default)]
    pub contact_emails: Vec<String>,
    #[serde(default = "actual")]
    pub threshold_type: String,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn gt() -> String {
    "GreaterThan".into()
}
fn actual() -> String {
    "Actual".into()
}
fn yes() -> bool {
    true
}
fn cost() -> String {
    "Cost".into()
}
fn monthly() -> String {
    "Monthly".into()
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    pub name: String,
    /// A customer id for customer scope; absent for partner (billing account) scope.
    pub customer: Option<String>,
    #[serde(default = "cost")]
    pub category: String,
    pub amount: toml::Value,
    #[serde(default = "monthly")]
    pub time_grain: String,
    /// `YYYY-MM-DD` (the first of a month) or `YYYY-MM`.
    pub start: String,
    pub end: Option<String>,
    #[serde(default)]
    pub notifications: Vec<NotificationSpec>,
}

/// A budget in the form both sides are compared in.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Budget {
    pub name: String,
    pub customer: Option<String>,
    pub category: String,
    pub amount: Decimal,
    pub time_grain: String,
    pub start: NaiveDate,
    pub end: Option<NaiveDate>,
    /// key → (enabled, operator, threshold, sorted emails, threshold type)
    pub notifications: BTreeMap<String, (bool, String, Decimal, Vec<String>, String)>,
}

fn dec_of(v: &toml::Value) -> Option<Decimal> {
    let t = match v {
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::String(s) => s.clone(),
        _ => return None,
    };
    crate::azure::models::loose::parse_decimal(t.trim()).ok()
}

fn date_of(s: &str) -> Option<NaiveDate> {
    let s = s.trim();
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .or_else(|| NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").ok())
        .or_else(|| crate::azure::models::loose::parse_datetime(s).map(|d| d.date_naive()))
}

/// Validates one spec; problems are prefixed with the budget's name and field.
pub fn validate(spec: &BudgetSpec) -> Result<Budget, Vec<String>> {
    let mut p = Vec::new();
    let who = format!(
        "budget `{}`{}",
        spec.name,
        spec.customer
            .as_ref()
            .map(|c| format!(" (customer {c})"))
            .unwrap_or_default()
    );
    if spec.name.is_empty()
        || spec.name.len() > 63
        || !spec
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        p.push(format!(
            "{who}: name must be 1-63 letters, digits, `-` or `_`"
        ));
    }
    if !["Cost", "Usage"].contains(&spec.category.as_str()) {
        p.push(format!(
            "{who}: category `{}` must be Cost or Usage",
            spec.category
        ));
    }
    let amount = dec_of(&spec.amount);
    match amount {
        Some(a) if a > Decimal::ZERO => {}
        _ => p.push(format!(
            "{who}: amount must be a number greater than 0, not {}",
            spec.amount
        )),
    }
    if !["Monthly", "Quarterly", "Annually"].contains(&spec.time_grain.as_str()) {
        p.push(format!("{who}: time_grain `{}` is not allowed at partner or customer scope; use Monthly, Quarterly or Annually", spec.time_grain));
    }
    let start = date_of(&spec.start);
    match start {
        None => p.push(format!(
            "{who}: start `{}` is not a date (YYYY-MM-DD)",
            spec.start
        )),
        Some(d) if d.day() != 1 => {
            p.push(format!("{who}: start {d} must be the first day of a month"))
        }
        _ => {}
    }
    let end = spec.end.as_deref().map(|e| (e, date_of(e)));
    if let Some((e, d)) = end {
        match (d, start) {
            (None, _) => p.push(format!("{who}: end `{e}` is not a date")),
            (Some(d), Some(s)) if d <= s => {
                p.push(format!("{who}: end {d} is not after start {s}"))
            }
            _ => {}
        }
    }
    if spec.notifications.len() > 5 {
        p.push(format!(
            "{who}: {} notifications; at most 5 are allowed",
            spec.notifications.len()
        ));
    }
    let mut notifications = BTreeMap::new();
    for (i, n) in spec.notifications.iter().enumerate() {
        let t = dec_of(&n.threshold);
        if !t.is_some_and(|t| t > Decimal::ZERO && t <= Decimal::from(1000)) {
            p.push(format!(
                "{who}: notification {}: threshold must be a percentage in (0, 1000], not {}",
                i + 1,
                n.threshold
            ));
        }
        if !["EqualTo", "GreaterThan", "GreaterThanOrEqualTo"].contains(&n.operator.as_str()) {
            p.push(format!("{who}: notification {}: operator `{}` must be EqualTo, GreaterThan or GreaterThanOrEqualTo", i + 1, n.operator));
        }
        if !["Actual", "Forecasted"].contains(&n.threshold_type.as_str()) {
            p.push(format!(
                "{who}: notification {}: threshold_type `{}` must be Actual or Forecasted",
                i + 1,
                n.threshold_type
            ));
        }
        if n.contact_emails.is_empty() {
            p.push(format!("{who}: notification {}: at least one contact email is required at partner and customer scope", i + 1));
        }
        for e in &n.contact_emails {
            if !e.contains('@')
                || e.starts_with('@')
                || e.ends_with('@')
                || e.contains(char::is_whitespace)
            {
                p.push(format!(
                    "{who}: notification {}: `{e}` is not an email address",
                    i + 1
                ));
            }
        }
        let t = t.unwrap_or_default().normalize();
        let key = format!("{}_{}_{}_Percent", n.threshold_type, n.operator, t);
        let mut emails = n.contact_emails.clone();
        emails.sort();
        if notifications
            .insert(
                key.clone(),
                (
                    n.enabled,
                    n.operator.clone(),
                    t,
                    emails,
                    n.threshold_type.clone(),
                ),
            )
            .is_some()
        {
            p.push(format!("{who}: two notifications are both {key}"));
        }
    }
    if !p.is_empty() {
        return Err(p);
    }
    Ok(Budget {
        name: spec.name.clone(),
        customer: spec.customer.clone(),
        category: spec.category.clone(),
        amount: amount.unwrap_or_default().normalize(),
        time_grain: spec.time_grain.clone(),
        start: start.unwrap_or_default(),
        end: end.and_then(|(_, d)| d),
        notifications,
    })
}

/// Reads budgets from a budgets file, or from the `[[budgets]]` of any TOML file (a pipeline file).
pub fn load(file: &str) -> Result<(Option<String>, Vec<Budget>), BudgetError> {
    let fail = |problems: Vec<String>| BudgetError::Invalid {
        file: file.to_owned(),
        problems,
    };
    let text =
        std::fs::read_to_string(file).map_err(|e| fail(vec![format!("cannot read: {e}")]))?;
    let v: toml::Value = toml::from_str(&text).map_err(|e| fail(vec![e.to_string()]))?;
    let ba = v
        .get("billing_account")
        .and_then(|b| b.as_str())
        .map(str::to_owned);
    let specs: Vec<BudgetSpec> = match v.get("budgets") {
        None => Vec::new(),
        Some(b) => b
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| fail(vec![format!("[[budgets]]: {e}")]))?,
    };
    from_specs(file, ba, &specs)
}

pub fn from_specs(
    file: &str,
    ba: Option<String>,
    specs: &[BudgetSpec],
) -> Result<(Option<String>, Vec<Budget>), BudgetError> {
    let mut problems = Vec::new();
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for s in specs {
        if !seen.insert((
            s.customer.clone().map(|c| c.to_ascii_lowercase()),
            s.name.to_ascii_lowercase(),
        )) {
            problems.push(format!(
                "budget `{}` is declared twice at the same scope",
                s.name
            ));
        }
        match validate(s) {
            Ok(b) => out.push(b),
            Err(p) => problems.extend(p),
        }
    }
    if problems.is_empty() {
        Ok((ba, out))
    } else {
        Err(BudgetError::Invalid {
            file: file.to_owned(),
            problems,
        })
    }
}

/// The request body for a budget (the `filter`-free 2019-10-01 / 2024-08-01 common form).
pub fn body(b: &Budget, etag: Option<&str>) -> Value {
    let notifications: serde_json::Map<String, Value> = b
        .notifications
        .iter()
        .map(|(k, (enabled, op, t, emails, tt))| (k.clone(), json!({"enabled": enabled, "operator": op, "threshold": num(*t), "contactEmails": emails, "thresholdType": tt})))
        .collect();
    let mut period = json!({"startDate": format!("{}T00:00:00Z", b.start)});
    if let Some(e) = b.end {
        period["endDate"] = json!(format!("{e}T00:00:00Z"));
    }
    let mut v = json!({"properties": {"category": b.category, "amount": num(b.amount), "timeGrain": b.time_grain, "timePeriod": period, "notifications": notifications}});
    if let Some(e) = etag {
        v["eTag"] = json!(e);
    }
    v
}

/// A decimal as a JSON number (budget amounts and thresholds have few digits; the shortest f64
/// form prints them back exactly, which is checked).
fn num(d: Decimal) -> Value {
    use rust_decimal::prelude::ToPrimitive;
    let f = d.to_f64().unwrap_or(0.0);
    if crate::azure::models::loose::parse_decimal(&f.to_string()).ok() == Some(d.normalize()) {
        json!(f)
    } else {
        json!(d.to_string())
    }
}

/// A budget as Azure returns it, in the compared form.
pub fn from_azure(v: &Value, customer: Option<&str>) -> Budget {
    let p = &v["properties"];
    let d = |x: &Value| {
        crate::azure::models::loose::parse_decimal(&x.to_string())
            .unwrap_or_default()
            .normalize()
    };
    let date = |x: &Value| {
        x.as_str()
            .and_then(crate::azure::models::loose::parse_datetime)
            .map(|t| t.date_naive())
    };
    let notifications = p["notifications"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, n)| {
                    let mut emails: Vec<String> = n["contactEmails"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|e| e.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    emails.sort();
                    (
                        k.clone(),
                        (
                            n["enabled"].as_bool().unwrap_or(true),
                            n["operator"].as_str().unwrap_or("").to_owned(),
                            d(&n["threshold"]),
                            emails,
                            n["thresholdType"].as_str().unwrap_or("Actual").to_owned(),
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Budget {
        name: v["name"].as_str().unwrap_or("").to_owned(),
        customer: customer.map(str::to_owned),
        category: p["category"].as_str().unwrap_or("").to_owned(),
        amount: d(&p["amount"]),
        time_grain: p["timeGrain"].as_str().unwrap_or("").to_owned(),
        start: date(&p["timePeriod"]["startDate"]).unwrap_or_default(),
        end: date(&p["timePeriod"]["endDate"]),
        notifications,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Delete,
    Unchanged,
}

#[derive(Clone, Debug, Serialize)]
pub struct Change {
    pub scope: String,
    pub name: String,
    pub action: Action,
    /// What differs, for updates.
    pub changes: Vec<String>,
    #[serde(skip)]
    pub desired: Option<Budget>,
    #[serde(skip)]
    pub etag: Option<String>,
    pub outcome: Option<Outcome>,
}

fn scope_label(customer: Option<&str>) -> String {
    customer
        .map(|c| format!("customer {c}"))
        .unwrap_or_else(|| "partner".into())
}

fn diff(a: &Budget, b: &Budget) -> Vec<String> {
    let mut c = Vec::new();
    if a.amount != b.amount {
        c.push(format!("amount {} → {}", a.amount, b.amount));
    }
    if a.category != b.category {
        c.push(format!("category {} → {}", a.category, b.category));
    }
    if a.time_grain != b.time_grain {
        c.push(format!("time grain {} → {}", a.time_grain, b.time_grain));
    }
    if a.start != b.start || a.end != b.end {
        c.push(format!(
            "period {}..{:?} → {}..{:?}",
            a.start, a.end, b.start, b.end
        ));
    }
    if a.notifications != b.notifications {
        c.push("notifications".into());
    }
    c
}

/// Compares the desired budgets with every budget of the billing account (partner scope and each
/// customer): the file is the whole desired state, so budgets absent from it are deleted.
pub async fn plan(
    client: &AzureClient,
    ba: &str,
    desired: &[Budget],
) -> Result<Vec<Change>, AzureError> {
    let mut scopes: Vec<Option<String>> = vec![None];
    scopes.extend(
        client
            .customers(ba)
            .await?
            .into_iter()
            .map(|c| Some(c.name)),
    );
    for d in desired {
        if let Some(c) = &d.customer
            && !scopes.iter().flatten().any(|s| s.eq_ignore_ascii_case(c))
        {
            return Err(AzureError::Invalid(format!(
                "budget `{}`: customer `{c}` is not a customer of billing account {ba}",
                d.name
            )));
        }
    }
    let mut out = Vec::new();
    for scope in &scopes {
        let current = client.budgets(ba, scope.as_deref()).await?;
        let mine: Vec<&Budget> = desired
            .iter()
            .filter(|d| {
                d.customer.as_deref().map(str::to_ascii_lowercase)
                    == scope.as_deref().map(str::to_ascii_lowercase)
            })
            .collect();
        for cur in &current {
            let now = from_azure(cur, scope.as_deref());
            let etag = cur["eTag"].as_str().map(str::to_owned);
            match mine.iter().find(|d| d.name.eq_ignore_ascii_case(&now.name)) {
                Some(want) => {
                    let changes = diff(&now, want);
                    let action = if changes.is_empty() {
                        Action::Unchanged
                    } else {
                        Action::Update
                    };
                    out.push(Change {
                        scope: scope_label(scope.as_deref()),
                        name: now.name.clone(),
                        action,
                        changes,
                        desired: Some((*want).clone()),
                        etag,
                        outcome: None,
                    });
                }
                None => out.push(Change {
                    scope: scope_label(scope.as_deref()),
                    name: now.name.clone(),
                    action: Action::Delete,
                    changes: vec![],
                    desired: Some(now.clone()),
                    etag,
                    outcome: None,
                }),
            }
        }
        for want in mine {
            if !current.iter().any(|c| {
                c["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(&want.name))
            }) {
                out.push(Change {
                    scope: scope_label(scope.as_deref()),
                    name: want.name.clone(),
                    action: Action::Create,
                    changes: vec![],
                    desired: Some(want.clone()),
                    etag: None,
                    outcome: None,
                });
            }
        }
    }
    Ok(out)
}

/// Makes Azure match the plan. Every change is attempted; each gets its own outcome.
pub async fn apply(client: &AzureClient, ba: &str, mut changes: Vec<Change>) -> Vec<Change> {
    for c in &mut changes {
        let Some(b) = c.desired.clone() else { continue };
        let customer = b.customer.as_deref();
        let result = match c.action {
            Action::Unchanged => {
                c.outcome = Some(Outcome::Unchanged);
                continue;
            }
            Action::Create => client
                .put_budget(ba, customer, &b.name, &body(&b, None))
                .await
                .map(|_| ()),
            Action::Update => client
                .put_budget(ba, customer, &b.name, &body(&b, c.etag.as_deref()))
                .await
                .map(|_| ()),
            Action::Delete => client.delete_budget(ba, customer, &b.name).await,
        };
        c.outcome = Some(match result {
            Ok(()) => Outcome::Changed,
            Err(e) => Outcome::Failed(e.to_string()),
        });
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> Result<(Option<String>, Vec<Budget>), BudgetError> {
        spec_at("cap", "2026-12", extra)
    }

    fn spec_at(
        name: &str,
        start: &str,
        extra: &str,
    ) -> Result<(Option<String>, Vec<Budget>), BudgetError> {
        let dir = std::env::temp_dir().join(format!("costlake-budget-{}", rand::random::<u32>()));
        std::fs::write(
            &dir,
            format!("[[budgets]]\nname = \"{name}\"\nstart = \"{start}\"\n{extra}"),
        )
        .unwrap();
        let r = load(&dir.to_string_lossy());
        let _ = std::fs::remove_file(dir);
        r
    }

    #[test]
    fn valid_and_every_rule() {
        let (_, b) = spec("amount = 100.5\n[[budgets.notifications]]\nthreshold = 80\ncontact_emails = [\"a@b.c\"]\n").unwrap();
        assert_eq!(b[0].amount, Decimal::new(1005, 1));
        assert!(
            b[0].notifications
                .contains_key("Actual_GreaterThan_80_Percent")
        );
        let e = spec("amount = 0\ntime_grain = \"BillingMonth\"\n[[budgets.notifications]]\nthreshold = 2000\n").unwrap_err().to_string();
        for needle in [
            "amount must be",
            "BillingMonth",
            "threshold must be",
            "contact email",
            "nothing was sent",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
        let e = spec_at("bad name!", "2026-12-02", "amount = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("name must be") && e.contains("first day of a month"),
            "{e}"
        );
    }
}
