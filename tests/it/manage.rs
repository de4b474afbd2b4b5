//! The management commands, run as a user runs them: the `costlake` binary against a
//! `costlake simulate` process that keeps policies and budgets across calls.

use costlake::simulate::{Scale, World};
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};

struct Sim {
    child: Child,
    env: HashMap<String, String>,
    account: String,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn simulate() -> Sim {
    let mut child = Command::new(env!("CARGO_BIN_EXE_costlake"))
        .args([
            "simulate",
            "--seed",
            "5",
            "--scale",
            "tiny",
            "--open-month",
            "2026-11",
            "--time-scale",
            "600",
            "--query-page-rows",
            "20",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut env = HashMap::new();
    let mut account = String::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
            env.insert(k.to_owned(), v.to_owned());
        }
        if let Some(a) = line.strip_prefix("# billing account: ") {
            account = a.to_owned();
        }
        if line.starts_with("# press") {
            break;
        }
    }
    Sim {
        child,
        env,
        account,
    }
}

impl Sim {
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_costlake"))
            .args(args)
            .envs(&self.env)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "costlake {}: {err}", args.join(" "));
        out
    }
}

fn world() -> World {
    World::new(
        5,
        Scale::preset("tiny").unwrap(),
        chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
    )
}

#[test]
fn policy_set_on_all_customers_is_idempotent() {
    let sim = simulate();
    let dry = sim.ok(&[
        "policy",
        "set",
        "--all",
        "--view-charges",
        "not-allowed",
        "--dry-run",
    ]);
    assert!(dry.contains("would change"), "{dry}");
    assert!(
        !sim.ok(&["policy", "get", "--all"])
            .lines()
            .skip(1)
            .all(|l| l.contains("NotAllowed")),
        "a dry run changes nothing"
    );
    let first = sim.ok(&[
        "policy",
        "set",
        "--all",
        "--view-charges",
        "not-allowed",
        "--json",
    ]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&first).unwrap();
    assert_eq!(rows.len(), world().customers.len());
    assert!(rows.iter().any(|r| r["outcome"] == "changed"));
    assert!(rows.iter().all(|r| r["view_charges"] == "NotAllowed"));
    let again: Vec<serde_json::Value> = serde_json::from_str(&sim.ok(&[
        "policy",
        "set",
        "--all",
        "--view-charges",
        "not-allowed",
        "--json",
    ]))
    .unwrap();
    assert!(
        again.iter().all(|r| r["outcome"] == "unchanged"),
        "rerun changes nothing: {again:?}"
    );
    let one = &world().customers[0].id;
    let out = sim.ok(&[
        "policy",
        "set",
        "--customer",
        one,
        "--view-charges",
        "allowed",
    ]);
    assert!(out.contains("changed") && out.lines().count() == 2, "{out}");
    let (ok, _, err) = sim.run(&[
        "policy",
        "set",
        "--customer",
        "nope",
        "--view-charges",
        "allowed",
    ]);
    assert!(!ok && err.contains("not a customer"), "{err}");
    let (ok, _, err) = sim.run(&["policy", "set", "--all", "--view-charges", "sometimes"]);
    assert!(!ok && err.contains("allowed or not-allowed"), "{err}");
}

fn budgets_file(
    dir: &std::path::Path,
    customer: &str,
    customer_amount: u32,
    with_partner: bool,
) -> String {
    let mut t = String::new();
    if with_partner {
        t += "[[budgets]]\nname = \"partner-cap\"\namount = 50000\nstart = \"2026-12\"\nend = \"2027-11-30\"\n[[budgets.notifications]]\nthreshold = 90\ncontact_emails = [\"finops@contoso.com\"]\n\n";
    }
    t += &format!(
        "[[budgets]]\nname = \"cust-cap\"\ncustomer = \"{customer}\"\namount = {customer_amount}\ntime_grain = \"Quarterly\"\nstart = \"2026-12-01\"\n[[budgets.notifications]]\nthreshold = 80\ncontact_emails = [\"owner@customer.example\"]\n[[budgets.notifications]]\nthreshold = 100\nthreshold_type = \"Forecasted\"\ncontact_emails = [\"owner@customer.example\"]\n"
    );
    let f = dir.join(format!("budgets-{customer_amount}-{with_partner}.toml"));
    std::fs::write(&f, t).unwrap();
    f.to_string_lossy().into_owned()
}

#[test]
fn budgets_as_code_round_trip_and_single_budgets() {
    let sim = simulate();
    let dir = tempfile::tempdir().unwrap();
    let cust = world().customers[0].id.clone();
    let v1 = budgets_file(dir.path(), &cust, 1000, true);
    let plan = sim.ok(&["budgets", "plan", &v1]);
    assert_eq!(plan.matches("create").count(), 2, "{plan}");
    let applied = sim.ok(&["budgets", "apply", &v1]);
    assert_eq!(applied.matches("changed").count(), 2, "{applied}");
    let plan = sim.ok(&["budgets", "plan", &v1]);
    assert_eq!(
        plan.matches("unchanged").count(),
        2,
        "apply then plan: nothing to do\n{plan}"
    );
    // Change an amount: an update, sent with the budget's eTag.
    let v2 = budgets_file(dir.path(), &cust, 1500, true);
    let plan = sim.ok(&["budgets", "plan", &v2]);
    assert!(
        plan.contains("update") && plan.contains("amount 1000 → 1500"),
        "{plan}"
    );
    sim.ok(&["budgets", "apply", &v2]);
    let got: serde_json::Value =
        serde_json::from_str(&sim.ok(&["budget", "get", "cust-cap", "--customer", &cust])).unwrap();
    assert_eq!(got["properties"]["amount"], serde_json::json!(1500.0));
    assert_eq!(got["properties"]["timeGrain"], "Quarterly");
    // Remove the partner budget from the file: apply deletes it.
    let v3 = budgets_file(dir.path(), &cust, 1500, false);
    let plan = sim.ok(&["budgets", "plan", &v3]);
    assert!(
        plan.contains("delete") && plan.contains("partner-cap"),
        "{plan}"
    );
    sim.ok(&["budgets", "apply", &v3]);
    assert_eq!(
        sim.ok(&["budget", "list"]).lines().count(),
        1,
        "only the header: no partner budget left"
    );
    // An invalid budget is refused before any call, with every problem listed.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[budgets]]\nname = \"no spaces\"\namount = 0\ntime_grain = \"BillingMonth\"\nstart = \"2026-12-15\"\n[[budgets.notifications]]\nthreshold = 80\n").unwrap();
    let (ok, _, err) = sim.run(&["budgets", "apply", bad.to_str().unwrap()]);
    assert!(
        !ok && err.contains("nothing was sent to Azure") && err.contains("5 problem(s)"),
        "{err}"
    );
    assert_eq!(
        sim.ok(&["budget", "list", "--customer", &cust])
            .lines()
            .count(),
        2,
        "the customer budget is untouched"
    );
    // Single budgets from flags.
    let out = sim.ok(&[
        "budget",
        "create",
        "flag-cap",
        "--amount",
        "250.50",
        "--start",
        "2027-01",
        "--notify",
        "75=a@b.example,c@d.example",
    ]);
    assert!(out.contains("created"), "{out}");
    let out = sim.ok(&[
        "budget",
        "create",
        "flag-cap",
        "--amount",
        "300",
        "--start",
        "2027-01",
        "--notify",
        "75=a@b.example",
    ]);
    assert!(out.contains("updated"), "{out}");
    let (ok, _, err) = sim.run(&[
        "budget",
        "create",
        "flag-cap",
        "--amount=-3",
        "--start",
        "2027-01",
    ]);
    assert!(!ok && err.contains("amount must be"), "{err}");
    sim.ok(&["budget", "delete", "flag-cap"]);
    let (ok, _, _) = sim.run(&["budget", "get", "flag-cap"]);
    assert!(!ok);
}

#[test]
fn query_output_equals_the_simulators_aggregate_across_pages() {
    let sim = simulate();
    let w = world();
    let lake = tempfile::tempdir().unwrap();
    let out = sim.run(&[
        "query",
        "--from",
        "2026-09-01",
        "--to",
        "2026-10-31",
        "--group-by",
        "ResourceGroup",
        "--format",
        "csv",
        "--lake",
        lake.path().to_str().unwrap(),
    ]);
    assert!(out.0, "{}", out.2);
    let pages: usize = out
        .2
        .split(" page(s)")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(pages >= 3, "several pages: {}", out.2);
    let mut rd = csv::Reader::from_reader(out.1.as_bytes());
    assert_eq!(
        rd.headers().unwrap().iter().collect::<Vec<_>>(),
        ["totalCost", "UsageDate", "ResourceGroup", "Currency"]
    );
    let mut got: HashMap<String, Decimal> = HashMap::new();
    for r in rd.records() {
        let r = r.unwrap();
        assert!(
            r[1].starts_with("2026-"),
            "UsageDate is a real date: {}",
            &r[1]
        );
        *got.entry(r[3].to_owned()).or_default() +=
            costlake::azure::models::loose::parse_decimal(&r[0]).unwrap();
    }
    let mut want: HashMap<String, Decimal> = HashMap::new();
    for (i, inv) in w.invoices.iter().enumerate() {
        *want
            .entry(w.profiles[inv.profile].currency.to_owned())
            .or_default() += w.totals(i, 0).cost_billing;
    }
    assert_eq!(got, want, "query sums equal the generator's, exactly");
    // The same result as a Parquet dataset in the lake.
    let files: Vec<_> = crate::pipeline::walk(lake.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert_eq!(files.len(), 1);
    assert!(
        files[0]
            .to_string_lossy()
            .contains("aggregated_costs/scope=")
    );
    use polars::prelude::SerReader;
    let df = polars::prelude::ParquetReader::new(std::fs::File::open(&files[0]).unwrap())
        .finish()
        .unwrap();
    assert_eq!(
        df.column("usage_date").unwrap().dtype(),
        &polars::prelude::DataType::Date
    );
    let s = df
        .column("totalCost")
        .unwrap()
        .as_materialized_series()
        .clone();
    let total: Decimal = s
        .decimal()
        .unwrap()
        .physical()
        .iter()
        .flatten()
        .map(|v| Decimal::from_i128_with_scale(v, 18))
        .sum();
    assert_eq!(total, want.values().copied().sum::<Decimal>());
    // Filters and customer scope.
    let c = &w.customers[1];
    let out = sim.ok(&[
        "query",
        "--scope",
        &format!("customer:{}", c.id),
        "--from",
        "2026-09-01",
        "--to",
        "2026-10-31",
        "--granularity",
        "None",
        "--group-by",
        "CustomerName",
        "--format",
        "json",
    ]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["CustomerName"], c.display_name.as_str());
    let _ = sim.account.len();
}
