//! Extract: crawl the billing hierarchy and land every response exactly as received (zstd), with a
//! ledger per work unit so a killed run resumes at the page it reached.
//!
//! Landing layout (below `landing.location`):
//!
//! ```text
//! hierarchy/billing_accounts/page-00001.json.zst          re-read every run
//! hierarchy/{ba}/{billing_profiles|customers|billing_subscriptions}/page-*.json.zst
//! invoices/{ba}/page-*.json.zst                            invoices of the run's months
//! units/usage/{ba}/{profile}/{YYYY-MM}/{invoice|open}/page-*.json.zst + _ledger.json
//! units/cost-details/{ba}/{profile}/{YYYY-MM}/{invoice}/manifest.json + blob-*.csv.zst + _ledger.json
//! units/prices/{ba}/{profile}/{YYYY-MM}/pricesheet.{csv.zst|zip} + _ledger.json
//! _state/extract.json                                      what the last extract covered (transform's input)
//! ```
//!
//! Invoiced units whose ledger says `done` are never fetched again; open (not yet invoiced) months
//! inside the lag window are re-read by every new run. Every path segment from the API goes through
//! [`crate::ids::segment`].

pub mod ledger;

use crate::azure::api::{PriceSheetApi, UsageApi, billing_account_of};
use crate::azure::models::{BillingAccount, BillingProfile, Invoice, ListPage};
use crate::azure::pager::Pager;
use crate::azure::{AzureClient, AzureError, governor::Family};
use crate::ids::{IdError, segment};
use crate::pipeline::config::{Pipeline, UsageSource, add_months};
use crate::storage::{StorageError, Store};
use bytes::Bytes;
use chrono::NaiveDate;
use futures::StreamExt;
use ledger::{Ledger, PageRecord, UnitState};
use serde::{Deserialize, Serialize};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    #[error("extract {unit}: {source}")]
    Azure { unit: String, source: AzureError },
    #[error("extract {unit}: {source}")]
    Storage { unit: String, source: StorageError },
    #[error("extract: unsafe id: {0}")]
    Id(#[from] IdError),
    #[error("extract {unit}: {reason}")]
    Invalid { unit: String, reason: String },
    #[error("extract: {failed} of {total} work units failed (rerun to resume; finished units are kept):\n  - {}", .errors.join("\n  - "))]
    Units {
        failed: usize,
        total: usize,
        errors: Vec<String>,
    },
}

/// What a work unit fetches.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum UnitKind {
    /// Usage details of an invoice (paged).
    Usage { invoice: String, invoice_id: String },
    /// Usage details of a month not yet invoiced (billing profile scope, date range).
    OpenUsage,
    /// A Cost Details report of an invoice (manifest + CSV blobs).
    CostDetails { invoice: String },
    /// The price sheet of a billing profile for a month.
    Prices,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkUnit {
    /// Folder below the landing root; also the unit's name in logs and reports.
    pub dir: String,
    #[serde(flatten)]
    pub kind: UnitKind,
    pub billing_account: String,
    pub billing_profile: String,
    pub billing_profile_id: String,
    pub currency: String,
    /// `YYYY-MM`.
    pub period: String,
    /// Re-read by every run (not invoiced yet).
    pub open: bool,
}

/// What the last extract covered: the transform's only input besides the landed files.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExtractState {
    pub run_id: String,
    pub current_month: String,
    pub billing_accounts: Vec<String>,
    pub units: Vec<WorkUnit>,
    pub customers: Vec<String>,
}

/// Per-unit figures for the run report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UnitReport {
    pub unit: String,
    pub skipped: bool,
    pub pages_fetched: u64,
    pub pages_total: u64,
    pub bytes: u64,
    pub rows: u64,
    pub seconds: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ExtractReport {
    pub units: Vec<UnitReport>,
    pub seconds: f64,
}

/// One zstd frame (level 3) that records its content size, so a reader can decode it into one
/// allocation of the exact size.
pub fn zstd(bytes: &[u8]) -> Bytes {
    Bytes::from(zstd::bulk::compress(bytes, 3).unwrap_or_else(|_| bytes.to_vec()))
}

/// Decodes landed zstd into `out` (cleared first, so a caller decoding many files reuses one
/// buffer): in one step of the exact size when the first frame records its size and is the only
/// frame; otherwise (older landings, several frames) streamed straight into `out`, never through
/// an intermediate copy.
pub fn unzstd_into(bytes: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::Read;
    out.clear();
    if unzstd_sized(bytes, out) {
        return Ok(());
    }
    out.clear();
    out.reserve(bytes.len().saturating_mul(8).min(1 << 30));
    zstd::stream::read::Decoder::new(bytes)?.read_to_end(out)?;
    Ok(())
}

/// One-shot decoding into `out` (empty) with this thread's decompression context, when the frame
/// records its content size and holds exactly that: `false` sends the caller to streaming.
fn unzstd_sized(bytes: &[u8], out: &mut Vec<u8>) -> bool {
    thread_local! {
        static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let Ok(Some(n)) = zstd::zstd_safe::get_frame_content_size(bytes) else {
        return false;
    };
    let Some(n) = usize::try_from(n).ok().filter(|n| *n <= 1 << 31) else {
        return false;
    };
    out.reserve(n);
    DCTX.with_borrow_mut(|d| {
        if d.is_none() {
            *d = zstd::bulk::Decompressor::new().ok();
        }
        // The `Vec` itself is the destination (its spare capacity), not `&mut out[..]`, which
        // is empty.
        d.as_mut()
            .is_some_and(|d| d.decompress_to_buffer(bytes, out).is_ok() && out.len() == n)
    })
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// Rows in a list page, by decoding only the array's shape.
fn count_rows(body: &[u8]) -> u64 {
    serde_json::from_slice::<ListPage<serde::de::IgnoredAny>>(body)
        .map(|p| p.value.len() as u64)
        .unwrap_or(0)
}

pub struct Extractor<'a> {
    pub client: AzureClient,
    pub landing: Store,
    pub pipeline: &'a Pipeline,
    pub run_id: String,
    pub current_month: NaiveDate,
    pub progress: indicatif::ProgressBar,
    /// Plan only: list and decide, land nothing, fetch no unit.
    pub dry_run: bool,
}

impl Extractor<'_> {
    fn storage(&self, unit: &str) -> impl Fn(StorageError) -> ExtractError + '_ {
        let unit = unit.to_owned();
        move |source| ExtractError::Storage {
            unit: unit.clone(),
            source,
        }
    }

    /// Lands every page of a list under `dir` (replacing an earlier run's) and decodes its items.
    async fn land_list<T: serde::de::DeserializeOwned>(
        &self,
        dir: &str,
        mut pager: Pager,
    ) -> Result<Vec<T>, ExtractError> {
        let mut items = Vec::new();
        let mut n = 0;
        while let Some(p) = pager
            .next_page()
            .await
            .map_err(|source| ExtractError::Azure {
                unit: dir.to_owned(),
                source,
            })?
        {
            n += 1;
            if !self.dry_run {
                self.landing
                    .put(&format!("{dir}/page-{n:05}.json.zst"), zstd(&p.body))
                    .await
                    .map_err(self.storage(dir))?;
            }
            if !p.no_content {
                let page: ListPage<T> =
                    serde_json::from_slice(&p.body).map_err(|e| ExtractError::Invalid {
                        unit: dir.to_owned(),
                        reason: format!("page {n}: {e}"),
                    })?;
                items.extend(page.value);
            }
        }
        if !self.dry_run {
            self.remove_pages_after(dir, n).await?;
        }
        Ok(items)
    }

    async fn remove_pages_after(&self, dir: &str, n: usize) -> Result<(), ExtractError> {
        for f in self.landing.list(dir).await.map_err(self.storage(dir))? {
            let name = f.rsplit('/').next().unwrap_or("");
            if let Some(k) = name
                .strip_prefix("page-")
                .and_then(|s| s.split('.').next())
                .and_then(|s| s.parse::<usize>().ok())
                && k > n
                && f.trim_start_matches(dir).trim_start_matches('/') == name
            {
                self.landing.delete(&f).await.map_err(self.storage(dir))?;
            }
        }
        Ok(())
    }

    /// Crawls the hierarchy and invoices, plans the work units, runs them, and records the state.
    pub async fn run(&self) -> Result<(ExtractState, ExtractReport), ExtractError> {
        let started = Instant::now();
        let (accounts, units) = self.plan().await?;
        self.execute(started, accounts, units).await
    }

    /// The billing accounts in scope and the work units of this run (lands the hierarchy unless dry).
    pub async fn plan(&self) -> Result<(Vec<BillingAccount>, Vec<WorkUnit>), ExtractError> {
        let c = &self.client;
        let accounts: Vec<BillingAccount> = self
            .land_list(
                "hierarchy/billing_accounts",
                Pager::new(
                    c.clone(),
                    Family::Billing,
                    "",
                    "",
                    c.arm(
                        &["providers/Microsoft.Billing/billingAccounts"],
                        &[("api-version", crate::azure::api::BILLING_API)],
                    )
                    .map_err(|source| ExtractError::Azure {
                        unit: "billing accounts".into(),
                        source,
                    })?,
                ),
            )
            .await?;
        let wanted = &self.pipeline.billing_accounts;
        let accounts: Vec<BillingAccount> = accounts
            .into_iter()
            .filter(|a| wanted.is_empty() || wanted.iter().any(|w| w.eq_ignore_ascii_case(&a.name)))
            .collect();
        if accounts.is_empty() {
            return Err(ExtractError::Invalid {
                unit: "billing accounts".into(),
                reason: "none visible matches scope.billing_accounts".into(),
            });
        }
        let months = self.pipeline.periods.months(self.current_month);
        let (first, last) = (
            months.first().copied().unwrap_or(self.current_month),
            months.last().copied().unwrap_or(self.current_month),
        );
        let lag_start = add_months(
            self.current_month,
            -(self.pipeline.periods.lag_months() as i32),
        );
        let mut units = Vec::new();
        for a in &accounts {
            let ba = &a.name;
            let bas = segment("billing account", ba)?;
            let list = |what: &str| -> Result<Pager, ExtractError> {
                let url = c
                    .arm(
                        &["providers/Microsoft.Billing/billingAccounts", ba, what],
                        &[("api-version", crate::azure::api::BILLING_API)],
                    )
                    .map_err(|source| ExtractError::Azure {
                        unit: what.into(),
                        source,
                    })?;
                Ok(Pager::new(c.clone(), Family::Billing, ba, ba, url))
            };
            let inv_url = c
                .arm(
                    &[
                        "providers/Microsoft.Billing/billingAccounts",
                        ba,
                        "invoices",
                    ],
                    &[
                        ("api-version", crate::azure::api::BILLING_API),
                        ("periodStartDate", &first.format("%Y-%m-%d").to_string()),
                        (
                            "periodEndDate",
                            &crate::simulate::generator::month_end(last)
                                .format("%Y-%m-%d")
                                .to_string(),
                        ),
                    ],
                )
                .map_err(|source| ExtractError::Azure {
                    unit: "invoices".into(),
                    source,
                })?;
            // Four independent lists: fetched at once, so discovery costs one list's latency.
            let (profiles, _, _, invoices): (
                Vec<BillingProfile>,
                Vec<serde::de::IgnoredAny>,
                Vec<serde::de::IgnoredAny>,
                Vec<Invoice>,
            ) = {
                let (d1, d2, d3, d4) = (
                    format!("hierarchy/{bas}/billing_profiles"),
                    format!("hierarchy/{bas}/customers"),
                    format!("hierarchy/{bas}/billing_subscriptions"),
                    format!("invoices/{bas}"),
                );
                tokio::try_join!(
                    self.land_list(&d1, list("billingProfiles")?),
                    self.land_list(&d2, list("customers")?),
                    self.land_list(&d3, list("billingSubscriptions")?),
                    self.land_list(&d4, Pager::new(c.clone(), Family::Billing, ba, ba, inv_url)),
                )?
            };
            for p in &profiles {
                let prof = p.props();
                let ps = segment("billing profile", &p.name)?;
                for m in &months {
                    let period = m.format("%Y-%m").to_string();
                    let mk = |dir: String, kind: UnitKind, open: bool| WorkUnit {
                        dir,
                        kind,
                        billing_account: ba.clone(),
                        billing_profile: p.name.clone(),
                        billing_profile_id: crate::azure::models::normalize_id(&p.id),
                        currency: prof.currency.clone().unwrap_or_default(),
                        period: period.clone(),
                        open,
                    };
                    let of_month: Vec<&Invoice> = invoices
                        .iter()
                        .filter(|i| {
                            let ip = i.props();
                            let bp = ip
                                .billing_profile_id
                                .as_deref()
                                .map(|b| b.rsplit('/').next().unwrap_or(b).to_owned());
                            bp.as_deref()
                                .is_some_and(|b| b.eq_ignore_ascii_case(&p.name))
                                && ip
                                    .invoice_period_start_date
                                    .map(|d| d.date_naive().format("%Y-%m").to_string())
                                    .as_deref()
                                    == Some(period.as_str())
                        })
                        .collect();
                    for inv in &of_month {
                        let is = segment("invoice", &inv.name)?;
                        let kind = match self.pipeline.usage_source {
                            UsageSource::UsageDetails => (
                                format!("units/usage/{bas}/{ps}/{period}/{is}"),
                                UnitKind::Usage {
                                    invoice: inv.name.clone(),
                                    invoice_id: inv.scope(),
                                },
                            ),
                            UsageSource::CostDetails => (
                                format!("units/cost-details/{bas}/{ps}/{period}/{is}"),
                                UnitKind::CostDetails {
                                    invoice: inv.name.clone(),
                                },
                            ),
                        };
                        units.push(mk(kind.0, kind.1, false));
                    }
                    let open = of_month.is_empty() && *m >= lag_start;
                    if open {
                        units.push(mk(
                            format!("units/usage/{bas}/{ps}/{period}/open"),
                            UnitKind::OpenUsage,
                            true,
                        ));
                    } else if of_month.is_empty() {
                        tracing::warn!(billing_profile = %p.name, period = %period, "no invoice and outside the lag window: skipped");
                    }
                    if !of_month.is_empty() || open {
                        units.push(mk(
                            format!("units/prices/{bas}/{ps}/{period}"),
                            UnitKind::Prices,
                            open,
                        ));
                    }
                }
            }
        }
        Ok((accounts, units))
    }

    async fn execute(
        &self,
        started: Instant,
        accounts: Vec<BillingAccount>,
        units: Vec<WorkUnit>,
    ) -> Result<(ExtractState, ExtractReport), ExtractError> {
        self.progress.set_length(units.len() as u64);
        self.progress.set_message("extract");
        let results: Vec<Result<UnitReport, ExtractError>> =
            futures::stream::iter(units.iter().map(|u| async move {
                let r = self.unit(u).await;
                self.progress.inc(1);
                r
            }))
            .buffer_unordered(self.pipeline.concurrency)
            .collect()
            .await;
        let mut report = ExtractReport::default();
        let mut errors = Vec::new();
        for r in results {
            match r {
                Ok(u) => report.units.push(u),
                Err(e) => errors.push(e.to_string()),
            }
        }
        report.units.sort_by(|a, b| a.unit.cmp(&b.unit));
        report.seconds = started.elapsed().as_secs_f64();
        if !errors.is_empty() {
            errors.sort();
            return Err(ExtractError::Units {
                failed: errors.len(),
                total: units.len(),
                errors,
            });
        }
        let state = ExtractState {
            run_id: self.run_id.clone(),
            current_month: self.current_month.format("%Y-%m").to_string(),
            billing_accounts: accounts.iter().map(|a| a.name.clone()).collect(),
            units,
            customers: self.pipeline.customers.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&state).map_err(|e| ExtractError::Invalid {
            unit: "state".into(),
            reason: e.to_string(),
        })?;
        self.landing
            .put("_state/extract.json", Bytes::from(bytes))
            .await
            .map_err(self.storage("_state/extract.json"))?;
        Ok((state, report))
    }

    async fn unit(&self, u: &WorkUnit) -> Result<UnitReport, ExtractError> {
        let t = Instant::now();
        let ledger_path = format!("{}/_ledger.json", u.dir);
        let mut ledger = Ledger::load(&self.landing, &ledger_path)
            .await
            .map_err(self.storage(&u.dir))?
            .unwrap_or_else(|| Ledger::new(&u.dir, &self.run_id));
        let mut rep = UnitReport {
            unit: u.dir.clone(),
            ..Default::default()
        };
        if ledger.state == UnitState::Done && !(u.open && ledger.run_id != self.run_id) {
            rep.skipped = true;
            rep.pages_total = ledger.pages.len() as u64;
            rep.rows = ledger.pages.iter().map(|p| p.rows).sum();
            return Ok(rep);
        }
        if ledger.run_id != self.run_id && (u.open || ledger.state == UnitState::Failed) {
            // A new run re-reads an open month from its first page.
            ledger = Ledger::new(&u.dir, &self.run_id);
        }
        ledger.run_id = self.run_id.clone();
        ledger.state = UnitState::Started;
        let result = match &u.kind {
            UnitKind::Usage { invoice_id, .. } => {
                let pager = match &ledger.next_link {
                    Some(n) => Pager::resume(
                        self.client.clone(),
                        Family::Usage,
                        &u.billing_account,
                        invoice_id,
                        self.client.service_url(&u.dir, n).map_err(|source| {
                            ExtractError::Azure {
                                unit: u.dir.clone(),
                                source,
                            }
                        })?,
                    ),
                    None => {
                        ledger.pages.clear();
                        self.client
                            .usage_pager(invoice_id, self.pipeline.usage_api)
                            .map_err(|source| ExtractError::Azure {
                                unit: u.dir.clone(),
                                source,
                            })?
                    }
                };
                self.pages_or_restart(u, &mut ledger, pager, &mut rep, |c| {
                    c.usage_pager(invoice_id, self.pipeline.usage_api)
                })
                .await
            }
            UnitKind::OpenUsage => {
                let month = NaiveDate::parse_from_str(&format!("{}-01", u.period), "%Y-%m-%d")
                    .map_err(|e| ExtractError::Invalid {
                        unit: u.dir.clone(),
                        reason: e.to_string(),
                    })?;
                let end = crate::simulate::generator::month_end(month);
                let pager = match &ledger.next_link {
                    Some(n) => Pager::resume(
                        self.client.clone(),
                        Family::Usage,
                        &u.billing_account,
                        &u.billing_profile_id,
                        self.client.service_url(&u.dir, n).map_err(|source| {
                            ExtractError::Azure {
                                unit: u.dir.clone(),
                                source,
                            }
                        })?,
                    ),
                    None => {
                        ledger.pages.clear();
                        self.client
                            .usage_pager_range(
                                &u.billing_profile_id,
                                month,
                                end,
                                self.pipeline.usage_api,
                            )
                            .map_err(|source| ExtractError::Azure {
                                unit: u.dir.clone(),
                                source,
                            })?
                    }
                };
                self.pages_or_restart(u, &mut ledger, pager, &mut rep, |c| {
                    c.usage_pager_range(&u.billing_profile_id, month, end, self.pipeline.usage_api)
                })
                .await
            }
            UnitKind::CostDetails { invoice } => {
                self.cost_details(u, invoice, &mut ledger, &mut rep).await
            }
            UnitKind::Prices => self.prices(u, &mut ledger, &mut rep).await,
        };
        if let Err(e) = &result {
            ledger.state = UnitState::Failed;
            ledger.error = Some(crate::secret::redact_text(&e.to_string()));
            let _ = ledger.save(&self.landing, &ledger_path).await;
            return Err(result.err().unwrap_or_else(|| ExtractError::Invalid {
                unit: u.dir.clone(),
                reason: "failed".into(),
            }));
        }
        ledger.state = UnitState::Done;
        ledger.error = None;
        ledger.next_link = None;
        ledger
            .save(&self.landing, &ledger_path)
            .await
            .map_err(self.storage(&u.dir))?;
        rep.pages_total = ledger.pages.len() as u64;
        rep.rows = ledger.pages.iter().map(|p| p.rows).sum();
        rep.seconds = t.elapsed().as_secs_f64();
        tracing::info!(unit = %u.dir, pages_fetched = rep.pages_fetched, rows = rep.rows, "unit done");
        Ok(rep)
    }

    /// Like [`Self::pages`]; when a saved `nextLink` is refused (an expired skip token, a server that
    /// moved), the unit starts again from its first page instead of failing.
    async fn pages_or_restart(
        &self,
        u: &WorkUnit,
        ledger: &mut Ledger,
        pager: Pager,
        rep: &mut UnitReport,
        first: impl Fn(&AzureClient) -> Result<Pager, AzureError>,
    ) -> Result<(), ExtractError> {
        let resuming = ledger.next_link.is_some();
        let before = ledger.pages.len();
        match self.pages(u, ledger, pager, rep).await {
            Err(ExtractError::Azure { source, .. }) if resuming && ledger.pages.len() == before => {
                tracing::warn!(unit = %u.dir, error = %source, "saved nextLink refused; restarting the unit from its first page");
                ledger.pages.clear();
                ledger.next_link = None;
                let pager = first(&self.client).map_err(|source| ExtractError::Azure {
                    unit: u.dir.clone(),
                    source,
                })?;
                self.pages(u, ledger, pager, rep).await
            }
            other => other,
        }
    }

    /// Pages of a usage unit: land each page, then record it (and the next link) in the ledger.
    async fn pages(
        &self,
        u: &WorkUnit,
        ledger: &mut Ledger,
        mut pager: Pager,
        rep: &mut UnitReport,
    ) -> Result<(), ExtractError> {
        let ledger_path = format!("{}/_ledger.json", u.dir);
        while let Some(p) = pager
            .next_page()
            .await
            .map_err(|source| ExtractError::Azure {
                unit: u.dir.clone(),
                source,
            })?
        {
            let n = ledger.pages.len() + 1;
            let file = format!("page-{n:05}.json.zst");
            let rows = if p.no_content { 0 } else { count_rows(&p.body) };
            let landed = zstd(&p.body);
            self.landing
                .put(&format!("{}/{file}", u.dir), landed)
                .await
                .map_err(self.storage(&u.dir))?;
            ledger.pages.push(PageRecord {
                file,
                bytes: p.body.len() as u64,
                sha256: sha256(&p.body),
                rows,
            });
            ledger.next_link = p.next_link.clone();
            ledger.touch();
            ledger
                .save(&self.landing, &ledger_path)
                .await
                .map_err(self.storage(&u.dir))?;
            rep.pages_fetched += 1;
            rep.bytes += p.body.len() as u64;
        }
        self.remove_pages_after(&u.dir, ledger.pages.len()).await
    }

    async fn cost_details(
        &self,
        u: &WorkUnit,
        invoice: &str,
        ledger: &mut Ledger,
        rep: &mut UnitReport,
    ) -> Result<(), ExtractError> {
        let az = |source| ExtractError::Azure {
            unit: u.dir.clone(),
            source,
        };
        ledger.pages.clear();
        let Some((op, location)) = self
            .client
            .cost_details_report(&u.billing_profile_id, invoice)
            .await
            .map_err(az)?
        else {
            return Ok(());
        };
        ledger.operation = location
            .as_ref()
            .map(|l| crate::secret::redact_url(l.as_str()));
        let blobs = op.manifest.as_ref().map(|m| m.blobs.len()).unwrap_or(0);
        let manifest = serde_json::json!({
            "status": op.status, "blobCount": blobs,
            "blobs": op.manifest.as_ref().map(|m| m.blobs.iter().map(|b| serde_json::json!({"blobLink": b.blob_link, "byteCount": b.byte_count})).collect::<Vec<_>>()),
        });
        self.landing
            .put(
                &format!("{}/manifest.json", u.dir),
                Bytes::from(manifest.to_string()),
            )
            .await
            .map_err(self.storage(&u.dir))?;
        for i in 0..blobs {
            let body = self
                .client
                .download_cost_details_blob(&op, location.as_ref(), i)
                .await
                .map_err(az)?;
            if let Some(expected) = op.manifest.as_ref().and_then(|m| m.blobs[i].byte_count)
                && expected != body.len() as u64
            {
                return Err(ExtractError::Invalid {
                    unit: u.dir.clone(),
                    reason: format!(
                        "blob {i}: {} bytes received, the manifest says {expected}",
                        body.len()
                    ),
                });
            }
            let file = format!("blob-{i:03}.csv.zst");
            let rows = body
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                .saturating_sub(1) as u64;
            self.landing
                .put(&format!("{}/{file}", u.dir), zstd(&body))
                .await
                .map_err(self.storage(&u.dir))?;
            ledger.pages.push(PageRecord {
                file,
                bytes: body.len() as u64,
                sha256: sha256(&body),
                rows,
            });
            rep.pages_fetched += 1;
            rep.bytes += body.len() as u64;
        }
        Ok(())
    }

    async fn prices(
        &self,
        u: &WorkUnit,
        ledger: &mut Ledger,
        rep: &mut UnitReport,
    ) -> Result<(), ExtractError> {
        let api: PriceSheetApi = self.pipeline.price_sheet_api;
        let body = self
            .client
            .download_price_sheet(&u.billing_account, &u.billing_profile, api)
            .await
            .map_err(|source| ExtractError::Azure {
                unit: u.dir.clone(),
                source,
            })?;
        let (file, landed) = if body.starts_with(b"PK") {
            ("pricesheet.zip".to_owned(), body.clone())
        } else {
            ("pricesheet.csv.zst".to_owned(), zstd(&body))
        };
        self.landing
            .put(&format!("{}/{file}", u.dir), landed)
            .await
            .map_err(self.storage(&u.dir))?;
        ledger.pages = vec![PageRecord {
            file,
            bytes: body.len() as u64,
            sha256: sha256(&body),
            rows: 0,
        }];
        rep.pages_fetched += 1;
        rep.bytes += body.len() as u64;
        Ok(())
    }
}

/// For `plan`: the billing account of an id, re-exported for callers.
pub fn account_of(id: &str) -> Option<&str> {
    billing_account_of(id)
}

/// The usage API version a unit was fetched with does not change its landing layout.
pub fn usage_api_name(api: UsageApi) -> &'static str {
    api.version()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landed_zstd_decodes_in_one_step_or_streamed() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        // What `zstd` lands records its size: decoded in one step, into the exact allocation.
        let mut out = Vec::new();
        assert!(unzstd_sized(&zstd(&data), &mut out));
        assert_eq!(out, data);
        assert_eq!(out.capacity(), data.len());
        // The same buffer again (cleared first), and a second frame after the first: streamed.
        let mut two = zstd(&data).to_vec();
        two.extend_from_slice(&zstd(b"tail"));
        unzstd_into(&two, &mut out).unwrap();
        assert_eq!(out.len(), data.len() + 4);
        assert!(out.ends_with(b"tail"));
        // Without a recorded size (a streamed frame): streamed.
        let streamed = zstd::stream::encode_all(&data[..], 3).unwrap();
        assert!(!unzstd_sized(&streamed, &mut Vec::new()));
        unzstd_into(&streamed, &mut out).unwrap();
        assert_eq!(out, data);
        assert!(unzstd_into(&streamed[..streamed.len() / 2], &mut out).is_err());
    }
}
