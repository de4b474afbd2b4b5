//! Every endpoint of the contract against the simulator: shapes, validation, errors.

use crate::common::*;
use costlake::azure::api::{PriceSheetApi, UsageApi};
use costlake::azure::governor::Family;
use costlake::azure::{ApiRequest, AzureError};
use costlake::simulate::InvoiceDates;
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::json;

#[tokio::test]
async fn hierarchy_pages_and_mpa_account_name() {
    let mut cfg = config();
    cfg.scale.customers = 13; // list pages of 5: three pages
    let (sim, c) = start(cfg).await;
    let accounts = c.billing_accounts().await.unwrap();
    let ba = &accounts[0].name;
    assert!(ba.contains(':'), "MPA names carry a colon: {ba}");
    assert_eq!(
        accounts[0].props().agreement_type.as_deref(),
        Some("MicrosoftPartnerAgreement")
    );
    let customers = c.customers(ba).await.unwrap();
    assert_eq!(customers.len(), 13);
    let ids: std::collections::BTreeSet<_> = customers.iter().map(|c| c.name.clone()).collect();
    assert_eq!(ids.len(), 13, "no customer twice across pages");
    assert_eq!(
        c.billing_subscriptions(ba).await.unwrap().len(),
        sim.world().subs.len()
    );
    let profiles = c.billing_profiles(ba).await.unwrap();
    let currencies: Vec<_> = profiles
        .iter()
        .map(|p| p.props().currency.unwrap_or_default())
        .collect();
    assert_eq!(currencies, ["USD", "EUR"]);
}

#[tokio::test]
async fn invoice_dates_fall_back_to_us_format() {
    let mut cfg = config();
    cfg.invoice_dates = InvoiceDates::Us;
    let (sim, c) = start(cfg).await;
    let ba = sim.world().account_name.clone();
    let from = chrono::NaiveDate::from_ymd_opt(2026, 10, 1).unwrap();
    let inv = c
        .invoices(
            &ba,
            from,
            chrono::NaiveDate::from_ymd_opt(2026, 10, 31).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(inv.len(), 2);
    assert!(
        inv.iter().all(|i| i.scope().starts_with("/providers/")),
        "ids are normalised to a leading slash"
    );
}

#[tokio::test]
async fn usage_field_sets_differ_by_api_version_and_quirks_are_present() {
    let (sim, c) = start(config()).await;
    let inv = sim.world().invoice_id(0);
    let mut p19 = c.usage_pager(&inv, UsageApi::V2019).unwrap();
    let body19 = String::from_utf8(p19.next_page().await.unwrap().unwrap().body.to_vec()).unwrap();
    let mut p24 = c.usage_pager(&inv, UsageApi::V2024).unwrap();
    let first24 = p24.next_page().await.unwrap().unwrap();
    let body24 = String::from_utf8(first24.body.to_vec()).unwrap();
    assert!(!body19.contains("\"effectivePrice\"") && body19.contains("\"pricingModel\""));
    assert!(body24.contains("\"effectivePrice\"") && body24.contains("\"benefitId\""));
    assert!(body24.contains(".0000000Z"), "7-digit fractional seconds");
    assert!(
        body24.contains("\"exchangeRate\":\""),
        "exchangeRate is a string"
    );
    assert!(
        body24.contains("\"additionalInfo\":\"{"),
        "JSON inside a string"
    );
    let next = first24.next_link.clone().unwrap();
    assert!(
        next.starts_with("http://127.0.0.1") && next.contains("%24skiptoken=")
            || next.contains("$skiptoken="),
        "absolute nextLink with a skiptoken: {next}"
    );
    // Resuming from a saved nextLink continues where the first pager stopped.
    let mut resumed = costlake::azure::pager::Pager::resume(
        c.clone(),
        Family::Usage,
        "",
        "",
        url::Url::parse(&next).unwrap(),
    );
    let second = resumed.next_page().await.unwrap().unwrap();
    assert_eq!(second.url, next);
    // A tampered skiptoken is an ARM error, not data.
    let bad = next.replace("skiptoken=", "skiptoken=x");
    let err = c
        .execute(&ApiRequest::new(
            Method::GET,
            url::Url::parse(&bad).unwrap(),
            Family::Usage,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AzureError::Api { status: 400, code, .. } if code == "InvalidSkipToken"),
        "{err}"
    );
}

#[tokio::test]
async fn customer_policy_get_and_set() {
    let (sim, c) = start(config()).await;
    let ba = sim.world().account_name.clone();
    let cust = sim.world().customers[0].id.clone();
    let before = c.customer_policy(&ba, &cust).await.unwrap();
    assert_eq!(before.name, "default");
    let after = c
        .set_customer_policy(&ba, &cust, "NotAllowed")
        .await
        .unwrap();
    assert_eq!(after.props().view_charges.as_deref(), Some("NotAllowed"));
    assert_eq!(
        c.customer_policy(&ba, &cust)
            .await
            .unwrap()
            .props()
            .view_charges
            .as_deref(),
        Some("NotAllowed")
    );
    let err = c
        .set_customer_policy(&ba, &cust, "Sometimes")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400));
    let err = c
        .customer_policy(&ba, "no-such-customer")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404));
}

fn budget(amount: f64, etag: Option<&str>) -> serde_json::Value {
    let mut b = json!({"properties": {
        "category": "Cost", "amount": amount, "timeGrain": "Monthly",
        "timePeriod": {"startDate": "2026-12-01T00:00:00Z", "endDate": "2027-11-30T00:00:00Z"},
        "notifications": {"Actual_GreaterThan_80_Percent": {"enabled": true, "operator": "GreaterThan", "threshold": 80, "contactEmails": ["finops@contoso.com"]}}
    }});
    if let Some(e) = etag {
        b["eTag"] = json!(e);
    }
    b
}

#[tokio::test]
async fn budgets_at_partner_and_customer_scope() {
    let (sim, c) = start(config()).await;
    let ba = sim.world().account_name.clone();
    let cust = sim.world().customers[1].id.clone();
    for scope in [None, Some(cust.as_str())] {
        let (status, created) = c
            .put_budget(&ba, scope, "monthly-cap", &budget(1000.0, None))
            .await
            .unwrap();
        assert_eq!(status, 201);
        let etag = created["eTag"].as_str().unwrap().to_owned();
        let (status, updated) = c
            .put_budget(&ba, scope, "monthly-cap", &budget(1500.0, Some(&etag)))
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(updated["properties"]["amount"], json!(1500.0));
        let stale = c
            .put_budget(&ba, scope, "monthly-cap", &budget(1.0, Some(&etag)))
            .await
            .unwrap_err();
        assert_eq!(stale.status(), Some(412), "a stale eTag is refused");
        assert_eq!(c.budgets(&ba, scope).await.unwrap().len(), 1);
        assert!(c.budget(&ba, scope, "monthly-cap").await.unwrap().is_some());
        for bad in [
            budget(0.0, None),
            json!({"properties": {"category": "Cost", "amount": 5, "timeGrain": "BillingMonth", "timePeriod": {"startDate": "2026-12-01T00:00:00Z"}}}),
            json!({"properties": {"category": "Cost", "amount": 5, "timeGrain": "Monthly", "timePeriod": {"startDate": "2026-12-02T00:00:00Z"}}}),
        ] {
            let e = c.put_budget(&ba, scope, "bad", &bad).await.unwrap_err();
            assert!(
                matches!(&e, AzureError::Api { status: 400, code, .. } if code == "InvalidBudget"),
                "{e}"
            );
        }
        c.delete_budget(&ba, scope, "monthly-cap").await.unwrap();
        assert!(c.budget(&ba, scope, "monthly-cap").await.unwrap().is_none());
        assert_eq!(
            c.delete_budget(&ba, scope, "monthly-cap")
                .await
                .unwrap_err()
                .status(),
            Some(404)
        );
    }
}

#[tokio::test]
async fn query_pages_and_sums_equal_the_generator() {
    let (sim, c) = start(config()).await;
    let w = sim.world();
    let scope = format!(
        "/providers/Microsoft.Billing/billingAccounts/{}",
        w.account_name
    );
    let body = json!({"type": "ActualCost", "timeframe": "Custom", "timePeriod": {"from": "2026-09-01T00:00:00Z", "to": "2026-10-31T23:59:59Z"},
        "dataset": {"granularity": "Daily", "aggregation": {"totalCost": {"name": "PreTaxCost", "function": "Sum"}}, "grouping": [{"type": "Dimension", "name": "ResourceGroup"}]}});
    let pages = c.query(&scope, &body).await.unwrap();
    assert!(
        pages.len() >= 3,
        "several pages via properties.nextLink: {}",
        pages.len()
    );
    let cols: Vec<_> = pages[0]
        .properties
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        cols,
        ["totalCost", "UsageDate", "ResourceGroup", "Currency"]
    );
    let mut by_currency: std::collections::BTreeMap<String, Decimal> = Default::default();
    for p in &pages {
        for r in &p.properties.rows {
            *by_currency
                .entry(r[3].get().trim_matches('"').to_owned())
                .or_default() += dec(r[0].get());
            assert!(r[1].get().parse::<u64>().unwrap() > 20260900);
        }
    }
    let mut truth: std::collections::BTreeMap<String, Decimal> = Default::default();
    for (i, inv) in w.invoices.iter().enumerate() {
        *truth
            .entry(w.profiles[inv.profile].currency.to_owned())
            .or_default() += w.totals(i, 0).cost_billing;
    }
    assert_eq!(
        by_currency, truth,
        "query sums equal the usage rows, exactly"
    );
    let bad = json!({"type": "Usage", "timeframe": "Custom", "timePeriod": {"from": "2026-09-01", "to": "2026-09-30"}, "dataset": {"aggregation": {"a": {"name": "PreTaxCost", "function": "Sum"}, "b": {"name": "CostUSD", "function": "Sum"}, "c": {"name": "Quantity", "function": "Sum"}}}});
    assert_eq!(c.query(&scope, &bad).await.unwrap_err().status(), Some(400));
}

#[tokio::test]
async fn price_sheets_both_apis_and_cost_details_blobs() {
    let (sim, c) = start(config()).await;
    let w = sim.world();
    let bp = &w.profiles[1].name;
    let old = c
        .download_price_sheet(&w.account_name, bp, PriceSheetApi::Billing2019)
        .await
        .unwrap();
    assert!(
        old.starts_with("\u{feff}BillingAccountId,".as_bytes()),
        "CSV with BOM and the documented header"
    );
    assert!(old.windows(2).any(|x| x == b"\r\n"), "CRLF line ends");
    let new = c
        .download_price_sheet(&w.account_name, bp, PriceSheetApi::CostManagement2024)
        .await
        .unwrap();
    assert!(new.starts_with(b"PK"), "the 2024 API serves a zip");
    assert_eq!(price_rows(&old), price_rows(&new));
    let link = c
        .price_sheet_link(&w.account_name, bp, PriceSheetApi::CostManagement2024)
        .await
        .unwrap();
    assert!(
        !format!("{:?} {}", link.link().unwrap(), link.link().unwrap()).contains(
            &link.link().unwrap().expose()
                [link.link().unwrap().expose().find("sig=").unwrap() + 4..]
        ),
        "signed URLs print without their sig"
    );
    // A signed link with a forged signature is refused; the client reports an expired link.
    let forged = link.link().unwrap().expose().replace("sig=", "sig=AAAA");
    let e = c
        .download(&costlake::secret::SignedUrl::new(forged))
        .await
        .unwrap_err();
    assert!(matches!(e, AzureError::LinkExpired { .. }), "{e}");
}

#[tokio::test]
async fn arm_errors_api_versions_and_foreign_hosts() {
    let (sim, c) = start(config()).await;
    let ba = sim.world().account_name.clone();
    let no_version = c
        .arm(
            &[
                "providers/Microsoft.Billing/billingAccounts",
                &ba,
                "customers",
            ],
            &[],
        )
        .unwrap();
    let e = c
        .execute(&ApiRequest::new(Method::GET, no_version, Family::Billing))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AzureError::Api { status: 400, code, .. } if code == "MissingApiVersionParameter"),
        "{e}"
    );
    let wrong = c
        .arm(
            &[
                "providers/Microsoft.Billing/billingAccounts",
                &ba,
                "customers",
            ],
            &[("api-version", "2099-01-01")],
        )
        .unwrap();
    let e = c
        .execute(&ApiRequest::new(Method::GET, wrong, Family::Billing))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AzureError::Api { status: 400, code, .. } if code == "InvalidApiVersionParameter"),
        "{e}"
    );
    let nowhere = c
        .arm(
            &["providers/Microsoft.Nothing/things"],
            &[("api-version", "2019-10-01")],
        )
        .unwrap();
    assert_eq!(
        c.execute(&ApiRequest::new(Method::GET, nowhere, Family::Billing))
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
    // The ARM token is never sent to another host, even if a nextLink points there.
    let foreign = url::Url::parse(&format!("{}x?sig=abc", sim.blob_url())).unwrap();
    let e = c
        .execute(&ApiRequest::new(Method::GET, foreign, Family::Billing))
        .await
        .unwrap_err();
    assert!(matches!(e, AzureError::ForeignHost { .. }), "{e}");
    assert!(!e.to_string().contains("abc"));
    assert_eq!(sim.counters().blob_requests_with_authorization, 0);
}
