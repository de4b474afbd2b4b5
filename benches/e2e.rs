//! End to end: costlake's transform + load against DuckDB doing the same work on the same landed
//! files (issue 6).
//!
//! ```text
//! cargo bench --bench e2e                                  # 1 M and 5 M usage rows, 3 A/B pairs
//! COSTLAKE_BENCH_ROWS=1000000 COSTLAKE_BENCH_PAIRS=5 cargo bench --bench e2e
//! ```
//!
//! For each size it
//! 1. lands the data once with costlake's own extract against the embedded simulator (two billing
//!    profiles, two closed months = four invoices, 1 000-row pages of ~2.9 KB JSON per row as Azure
//!    serves them, a price sheet of ~1.6 rows per meter as CSV), kept under `data/bench/rows-N/`;
//! 2. prints the parsing limit: zstd-decoding and parsing every landed page with sonic-rs (every
//!    token visited, nothing materialized), on one core and on all cores;
//! 3. alternates A = `costlake transform` + `costlake load` (two processes) and B = DuckDB
//!    (`benches/duckdb_e2e.py run`, the Python package pinned in `.ci/test`), each from an empty
//!    output directory, and prints wall time, rows/s, MB/s of landed JSON, peak RSS (`/usr/bin/time`'s
//!    maximum resident set) and the ratios;
//! 4. checks that both lakes agree: rows and exact money sums per price-match status, rows and
//!    charged cost per (period, profile).
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs the same steps on 4 000 rows,
//! one pair, so the DuckDB side and the agreement check are exercised by the suite.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

struct Sample {
    seconds: f64,
    peak_mb: f64,
}

/// Runs a command under `/usr/bin/time`; wall seconds (measured here) and peak RSS in MB.
fn timed(cmd: &mut Command, what: &str) -> Sample {
    let rss_file = tempfile_path("rss");
    let prog = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    // GNU time reports the child's peak RSS; without it (a bare machine) the run still happens
    // and the peak shows as 0.
    let mut c = if Path::new("/usr/bin/time").exists() {
        let mut c = Command::new("/usr/bin/time");
        c.arg("-f").arg("%M").arg("-o").arg(&rss_file).arg(prog);
        c
    } else {
        Command::new(prog)
    };
    c.args(args);
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    let t = Instant::now();
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let seconds = t.elapsed().as_secs_f64();
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let kb: f64 = std::fs::read_to_string(&rss_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next_back()
        .unwrap_or(0.0);
    let _ = std::fs::remove_file(&rss_file);
    Sample {
        seconds,
        peak_mb: kb / 1024.0,
    }
}

fn tempfile_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("costlake-bench-{tag}-{}", std::process::id()))
}

fn pipeline_toml(dir: &Path, rows: u64, meters: u32) -> String {
    format!(
        r#"# Written by `cargo bench --bench e2e`.
name = "bench-{rows}"

[source]
kind = "simulator"
seed = 2026
scale = "large"
rows_per_invoice = {per_invoice}
meters = {meters}
open_month = "2026-11"
time_scale = 1000000
page_size = 1000

[periods]
from = "2026-09"
to = "2026-10"
lag_months = 0

[extract]
usage_api = "usage-details"
usage_api_version = "2024-08-01"
price_sheet_api = "billing-2019"
concurrency = 4

[landing]
location = "{landing}"

[output]
location = "{lake}"
datasets = ["usage", "prices", "costs", "price_coverage"]
"#,
        per_invoice = rows / 4,
        landing = dir.join("landing").display(),
        lake = dir.join("lake-costlake").display(),
    )
}

fn columns_json() -> String {
    use costlake::transform::{prices::PRICE_COLUMNS, usage::USAGE_COLUMNS};
    let usage: Vec<_> = USAGE_COLUMNS
        .iter()
        .map(|(o, j, c, k)| serde_json::json!([o, j, c, format!("{k:?}")]))
        .collect();
    let prices: Vec<_> = PRICE_COLUMNS
        .iter()
        .map(|(o, h, k)| serde_json::json!([o, h, k.to_string()]))
        .collect();
    serde_json::json!({"usage": usage, "prices": prices}).to_string()
}

fn pages(landing: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![landing.join("units/usage")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("page-") && n.ends_with(".json.zst"))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// (JSON bytes, seconds to zstd-decode + parse, seconds to parse only) with `threads` threads.
fn parse_limit(files: &[PathBuf], threads: usize) -> (u64, f64, f64) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let t = Instant::now();
        // Decompressed the way transform does it: into one reused buffer per thread.
        let bytes: u64 = files
            .par_iter()
            .map_init(Vec::new, |json, f| {
                let z = std::fs::read(f).unwrap();
                costlake::extract::unzstd_into(&z, json).unwrap();
                let _: serde::de::IgnoredAny = sonic_rs::from_slice(json).unwrap();
                json.len() as u64
            })
            .sum();
        let with_zstd = t.elapsed().as_secs_f64();
        // Parse alone: decode a batch in memory first (bounded, so this works at any size).
        let mut parse_only = 0.0;
        for batch in files.chunks(64) {
            let docs: Vec<Vec<u8>> = batch
                .par_iter()
                .map(|f| zstd::decode_all(&std::fs::read(f).unwrap()[..]).unwrap())
                .collect();
            let t = Instant::now();
            docs.par_iter().for_each(|d| {
                let _: serde::de::IgnoredAny = sonic_rs::from_slice(d).unwrap();
            });
            parse_only += t.elapsed().as_secs_f64();
        }
        (bytes, with_zstd, parse_only)
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<u64> = std::env::var("COSTLAKE_BENCH_ROWS")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| {
            if bench {
                vec![1_000_000, 5_000_000]
            } else {
                vec![4_000]
            }
        });
    let pairs: usize = std::env::var("COSTLAKE_BENCH_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 3 } else { 1 });
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let base = if bench {
        root.join("data/bench")
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-e2e")
    };
    let exe = env!("CARGO_BIN_EXE_costlake");
    let script = root.join("benches/duckdb_e2e.py");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "e2e benchmark: costlake transform+load vs DuckDB, {cores} cores, {pairs} pair(s) per size"
    );
    let mut medians: Vec<(u64, f64, f64)> = Vec::new();
    for rows in sizes {
        // A real MCA price sheet has hundreds of thousands of rows: ~1.6 rows per meter.
        let meters = if rows >= 100_000 { 100_000 } else { 400 };
        let dir = base.join(format!("rows-{rows}"));
        std::fs::create_dir_all(&dir).unwrap();
        let toml = dir.join("pipeline.toml");
        std::fs::write(&toml, pipeline_toml(&dir, rows, meters)).unwrap();
        let columns = dir.join("columns.json");
        std::fs::write(&columns, columns_json()).unwrap();
        let landing = dir.join("landing");
        if !landing.join("_state/extract.json").exists() {
            let t = Instant::now();
            let s = timed(
                Command::new(exe).arg("extract").arg(&toml),
                "landing the data (costlake extract)",
            );
            println!(
                "\n{rows} rows: landed in {:.1} s by `costlake extract` (peak {:.0} MB)",
                t.elapsed().as_secs_f64(),
                s.peak_mb
            );
        }
        let files = pages(&landing);
        let landed: u64 = files
            .iter()
            .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
            .sum();
        let (json_bytes, z1, p1) = parse_limit(&files, 1);
        let (_, zn, pn) = parse_limit(&files, cores);
        let mb = json_bytes as f64 / 1e6;
        println!(
            "\n== {rows} usage rows: {} pages, {:.0} MB of JSON ({:.0} B/row), {:.0} MB landed (zstd)",
            files.len(),
            mb,
            json_bytes as f64 / rows as f64,
            landed as f64 / 1e6
        );
        println!(
            "parsing limit (sonic-rs, every token, nothing kept): zstd+parse {:.2} s = {:.0} MB/s on 1 core, {:.2} s = {:.0} MB/s on {cores}; parse alone {:.0} MB/s on 1 core, {:.0} MB/s on {cores}",
            z1,
            mb / z1,
            zn,
            mb / zn,
            mb / p1,
            mb / pn
        );
        let lake_a = dir.join("lake-costlake");
        let lake_b = dir.join("lake-duckdb");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for pair in 1..=pairs {
            let _ = std::fs::remove_dir_all(&lake_a);
            let t = timed(
                Command::new(exe).arg("transform").arg(&toml),
                "costlake transform",
            );
            let l = timed(Command::new(exe).arg("load").arg(&toml), "costlake load");
            let sa = Sample {
                seconds: t.seconds + l.seconds,
                peak_mb: t.peak_mb.max(l.peak_mb),
            };
            let _ = std::fs::remove_dir_all(&lake_b);
            let sb = timed(
                Command::new("python3")
                    .arg(&script)
                    .arg("run")
                    .arg(&landing)
                    .arg(&lake_b)
                    .arg(&columns),
                "DuckDB",
            );
            for (name, s) in [("A costlake", &sa), ("B duckdb  ", &sb)] {
                println!(
                    "pair {pair} {name}: {:7.2} s {:>10.0} rows/s {:7.1} MB/s  peak RSS {:7.0} MB",
                    s.seconds,
                    rows as f64 / s.seconds,
                    mb / s.seconds,
                    s.peak_mb
                );
            }
            println!(
                "         (costlake transform {:.2} s, peak {:.0} MB; load {:.2} s, peak {:.0} MB)",
                t.seconds, t.peak_mb, l.seconds, l.peak_mb
            );
            a.push(sa);
            b.push(sb);
        }
        let (ta, tb) = (
            median(&mut a.iter().map(|s| s.seconds).collect::<Vec<_>>()),
            median(&mut b.iter().map(|s| s.seconds).collect::<Vec<_>>()),
        );
        let (ra, rb) = (
            median(&mut a.iter().map(|s| s.peak_mb).collect::<Vec<_>>()),
            median(&mut b.iter().map(|s| s.peak_mb).collect::<Vec<_>>()),
        );
        println!(
            "median: costlake {ta:.2} s ({:.0} MB/s, peak {ra:.0} MB), DuckDB {tb:.2} s ({:.0} MB/s, peak {rb:.0} MB)",
            mb / ta,
            mb / tb
        );
        println!(
            "ratios: throughput costlake/DuckDB {:.2}x (target >= 4); peak RSS costlake/DuckDB {:.3} (target <= 0.25); costlake MB/s / parsing limit on {cores} cores {:.2} (target >= 0.5)",
            tb / ta,
            ra / rb,
            (mb / ta) / (mb / zn)
        );
        medians.push((rows, ta, ra));
        let out = Command::new("python3")
            .arg(&script)
            .arg("compare")
            .arg(&lake_a)
            .arg(&lake_b)
            .output()
            .expect("python3");
        print!("agreement check:\n{}", String::from_utf8_lossy(&out.stdout));
        assert!(
            out.status.success(),
            "the two lakes disagree: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !bench {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    if let (Some(small), Some(big)) = (medians.first(), medians.last())
        && big.0 > small.0
    {
        println!(
            "\nscaling: {}x the rows took {:.2}x the time and {:.2}x the peak RSS (target <= 1.3)",
            big.0 / small.0,
            big.1 / small.1,
            big.2 / small.2
        );
    }
}
