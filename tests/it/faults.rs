//! Each fault kind on its own, through a whole crawl: the data is still exactly right.

use crate::common::*;
use costlake::simulate::{FaultKind, FaultPlan, SimFamily};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_kind_is_survived() {
    let mut tasks = Vec::new();
    for kind in FaultKind::ALL {
        tasks.push(tokio::spawn(async move {
            let mut cfg = config();
            let rate = if kind == FaultKind::Stall { 0.06 } else { 0.25 };
            cfg.faults = FaultPlan {
                kinds: vec![kind],
                stall: Duration::from_secs(4),
                retry_after_secs: 0,
                seed: 7,
                ..FaultPlan::everywhere(rate)
            };
            let (sim, client) = start(cfg).await;
            let t = Instant::now();
            let got = crawl(&client)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
            assert_matches_truth(&sim, &got);
            let injected: u64 = sim
                .counters()
                .injected
                .iter()
                .filter(|(k, _)| k.ends_with(&format!("/{}", kind.name())))
                .map(|(_, v)| v)
                .sum();
            assert!(injected > 0, "{} was injected", kind.name());
            (kind.name(), injected, client.stats().retries, t.elapsed())
        }));
    }
    for t in tasks {
        let (kind, injected, retries, took) = t.await.unwrap();
        eprintln!(
            "fault {kind:<22} injected {injected:>3}  client retries {retries:>3}  crawl {took:.1?}  -> data exact"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_headers_are_waited_for() {
    for kind in [
        FaultKind::ThrottleRetryAfter,
        FaultKind::ThrottleConsumption,
        FaultKind::ThrottleQpu,
        FaultKind::ThrottleEntity,
        FaultKind::ThrottleTenant,
    ] {
        let mut cfg = config();
        let mut plan = FaultPlan {
            kinds: vec![kind],
            retry_after_secs: 1,
            ..FaultPlan::default()
        };
        plan.rates.insert(SimFamily::Billing, 1.0);
        cfg.faults = plan;
        let (sim, client) = start(cfg).await;
        let t = Instant::now();
        let call = tokio::spawn(async move { client.billing_accounts().await });
        tokio::time::sleep(Duration::from_millis(2300)).await;
        sim.set_faults(FaultPlan::default());
        let accounts = call.await.unwrap().unwrap();
        assert_eq!(accounts.len(), 1);
        let reqs = sim
            .counters()
            .requests
            .get(&SimFamily::Billing)
            .copied()
            .unwrap_or(0);
        // Every 429 asked for a 1 s wait: in 2.3 s at most three attempts can have been made.
        assert!(
            reqs <= 4,
            "{}: {reqs} requests in {:?} means a retry header was ignored",
            kind.name(),
            t.elapsed()
        );
        eprintln!(
            "{}: {reqs} requests in {:.1?} (each 429 asked for 1 s)",
            kind.name(),
            t.elapsed()
        );
    }
}
