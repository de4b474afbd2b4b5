//! Transform: landed data → typed frames, and only landed data (this module never touches the
//! network and never imports `azure`'s client). Work is done one (billing period, billing profile)
//! group at a time (the next one starts reading while the one before stages its files, see
//! [`Turn`]), and inside a group usage streams through in row-group-sized chunks: pages are
//! decoded in parallel a chunk ahead, each chunk is priced and written straight into the staged
//! `usage` and `costs` Parquet files. Memory holds the price index and about two chunks, whatever
//! the size of the month.
//!
//! - [`usage`]: JSON pages / CSV blobs → the `usage` schema (pages through [`jsonscan`], a strict
//!   borrowing JSON scanner);
//! - [`prices`]: price sheets (CSV or zip, any header order) → `prices`;
//! - [`join`]: usage × prices → `costs`, `price_coverage`;
//! - here: the hierarchy datasets, `invoices` and `reconciliation`.

pub mod join;
pub mod jsonscan;
pub mod prices;
pub mod usage;

use crate::azure::models::{
    BillingAccount, BillingProfile, BillingSubscription, Customer, Invoice, ListPage,
};
use crate::extract::ledger::{Ledger, UnitState};
use crate::extract::{ExtractState, UnitKind, WorkUnit, unzstd_into};
use crate::load::{FileEntry, LoadError, Loader};
use crate::storage::{StorageError, Store};
use bytes::Bytes;
use polars::prelude::*;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use usage::{SCALE, date_column, dec18, decimal_column};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransformError {
    #[error("transform: nothing extracted yet at {0}; run `costlake extract` first")]
    NoExtract(String),
    #[error(
        "transform {unit}: the extract of this unit is not finished ({state}); rerun `costlake extract`"
    )]
    Unfinished { unit: String, state: String },
    #[error("transform: reading landed {path}: {source}")]
    Storage { path: String, source: StorageError },
    #[error("transform: landed file {path} is missing or unreadable: {reason}")]
    Landed { path: String, reason: String },
    #[error("transform: {0}")]
    Decode(#[from] usage::DecodeError),
    #[error("transform {what}: {source}")]
    Polars { what: String, source: PolarsError },
    #[error("transform: {0}")]
    Stage(#[from] LoadError),
}

/// One frame bound for one partition of one dataset.
pub struct Partition {
    pub dataset: &'static str,
    /// (key, value) in partition order; empty for unpartitioned datasets.
    pub keys: Vec<(String, String)>,
    /// Distinguishes files of one partition written by different groups.
    pub file: String,
    pub df: DataFrame,
}

fn pl(what: impl Into<String>) -> impl FnOnce(PolarsError) -> TransformError {
    let what = what.into();
    move |source| TransformError::Polars { what, source }
}

pub struct Transformer {
    pub landing: Store,
    pub state: ExtractState,
    pub partition_by: Vec<String>,
    /// Customers to keep (tenant id or name); empty keeps all.
    pub customers: Vec<String>,
    invoices: Vec<Invoice>,
}

/// (period, profile) → units
pub type Groups = BTreeMap<(String, String), Vec<WorkUnit>>;

impl Transformer {
    pub async fn open(landing: Store, partition_by: Vec<String>) -> Result<Self, TransformError> {
        let bytes = landing
            .get("_state/extract.json")
            .await
            .map_err(|source| TransformError::Storage {
                path: "_state/extract.json".into(),
                source,
            })?
            .ok_or_else(|| TransformError::NoExtract(landing.display().to_owned()))?;
        let state: ExtractState =
            serde_json::from_slice(&bytes).map_err(|e| TransformError::Landed {
                path: "_state/extract.json".into(),
                reason: e.to_string(),
            })?;
        let mut t = Self {
            landing,
            customers: state.customers.clone(),
            state,
            partition_by,
            invoices: Vec::new(),
        };
        let mut invoices = Vec::new();
        for ba in t.state.billing_accounts.clone() {
            let dir = format!(
                "invoices/{}",
                crate::ids::segment("billing account", &ba).unwrap_or_default()
            );
            invoices.extend(t.list_pages::<Invoice>(&dir).await?);
        }
        t.invoices = invoices;
        Ok(t)
    }

    async fn list_pages<T: serde::de::DeserializeOwned>(
        &self,
        dir: &str,
    ) -> Result<Vec<T>, TransformError> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for f in self
            .landing
            .list(dir)
            .await
            .map_err(|source| TransformError::Storage {
                path: dir.into(),
                source,
            })?
        {
            let name = f.rsplit('/').next().unwrap_or("");
            if !(name.starts_with("page-")
                && f.trim_start_matches(dir).trim_start_matches('/') == name)
            {
                continue;
            }
            let raw = fetch(&self.landing, &f).await?;
            let body = landed_bytes(&f, &raw, &mut buf)?;
            if body.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let page: ListPage<T> =
                serde_json::from_slice(body).map_err(|e| TransformError::Landed {
                    path: f.clone(),
                    reason: e.to_string(),
                })?;
            out.extend(page.value);
        }
        Ok(out)
    }

    pub fn groups(&self) -> Groups {
        let mut g: Groups = BTreeMap::new();
        for u in &self.state.units {
            g.entry((u.period.clone(), u.billing_profile.clone()))
                .or_default()
                .push(u.clone());
        }
        g
    }

    fn keys(&self, period: &str, profile: &str) -> Vec<(String, String)> {
        self.partition_by
            .iter()
            .map(|k| {
                (
                    k.clone(),
                    if k == "billing_period" {
                        period.to_owned()
                    } else {
                        profile.to_owned()
                    },
                )
            })
            .collect()
    }

    /// Usage, prices, costs, coverage and reconciliation of one (period, profile). Usage streams
    /// through in row-group-sized chunks (decoded in parallel, priced, written straight into the
    /// staged `usage` and `costs` files); only the price index and one chunk are ever in memory.
    /// `wants` names the datasets to write.
    pub async fn group(
        &self,
        period: &str,
        profile: &str,
        units: &[WorkUnit],
        loader: &Loader,
        wants: &[&str],
        turn: Turn,
    ) -> Result<GroupOutput, TransformError> {
        let mut usage_files: Vec<(String, bool)> = Vec::new();
        let mut price_files = Vec::new();
        for u in units {
            let ledger = Ledger::load(&self.landing, &format!("{}/_ledger.json", u.dir))
                .await
                .map_err(|source| TransformError::Storage {
                    path: u.dir.clone(),
                    source,
                })?;
            let ledger = match ledger {
                Some(l) if l.state == UnitState::Done => l,
                Some(l) => {
                    return Err(TransformError::Unfinished {
                        unit: u.dir.clone(),
                        state: format!("{:?}", l.state).to_lowercase(),
                    });
                }
                None => {
                    return Err(TransformError::Unfinished {
                        unit: u.dir.clone(),
                        state: "not started".into(),
                    });
                }
            };
            for p in &ledger.pages {
                let path = format!("{}/{}", u.dir, p.file);
                match u.kind {
                    UnitKind::Prices => price_files.push(path),
                    UnitKind::CostDetails { .. } => usage_files.push((path, true)),
                    UnitKind::Usage { .. } | UnitKind::OpenUsage => usage_files.push((path, false)),
                }
            }
        }
        let invoices: Vec<Invoice> = self
            .invoices
            .iter()
            .filter(|i| {
                invoice_period(i).as_deref() == Some(period)
                    && invoice_profile(i)
                        .as_deref()
                        .is_some_and(|p| p.eq_ignore_ascii_case(profile))
            })
            .cloned()
            .collect();
        let keys = self.keys(period, profile);
        let file = format!(
            "part-{}",
            crate::ids::segment("billing profile", profile).unwrap_or_default()
        );
        let job = GroupJob {
            landing: self.landing.clone(),
            period: period.to_owned(),
            profile: profile.to_owned(),
            keys,
            file,
            customers: self
                .customers
                .iter()
                .map(|c| c.to_ascii_lowercase())
                .collect(),
            usage_files,
            price_files,
            invoices,
            loader: loader.clone(),
            wants: wants.iter().map(|w| w.to_string()).collect(),
            rt: tokio::runtime::Handle::current(),
            turn_done: turn.done,
        };
        let after = turn.after;
        let (staged, small) = tokio::task::spawn_blocking(move || job.run(after))
            .await
            .map_err(|e| TransformError::Landed {
                path: "worker".into(),
                reason: e.to_string(),
            })??;
        Ok(GroupOutput { staged, small })
    }

    /// The hierarchy datasets (unpartitioned) and `invoices` (partitioned like usage).
    pub async fn dimensions(&self) -> Result<Vec<Partition>, TransformError> {
        let mut accounts: Vec<BillingAccount> = Vec::new();
        let mut profiles: Vec<(String, BillingProfile)> = Vec::new();
        let mut customers: Vec<(String, Customer)> = Vec::new();
        let mut subs: Vec<(String, BillingSubscription)> = Vec::new();
        let wanted = &self.state.billing_accounts;
        for a in self
            .list_pages::<BillingAccount>("hierarchy/billing_accounts")
            .await?
        {
            if wanted.iter().any(|w| w.eq_ignore_ascii_case(&a.name)) {
                accounts.push(a);
            }
        }
        for a in &accounts {
            let bas = crate::ids::segment("billing account", &a.name).unwrap_or_default();
            profiles.extend(
                self.list_pages::<BillingProfile>(&format!("hierarchy/{bas}/billing_profiles"))
                    .await?
                    .into_iter()
                    .map(|p| (a.name.clone(), p)),
            );
            customers.extend(
                self.list_pages::<Customer>(&format!("hierarchy/{bas}/customers"))
                    .await?
                    .into_iter()
                    .map(|p| (a.name.clone(), p)),
            );
            subs.extend(
                self.list_pages::<BillingSubscription>(&format!(
                    "hierarchy/{bas}/billing_subscriptions"
                ))
                .await?
                .into_iter()
                .map(|p| (a.name.clone(), p)),
            );
        }
        let s = |v: Vec<Option<String>>, n: &str| Column::new(n.into(), v);
        let unpart = |dataset, df| Partition {
            dataset,
            keys: Vec::new(),
            file: "part-00000".into(),
            df,
        };
        let mut out = Vec::new();
        let n = accounts.len();
        out.push(unpart(
            "billing_accounts",
            DataFrame::new(
                n,
                vec![
                    s(
                        accounts.iter().map(|a| Some(a.name.clone())).collect(),
                        "billing_account_id",
                    ),
                    s(
                        accounts.iter().map(|a| a.props().display_name).collect(),
                        "display_name",
                    ),
                    s(
                        accounts.iter().map(|a| a.props().agreement_type).collect(),
                        "agreement_type",
                    ),
                    s(
                        accounts
                            .iter()
                            .map(|a| a.props().account_type.or(a.props().customer_type))
                            .collect(),
                        "account_type",
                    ),
                ],
            )
            .map_err(pl("billing_accounts"))?,
        ));
        let n = profiles.len();
        out.push(unpart(
            "billing_profiles",
            DataFrame::new(
                n,
                vec![
                    s(
                        profiles.iter().map(|p| Some(p.0.clone())).collect(),
                        "billing_account_id",
                    ),
                    s(
                        profiles.iter().map(|p| Some(p.1.name.clone())).collect(),
                        "billing_profile",
                    ),
                    s(
                        profiles
                            .iter()
                            .map(|p| Some(crate::azure::models::normalize_id(&p.1.id)))
                            .collect(),
                        "billing_profile_arm_id",
                    ),
                    s(
                        profiles.iter().map(|p| p.1.props().display_name).collect(),
                        "display_name",
                    ),
                    s(
                        profiles.iter().map(|p| p.1.props().currency).collect(),
                        "currency",
                    ),
                    s(
                        profiles.iter().map(|p| p.1.props().status).collect(),
                        "status",
                    ),
                ],
            )
            .map_err(pl("billing_profiles"))?,
        ));
        let n = customers.len();
        out.push(unpart(
            "customers",
            DataFrame::new(
                n,
                vec![
                    s(
                        customers.iter().map(|c| Some(c.0.clone())).collect(),
                        "billing_account_id",
                    ),
                    s(
                        customers.iter().map(|c| Some(c.1.name.clone())).collect(),
                        "customer_id",
                    ),
                    s(
                        customers.iter().map(|c| c.1.props().display_name).collect(),
                        "display_name",
                    ),
                    s(
                        customers
                            .iter()
                            .map(|c| {
                                c.1.props()
                                    .billing_profile_id
                                    .map(|b| b.rsplit('/').next().unwrap_or(&b).to_owned())
                            })
                            .collect(),
                        "billing_profile",
                    ),
                    s(
                        customers
                            .iter()
                            .map(|c| {
                                c.1.props()
                                    .resellers
                                    .first()
                                    .and_then(|r| r.reseller_id.clone())
                            })
                            .collect(),
                        "reseller_id",
                    ),
                    s(
                        customers
                            .iter()
                            .map(|c| {
                                c.1.props()
                                    .resellers
                                    .first()
                                    .and_then(|r| r.description.clone())
                            })
                            .collect(),
                        "reseller_name",
                    ),
                ],
            )
            .map_err(pl("customers"))?,
        ));
        let n = subs.len();
        let amount = |a: Option<crate::azure::models::Amount>| {
            a.and_then(|a| a.value)
                .and_then(|v| dec18(&v.to_string()).ok())
        };
        out.push(unpart(
            "subscriptions",
            DataFrame::new(
                n,
                vec![
                    s(
                        subs.iter().map(|c| Some(c.0.clone())).collect(),
                        "billing_account_id",
                    ),
                    s(
                        subs.iter().map(|c| c.1.props().subscription_id).collect(),
                        "subscription_id",
                    ),
                    s(
                        subs.iter().map(|c| c.1.props().display_name).collect(),
                        "display_name",
                    ),
                    s(
                        subs.iter()
                            .map(|c| c.1.props().subscription_billing_status)
                            .collect(),
                        "status",
                    ),
                    s(
                        subs.iter()
                            .map(|c| {
                                c.1.props()
                                    .customer_id
                                    .map(|b| b.rsplit('/').next().unwrap_or(&b).to_owned())
                            })
                            .collect(),
                        "customer_id",
                    ),
                    s(
                        subs.iter()
                            .map(|c| c.1.props().customer_display_name)
                            .collect(),
                        "customer_name",
                    ),
                    s(
                        subs.iter()
                            .map(|c| {
                                c.1.props()
                                    .billing_profile_id
                                    .map(|b| b.rsplit('/').next().unwrap_or(&b).to_owned())
                            })
                            .collect(),
                        "billing_profile",
                    ),
                    s(subs.iter().map(|c| c.1.props().sku_id).collect(), "sku_id"),
                    decimal_column(
                        "last_month_charges",
                        subs.iter()
                            .map(|c| amount(c.1.props().last_month_charges))
                            .collect(),
                    )
                    .map_err(pl("subscriptions"))?,
                    decimal_column(
                        "month_to_date_charges",
                        subs.iter()
                            .map(|c| amount(c.1.props().month_to_date_charges))
                            .collect(),
                    )
                    .map_err(pl("subscriptions"))?,
                    s(
                        subs.iter()
                            .map(|c| c.1.props().month_to_date_charges.and_then(|a| a.currency))
                            .collect(),
                        "currency",
                    ),
                ],
            )
            .map_err(pl("subscriptions"))?,
        ));
        // invoices, one frame per (period, profile)
        let mut by: BTreeMap<(String, String), Vec<&Invoice>> = BTreeMap::new();
        for i in &self.invoices {
            if let (Some(p), Some(b)) = (invoice_period(i), invoice_profile(i)) {
                by.entry((p, b)).or_default().push(i);
            }
        }
        for ((period, profile), inv) in by {
            let df = invoices_frame(&inv).map_err(pl("invoices"))?;
            let file = format!(
                "part-{}",
                crate::ids::segment("billing profile", &profile).unwrap_or_default()
            );
            out.push(Partition {
                dataset: "invoices",
                keys: self.keys(&period, &profile),
                file,
                df,
            });
        }
        Ok(out)
    }
}

fn invoice_period(i: &Invoice) -> Option<String> {
    i.props()
        .invoice_period_start_date
        .map(|d| d.date_naive().format("%Y-%m").to_string())
}

fn invoice_profile(i: &Invoice) -> Option<String> {
    i.props()
        .billing_profile_id
        .map(|b| b.rsplit('/').next().unwrap_or(&b).to_owned())
}

fn days(d: Option<chrono::DateTime<chrono::Utc>>) -> Option<i32> {
    d.map(|d| {
        (d.date_naive() - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default())
            .num_days() as i32
    })
}

fn money(a: &Option<crate::azure::models::Amount>) -> Option<i128> {
    a.as_ref()
        .and_then(|a| a.value)
        .and_then(|v| dec18(&v.to_string()).ok())
}

fn invoices_frame(inv: &[&Invoice]) -> PolarsResult<DataFrame> {
    let p: Vec<_> = inv.iter().map(|i| i.props()).collect();
    let n = inv.len();
    let s = |v: Vec<Option<String>>, name: &str| Column::new(name.into(), v);
    DataFrame::new(
        n,
        vec![
            s(
                inv.iter().map(|i| Some(i.name.clone())).collect(),
                "invoice_id",
            ),
            s(
                inv.iter().map(|i| Some(i.scope())).collect(),
                "invoice_arm_id",
            ),
            s(
                inv.iter()
                    .map(|i| crate::azure::api::billing_account_of(&i.id).map(str::to_owned))
                    .collect(),
                "billing_account_id",
            ),
            s(
                p.iter()
                    .map(|x| x.billing_profile_display_name.clone())
                    .collect(),
                "billing_profile_name",
            ),
            s(p.iter().map(|x| x.status.clone()).collect(), "status"),
            s(
                p.iter().map(|x| x.invoice_type.clone()).collect(),
                "invoice_type",
            ),
            date_column(
                "invoice_date",
                p.iter().map(|x| days(x.invoice_date)).collect(),
            ),
            date_column("due_date", p.iter().map(|x| days(x.due_date)).collect()),
            date_column(
                "invoice_period_start",
                p.iter()
                    .map(|x| days(x.invoice_period_start_date))
                    .collect(),
            ),
            date_column(
                "invoice_period_end",
                p.iter().map(|x| days(x.invoice_period_end_date)).collect(),
            ),
            s(
                p.iter()
                    .map(|x| x.total_amount.as_ref().and_then(|a| a.currency.clone()))
                    .collect(),
                "currency",
            ),
            decimal_column(
                "amount_due",
                p.iter().map(|x| money(&x.amount_due)).collect(),
            )?,
            decimal_column(
                "billed_amount",
                p.iter().map(|x| money(&x.billed_amount)).collect(),
            )?,
            decimal_column("sub_total", p.iter().map(|x| money(&x.sub_total)).collect())?,
            decimal_column(
                "tax_amount",
                p.iter().map(|x| money(&x.tax_amount)).collect(),
            )?,
            decimal_column(
                "total_amount",
                p.iter().map(|x| money(&x.total_amount)).collect(),
            )?,
        ],
    )
}

/// Per invoice: Σ usage cost (billing currency, exact) against the invoice, to the cent.
fn reconciliation(
    period: &str,
    profile: &str,
    invoices: &[Invoice],
    sums: &BTreeMap<String, Decimal>,
) -> PolarsResult<DataFrame> {
    let _ = (period, profile);
    let mut id = Vec::new();
    let mut cur = Vec::new();
    let (mut inv_total, mut usage_total, mut usage_cents, mut diff) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut status = Vec::new();
    for i in invoices {
        let p = i.props();
        let invoice = p
            .sub_total
            .as_ref()
            .or(p.total_amount.as_ref())
            .and_then(|a| a.value);
        let used = sums.get(&i.name).copied();
        let cents = used.map(|u| {
            u.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
        });
        let d = match (invoice, cents) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        id.push(i.name.clone());
        cur.push(p.total_amount.and_then(|a| a.currency));
        let to = |x: Option<Decimal>| x.and_then(|v| dec18(&v.to_string()).ok());
        inv_total.push(to(invoice));
        usage_total.push(to(used));
        usage_cents.push(to(cents));
        diff.push(to(d));
        status.push(match (used, d) {
            (None, _) => "no_usage",
            (_, Some(x)) if x.is_zero() => "ok",
            _ => "mismatch",
        });
    }
    let n = id.len();
    let _ = SCALE;
    DataFrame::new(
        n,
        vec![
            Column::new("invoice_id".into(), id),
            Column::new("currency".into(), cur),
            decimal_column("invoice_sub_total", inv_total)?,
            decimal_column("usage_cost", usage_total)?,
            decimal_column("usage_cost_rounded", usage_cents)?,
            decimal_column("difference", diff)?,
            Column::new("status".into(), status),
        ],
    )
}

/// What [`Transformer::group`] produced: the streamed files, already staged, and the small frames
/// (prices, coverage, reconciliation) for the loader to stage.
pub struct GroupOutput {
    pub staged: Vec<FileEntry>,
    pub small: Vec<Partition>,
}

/// Groups take turns: a group starts reading (its price sheet, its usage) once the group before it
/// has written its last chunk. What that group still does (staging its files, its coverage,
/// reconciliation and price partitions) then overlaps the next group's reading instead of leaving
/// a core idle, and no more usage is ever in memory than in the middle of a group.
pub struct Turn {
    /// Fires when the group before has written its last chunk; `None` for the first group.
    after: Option<std::sync::mpsc::Receiver<()>>,
    /// Fired by this group when it has written its last chunk.
    done: std::sync::mpsc::SyncSender<()>,
}

impl Turn {
    /// `n` turns, each one after the one before (the first waits for nothing).
    pub fn chain(n: usize) -> Vec<Turn> {
        let mut after = None;
        (0..n)
            .map(|_| {
                let (done, next) = std::sync::mpsc::sync_channel(1);
                Turn {
                    after: after.replace(next),
                    done,
                }
            })
            .collect()
    }
}

/// Blocks until the group before has written its last chunk: false if it failed instead.
fn wait_turn(after: Option<std::sync::mpsc::Receiver<()>>) -> bool {
    after.is_none_or(|w| w.recv().is_ok())
}

/// Pages decoded per parallel batch.
const PAGE_BATCH: usize = 16;

/// One group's work, run on a blocking thread (reads go through the runtime handle).
struct GroupJob {
    landing: Store,
    period: String,
    profile: String,
    keys: Vec<(String, String)>,
    file: String,
    customers: Vec<String>,
    usage_files: Vec<(String, bool)>,
    price_files: Vec<String>,
    invoices: Vec<Invoice>,
    loader: Loader,
    wants: Vec<String>,
    rt: tokio::runtime::Handle,
    /// See [`Turn`].
    turn_done: std::sync::mpsc::SyncSender<()>,
}

impl GroupJob {
    fn read_all(&self, paths: &[&str]) -> Result<Vec<Bytes>, TransformError> {
        self.rt.block_on(futures::future::try_join_all(
            paths.iter().map(|p| fetch(&self.landing, p)),
        ))
    }

    /// Waits for its turn (`after`, see [`Turn`]), then does the group's work.
    fn run(
        self,
        after: Option<std::sync::mpsc::Receiver<()>>,
    ) -> Result<(Vec<FileEntry>, Vec<Partition>), TransformError> {
        if !wait_turn(after) {
            return Err(TransformError::Landed {
                path: format!("{}/{}", self.period, self.profile),
                reason: "not transformed: the group before it failed".into(),
            });
        }
        let (period, profile) = (self.period.as_str(), self.profile.as_str());
        let wants = |d: &str| self.wants.iter().any(|w| w == d);
        let rg = self.loader.row_group_size.max(1);
        let writer = |dataset: &'static str| {
            wants(dataset)
                .then(|| {
                    self.loader
                        .writer(dataset, self.keys.clone(), self.file.clone())
                })
                .transpose()
        };
        let (mut usage_w, mut costs_w) = (writer("usage")?, writer("costs")?);
        let mut sums: BTreeMap<String, Decimal> = BTreeMap::new();
        let mut coverage_parts: Vec<DataFrame> = Vec::new();
        let mut written_any = false;
        // Only the decoder's final chunk can be empty; it is written (as the schema) only when
        // the group has no rows at all.
        let mut flush =
            |frames: Vec<DataFrame>, index: &join::PriceIndex| -> Result<(), TransformError> {
                if frames.is_empty() && written_any {
                    return Ok(());
                }
                let chunk = if frames.is_empty() {
                    usage::Builder::new()
                        .finish(period, profile)
                        .map_err(pl("usage frame"))?
                } else {
                    let mut it = frames.into_iter();
                    let mut df = it.next().unwrap_or_default();
                    for f in it {
                        df.vstack_mut_owned(f).map_err(pl("usage chunk"))?;
                    }
                    // Left in pieces: the join reads across them, and the encoder joins each
                    // column's pieces just before encoding it.
                    df
                };
                let chunk = self.keep_customers(chunk)?;
                let costs = join::join_indexed(&chunk, index)
                    .map_err(pl(format!("join {period} {profile}")))?;
                tracing::debug!(
                    period,
                    profile,
                    rows = chunk.height(),
                    usage_mb = chunk.estimated_size() >> 20,
                    costs_extra_mb = (costs
                        .estimated_size()
                        .saturating_sub(chunk.estimated_size()))
                        >> 20,
                    "chunk"
                );
                // Columns are encoded in parallel; `costs` extends `usage`, so the columns they
                // share are encoded once and written to both files.
                let (enc, cov) = rayon::join(
                    || -> PolarsResult<_> {
                        let u = match usage_w.as_mut() {
                            Some(w) => Some(w.encode(&chunk, None)?),
                            None => None,
                        };
                        let c = match costs_w.as_mut() {
                            Some(w) => Some(w.encode(&costs, u.as_ref())?),
                            None => None,
                        };
                        Ok((u, c))
                    },
                    || join::coverage(&costs),
                );
                let (u, c) = enc.map_err(pl("encode usage and costs"))?;
                if let (Some(w), Some(u)) = (usage_w.as_mut(), u) {
                    w.write_encoded(&u).map_err(pl("write usage"))?;
                }
                if let (Some(w), Some(c)) = (costs_w.as_mut(), c) {
                    w.write_encoded(&c).map_err(pl("write costs"))?;
                }
                coverage_parts.push(cov.map_err(pl("price coverage"))?);
                // Folded every few chunks: a chunk's coverage has a row per meter it used, so keeping
                // them all would grow with the month.
                if coverage_parts.len() >= 4 {
                    let merged = join::merge_coverage(std::mem::take(&mut coverage_parts))
                        .map_err(pl("price coverage"))?;
                    coverage_parts.push(merged);
                }
                written_any = true;
                Ok(())
            };
        // Decoding runs one chunk ahead of pricing and writing, on its own thread, so the serial
        // parts of each side overlap the parallel parts of the other. The channel holds nothing:
        // a decoded chunk waits in the decoder until the writer takes it, so at most two chunks
        // (the one being written, the one decoded next) are in memory.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<DataFrame>, TransformError>>(0);
        let this = &self;
        let prices = std::thread::scope(|scope| -> Result<DataFrame, TransformError> {
            // The price sheet is read while the first chunk decodes.
            let pricing = scope.spawn(move || -> Result<_, TransformError> {
                let mut pb = prices::PriceBuilder::new();
                let price_paths: Vec<&str> = this.price_files.iter().map(String::as_str).collect();
                let mut buf = Vec::new();
                for (path, bytes) in price_paths.iter().zip(this.read_all(&price_paths)?) {
                    pb.push_file(path, landed_bytes(path, &bytes, &mut buf)?)?;
                }
                let prices = pb.finish(period, profile).map_err(pl("prices frame"))?;
                let index = join::PriceIndex::new(&prices).map_err(pl("price index"))?;
                Ok((prices, index))
            });
            let decoder = scope.spawn(move || -> BTreeMap<String, Decimal> {
                let mut sums: BTreeMap<String, Decimal> = BTreeMap::new();
                let mut pending: Vec<DataFrame> = Vec::new();
                let mut pending_rows = 0usize;
                let paths: Vec<(&str, bool)> = this
                    .usage_files
                    .iter()
                    .map(|(p, c)| (p.as_str(), *c))
                    .collect();
                for batch in paths.chunks(PAGE_BATCH) {
                    match this.decode_batch(batch) {
                        Ok(frames) => {
                            for (df, s) in frames {
                                for (inv, v) in s {
                                    *sums.entry(inv).or_default() += v;
                                }
                                pending_rows += df.height();
                                pending.push(df);
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return sums;
                        }
                    }
                    while pending_rows >= rg {
                        // Exactly `rg` rows per chunk, so the files do not depend on batching.
                        let mut take = Vec::new();
                        let mut n = 0;
                        while n < rg {
                            let df = pending.remove(0);
                            if n + df.height() <= rg {
                                n += df.height();
                                take.push(df);
                            } else {
                                let k = rg - n;
                                take.push(df.slice(0, k));
                                pending.insert(0, df.slice(k as i64, df.height() - k));
                                n = rg;
                            }
                        }
                        pending_rows -= rg;
                        if tx.send(Ok(take)).is_err() {
                            return sums;
                        }
                    }
                }
                let _ = tx.send(Ok(std::mem::take(&mut pending)));
                sums
            });
            let panicked = |what: &str| TransformError::Landed {
                path: what.into(),
                reason: "the thread panicked".into(),
            };
            let priced = pricing.join().map_err(|_| panicked("price sheet"));
            let mut result = Ok(());
            match priced {
                Ok(Ok((prices, index))) => {
                    for chunk in rx.iter() {
                        if let Err(e) = chunk.and_then(|frames| flush(frames, &index)) {
                            result = Err(e);
                            break;
                        }
                    }
                    if result.is_ok() {
                        let _ = self.turn_done.try_send(());
                    }
                    drop(rx);
                    sums = decoder.join().map_err(|_| panicked("decoder"))?;
                    result.map(|()| prices)
                }
                Ok(Err(e)) | Err(e) => {
                    drop(rx);
                    let _ = decoder.join();
                    Err(e)
                }
            }
        })?;
        let mut staged = Vec::new();
        for w in [usage_w, costs_w].into_iter().flatten() {
            staged.push(self.rt.block_on(self.loader.stage_written(w))?);
        }
        let coverage = join::merge_coverage(coverage_parts).map_err(pl("price coverage"))?;
        let recon =
            reconciliation(period, profile, &self.invoices, &sums).map_err(pl("reconciliation"))?;
        let mk = |dataset, df| Partition {
            dataset,
            keys: self.keys.clone(),
            file: self.file.clone(),
            df,
        };
        Ok((
            staged,
            vec![
                mk("prices", prices),
                mk("price_coverage", coverage),
                mk("reconciliation", recon),
            ],
        ))
    }

    /// A batch of landed usage files, decoded in parallel: one frame (and invoice sums) per file.
    #[allow(clippy::type_complexity)]
    fn decode_batch(
        &self,
        batch: &[(&str, bool)],
    ) -> Result<Vec<(DataFrame, BTreeMap<String, Decimal>)>, TransformError> {
        use rayon::prelude::*;
        let (period, profile) = (self.period.as_str(), self.profile.as_str());
        let names: Vec<&str> = batch.iter().map(|(p, _)| *p).collect();
        let raw = self.read_all(&names)?;
        batch
            .par_iter()
            .zip(raw.par_iter())
            .map(|((path, csv), bytes)| {
                thread_local! {
                    // One decompression buffer per worker thread, reused page after page.
                    static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
                }
                BUF.with_borrow_mut(|buf| {
                    let body = landed_bytes(path, bytes, buf)?;
                    let mut b = usage::Builder::with_capacity(1024);
                    if *csv {
                        b.push_csv(path, body)?;
                    } else {
                        b.push_json_page(path, body)?;
                    }
                    let sums = std::mem::take(&mut b.cost_by_invoice);
                    Ok((b.finish(period, profile).map_err(pl("usage frame"))?, sums))
                })
            })
            .collect()
    }

    /// Only the pipeline's customers (tenant id or name, case-insensitive), when it names any.
    fn keep_customers(&self, usage: DataFrame) -> Result<DataFrame, TransformError> {
        if self.customers.is_empty() {
            return Ok(usage);
        }
        let keep = &self.customers;
        let names = usage
            .column("customer_name")
            .and_then(|c| c.str().cloned())
            .map_err(pl("customer filter"))?;
        let mask: BooleanChunked = usage
            .column("customer_tenant_id")
            .and_then(|c| c.str().cloned())
            .map_err(pl("customer filter"))?
            .iter()
            .zip(names.iter())
            .map(|(t, n)| {
                Some(
                    t.is_some_and(|t| keep.contains(&t.to_ascii_lowercase()))
                        || n.is_some_and(|n| keep.contains(&n.to_ascii_lowercase())),
                )
            })
            .collect();
        usage.filter(&mask).map_err(pl("customer filter"))
    }
}

/// A landed file's bytes, zstd-decoded into `buf` when its name ends in `.zst`.
fn landed_bytes<'a>(
    path: &str,
    b: &'a [u8],
    buf: &'a mut Vec<u8>,
) -> Result<&'a [u8], TransformError> {
    if path.ends_with(".zst") {
        unzstd_into(b, buf).map_err(|e| TransformError::Landed {
            path: path.into(),
            reason: format!("truncated or corrupt zstd: {e}"),
        })?;
        Ok(buf)
    } else {
        Ok(b)
    }
}

/// A landed file, which must exist.
async fn fetch(landing: &Store, path: &str) -> Result<Bytes, TransformError> {
    landing
        .get(path)
        .await
        .map_err(|source| TransformError::Storage {
            path: path.into(),
            source,
        })?
        .ok_or_else(|| TransformError::Landed {
            path: path.into(),
            reason: "missing".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::{Turn, wait_turn};

    /// Each turn waits for the one before it to pass; a turn dropped without passing (its group
    /// failed) stops the ones after it.
    #[test]
    fn turns_follow_each_other_and_a_failure_stops_the_rest() {
        let mut t = Turn::chain(3).into_iter();
        let (a, b, c) = (t.next().unwrap(), t.next().unwrap(), t.next().unwrap());
        assert!(wait_turn(a.after), "the first waits for nothing");
        let order = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(wait_turn(b.after));
                order.lock().unwrap().push("b");
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            order.lock().unwrap().push("a");
            let _ = a.done.try_send(());
        });
        assert_eq!(*order.lock().unwrap(), ["a", "b"]);
        drop(b.done);
        assert!(!wait_turn(c.after), "b ended without passing");
    }
}
