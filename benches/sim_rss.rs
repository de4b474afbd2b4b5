//! Serves N usage rows (default 1 000 000) from a `costlake simulate` process through `nextLink`
//! paging and prints the simulator's peak RSS (VmHWM), rows/s and MB/s. The target (issue 2) is a
//! peak RSS under 200 MB for 1 M rows: pages are generated on demand, never held.
//!
//! Run: `cargo bench --bench sim_rss` (release, 1 M rows), or in a debug build
//! `SIM_RSS_ROWS=1000000 cargo bench --profile dev --bench sim_rss`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::zombie_processes)]

use costlake::auth::ClientSecretCredential;
use costlake::azure::api::UsageApi;
use costlake::azure::governor::Limits;
use costlake::azure::{AzureClient, ClientOptions};
use costlake::config::CloudEndpoints;
use costlake::secret::Secret;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` builds optimized and serves the full million; under `cargo test --all-targets`
    // (a debug build) this is a quick smoke test. SIM_RSS_ROWS overrides either.
    let default_rows = if cfg!(debug_assertions) {
        3_000
    } else {
        1_000_000
    };
    let rows: u64 = std::env::var("SIM_RSS_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_rows);
    let mut child = Command::new(env!("CARGO_BIN_EXE_costlake"))
        .args([
            "simulate",
            "--no-limits",
            "--scale",
            "tiny",
            "--page-size",
            "1000",
            "--open-month",
            "2026-11",
        ])
        .args(["--rows-per-invoice", &rows.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the simulator");
    let pid = child.id();
    let mut vars = std::collections::HashMap::new();
    for line in std::io::BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let line = line.expect("read");
        if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
            vars.insert(k.to_owned(), v.to_owned());
        }
        if line.starts_with("# press") {
            break;
        }
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let result = rt.block_on(async {
        let ep = CloudEndpoints::resolve(
            None,
            Some(&vars["COSTLAKE_MANAGEMENT_ENDPOINT"]),
            Some(&vars["AZURE_AUTHORITY_HOST"]),
        )
        .expect("endpoints");
        let http = costlake::azure::http_client(Duration::from_secs(60)).expect("http");
        let cred = ClientSecretCredential::new(
            http,
            ep.authority.clone(),
            vars["AZURE_TENANT_ID"].clone(),
            vars["AZURE_CLIENT_ID"].clone(),
            Secret::new(vars["AZURE_CLIENT_SECRET"].clone()),
        );
        let mut opts = ClientOptions::new(ep);
        opts.limits = Limits::none();
        let client = AzureClient::new(opts, Arc::new(cred)).expect("client");
        let ba = client.billing_accounts().await.expect("accounts")[0]
            .name
            .clone();
        let bp = client.billing_profiles(&ba).await.expect("profiles")[0]
            .id
            .clone();
        let (from, to) = (
            chrono::NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
            chrono::NaiveDate::from_ymd_opt(2026, 10, 31).unwrap(),
        );
        let mut pager = client
            .usage_pager_range(&bp, from, to, UsageApi::V2024)
            .expect("pager");
        let t = Instant::now();
        let (mut n, mut bytes, mut pages, mut peak) = (0u64, 0u64, 0u64, 0u64);
        while let Some(p) = pager.next_page().await.expect("page") {
            pages += 1;
            bytes += p.body.len() as u64;
            n += p
                .body
                .windows(15)
                .filter(|w| w == b"\"kind\":\"modern\"")
                .count() as u64;
            if pages % 50 == 0 {
                peak = peak.max(vm_hwm_kb(pid));
            }
        }
        (n, pages, bytes, t.elapsed(), peak.max(vm_hwm_kb(pid)))
    });
    let _ = child.kill();
    let (n, pages, bytes, took, peak_kb) = result;
    let peak_mb = peak_kb as f64 / 1024.0;
    println!(
        "sim_rss: served {n} usage rows in {pages} pages, {:.0} MB of JSON ({:.0} bytes/row) in {took:.1?}",
        bytes as f64 / 1e6,
        bytes as f64 / n.max(1) as f64
    );
    println!(
        "sim_rss: {:.0} rows/s, {:.1} MB/s; simulator peak RSS (VmHWM) {peak_mb:.1} MB (target < 200 MB): {}",
        n as f64 / took.as_secs_f64(),
        bytes as f64 / 1e6 / took.as_secs_f64(),
        if peak_mb < 200.0 { "PASS" } else { "FAIL" }
    );
    assert_eq!(n, rows, "every row served exactly once");
}
