//! The typed endpoints of the contract (`shared/azure-api/README.md` §1–§10), one method each.

use super::models::*;
use super::pager::Pager;
use super::poller::{Outcome, Poller};
use super::{ApiRequest, Auth, AzureClient, AzureError, governor::Family};
use crate::secret::SignedUrl;
use bytes::Bytes;
use chrono::NaiveDate;
use reqwest::Method;
use url::Url;

pub const BILLING_API: &str = "2019-10-01-preview";
pub const QUERY_API: &str = "2019-10-01";
pub const COST_DETAILS_API: &str = "2024-08-01";
pub const CONSUMPTION_BUDGET_API: &str = "2019-10-01";
pub const COSTMANAGEMENT_BUDGET_API: &str = "2024-08-01";

/// Which usage API version (and so which field set) to ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum UsageApi {
    #[serde(rename = "2019-10-01")]
    V2019,
    #[serde(rename = "2024-08-01")]
    V2024,
}

impl UsageApi {
    pub fn version(self) -> &'static str {
        match self {
            UsageApi::V2019 => "2019-10-01",
            UsageApi::V2024 => "2024-08-01",
        }
    }
}

/// Which price-sheet download to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PriceSheetApi {
    /// Billing provider 2019-10-01-preview: `{url, expiryTime}`, a CSV.
    Billing2019,
    /// Cost Management 2024-08-01: `{downloadUrl, expiryTime}`, a zip of CSV parts (or a CSV).
    CostManagement2024,
}

/// The billing account name inside an ARM id (`/providers/Microsoft.Billing/billingAccounts/{ba}/…`).
pub fn billing_account_of(id: &str) -> Option<&str> {
    let mut it = id.split('/');
    while let Some(seg) = it.next() {
        if seg.eq_ignore_ascii_case("billingAccounts") {
            return it.next();
        }
    }
    None
}

fn ba_path(ba: &str) -> [&str; 4] {
    ["providers", "Microsoft.Billing", "billingAccounts", ba]
}

impl AzureClient {
    /// `{management}/seg/seg…?query`, every segment percent-encoded on its own (`:` is kept, as ARM expects).
    pub fn arm(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Url, AzureError> {
        let mut url = self.options().endpoints.management.clone();
        url.path_segments_mut()
            .map_err(|_| AzureError::Invalid("management endpoint cannot be a base URL".into()))?
            .pop_if_empty()
            .extend(
                segments
                    .iter()
                    .flat_map(|s| s.split('/'))
                    .filter(|s| !s.is_empty()),
            );
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    fn list<T: serde::de::DeserializeOwned>(
        &self,
        family: Family,
        ba: &str,
        url: Url,
    ) -> impl Future<Output = Result<Vec<T>, AzureError>> {
        Pager::new(self.clone(), family, ba, ba, url).collect()
    }

    pub async fn billing_accounts(&self) -> Result<Vec<BillingAccount>, AzureError> {
        let url = self.arm(
            &["providers", "Microsoft.Billing", "billingAccounts"],
            &[("api-version", BILLING_API)],
        )?;
        self.list(Family::Billing, "", url).await
    }

    pub async fn billing_profiles(&self, ba: &str) -> Result<Vec<BillingProfile>, AzureError> {
        let p = ba_path(ba);
        let url = self.arm(
            &[&p[..], &["billingProfiles"]].concat(),
            &[("api-version", BILLING_API)],
        )?;
        self.list(Family::Billing, ba, url).await
    }

    pub async fn customers(&self, ba: &str) -> Result<Vec<Customer>, AzureError> {
        let p = ba_path(ba);
        let url = self.arm(
            &[&p[..], &["customers"]].concat(),
            &[("api-version", BILLING_API)],
        )?;
        self.list(Family::Billing, ba, url).await
    }

    pub async fn billing_subscriptions(
        &self,
        ba: &str,
    ) -> Result<Vec<BillingSubscription>, AzureError> {
        let p = ba_path(ba);
        let url = self.arm(
            &[&p[..], &["billingSubscriptions"]].concat(),
            &[("api-version", BILLING_API)],
        )?;
        self.list(Family::Billing, ba, url).await
    }

    /// Invoices whose period overlaps `[from, to]`. Tries ISO dates, then `MM-DD-YYYY` on a 400
    /// (the contract leaves the format UNCONFIRMED).
    pub async fn invoices(
        &self,
        ba: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<Invoice>, AzureError> {
        let p = ba_path(ba);
        let segs = [&p[..], &["invoices"]].concat();
        let iso = |d: NaiveDate| d.format("%Y-%m-%d").to_string();
        let us = |d: NaiveDate| d.format("%m-%d-%Y").to_string();
        let url = self.arm(
            &segs,
            &[
                ("api-version", BILLING_API),
                ("periodStartDate", &iso(from)),
                ("periodEndDate", &iso(to)),
            ],
        )?;
        match self.list(Family::Billing, ba, url).await {
            Err(e) if e.status() == Some(400) => {
                tracing::info!(
                    billing_account = ba,
                    "invoice dates refused as YYYY-MM-DD; retrying as MM-DD-YYYY"
                );
                let url = self.arm(
                    &segs,
                    &[
                        ("api-version", BILLING_API),
                        ("periodStartDate", &us(from)),
                        ("periodEndDate", &us(to)),
                    ],
                )?;
                self.list(Family::Billing, ba, url).await
            }
            other => other,
        }
    }

    /// Usage details of an invoice (`{invoiceId}/providers/Microsoft.Consumption/usageDetails`).
    pub fn usage_pager(&self, invoice_id: &str, api: UsageApi) -> Result<Pager, AzureError> {
        let ba = billing_account_of(invoice_id)
            .unwrap_or_default()
            .to_owned();
        let url = self.arm(
            &[invoice_id, "providers/Microsoft.Consumption/usageDetails"],
            &[("api-version", api.version())],
        )?;
        Ok(Pager::new(
            self.clone(),
            Family::Usage,
            &ba,
            invoice_id,
            url,
        ))
    }

    /// Usage details of a billing profile for a date range (open, not yet invoiced months).
    pub fn usage_pager_range(
        &self,
        billing_profile_id: &str,
        from: NaiveDate,
        to: NaiveDate,
        api: UsageApi,
    ) -> Result<Pager, AzureError> {
        let ba = billing_account_of(billing_profile_id)
            .unwrap_or_default()
            .to_owned();
        let (f, t) = (
            from.format("%Y-%m-%d").to_string(),
            to.format("%Y-%m-%d").to_string(),
        );
        let url = self.arm(
            &[
                billing_profile_id,
                "providers/Microsoft.Consumption/usageDetails",
            ],
            &[
                ("api-version", api.version()),
                ("startDate", &f),
                ("endDate", &t),
            ],
        )?;
        Ok(Pager::new(
            self.clone(),
            Family::Usage,
            &ba,
            billing_profile_id,
            url,
        ))
    }

    fn policy_url(&self, ba: &str, customer: &str) -> Result<Url, AzureError> {
        let p = ba_path(ba);
        self.arm(
            &[&p[..], &["customers", customer, "policies", "default"]].concat(),
            &[("api-version", BILLING_API)],
        )
    }

    pub async fn customer_policy(
        &self,
        ba: &str,
        customer: &str,
    ) -> Result<CustomerPolicy, AzureError> {
        let req = ApiRequest::new(Method::GET, self.policy_url(ba, customer)?, Family::Policy)
            .keys(ba, customer);
        self.execute(&req).await?.parse(&req.what())
    }

    pub async fn set_customer_policy(
        &self,
        ba: &str,
        customer: &str,
        view_charges: &str,
    ) -> Result<CustomerPolicy, AzureError> {
        let body = serde_json::json!({"properties": {"viewCharges": view_charges}});
        let req = ApiRequest::new(Method::PUT, self.policy_url(ba, customer)?, Family::Policy)
            .keys(ba, customer)
            .json(&body)?;
        self.execute(&req).await?.parse(&req.what())
    }

    /// Starts a price-sheet download and polls it to the signed link.
    pub async fn price_sheet_link(
        &self,
        ba: &str,
        bp: &str,
        api: PriceSheetApi,
    ) -> Result<DownloadUrl, AzureError> {
        let p = ba_path(ba);
        let url = match api {
            PriceSheetApi::Billing2019 => self.arm(
                &[
                    &p[..],
                    &["billingProfiles", bp, "pricesheet", "default", "download"],
                ]
                .concat(),
                &[("api-version", BILLING_API), ("format", "csv")],
            )?,
            PriceSheetApi::CostManagement2024 => self.arm(
                &[
                    &p[..],
                    &[
                        "billingProfiles",
                        bp,
                        "providers",
                        "Microsoft.CostManagement",
                        "pricesheets",
                        "default",
                        "download",
                    ],
                ]
                .concat(),
                &[("api-version", "2024-08-01")],
            )?,
        };
        let mut req = ApiRequest::new(Method::POST, url, Family::PriceSheet).keys(ba, bp);
        req.retry_safe = true; // starts a read-only export
        match Poller::new(self.clone(), req.clone()).wait().await? {
            Outcome::Ready(resp) => {
                let d: DownloadUrl = resp.parse(&req.what())?;
                if d.link().is_none() {
                    return Err(AzureError::Decode {
                        what: req.what(),
                        reason: "final body has no url/downloadUrl".into(),
                    });
                }
                Ok(d)
            }
            Outcome::NoData => Err(AzureError::Decode {
                what: req.what(),
                reason: "price sheet download returned 204 No Content".into(),
            }),
        }
    }

    /// Downloads a price sheet, fetching a fresh link (restarting the download) when one has expired.
    pub async fn download_price_sheet(
        &self,
        ba: &str,
        bp: &str,
        api: PriceSheetApi,
    ) -> Result<Bytes, AzureError> {
        let mut last = None;
        for _ in 0..3 {
            let link = self.price_sheet_link(ba, bp, api).await?;
            let Some(url) = link.link() else { continue };
            match self.download(url).await {
                Err(e @ AzureError::LinkExpired { .. }) => {
                    tracing::info!(
                        billing_profile = bp,
                        "price sheet link expired; requesting a new one"
                    );
                    last = Some(e);
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| AzureError::Invalid("price sheet: no link".into())))
    }

    /// GETs a signed link without any credentials.
    pub async fn download(&self, link: &SignedUrl) -> Result<Bytes, AzureError> {
        let url = self.service_url("signed link", link.expose())?;
        let mut req = ApiRequest::new(Method::GET, url, Family::Blob);
        req.auth = Auth::Anonymous;
        req.expect_json = false;
        Ok(self.execute(&req).await?.body)
    }

    /// Generates a Cost Details report for an invoice at billing-profile (or customer) scope and
    /// polls it. Returns the final operation and its poll URL (to refresh expired blob links), or
    /// `None` when there is no data.
    pub async fn cost_details_report(
        &self,
        scope: &str,
        invoice_name: &str,
    ) -> Result<Option<(CostDetailsOperation, Option<Url>)>, AzureError> {
        let ba = billing_account_of(scope).unwrap_or_default().to_owned();
        let url = self.arm(
            &[
                scope,
                "providers/Microsoft.CostManagement/generateCostDetailsReport",
            ],
            &[("api-version", COST_DETAILS_API)],
        )?;
        let mut req = ApiRequest::new(Method::POST, url, Family::CostDetails).keys(&ba, scope);
        req = req.json(&serde_json::json!({"metric": "ActualCost", "invoiceId": invoice_name}))?;
        req.retry_safe = true;
        let mut poller = Poller::new(self.clone(), req.clone());
        let mut location = None;
        let outcome = loop {
            if let Some(o) = poller.step().await? {
                break o;
            }
            location = poller.location().cloned();
        };
        let Outcome::Ready(resp) = outcome else {
            return Ok(None);
        };
        let op: CostDetailsOperation = resp.parse(&req.what())?;
        match op.status.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("completed") => Ok(Some((op, location))),
            Some("nodatafound") => Ok(None),
            _ => {
                let e = op.error.clone().unwrap_or_default();
                Err(AzureError::OperationFailed {
                    what: req.what(),
                    status: op.status.unwrap_or_default(),
                    message: format!(
                        "{}: {}",
                        e.code.unwrap_or_default(),
                        e.message.unwrap_or_default()
                    ),
                })
            }
        }
    }

    /// Downloads blob `index` of a Cost Details manifest; on an expired link, re-reads the operation
    /// result (which carries fresh links) and tries again.
    pub async fn download_cost_details_blob(
        &self,
        op: &CostDetailsOperation,
        location: Option<&Url>,
        index: usize,
    ) -> Result<Bytes, AzureError> {
        let blob = op
            .manifest
            .as_ref()
            .and_then(|m| m.blobs.get(index))
            .ok_or_else(|| AzureError::Invalid(format!("manifest has no blob {index}")))?;
        match self.download(&blob.blob_link).await {
            Err(AzureError::LinkExpired { what }) => {
                let Some(loc) = location else {
                    return Err(AzureError::LinkExpired { what });
                };
                tracing::info!(
                    blob = index,
                    "cost details link expired; re-reading the operation result"
                );
                let req = ApiRequest::new(Method::GET, loc.clone(), Family::CostDetails);
                let fresh: CostDetailsOperation = self.execute(&req).await?.parse(&req.what())?;
                let blob = fresh
                    .manifest
                    .as_ref()
                    .and_then(|m| m.blobs.get(index))
                    .ok_or_else(|| {
                        AzureError::Invalid(format!("fresh manifest has no blob {index}"))
                    })?;
                self.download(&blob.blob_link).await
            }
            other => other,
        }
    }

    /// Cost Management query at `scope`, every page (`properties.nextLink`, the same body POSTed again).
    pub async fn query(
        &self,
        scope: &str,
        body: &serde_json::Value,
    ) -> Result<Vec<QueryResult>, AzureError> {
        let ba = billing_account_of(scope).unwrap_or_default().to_owned();
        let mut url = self.arm(
            &[scope, "providers/Microsoft.CostManagement/query"],
            &[("api-version", QUERY_API)],
        )?;
        let mut pages = Vec::new();
        loop {
            let mut req = ApiRequest::new(Method::POST, url, Family::Query)
                .keys(&ba, scope)
                .json(body)?;
            req.retry_safe = true; // a query only reads
            let page: QueryResult = self.execute(&req).await?.parse(&req.what())?;
            let next = page
                .properties
                .next_link
                .clone()
                .filter(|s| !s.trim().is_empty());
            pages.push(page);
            match next {
                Some(n) => url = self.service_url(&req.what(), &n)?,
                None => return Ok(pages),
            }
            if pages.len() > 100_000 {
                return Err(AzureError::Decode {
                    what: req.what(),
                    reason: "more than 100 000 query pages; stopping".into(),
                });
            }
        }
    }

    /// A budget URL: partner scope (billing account, Cost Management provider) when `customer` is
    /// `None`, customer scope (Consumption provider) otherwise; `name` `None` lists.
    pub fn budget_url(
        &self,
        ba: &str,
        customer: Option<&str>,
        name: Option<&str>,
    ) -> Result<Url, AzureError> {
        let p = ba_path(ba);
        let mut segs: Vec<&str> = p.to_vec();
        let api = match customer {
            None => {
                segs.extend(["providers", "Microsoft.CostManagement", "budgets"]);
                COSTMANAGEMENT_BUDGET_API
            }
            Some(c) => {
                segs.extend([
                    "customers",
                    c,
                    "providers",
                    "Microsoft.Consumption",
                    "budgets",
                ]);
                CONSUMPTION_BUDGET_API
            }
        };
        if let Some(n) = name {
            segs.push(n);
        }
        self.arm(&segs, &[("api-version", api)])
    }

    pub async fn budgets(
        &self,
        ba: &str,
        customer: Option<&str>,
    ) -> Result<Vec<serde_json::Value>, AzureError> {
        let url = self.budget_url(ba, customer, None)?;
        Pager::new(
            self.clone(),
            Family::Budgets,
            ba,
            customer.unwrap_or(ba),
            url,
        )
        .collect()
        .await
    }

    pub async fn budget(
        &self,
        ba: &str,
        customer: Option<&str>,
        name: &str,
    ) -> Result<Option<serde_json::Value>, AzureError> {
        let req = ApiRequest::new(
            Method::GET,
            self.budget_url(ba, customer, Some(name))?,
            Family::Budgets,
        )
        .keys(ba, customer.unwrap_or(ba));
        match self.execute(&req).await {
            Ok(r) => r.parse(&req.what()).map(Some),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// PUT a budget (create: 201, update with the body's `eTag`: 200). Returns the status and the stored budget.
    pub async fn put_budget(
        &self,
        ba: &str,
        customer: Option<&str>,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<(u16, serde_json::Value), AzureError> {
        let req = ApiRequest::new(
            Method::PUT,
            self.budget_url(ba, customer, Some(name))?,
            Family::Budgets,
        )
        .keys(ba, customer.unwrap_or(ba))
        .json(body)?;
        let resp = self.execute(&req).await?;
        Ok((resp.status.as_u16(), resp.parse(&req.what())?))
    }

    pub async fn delete_budget(
        &self,
        ba: &str,
        customer: Option<&str>,
        name: &str,
    ) -> Result<(), AzureError> {
        let mut req = ApiRequest::new(
            Method::DELETE,
            self.budget_url(ba, customer, Some(name))?,
            Family::Budgets,
        )
        .keys(ba, customer.unwrap_or(ba));
        req.expect_json = false;
        self.execute(&req).await.map(|_| ())
    }
}
