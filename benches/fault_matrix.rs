//! The fault matrix: every fault kind of the simulator against every endpoint family, each cell a
//! whole pipeline run (extract → transform → load) on the embedded simulator with that fault
//! injected at 30 % into that family. A cell passes when the run ends with a lake byte-identical to
//! a fault-free run's, or when it fails with an error naming the work unit and a rerun without the
//! fault then completes the same lake.
//!
//! Query, budgets and policy are not called by a pipeline run: their cells run the partner's
//! management instead (policy on every customer, budgets applied from code, a paged query) and
//! compare the resulting state and output with a fault-free run's.
//!
//! `cargo bench --profile dev --bench fault_matrix` prints the matrix; `cargo test --all-targets`
//! runs the same matrix (about five minutes).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use costlake::manage::{budgets, policy, query};
use costlake::pipeline::{self, RunReport, config::Pipeline};
use costlake::simulate::{FaultKind, FaultPlan, Scale, SimConfig, SimFamily, Simulator};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

fn toml(dir: &Path, api: &str, faults: Option<(FaultKind, SimFamily, u64)>) -> String {
    let f = faults.map(|(k, fam, seed)| format!("fault_rate = 0.3\nfault_seed = {seed}\nfaults = [\"{}\"]\nfault_families = [\"{}\"]\n", k.name(), fam.name())).unwrap_or_default();
    format!(
        "[source]\nkind = \"simulator\"\nseed = 3\nscale = \"tiny\"\nopen_month = \"2026-11\"\ntime_scale = 6000\n{f}\n[periods]\nfrom = \"2026-10\"\nto = \"2026-11\"\n[extract]\nusage_api = \"{api}\"\n[landing]\nlocation = \"{}\"\n[output]\nlocation = \"{}\"\n",
        dir.join("landing").display(),
        dir.join("lake").display()
    )
}

fn parquet(lake: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(d: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out)
            } else {
                out.push(p)
            }
        }
    }
    let mut files = Vec::new();
    walk(lake, &mut files);
    files
        .into_iter()
        .filter(|p| {
            p.extension().is_some_and(|e| e == "parquet")
                && !p.to_string_lossy().contains("_staging")
        })
        .map(|p| {
            (
                p.strip_prefix(lake).unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// One run; returns the faults injected, or the error text.
async fn run(
    dir: &Path,
    api: &str,
    faults: Option<(FaultKind, SimFamily, u64)>,
) -> Result<u64, String> {
    let p =
        Pipeline::from_toml("matrix.toml", &toml(dir, api, faults)).map_err(|e| e.to_string())?;
    let conn = pipeline::connect(&p).await.map_err(|e| e.to_string())?;
    let mut r = RunReport::default();
    let id = pipeline::new_run_id();
    let result = async {
        pipeline::extract(&p, &conn, &id, &mut r).await?;
        pipeline::transform(&p, &id, &mut r).await?;
        pipeline::load(&p, &id, &mut r).await
    }
    .await;
    let injected = conn
        .simulator
        .as_ref()
        .map(|s| s.counters().injected_total())
        .unwrap_or(0);
    result.map(|_| injected).map_err(|e| format!("{e:#}"))
}

/// Policy on all customers, two budgets as code, a paged query; returns a summary of the resulting
/// state and output (no eTags, no ids that change between runs).
async fn manage_ops(
    client: &costlake::azure::AzureClient,
    ba: &str,
    customer: &str,
) -> Result<String, String> {
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let rows = policy::set(client, ba, None, "NotAllowed", false)
        .await
        .map_err(|x| e(&x))?;
    if let Some(r) = rows
        .iter()
        .find(|r| matches!(r.outcome, Some(costlake::manage::Outcome::Failed(_))))
    {
        return Err(format!("policy {}: {:?}", r.customer_id, r.outcome));
    }
    let spec = |name: &str, customer: Option<&str>, amount: i64| budgets::BudgetSpec {
        name: name.into(),
        customer: customer.map(str::to_owned),
        category: "Cost".into(),
        amount: toml::Value::Integer(amount),
        time_grain: "Monthly".into(),
        start: "2026-12".into(),
        end: None,
        notifications: vec![budgets::NotificationSpec {
            threshold: toml::Value::Integer(80),
            operator: "GreaterThan".into(),
            contact_emails: vec!["a@b.example".into()],
            threshold_type: "Actual".into(),
            enabled: true,
        }],
    };
    let (_, desired) = budgets::from_specs(
        "matrix",
        None,
        &[
            spec("partner-cap", None, 5000),
            spec("cust-cap", Some(customer), 700),
        ],
    )
    .map_err(|x| e(&x))?;
    let plan = budgets::plan(client, ba, &desired)
        .await
        .map_err(|x| e(&x))?;
    let applied = budgets::apply(client, ba, plan).await;
    if let Some(c) = applied
        .iter()
        .find(|c| matches!(c.outcome, Some(costlake::manage::Outcome::Failed(_))))
    {
        return Err(format!("budget {} at {}: {:?}", c.name, c.scope, c.outcome));
    }
    let q = query::QuerySpec {
        scope: format!("/providers/Microsoft.Billing/billingAccounts/{ba}"),
        from: chrono::NaiveDate::from_ymd_opt(2026, 9, 1).unwrap(),
        to: chrono::NaiveDate::from_ymd_opt(2026, 10, 31).unwrap(),
        granularity: "Daily".into(),
        aggregations: vec![("cost".into(), "PreTaxCost".into())],
        group_by: vec!["ResourceGroup".into()],
        filter: None,
    };
    let table = query::run(client, &q).await.map_err(|x| e(&x))?;
    let mut state = Vec::new();
    for r in policy::get(client, ba, None).await.map_err(|x| e(&x))? {
        state.push(format!("policy {} {}", r.customer_id, r.view_charges));
    }
    for scope in [None, Some(customer)] {
        for b in client.budgets(ba, scope).await.map_err(|x| e(&x))? {
            let b = budgets::from_azure(&b, scope);
            state.push(format!(
                "budget {} {:?} {} {}",
                b.name, b.customer, b.amount, b.time_grain
            ));
        }
    }
    state.push(table.to_csv());
    Ok(state.join("\n"))
}

/// A management run on a fresh simulator with the cell's fault; on failure, the same run again
/// with faults off (the rerun). Returns (faults injected, summary) or the error and the rerun's summary.
async fn manage_cell(
    faults: Option<(FaultKind, SimFamily, u64)>,
) -> (u64, Result<String, (String, Result<String, String>)>) {
    let mut cfg = SimConfig::fast(3, Scale::preset("tiny").unwrap());
    cfg.open_month = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    if let Some((kind, fam, seed)) = faults {
        let mut plan = FaultPlan {
            kinds: vec![kind],
            stall: std::time::Duration::from_secs(15),
            retry_after_secs: 0,
            seed,
            ..FaultPlan::default()
        };
        plan.rates.insert(fam, 0.3);
        cfg.faults = plan;
    }
    let sim = Simulator::start(cfg).await.unwrap();
    let client = costlake::cli::sim_client(&sim).unwrap();
    let (ba, customer) = (
        sim.world().account_name.clone(),
        sim.world().customers[0].id.clone(),
    );
    let first = manage_ops(&client, &ba, &customer).await;
    let injected = sim.counters().injected_total();
    match first {
        Ok(s) => (injected, Ok(s)),
        Err(e) => {
            sim.set_faults(FaultPlan::default());
            (
                injected,
                Err((e, manage_ops(&client, &ba, &customer).await)),
            )
        }
    }
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut reference = BTreeMap::new();
    for api in ["usage-details", "cost-details"] {
        let d = scratch.path().join(format!("ref-{api}"));
        rt.block_on(run(&d, api, None)).unwrap();
        reference.insert(api, parquet(&d.join("lake")));
    }
    // Families a pipeline run does not call get a management run instead.
    let management = [SimFamily::Query, SimFamily::Budgets, SimFamily::Policy];
    let manage_reference = rt
        .block_on(manage_cell(None))
        .1
        .expect("fault-free management run");
    let mut table: BTreeMap<(FaultKind, SimFamily), String> = BTreeMap::new();
    let (mut ok, mut bad) = (0, 0);
    let t0 = Instant::now();
    for kind in FaultKind::ALL {
        for fam in SimFamily::ALL {
            let cell = if !kind.applies_to(fam) {
                "-".to_owned()
            } else if management.contains(&fam) {
                let mut last = (0, Ok(String::new()));
                for seed in 1..=8u64 {
                    last = rt.block_on(manage_cell(Some((kind, fam, seed))));
                    if last.0 > 0 {
                        break;
                    }
                }
                let outcome = match last {
                    (0, _) => "NOT INJECTED".to_owned(),
                    (n, Ok(s)) if s == manage_reference => format!("ok ({n})"),
                    (_, Ok(_)) => "DIFFERENT STATE".to_owned(),
                    (_, Err((_, Ok(s)))) if s == manage_reference => "err→rerun ok".to_owned(),
                    (_, Err((e, _))) => format!("RERUN FAILED: {e}"),
                };
                if outcome.starts_with("ok") || outcome.starts_with("err") {
                    ok += 1
                } else {
                    bad += 1
                }
                outcome
            } else {
                let api = if fam == SimFamily::CostDetails {
                    "cost-details"
                } else {
                    "usage-details"
                };
                // A cell that injected nothing proves nothing: roll other dice until it does.
                let mut attempt = (0u64, Ok(0));
                let mut d = scratch.path().to_path_buf();
                for seed in 1..=8u64 {
                    d = scratch
                        .path()
                        .join(format!("{}-{}-{seed}", kind.name(), fam.name()));
                    attempt = (seed, rt.block_on(run(&d, api, Some((kind, fam, seed)))));
                    if !matches!(attempt.1, Ok(0)) {
                        break;
                    }
                }
                let outcome = match attempt.1 {
                    Ok(0) => "NOT INJECTED".to_owned(),
                    Ok(n) if parquet(&d.join("lake")) == reference[api] => format!("ok ({n})"),
                    Ok(_) => "DIFFERENT LAKE".to_owned(),
                    Err(e) => match rt.block_on(run(&d, api, None)) {
                        Ok(_)
                            if parquet(&d.join("lake")) == reference[api]
                                && e.contains("units/") =>
                        {
                            "err→rerun ok".to_owned()
                        }
                        Ok(_) => format!("UNCLEAR ERROR: {e}"),
                        Err(e2) => format!("RERUN FAILED: {e2}"),
                    },
                };
                if outcome.starts_with("ok") || outcome.starts_with("err") {
                    ok += 1
                } else {
                    bad += 1
                }
                outcome
            };
            table.insert((kind, fam), cell);
        }
    }
    let fams: Vec<SimFamily> = SimFamily::ALL.to_vec();
    print!("{:<22}", "fault \\ family");
    for f in &fams {
        print!("{:>14}", f.name());
    }
    println!();
    for kind in FaultKind::ALL {
        print!("{:<22}", kind.name());
        for f in &fams {
            print!(
                "{:>14}",
                table.get(&(kind, *f)).map(String::as_str).unwrap_or("·")
            );
        }
        println!();
    }
    println!(
        "cells: ok (faults injected) | err→rerun ok (a clear error, then a rerun without the fault completed) | - not applicable"
    );
    println!(
        "pipeline cells compare the lake byte for byte; query, budgets and policy cells compare policies, budgets and the query output"
    );
    println!(
        "fault_matrix: {ok} passed, {bad} failed ({} cells run in {:.0?})",
        ok + bad,
        t0.elapsed()
    );
    assert_eq!(
        bad, 0,
        "some cells neither matched the fault-free lake nor failed clearly and recovered"
    );
}
