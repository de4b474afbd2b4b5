//! The Azure side, simulated: an HTTP server that speaks the contract in `shared/azure-api/`.
//!
//! - [`generator`]: a deterministic partner world from a seed and a [`Scale`], and its truth;
//! - [`wire`]: Azure's JSON and CSV shapes, quirks included;
//! - [`server`]: the token endpoint, every ARM endpoint costlake uses, a separate blob host for
//!   signed links, Azure's rate limits, and fault injection.
//!
//! Run it as `costlake simulate`, or in-process with [`Simulator::start`] (tests, demo pipelines).
//! It shares nothing with the client but the wire models in `azure::models`.

pub mod generator;
mod server;
pub mod wire;

pub use generator::{Scale, World};

use chrono::NaiveDate;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    #[error("simulator: cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("simulator: {0}")]
    Invalid(String),
}

/// Endpoint families, for fault rates and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SimFamily {
    Token,
    Billing,
    Usage,
    PriceSheet,
    CostDetails,
    Query,
    Budgets,
    Policy,
    Blob,
}

impl SimFamily {
    pub const ALL: [SimFamily; 9] = [
        SimFamily::Token,
        SimFamily::Billing,
        SimFamily::Usage,
        SimFamily::PriceSheet,
        SimFamily::CostDetails,
        SimFamily::Query,
        SimFamily::Budgets,
        SimFamily::Policy,
        SimFamily::Blob,
    ];
    pub fn name(self) -> &'static str {
        match self {
            SimFamily::Token => "token",
            SimFamily::Billing => "billing",
            SimFamily::Usage => "usage",
            SimFamily::PriceSheet => "price-sheet",
            SimFamily::CostDetails => "cost-details",
            SimFamily::Query => "query",
            SimFamily::Budgets => "budgets",
            SimFamily::Policy => "policy",
            SimFamily::Blob => "blob",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// Every fault the simulator can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// 429 with only `Retry-After`.
    ThrottleRetryAfter,
    /// 429 with only `x-ms-ratelimit-microsoft.consumption-retry-after`.
    ThrottleConsumption,
    /// 429 with only `x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after`.
    ThrottleQpu,
    /// 429 with only `x-ms-ratelimit-microsoft.costmanagement-entity-retry-after`.
    ThrottleEntity,
    /// 429 with only `x-ms-ratelimit-microsoft.costmanagement-tenant-retry-after`.
    ThrottleTenant,
    Http503,
    Http500,
    /// The connection is reset (RST) before any response.
    Reset,
    /// Headers and part of the body, then nothing for `stall`.
    Stall,
    /// `Content-Length` promises more than is sent, then the connection closes.
    Truncated,
    /// A complete 200 response whose JSON is cut short.
    InvalidJson,
    /// A signed link refused as expired (blob host only).
    ExpiredLink,
    /// The bearer token is declared expired (401) (ARM families only).
    TokenExpiry,
}

impl FaultKind {
    pub const ALL: [FaultKind; 13] = [
        FaultKind::ThrottleRetryAfter,
        FaultKind::ThrottleConsumption,
        FaultKind::ThrottleQpu,
        FaultKind::ThrottleEntity,
        FaultKind::ThrottleTenant,
        FaultKind::Http503,
        FaultKind::Http500,
        FaultKind::Reset,
        FaultKind::Stall,
        FaultKind::Truncated,
        FaultKind::InvalidJson,
        FaultKind::ExpiredLink,
        FaultKind::TokenExpiry,
    ];
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::ThrottleRetryAfter => "throttle-retry-after",
            FaultKind::ThrottleConsumption => "throttle-consumption",
            FaultKind::ThrottleQpu => "throttle-qpu",
            FaultKind::ThrottleEntity => "throttle-entity",
            FaultKind::ThrottleTenant => "throttle-tenant",
            FaultKind::Http503 => "503",
            FaultKind::Http500 => "500",
            FaultKind::Reset => "reset",
            FaultKind::Stall => "stall",
            FaultKind::Truncated => "truncated",
            FaultKind::InvalidJson => "invalid-json",
            FaultKind::ExpiredLink => "expired-link",
            FaultKind::TokenExpiry => "token-expiry",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == s)
    }
    /// Whether the fault makes sense for a family (expired links only on the blob host, token expiry
    /// only where a bearer token is checked, invalid JSON only where JSON is served).
    pub fn applies_to(self, f: SimFamily) -> bool {
        match self {
            FaultKind::ExpiredLink => f == SimFamily::Blob,
            FaultKind::TokenExpiry => !matches!(f, SimFamily::Blob | SimFamily::Token),
            FaultKind::InvalidJson => f != SimFamily::Blob,
            _ => true,
        }
    }
}

/// Which faults, where, how often.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    /// Probability of a fault per request, per family (missing: no faults).
    pub rates: BTreeMap<SimFamily, f64>,
    /// Kinds to choose from (each request with a fault picks one that applies to its family).
    pub kinds: Vec<FaultKind>,
    /// How long a stalled response stalls.
    pub stall: Duration,
    /// Value of the retry header on injected 429s (seconds).
    pub retry_after_secs: u64,
    pub seed: u64,
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self {
            rates: BTreeMap::new(),
            kinds: FaultKind::ALL.to_vec(),
            stall: Duration::from_secs(30),
            retry_after_secs: 1,
            seed: 1,
        }
    }
}

impl FaultPlan {
    /// The same rate on every family.
    pub fn everywhere(rate: f64) -> Self {
        Self {
            rates: SimFamily::ALL.iter().map(|f| (*f, rate)).collect(),
            ..Self::default()
        }
    }
}

/// How invoice period dates must be spelled (the contract leaves it open).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvoiceDates {
    Iso,
    Us,
    Both,
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub scale: Scale,
    /// The month that is still open (not invoiced); the closed months precede it.
    pub open_month: NaiveDate,
    /// Usage rows per page.
    pub page_size: u32,
    /// Items per page of hierarchy lists (customers, subscriptions).
    pub list_page_size: u32,
    /// Rows per Cost Management query page.
    pub query_page_rows: u32,
    /// Rows per Cost Details CSV blob (at least two blobs are always made).
    pub blob_rows: u64,
    /// Rows per CSV part of a zipped (2024) price sheet.
    pub price_zip_rows: usize,
    /// How much faster than real time the simulated clock runs for rate-limit windows and operation
    /// delays (1 = Azure's real pace; 60 = a minute lasts a second).
    pub time_scale: f64,
    /// Enforce Azure's documented rate limits with 429s.
    pub enforce_limits: bool,
    pub faults: FaultPlan,
    /// Simulated seconds an async operation (price sheet, cost details) takes.
    pub operation_secs: f64,
    pub token_lifetime: Duration,
    pub link_lifetime: Duration,
    pub invoice_dates: InvoiceDates,
    pub client_id: String,
    pub client_secret: String,
    pub federated_assertion: String,
    pub identity_header: String,
    /// Wall-clock delay added to every request (network and service latency, for extract
    /// benchmarks); zero by default.
    pub latency: Duration,
    /// Fixed ports (0 = any free port).
    pub arm_port: u16,
    pub blob_port: u16,
}

impl SimConfig {
    pub fn new(seed: u64, scale: Scale) -> Self {
        let today = chrono::Utc::now().date_naive();
        Self {
            seed,
            scale,
            open_month: chrono::Datelike::with_day(&today, 1).unwrap_or(today),
            page_size: 1000,
            list_page_size: 50,
            query_page_rows: 200,
            blob_rows: 100_000,
            price_zip_rows: 50_000,
            time_scale: 1.0,
            enforce_limits: true,
            faults: FaultPlan::default(),
            operation_secs: 60.0,
            token_lifetime: Duration::from_secs(3600),
            link_lifetime: Duration::from_secs(3600),
            invoice_dates: InvoiceDates::Both,
            client_id: "00000000-0000-0000-0000-00000000c0de".into(),
            client_secret: "sim-secret-do-not-log".into(),
            federated_assertion: "sim-federated-assertion".into(),
            identity_header: "sim-identity-header".into(),
            latency: Duration::ZERO,
            arm_port: 0,
            blob_port: 0,
        }
    }

    /// Fast settings for tests and demos: small pages, a clock 600× faster, operations in two polls.
    pub fn fast(seed: u64, scale: Scale) -> Self {
        Self {
            page_size: 100,
            list_page_size: 5,
            query_page_rows: 20,
            blob_rows: 200,
            price_zip_rows: 40,
            time_scale: 600.0,
            operation_secs: 60.0,
            ..Self::new(seed, scale)
        }
    }
}

/// What the simulator served and injected; read by tests and printed by `costlake simulate`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Counters {
    pub requests: BTreeMap<SimFamily, u64>,
    pub injected: BTreeMap<String, u64>,
    /// 429s from rate-limit enforcement, by `family key`.
    pub rate_limited: BTreeMap<String, u64>,
    pub usage_pages_served: u64,
    pub usage_rows_served: u64,
    /// Requests to the blob host that carried an `Authorization` header (must stay 0).
    pub blob_requests_with_authorization: u64,
    pub tokens_issued: u64,
    pub unauthorized: u64,
}

impl Counters {
    pub fn injected_total(&self) -> u64 {
        self.injected.values().sum()
    }
    pub fn rate_limited_total(&self) -> u64 {
        self.rate_limited.values().sum()
    }
}

/// A running simulator.
pub struct Simulator {
    state: Arc<server::State>,
    arm_addr: SocketAddr,
    blob_addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Simulator {
    /// Binds both hosts on 127.0.0.1 and serves in the background on the current tokio runtime.
    pub async fn start(config: SimConfig) -> Result<Self, SimError> {
        server::start(config).await
    }

    /// Base URL of the management endpoint (and of the token authority).
    pub fn arm_url(&self) -> String {
        format!("http://{}/", self.arm_addr)
    }
    pub fn blob_url(&self) -> String {
        format!("http://{}/", self.blob_addr)
    }
    pub fn world(&self) -> &World {
        &self.state.world
    }
    pub fn config(&self) -> &SimConfig {
        &self.state.config
    }
    pub fn counters(&self) -> Counters {
        self.state
            .counters
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }
    pub fn reset_counters(&self) {
        if let Ok(mut c) = self.state.counters.lock() {
            *c = Counters::default();
        }
    }
    /// Changes fault injection while running.
    pub fn set_faults(&self, plan: FaultPlan) {
        if let Ok(mut f) = self.state.faults.lock() {
            f.plan = plan;
        }
    }
    /// Restates the open month: its usage rows change (a new version), as Azure does until invoicing.
    pub fn restate_open_month(&self) {
        self.state
            .open_version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn open_version(&self) -> u64 {
        self.state
            .open_version
            .load(std::sync::atomic::Ordering::SeqCst)
    }
    /// Every secret the simulator knows or issued, for tests that scan output for leaks.
    pub fn secrets(&self) -> Vec<String> {
        self.state.secrets()
    }
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop();
    }
}
