//! Helpers: a simulator + client pair with test timings, and a full crawl that returns comparable
//! results (counts and exact decimal sums).

use costlake::azure::api::{PriceSheetApi, UsageApi};
use costlake::azure::models::{ListPage, UsageDetail};
use costlake::azure::retry::RetryPolicy;
use costlake::azure::{AzureClient, AzureError};
use costlake::simulate::{Scale, SimConfig, Simulator};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

pub fn tiny() -> Scale {
    Scale::preset("tiny").unwrap()
}

pub fn config() -> SimConfig {
    let mut c = SimConfig::fast(11, tiny());
    c.open_month = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    c.faults.stall = Duration::from_secs(4);
    c.faults.retry_after_secs = 0;
    c
}

pub async fn start(c: SimConfig) -> (Simulator, AzureClient) {
    let sim = Simulator::start(c).await.unwrap();
    let client = client_for(&sim);
    (sim, client)
}

/// The CLI's simulator client, with short timeouts and quick retries for tests.
pub fn client_for(sim: &Simulator) -> AzureClient {
    let base = costlake::cli::sim_client(sim).unwrap();
    let mut opts = base.options().clone();
    opts.request_timeout = Duration::from_millis(1500);
    opts.retry = RetryPolicy {
        max_retries: 12,
        max_elapsed: Duration::from_secs(120),
        base: Duration::from_millis(20),
        max_backoff: Duration::from_millis(500),
    };
    opts.poll_timeout = Duration::from_secs(60);
    let http = costlake::azure::http_client(Duration::from_secs(10)).unwrap();
    let cfg = sim.config();
    let cred = costlake::auth::ClientSecretCredential::new(
        http,
        opts.endpoints.authority.clone(),
        sim.world().tenant.clone(),
        cfg.client_id.clone(),
        costlake::secret::Secret::new(cfg.client_secret.clone()),
    );
    AzureClient::new(opts, std::sync::Arc::new(cred)).unwrap()
}

#[derive(Debug, Default, PartialEq)]
pub struct Sums {
    pub rows: u64,
    pub cost_billing: Decimal,
    pub cost_pricing: Decimal,
    pub quantity: Decimal,
}

#[derive(Debug, Default, PartialEq)]
pub struct Crawl {
    pub accounts: usize,
    pub profiles: usize,
    pub customers: Vec<String>,
    pub subscriptions: usize,
    /// invoice name → (total amount, usage sums from the usage API, usage sums from Cost Details)
    pub invoices: BTreeMap<String, (Decimal, Sums, Sums)>,
    /// (profile, api) → price rows
    pub price_rows: BTreeMap<(String, String), usize>,
    pub usage_pages: u64,
}

pub fn dec(s: &str) -> Decimal {
    let t = s.trim();
    if t.is_empty() {
        return Decimal::ZERO;
    }
    costlake::azure::models::loose::parse_decimal(t)
        .unwrap_or_else(|e| panic!("not a decimal {t:?}: {e}"))
}

/// accounts → profiles → customers → subscriptions → invoices → every usage page → price sheets (both
/// APIs) → Cost Details reports and all their blobs.
pub async fn crawl(c: &AzureClient) -> Result<Crawl, AzureError> {
    let mut out = Crawl::default();
    let accounts = c.billing_accounts().await?;
    out.accounts = accounts.len();
    let ba = accounts[0].name.clone();
    let profiles = c.billing_profiles(&ba).await?;
    out.profiles = profiles.len();
    out.customers = c
        .customers(&ba)
        .await?
        .into_iter()
        .map(|c| c.name)
        .collect();
    out.subscriptions = c.billing_subscriptions(&ba).await?.len();
    let from = chrono::NaiveDate::from_ymd_opt(2026, 9, 1).unwrap();
    let to = chrono::NaiveDate::from_ymd_opt(2026, 10, 31).unwrap();
    for inv in c.invoices(&ba, from, to).await? {
        let total = inv
            .props()
            .total_amount
            .and_then(|a| a.value)
            .unwrap_or_default();
        let mut usage = Sums::default();
        let mut pager = c.usage_pager(&inv.scope(), UsageApi::V2024)?;
        while let Some(p) = pager.next_page().await? {
            out.usage_pages += 1;
            if p.no_content {
                continue;
            }
            let page: ListPage<UsageDetail> =
                serde_json::from_slice(&p.body).map_err(|e| AzureError::Invalid(e.to_string()))?;
            for r in page.value {
                let pr = r.properties;
                usage.rows += 1;
                usage.cost_billing += pr.cost_in_billing_currency.unwrap_or_default();
                usage.cost_pricing += pr.cost_in_pricing_currency.unwrap_or_default();
                usage.quantity += pr.quantity.unwrap_or_default();
            }
        }
        let bp_scope = inv
            .scope()
            .split("/invoices/")
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut cd = Sums::default();
        if let Some((op, loc)) = c.cost_details_report(&bp_scope, &inv.name).await? {
            let n = op.manifest.as_ref().map(|m| m.blobs.len()).unwrap_or(0);
            assert!(
                n >= 2,
                "the simulator splits every report into two or more blobs"
            );
            for i in 0..n {
                let bytes = c.download_cost_details_blob(&op, loc.as_ref(), i).await?;
                let text = String::from_utf8(bytes.to_vec()).unwrap();
                let text = text.trim_start_matches('\u{feff}');
                let mut rd = csv::ReaderBuilder::new().from_reader(text.as_bytes());
                let h = rd.headers().unwrap().clone();
                let col = |n: &str| h.iter().position(|x| x.eq_ignore_ascii_case(n)).unwrap();
                let (cb, cp, q) = (
                    col("costInBillingCurrency"),
                    col("costInPricingCurrency"),
                    col("quantity"),
                );
                for rec in rd.records() {
                    let rec = rec.unwrap();
                    cd.rows += 1;
                    cd.cost_billing += dec(&rec[cb]);
                    cd.cost_pricing += dec(&rec[cp]);
                    cd.quantity += dec(&rec[q]);
                }
            }
        }
        out.invoices.insert(inv.name.clone(), (total, usage, cd));
    }
    for p in &profiles {
        for api in [
            PriceSheetApi::Billing2019,
            PriceSheetApi::CostManagement2024,
        ] {
            let bytes = c.download_price_sheet(&ba, &p.name, api).await?;
            out.price_rows
                .insert((p.name.clone(), format!("{api:?}")), price_rows(&bytes));
        }
    }
    Ok(out)
}

/// Data rows of a price sheet: a CSV (BOM or not) or a zip of CSV parts, each with a header.
pub fn price_rows(bytes: &[u8]) -> usize {
    if bytes.starts_with(b"PK") {
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let mut n = 0;
        for i in 0..z.len() {
            let mut f = z.by_index(i).unwrap();
            let mut s = String::new();
            std::io::Read::read_to_string(&mut f, &mut s).unwrap();
            n += csv::Reader::from_reader(s.as_bytes()).records().count();
        }
        n
    } else {
        csv::Reader::from_reader(bytes).records().count()
    }
}

/// The truth for an invoice, from the generator.
pub fn truth(sim: &Simulator, name: &str) -> (Decimal, Sums) {
    let w = sim.world();
    let i = w.invoices.iter().position(|v| v.name == name).unwrap();
    let t = w.totals(i, 0);
    let total = t
        .cost_billing
        .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    (
        total,
        Sums {
            rows: t.rows,
            cost_billing: t.cost_billing,
            cost_pricing: t.cost_pricing,
            quantity: t.quantity,
        },
    )
}

pub fn assert_matches_truth(sim: &Simulator, got: &Crawl) {
    let w = sim.world();
    assert_eq!(got.accounts, 1);
    assert_eq!(got.profiles, w.profiles.len());
    assert_eq!(got.customers.len(), w.customers.len());
    assert_eq!(got.subscriptions, w.subs.len());
    assert_eq!(got.invoices.len(), w.invoices.len());
    for (name, (total, usage, cd)) in &got.invoices {
        let (t_total, t_sums) = truth(sim, name);
        assert_eq!(total, &t_total, "invoice {name} total");
        assert_eq!(
            usage, &t_sums,
            "invoice {name}: usage API rows and exact sums"
        );
        assert_eq!(
            cd, &t_sums,
            "invoice {name}: cost details rows and exact sums"
        );
        assert_eq!(
            usage
                .cost_billing
                .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero),
            *total,
            "reconciles to the cent"
        );
    }
    for (p, prof) in w.profiles.iter().enumerate() {
        let expected = w.prices.iter().filter(|r| r.profile == p).count();
        for api in ["Billing2019", "CostManagement2024"] {
            assert_eq!(
                got.price_rows.get(&(prof.name.clone(), api.to_owned())),
                Some(&expected),
                "price rows {api}"
            );
        }
    }
    let _ = Decimal::from_str("0");
}
