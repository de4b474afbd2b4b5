//! Landed usage → one typed `usage` frame, from either API: JSON pages of `usageDetails` or Cost
//! Details CSV blobs. Both are read by field name through one column table, so they yield the same
//! rows: money and quantities as `Decimal(38, 18)` (exact, from the text; never through `f64`), dates
//! as `Date`, `""` as null, tags as canonical JSON text (keys sorted).

use polars::prelude::*;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

pub const SCALE: usize = 18;
pub const PRECISION: usize = 38;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Str,
    Dec,
    Date,
    Bool,
    /// JSON text, canonicalized (tags).
    Json,
}

/// (output column, JSON property, CSV column, kind). Order is the dataset's column order.
pub const USAGE_COLUMNS: &[(&str, &str, &str, Kind)] = &[
    (
        "billing_account_id",
        "billingAccountId",
        "billingAccountId",
        Kind::Str,
    ),
    (
        "billing_profile_id",
        "billingProfileId",
        "billingProfileId",
        Kind::Str,
    ),
    (
        "billing_profile_name",
        "billingProfileName",
        "billingProfileName",
        Kind::Str,
    ),
    ("invoice_id", "invoiceId", "invoiceId", Kind::Str),
    ("date", "date", "date", Kind::Date),
    (
        "service_period_start",
        "servicePeriodStartDate",
        "servicePeriodStartDate",
        Kind::Date,
    ),
    (
        "service_period_end",
        "servicePeriodEndDate",
        "servicePeriodEndDate",
        Kind::Date,
    ),
    (
        "customer_tenant_id",
        "customerTenantId",
        "customerTenantId",
        Kind::Str,
    ),
    ("customer_name", "customerName", "customerName", Kind::Str),
    ("reseller_name", "resellerName", "resellerName", Kind::Str),
    (
        "reseller_mpn_id",
        "resellerMpnId",
        "resellerMpnId",
        Kind::Str,
    ),
    (
        "subscription_id",
        "subscriptionGuid",
        "SubscriptionId",
        Kind::Str,
    ),
    (
        "subscription_name",
        "subscriptionName",
        "subscriptionName",
        Kind::Str,
    ),
    (
        "resource_group",
        "resourceGroup",
        "resourceGroupName",
        Kind::Str,
    ),
    ("resource_id", "instanceName", "ResourceId", Kind::Str),
    (
        "resource_location",
        "resourceLocation",
        "resourceLocation",
        Kind::Str,
    ),
    (
        "location",
        "resourceLocationNormalized",
        "location",
        Kind::Str,
    ),
    (
        "consumed_service",
        "consumedService",
        "consumedService",
        Kind::Str,
    ),
    ("meter_id", "meterId", "meterId", Kind::Str),
    ("meter_name", "meterName", "meterName", Kind::Str),
    (
        "meter_category",
        "meterCategory",
        "meterCategory",
        Kind::Str,
    ),
    (
        "meter_sub_category",
        "meterSubCategory",
        "meterSubCategory",
        Kind::Str,
    ),
    ("meter_region", "meterRegion", "meterRegion", Kind::Str),
    (
        "service_family",
        "serviceFamily",
        "serviceFamily",
        Kind::Str,
    ),
    ("product", "product", "ProductName", Kind::Str),
    ("product_id", "productIdentifier", "ProductId", Kind::Str),
    (
        "product_order_id",
        "productOrderId",
        "productOrderId",
        Kind::Str,
    ),
    (
        "product_order_name",
        "productOrderName",
        "productOrderName",
        Kind::Str,
    ),
    ("charge_type", "chargeType", "chargeType", Kind::Str),
    ("frequency", "frequency", "frequency", Kind::Str),
    ("pricing_model", "pricingModel", "pricingModel", Kind::Str),
    ("term", "term", "term", Kind::Str),
    (
        "reservation_id",
        "reservationId",
        "reservationId",
        Kind::Str,
    ),
    (
        "reservation_name",
        "reservationName",
        "reservationName",
        Kind::Str,
    ),
    ("benefit_id", "benefitId", "benefitId", Kind::Str),
    ("benefit_name", "benefitName", "benefitName", Kind::Str),
    (
        "publisher_type",
        "publisherType",
        "publisherType",
        Kind::Str,
    ),
    (
        "publisher_name",
        "publisherName",
        "publisherName",
        Kind::Str,
    ),
    (
        "unit_of_measure",
        "unitOfMeasure",
        "unitOfMeasure",
        Kind::Str,
    ),
    ("quantity", "quantity", "quantity", Kind::Dec),
    (
        "effective_price",
        "effectivePrice",
        "effectivePrice",
        Kind::Dec,
    ),
    ("unit_price", "unitPrice", "unitPrice", Kind::Dec),
    ("payg_price", "payGPrice", "PayGPrice", Kind::Dec),
    (
        "cost_in_billing_currency",
        "costInBillingCurrency",
        "costInBillingCurrency",
        Kind::Dec,
    ),
    (
        "cost_in_pricing_currency",
        "costInPricingCurrency",
        "costInPricingCurrency",
        Kind::Dec,
    ),
    ("cost_in_usd", "costInUSD", "costInUsd", Kind::Dec),
    (
        "payg_cost_in_billing_currency",
        "paygCostInBillingCurrency",
        "paygCostInBillingCurrency",
        Kind::Dec,
    ),
    (
        "exchange_rate",
        "exchangeRatePricingToBilling",
        "exchangeRatePricingToBilling",
        Kind::Dec,
    ),
    (
        "billing_currency",
        "billingCurrencyCode",
        "billingCurrency",
        Kind::Str,
    ),
    (
        "pricing_currency",
        "pricingCurrencyCode",
        "pricingCurrency",
        Kind::Str,
    ),
    (
        "is_azure_credit_eligible",
        "isAzureCreditEligible",
        "isAzureCreditEligible",
        Kind::Bool,
    ),
    (
        "additional_info",
        "additionalInfo",
        "additionalInfo",
        Kind::Str,
    ),
    ("tags", "\u{0}tags", "tags", Kind::Json),
];

enum Col {
    Str(Vec<Option<String>>),
    Dec(Vec<Option<i128>>),
    Date(Vec<Option<i32>>),
    Bool(Vec<Option<bool>>),
}

/// Accumulates rows, column by column.
pub struct Builder {
    cols: Vec<Col>,
    rows: usize,
    /// Σ cost_in_billing_currency per invoice id (for reconciliation), exact.
    pub cost_by_invoice: BTreeMap<String, Decimal>,
}

#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct DecodeError {
    pub what: String,
    pub reason: String,
}

fn epoch() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()
}

/// Text → decimal at scale 18 (rounded half away from zero beyond 18 places, far below a cent).
pub fn dec18(text: &str) -> Result<i128, String> {
    let d = crate::azure::models::loose::parse_decimal(text.trim())
        .map_err(|e| format!("`{text}` is not a decimal ({e})"))?;
    let mut d = d.round_dp_with_strategy(
        SCALE as u32,
        rust_decimal::RoundingStrategy::MidpointAwayFromZero,
    );
    d.rescale(SCALE as u32);
    if d.scale() != SCALE as u32 {
        return Err(format!("`{text}` is too large for Decimal(38, 18)"));
    }
    Ok(d.mantissa())
}

pub fn date_days(text: &str) -> Result<i32, String> {
    let d = crate::azure::models::loose::parse_datetime(text.trim())
        .ok_or_else(|| format!("`{text}` is not a date"))?;
    Ok((d.date_naive() - epoch()).num_days() as i32)
}

fn canonical_json(text: &str) -> Result<String, String> {
    let v: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| format!("tags are not a JSON object: {e}"))?;
    serde_json::to_string(&v).map_err(|e| e.to_string())
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    pub fn new() -> Self {
        let cols = USAGE_COLUMNS
            .iter()
            .map(|(_, _, _, k)| match k {
                Kind::Str | Kind::Json => Col::Str(Vec::new()),
                Kind::Dec => Col::Dec(Vec::new()),
                Kind::Date => Col::Date(Vec::new()),
                Kind::Bool => Col::Bool(Vec::new()),
            })
            .collect();
        Self {
            cols,
            rows: 0,
            cost_by_invoice: BTreeMap::new(),
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// One row; `get(i)` returns column i's text (already unescaped), `None` when absent.
    fn push<'r>(&mut self, get: impl Fn(usize) -> Option<Cow<'r, str>>) -> Result<(), String> {
        let mut cost = None;
        let mut invoice = None;
        for (i, (name, _, _, kind)) in USAGE_COLUMNS.iter().enumerate() {
            let v = get(i);
            let v = v
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty() && *s != "null");
            let err = |e: String| format!("{name}: {e}");
            match (&mut self.cols[i], kind) {
                (Col::Str(c), Kind::Json) => {
                    c.push(v.map(canonical_json).transpose().map_err(err)?)
                }
                (Col::Str(c), _) => c.push(v.map(str::to_owned)),
                (Col::Dec(c), _) => {
                    let x = v.map(dec18).transpose().map_err(err)?;
                    if *name == "cost_in_billing_currency" {
                        cost = x;
                    }
                    c.push(x)
                }
                (Col::Date(c), _) => c.push(v.map(date_days).transpose().map_err(err)?),
                (Col::Bool(c), _) => c.push(v.map(|s| s.eq_ignore_ascii_case("true") || s == "1")),
            }
            if *name == "invoice_id" {
                invoice = v.map(str::to_owned);
            }
        }
        if let (Some(inv), Some(c)) = (invoice, cost) {
            *self.cost_by_invoice.entry(inv).or_default() +=
                Decimal::from_i128_with_scale(c, SCALE as u32);
        }
        self.rows += 1;
        Ok(())
    }

    /// Every row of a `usageDetails` JSON page.
    pub fn push_json_page(&mut self, what: &str, body: &[u8]) -> Result<usize, DecodeError> {
        #[derive(Deserialize)]
        struct Page<'a> {
            #[serde(borrow, default)]
            value: Vec<Row<'a>>,
        }
        #[derive(Deserialize)]
        struct Row<'a> {
            #[serde(borrow, default)]
            tags: Option<&'a RawValue>,
            #[serde(borrow, default)]
            properties: HashMap<Cow<'a, str>, &'a RawValue>,
        }
        let bad = |reason: String| DecodeError {
            what: what.to_owned(),
            reason,
        };
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(0);
        }
        let page: Page =
            serde_json::from_slice(body).map_err(|e| bad(format!("not a usage page: {e}")))?;
        let n = page.value.len();
        for (k, row) in page.value.into_iter().enumerate() {
            let get = |i: usize| -> Option<Cow<'_, str>> {
                let key = USAGE_COLUMNS[i].1;
                let raw = if key == "\u{0}tags" {
                    row.tags?
                } else {
                    *row.properties.get(key)?
                };
                let t = raw.get();
                if t.starts_with('"') {
                    serde_json::from_str::<Cow<str>>(t).ok()
                } else {
                    Some(Cow::Borrowed(t))
                }
            };
            self.push(get)
                .map_err(|r| bad(format!("row {}: {r}", k + 1)))?;
        }
        Ok(n)
    }

    /// Every row of a Cost Details CSV blob (BOM or not, any column order, header names matched
    /// case-insensitively; missing columns are null).
    pub fn push_csv(&mut self, what: &str, body: &[u8]) -> Result<usize, DecodeError> {
        let bad = |reason: String| DecodeError {
            what: what.to_owned(),
            reason,
        };
        let (mut rd, index) = csv_with_header(what, body)?;
        let pos: Vec<Option<usize>> = USAGE_COLUMNS
            .iter()
            .map(|c| index.get(&c.2.to_ascii_lowercase()).copied())
            .collect();
        if pos[USAGE_COLUMNS
            .iter()
            .position(|c| c.0 == "cost_in_billing_currency")
            .unwrap_or(0)]
        .is_none()
        {
            return Err(bad("no costInBillingCurrency column".into()));
        }
        let mut n = 0;
        for (k, rec) in rd.records().enumerate() {
            let rec = rec.map_err(|e| bad(format!("line {}: {e}", k + 2)))?;
            self.push(|i| pos[i].and_then(|p| rec.get(p)).map(Cow::Borrowed))
                .map_err(|r| bad(format!("line {}: {r}", k + 2)))?;
            n += 1;
        }
        Ok(n)
    }

    /// The frame, with the partition columns first and `tags_map` (the tags as a map:
    /// `list<struct<key, value>>`, how Parquet readers see a map) last.
    pub fn finish(self, billing_period: &str, billing_profile: &str) -> PolarsResult<DataFrame> {
        let h = self.rows;
        let mut columns: Vec<Column> = vec![
            Column::new("billing_period".into(), vec![billing_period; h]),
            Column::new("billing_profile".into(), vec![billing_profile; h]),
        ];
        for ((name, ..), col) in USAGE_COLUMNS.iter().zip(self.cols) {
            columns.push(into_column(name, col)?);
        }
        let mut df = DataFrame::new(h, columns)?;
        let map = tags_map(df.column("tags")?.str()?)?;
        df.with_column(map)?;
        Ok(df)
    }
}

/// Canonical tags JSON → `list<struct<key: str, value: str>>` (null where a row has no tags).
fn tags_map(tags: &StringChunked) -> PolarsResult<Column> {
    let n = tags.len();
    let (mut row, mut key, mut value) = (Vec::new(), Vec::new(), Vec::new());
    for (i, t) in tags.iter().enumerate() {
        let Some(t) = t else { continue };
        let m: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(t).map_err(|e| polars_err!(ComputeError: "tags: {e}"))?;
        for (k, v) in m {
            row.push(i as u32);
            key.push(k);
            value.push(match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            });
        }
    }
    let pairs = DataFrame::new(
        row.len(),
        vec![
            Column::new("_row".into(), row),
            Column::new("key".into(), key),
            Column::new("value".into(), value),
        ],
    )?;
    let maps = pairs
        .lazy()
        .group_by_stable([col("_row")])
        .agg([as_struct(vec![col("key"), col("value")]).alias("tags_map")]);
    let rows = DataFrame::new(
        n,
        vec![Column::new(
            "_row".into(),
            (0..n as u32).collect::<Vec<u32>>(),
        )],
    )?;
    let joined = rows
        .lazy()
        .join(
            maps,
            [col("_row")],
            [col("_row")],
            JoinArgs::new(JoinType::Left),
        )
        .sort(["_row"], SortMultipleOptions::default())
        .collect()?;
    Ok(joined.column("tags_map")?.clone())
}

/// Columns of a CSV header by lower-cased name.
pub type HeaderIndex = HashMap<String, usize>;

/// A CSV reader past its header (a leading UTF-8 BOM skipped), and the header's columns by
/// lower-cased name; a column named twice is an error. Shared by the usage and price-sheet readers.
pub fn csv_with_header<'b>(
    what: &str,
    body: &'b [u8],
) -> Result<(csv::Reader<&'b [u8]>, HeaderIndex), DecodeError> {
    let bad = |reason: String| DecodeError {
        what: what.to_owned(),
        reason,
    };
    let body = body.strip_prefix("\u{feff}".as_bytes()).unwrap_or(body);
    let mut rd = csv::ReaderBuilder::new().flexible(false).from_reader(body);
    let headers = rd
        .headers()
        .map_err(|e| bad(format!("header: {e}")))?
        .clone();
    let mut index = HeaderIndex::new();
    for (i, h) in headers.iter().enumerate() {
        if index.insert(h.trim().to_ascii_lowercase(), i).is_some() {
            return Err(bad(format!("column `{h}` appears twice")));
        }
    }
    Ok((rd, index))
}

fn into_column(name: &str, col: Col) -> PolarsResult<Column> {
    Ok(match col {
        Col::Str(v) => Column::new(name.into(), v),
        Col::Dec(v) => decimal_column(name, v)?,
        Col::Date(v) => Int32Chunked::from_iter_options(name.into(), v.into_iter())
            .into_date()
            .into_series()
            .into_column(),
        Col::Bool(v) => Column::new(name.into(), v),
    })
}

pub fn decimal_column(name: &str, v: Vec<Option<i128>>) -> PolarsResult<Column> {
    Ok(Int128Chunked::from_iter_options(name.into(), v.into_iter())
        .into_decimal(PRECISION, SCALE)?
        .into_series()
        .into_column())
}

pub fn date_column(name: &str, v: Vec<Option<i32>>) -> Column {
    Int32Chunked::from_iter_options(name.into(), v.into_iter())
        .into_date()
        .into_series()
        .into_column()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_csv_give_the_same_row() {
        let json = br#"{"value":[{"id":"x","tags":{"b":"2","a":"1"},"properties":{"billingProfileId":"P","invoiceId":"G1","date":"2026-10-03T00:00:00.0000000Z","quantity":1.5,"costInBillingCurrency":0.123456789012345678,"costInUSD":2,"exchangeRatePricingToBilling":"0.9","isAzureCreditEligible":true,"additionalInfo":"{\"a\": 1}","meterId":"","unknownField":{"x":1}}}],"nextLink":null}"#;
        let csv = "\u{feff}INVOICEID,billingProfileId,date,quantity,costInBillingCurrency,costInUsd,exchangeRatePricingToBilling,isAzureCreditEligible,additionalInfo,tags,meterId\r\nG1,P,10/03/2026,1.50,0.123456789012345678,2.0,0.90,True,\"{\"\"a\"\": 1}\",\"{\"\"a\"\":\"\"1\"\",\"\"b\"\":\"\"2\"\"}\",\r\n";
        let mut a = Builder::new();
        assert_eq!(a.push_json_page("p", json).unwrap(), 1);
        let mut b = Builder::new();
        assert_eq!(b.push_csv("c", csv.as_bytes()).unwrap(), 1);
        assert_eq!(a.cost_by_invoice, b.cost_by_invoice);
        let (da, db) = (
            a.finish("2026-10", "P").unwrap(),
            b.finish("2026-10", "P").unwrap(),
        );
        assert!(da.equals_missing(&db), "{da}\n{db}");
        assert_eq!(
            da.column("tags").unwrap().str().unwrap().get(0),
            Some(r#"{"a":"1","b":"2"}"#)
        );
        assert_eq!(
            da.column("meter_id").unwrap().null_count(),
            1,
            "\"\" is null"
        );
        assert_eq!(
            da.column("tags_map").unwrap().dtype().to_string(),
            "list[struct[2]]"
        );
        let m = da
            .column("tags_map")
            .unwrap()
            .list()
            .unwrap()
            .get_as_series(0)
            .unwrap();
        assert_eq!(m.len(), 2, "two tags in the map");
    }

    #[test]
    fn bad_input_says_where() {
        let mut a = Builder::new();
        let e = a
            .push_json_page(
                "page-3",
                br#"{"value":[{"properties":{"quantity":"abc"}}]}"#,
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("page-3") && e.contains("row 1") && e.contains("quantity"),
            "{e}"
        );
        let e = a
            .push_json_page("page-4", br#"{"value":[{"properties":{"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("page-4"), "{e}");
        let e = a
            .push_csv(
                "blob-1",
                b"quantity,quantity,costInBillingCurrency\n1,2,3\n",
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
    }
}

#[cfg(test)]
mod fuzz {
    //! Hostile input never panics the page decoder: arbitrary bytes, and real pages cut, spliced or
    //! with bytes flipped. `PROPTEST_CASES` raises the count for a long run.
    use super::*;
    use proptest::prelude::*;

    const PAGE: &str = r#"{"value":[{"id":"a","tags":{"k":"v"},"properties":{"billingProfileId":"P","invoiceId":"G1","date":"2026-10-03T00:00:00.0000000Z","quantity":1.5,"costInBillingCurrency":"0.25","exchangeRate":"1","additionalInfo":"{\"x\": 1}","isAzureCreditEligible":true,"meterId":""}}],"nextLink":null}"#;
    const CSV: &str = "\u{feff}invoiceId,date,quantity,costInBillingCurrency,tags,additionalInfo\r\nG1,10/03/2026,1.5,0.25,\"{\"\"k\"\":\"\"v\"\"}\",\"multi\nline\"\r\n";

    proptest! {
        #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000), ..ProptestConfig::default() })]
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = Builder::new().push_json_page("fuzz", &bytes);
            let _ = Builder::new().push_csv("fuzz", &bytes);
        }

        #[test]
        fn mutated_real_pages(cut in 0usize..400, pos in 0usize..400, byte in any::<u8>(), csv in any::<bool>()) {
            let mut b = if csv { CSV.as_bytes().to_vec() } else { PAGE.as_bytes().to_vec() };
            let p = pos % b.len();
            b[p] = byte;
            b.truncate(b.len() - cut.min(b.len()));
            let mut builder = Builder::new();
            let r = if csv { builder.push_csv("fuzz", &b) } else { builder.push_json_page("fuzz", &b) };
            if let Err(e) = r {
                prop_assert!(e.to_string().starts_with("fuzz"), "errors say where: {e}");
            }
            let _ = builder.finish("2026-10", "P");
        }
    }
}

#[cfg(test)]
mod huge {
    use super::*;

    /// A 16 MiB `additionalInfo` and a 1 MiB tag value decode whole, without truncation or panic.
    #[test]
    fn huge_fields_are_kept_whole() {
        let big = "x".repeat(16 << 20);
        let tag = "t".repeat(1 << 20);
        let page = format!(
            r#"{{"value":[{{"tags":{{"k":"{tag}"}},"properties":{{"invoiceId":"G1","quantity":1,"costInBillingCurrency":2,"additionalInfo":"{big}"}}}}]}}"#
        );
        let mut b = Builder::new();
        assert_eq!(b.push_json_page("huge", page.as_bytes()).unwrap(), 1);
        let df = b.finish("2026-10", "P").unwrap();
        assert_eq!(
            df.column("additional_info")
                .unwrap()
                .str()
                .unwrap()
                .get(0)
                .map(str::len),
            Some(16 << 20)
        );
        assert!(
            df.column("tags")
                .unwrap()
                .str()
                .unwrap()
                .get(0)
                .is_some_and(|t| t.len() > 1 << 20)
        );
    }
}
