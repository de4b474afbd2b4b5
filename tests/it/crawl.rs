//! Whole crawls: fault-free equals the generator's truth; 10 % faults everywhere equal fault-free;
//! pacing under Azure's limits; no bearer token on the blob host; no secret in trace logs.

use crate::common::*;
use costlake::simulate::{FaultPlan, SimFamily};
use std::io::Write;
use std::sync::{Arc, Mutex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_free_crawl_is_the_truth_and_paced_under_azure_limits() {
    let (sim, client) = start(config()).await;
    let got = crawl(&client).await.unwrap();
    assert_matches_truth(&sim, &got);
    let c = sim.counters();
    eprintln!(
        "fault-free crawl: requests {:?}; rate-limited (429) by scope {:?}; client {:?}",
        c.requests,
        c.rate_limited,
        client.stats().throttled_by_scope
    );
    for (scope, n) in &c.rate_limited {
        assert!(
            *n <= 1,
            "{scope} earned {n} 429s; the governor should keep each scope to at most one"
        );
    }
    assert_eq!(
        c.blob_requests_with_authorization, 0,
        "the bearer token must never reach the blob host"
    );
    assert!(
        c.usage_pages_served >= 8,
        "tiny scale still pages: {}",
        c.usage_pages_served
    );
}

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn ten_percent_faults_everywhere_give_the_fault_free_data_and_leak_nothing_at_trace() {
    let buf = Buf::default();
    let w = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || w.clone())
        .finish();
    let _ = tracing_log::LogTracer::init();
    let _guard = tracing::subscriber::set_default(sub);
    // One thread, so every task (client and simulator) logs through this thread's subscriber.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut clean_cfg = config();
        clean_cfg.scale.rows_per_invoice = 900;
        let (clean_sim, clean_client) = start(clean_cfg).await;
        let clean = crawl(&clean_client).await.unwrap();
        let mut cfg = config();
        cfg.scale.rows_per_invoice = 900; // about 120 calls, so 10% is a dozen faults
        cfg.faults = FaultPlan {
            stall: std::time::Duration::from_secs(4),
            retry_after_secs: 0,
            seed: 99,
            ..FaultPlan::everywhere(0.10)
        };
        let (sim, client) = start(cfg).await;
        let got = crawl(&client).await.unwrap();
        assert_eq!(
            got, clean,
            "a crawl under 10% faults must give exactly the fault-free data"
        );
        assert_matches_truth(&sim, &got);
        let c = sim.counters();
        eprintln!(
            "10% faults: injected {} {:?}; client stats {:?}",
            c.injected_total(),
            c.injected,
            client.stats()
        );
        assert!(
            c.injected_total() >= 6,
            "faults were injected: {:?}",
            c.injected
        );
        let families: std::collections::BTreeSet<&str> = c
            .injected
            .keys()
            .filter_map(|k| k.split('/').next())
            .collect();
        assert!(
            families.len() >= 3,
            "faults hit many families: {families:?}"
        );
        assert_eq!(c.blob_requests_with_authorization, 0);
        let mut secrets = sim.secrets();
        secrets.extend(clean_sim.secrets());
        drop(sim);
        drop(clean_sim);
        let logs = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
        assert!(
            logs.lines().count() > 200,
            "trace logging was captured ({} lines)",
            logs.lines().count()
        );
        for s in secrets.iter().filter(|s| s.len() >= 8) {
            let encoded: String = url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
            assert!(
                !logs.contains(s.as_str()) && !logs.contains(&encoded),
                "a secret/token/sig appears in the trace log"
            );
        }
        eprintln!(
            "scanned {} trace log lines for {} secrets, tokens and signatures: none found",
            logs.lines().count(),
            secrets.len()
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_api_and_cost_details_agree_for_every_invoice() {
    let (sim, client) = start(config()).await;
    let got = crawl(&client).await.unwrap();
    for (name, (_, usage, cd)) in &got.invoices {
        assert_eq!(usage, cd, "{name}");
    }
    let cd_requests = sim
        .counters()
        .requests
        .get(&SimFamily::CostDetails)
        .copied()
        .unwrap_or(0);
    assert!(
        cd_requests >= 4,
        "one report per invoice at least: {cd_requests}"
    );
}
