//! Whole pipelines on the embedded simulator: the lake against the generator's truth (in pyarrow,
//! DuckDB and polars), idempotent reruns, restatement, both usage APIs, crash and resume.

use costlake::pipeline::{self, Stages, config::Pipeline};
use costlake::simulate::{Scale, World, generator::ExpectedMatch};
use polars::prelude::*;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const SEED: u64 = 7;

pub fn toml(dir: &Path, extra_source: &str, usage_api: &str) -> String {
    format!(
        r#"name = "t"
[source]
kind = "simulator"
seed = {SEED}
scale = "tiny"
open_month = "2026-11"
time_scale = 6000
{extra_source}
[periods]
from = "2026-09"
to = "2026-11"
lag_months = 1
[extract]
usage_api = "{usage_api}"
concurrency = 4
[landing]
location = "{}"
[output]
location = "{}"
"#,
        dir.join("landing").display(),
        dir.join("lake").display()
    )
}

pub fn pipeline(dir: &Path, extra_source: &str, usage_api: &str) -> Pipeline {
    let text = toml(dir, extra_source, usage_api);
    let file = dir.join("p.toml");
    std::fs::write(&file, &text).unwrap();
    Pipeline::from_toml(&file.to_string_lossy(), &text).unwrap()
}

fn world(restatements: u64) -> (World, u64) {
    (
        World::new(
            SEED,
            Scale::preset("tiny").unwrap(),
            chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
        ),
        restatements,
    )
}

/// All rows of a dataset, partition columns added from the path, sorted by every column.
pub fn read_dataset(lake: &Path, dataset: &str) -> DataFrame {
    let mut frames = Vec::new();
    for f in walk(&lake.join(dataset)) {
        if f.extension().is_some_and(|e| e == "parquet") {
            let mut df = ParquetReader::new(std::fs::File::open(&f).unwrap())
                .finish()
                .unwrap();
            for part in f
                .parent()
                .unwrap()
                .strip_prefix(lake.join(dataset))
                .unwrap()
                .components()
            {
                let s = part.as_os_str().to_string_lossy();
                let (k, v) = s.split_once('=').unwrap();
                let v = costlake::ids::decode(v);
                df.with_column(Column::new(k.into(), vec![v.as_str(); df.height()]))
                    .unwrap();
            }
            frames.push(df);
        }
    }
    let mut df = frames
        .into_iter()
        .reduce(|mut a, b| {
            a.vstack_mut(&b).unwrap();
            a
        })
        .unwrap_or_default();
    let cols: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    if df.height() > 0 {
        df = df
            .sort(cols, SortMultipleOptions::default().with_nulls_last(true))
            .unwrap();
    }
    df
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p))
            } else {
                out.push(p)
            }
        }
    }
    out.sort();
    out
}

fn dec_sum(df: &DataFrame, col: &str) -> Decimal {
    let s = df.column(col).unwrap().as_materialized_series().clone();
    s.decimal()
        .unwrap()
        .physical()
        .iter()
        .flatten()
        .map(|v| Decimal::from_i128_with_scale(v, 18))
        .sum()
}

/// Sums of the truth over every usage row the pipeline covers (invoices and open months).
fn truth(restatements: u64) -> (u64, Decimal, Decimal, BTreeMap<ExpectedMatch, u64>) {
    let (w, v) = world(restatements);
    let (mut rows, mut cost, mut qty, mut by) = (0, Decimal::ZERO, Decimal::ZERO, BTreeMap::new());
    for inv in 0..w.invoices.len() + w.profiles.len() {
        let t = w.totals(inv, if inv >= w.invoices.len() { v } else { 0 });
        rows += t.rows;
        cost += t.cost_billing;
        qty += t.quantity;
        for (k, n) in t.by_match {
            *by.entry(k).or_default() += n;
        }
    }
    (rows, cost, qty, by)
}

fn readers_available() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import pyarrow, duckdb, polars"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have the Python readers: run `bash .ci/test`"
        );
        eprintln!("SKIPPED the Python readers: install them with `bash .ci/test`");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lake_equals_the_truth_in_three_readers_and_reruns_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "", "usage-details");
    let first = pipeline::run(&p, Stages::All).await.unwrap();
    assert!(
        first.reconciliation_mismatches.is_empty(),
        "{:?}",
        first.reconciliation_mismatches
    );
    let lake = dir.path().join("lake");
    let (rows, cost, qty, by) = truth(0);
    let (w, _) = world(0);

    // Price match per reason equals the generator's truth; matched consumption costs are exact.
    let costs = read_dataset(&lake, "costs");
    assert_eq!(costs.height() as u64, rows);
    let got: BTreeMap<String, u64> = {
        let mut m = BTreeMap::new();
        for s in costs.column("price_match").unwrap().str().unwrap().iter() {
            *m.entry(s.unwrap().to_owned()).or_default() += 1;
        }
        m
    };
    let want: BTreeMap<String, u64> = by
        .iter()
        .map(|(k, v)| {
            (
                serde_json::to_value(k)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned(),
                *v,
            )
        })
        .collect();
    assert_eq!(got, want, "price matches per reason");
    eprintln!("price_match per reason: {got:?}");
    let matched_consumption = costs
        .clone()
        .lazy()
        .filter(
            col("price_match")
                .eq(lit("matched"))
                .and(col("pricing_model").eq(lit("On Demand"))),
        )
        .collect()
        .unwrap();
    assert!(matched_consumption.height() > 0);
    assert_eq!(
        dec_sum(&matched_consumption, "contracted_cost"),
        dec_sum(&matched_consumption, "effective_cost"),
        "contracted price × quantity × rate = what was charged"
    );
    // Reconciliation: every invoice to the cent.
    let recon = read_dataset(&lake, "reconciliation");
    assert_eq!(recon.height(), w.invoices.len());
    assert!(
        recon
            .column("status")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .all(|s| s == Some("ok"))
    );

    // The three readers.
    if readers_available() {
        let usage_first = w
            .invoices
            .iter()
            .filter(|i| i.month == w.months[0])
            .map(|i| i.rows)
            .sum::<u64>();
        let price_rows = w.prices.len() as u64 * 3;
        let total: Decimal = (0..w.invoices.len())
            .map(|i| {
                w.totals(i, 0)
                    .cost_billing
                    .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
            })
            .sum();
        let d = |x: Decimal| x.normalize().to_string();
        let part = |rows: Option<u64>,
                    sums: serde_json::Value,
                    first: u64,
                    types: serde_json::Value| {
            serde_json::json!({"partitioned": true, "rows": rows, "sums": sums, "types": types, "periods": 3, "first_period": "2026-09", "first_period_rows": first})
        };
        let flat = |rows: usize| serde_json::json!({"partitioned": false, "rows": rows, "sums": {}, "types": {}});
        let money = serde_json::json!({"cost_in_billing_currency": "decimal128(38, 18)", "date": "date32[day]", "billing_period": "string", "billing_profile": "string", "is_azure_credit_eligible": "bool"});
        let expected = serde_json::json!({
            "usage": part(Some(rows), serde_json::json!({"cost_in_billing_currency": d(cost), "quantity": d(qty)}), usage_first, money.clone()),
            "costs": part(Some(rows), serde_json::json!({"effective_cost": d(cost)}), usage_first, money),
            "prices": part(Some(price_rows), serde_json::json!({}), price_rows / 3, serde_json::json!({"unit_price": "decimal128(38, 18)", "effective_start_date": "date32[day]"})),
            "invoices": {"partitioned": true, "rows": w.invoices.len(), "sums": {"total_amount": d(total)}, "types": {"total_amount": "decimal128(38, 18)"}, "periods": 2, "first_period": "2026-09", "first_period_rows": 2},
            "reconciliation": {"partitioned": true, "rows": w.invoices.len(), "sums": {"difference": "0"}, "types": {}, "periods": 2, "first_period": "2026-09", "first_period_rows": 2},
            "price_coverage": part(None, serde_json::json!({"rows": rows.to_string(), "effective_cost": d(cost)}), 0, serde_json::json!({})),
            "billing_accounts": flat(1),
            "billing_profiles": flat(w.profiles.len()),
            "customers": flat(w.customers.len()),
            "subscriptions": flat(w.subs.len()),
        });
        let mut expected = expected;
        expected["price_coverage"]["first_period_rows"] = serde_json::json!(
            read_dataset(&lake, "price_coverage")
                .lazy()
                .filter(col("billing_period").eq(lit("2026-09")))
                .collect()
                .unwrap()
                .height()
        );
        let exp_file = dir.path().join("expected.json");
        std::fs::write(&exp_file, serde_json::to_vec_pretty(&expected).unwrap()).unwrap();
        let out = std::process::Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/readers.py"))
            .arg(&lake)
            .arg(&exp_file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        eprintln!("readers: {}", text.trim());
        assert!(
            out.status.success() && text.contains(" 0 failed"),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A rerun with nothing new rewrites nothing.
    let before: BTreeMap<PathBuf, Vec<u8>> = walk(&lake)
        .into_iter()
        .filter(|f| !f.to_string_lossy().contains("_runs"))
        .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
        .collect();
    let second = pipeline::run(&p, Stages::All).await.unwrap();
    let load = second.load.unwrap();
    assert_eq!(load.partitions_written, 0, "{load:?}");
    let after: BTreeMap<PathBuf, Vec<u8>> = walk(&lake)
        .into_iter()
        .filter(|f| !f.to_string_lossy().contains("_runs"))
        .map(|f| (f.clone(), std::fs::read(&f).unwrap()))
        .collect();
    assert!(before == after, "a rerun with nothing new changed the lake");
    let ex = second.extract.unwrap();
    assert!(
        ex.units
            .iter()
            .filter(|u| !u.unit.contains("/2026-11"))
            .all(|u| u.skipped && u.pages_fetched == 0),
        "invoiced units are not fetched again"
    );

    // The simulator restates the open month: only 2026-11 partitions change; no duplicate rows.
    let p2 = pipeline(dir.path(), "restatements = 1", "usage-details");
    let third = pipeline::run(&p2, Stages::All).await.unwrap();
    let changed: Vec<String> = walk(&lake)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
        .filter(|f| {
            before
                .get(f)
                .is_none_or(|b| *b != std::fs::read(f).unwrap())
        })
        .map(|f| {
            f.strip_prefix(&lake)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(!changed.is_empty());
    assert!(
        changed.iter().all(|f| f.contains("billing_period=2026-11")),
        "only the open month changed: {changed:?}"
    );
    eprintln!(
        "restatement rewrote {} files, all in 2026-11; load {:?}",
        changed.len(),
        third.load.unwrap()
    );
    let (rows1, cost1, ..) = truth(1);
    let usage = read_dataset(&lake, "usage");
    assert_eq!(
        usage.height() as u64,
        rows1,
        "no duplicate rows after the restatement"
    );
    assert_eq!(dec_sum(&usage, "cost_in_billing_currency"), cost1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_details_and_cost_details_give_the_same_usage_rows() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    pipeline::run(&pipeline(a.path(), "", "usage-details"), Stages::All)
        .await
        .unwrap();
    let rb = pipeline::run(&pipeline(b.path(), "", "cost-details"), Stages::All)
        .await
        .unwrap();
    assert!(
        rb.extract
            .as_ref()
            .unwrap()
            .units
            .iter()
            .any(|u| u.unit.starts_with("units/cost-details/")),
        "cost details were used"
    );
    let ua = read_dataset(&a.path().join("lake"), "usage");
    let ub = read_dataset(&b.path().join("lake"), "usage");
    assert_eq!(ua.height(), ub.height());
    assert!(ua.height() > 0);
    assert!(
        ua.equals_missing(&ub),
        "the two usage APIs must give identical usage rows"
    );
}
