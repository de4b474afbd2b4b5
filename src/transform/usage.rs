//! Landed usage → one typed `usage` frame, from either API: JSON pages of `usageDetails` or Cost
//! Details CSV blobs. Both are read by field name through one column table, so they yield the same
//! rows: money and quantities as `Decimal(38, 18)` (exact, from the text; never through `f64`), dates
//! as `Date`, `""` as null, tags as canonical JSON text (keys sorted).

use polars::prelude::*;
use rust_decimal::Decimal;
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
    Str(StringChunkedBuilder),
    Dec(Vec<Option<i128>>),
    Date(Vec<Option<i32>>),
    Bool(Vec<Option<bool>>),
}

/// The tags of every row as (key, value) pairs: the `tags_map` column, built as it is decoded.
struct Tags {
    /// Row i's pairs are `keys[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<i64>,
    valid: Vec<bool>,
    keys: StringChunkedBuilder,
    values: StringChunkedBuilder,
}

/// Accumulates rows, column by column.
pub struct Builder {
    cols: Vec<Col>,
    tags: Tags,
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

/// `str::trim`, without looking at the text when it starts and ends with a visible ASCII character
/// (nearly every value).
#[inline]
pub(crate) fn trim(s: &str) -> &str {
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(a), Some(z)) if a.is_ascii_graphic() && z.is_ascii_graphic() => s,
        _ => s.trim(),
    }
}

/// Text → decimal at scale 18 (rounded half away from zero beyond 18 places, far below a cent).
pub fn dec18(text: &str) -> Result<i128, String> {
    let text = trim(text);
    if let Some(v) = dec18_plain(text.as_bytes()) {
        return Ok(v);
    }
    let d = crate::azure::models::loose::parse_decimal(text)
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

/// The common case without `rust_decimal`: `-?digits(.digits)?` with at most 10 integer and 18
/// fractional digits (so the value also fits `rust_decimal`'s 96-bit mantissa at scale 18), scaled
/// to 18 places exactly. Anything else (exponents, `+`, more digits) is `None` and takes the
/// general path, which gives the same value where both apply.
fn dec18_plain(b: &[u8]) -> Option<i128> {
    let (neg, b) = match b.first()? {
        b'-' => (true, &b[1..]),
        _ => (false, b),
    };
    let (int, frac) = match b.iter().position(|&c| c == b'.') {
        Some(p) => (&b[..p], &b[p + 1..]),
        None => (b, &b[..0]),
    };
    if int.is_empty()
        || int.len() > 10
        || frac.len() > 18
        || (frac.is_empty() && b.len() != int.len())
    {
        return None;
    }
    // Each part fits a u64 (< 10^10 and < 10^18): digits are accumulated there, and only the
    // result is widened (an i128 multiply per digit cost more than the rest of the parse).
    let digits = |s: &[u8]| -> Option<u64> {
        s.iter().try_fold(0u64, |v, &c| {
            let d = c.wrapping_sub(b'0');
            (d <= 9).then(|| v * 10 + u64::from(d))
        })
    };
    let (i, f) = (digits(int)?, digits(frac)?);
    let v = i128::from(i) * 10i128.pow(SCALE as u32)
        + i128::from(f * 10u64.pow((SCALE - frac.len()) as u32));
    Some(if neg { -v } else { v })
}

pub fn date_days(text: &str) -> Result<i32, String> {
    let text = trim(text);
    if let Some(d) = date_days_utc(text.as_bytes()) {
        return Ok(d);
    }
    let d = crate::azure::models::loose::parse_datetime(text)
        .ok_or_else(|| format!("`{text}` is not a date"))?;
    Ok((d.date_naive() - epoch()).num_days() as i32)
}

/// `YYYY-MM-DD`, alone or followed by `THH:MM:SS`, a fraction and `Z` or nothing (UTC): the date's
/// days since 1970-01-01 without chrono. Offsets and other shapes are `None` (the general path).
fn date_days_utc(b: &[u8]) -> Option<i32> {
    let num = |r: &[u8]| -> Option<i64> {
        r.iter().try_fold(0i64, |a, &c| {
            c.is_ascii_digit().then(|| a * 10 + i64::from(c - b'0'))
        })
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    if b.len() > 10 {
        let t = &b[10..];
        if t.len() < 9 || t[0] != b'T' || t[3] != b':' || t[6] != b':' {
            return None;
        }
        if num(&t[1..3])? > 23 || num(&t[4..6])? > 59 || num(&t[7..9])? > 59 {
            return None;
        }
        let mut rest = &t[9..];
        if let Some(f) = rest.strip_prefix(b".") {
            let n = f.iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 || n > 9 {
                return None;
            }
            rest = &f[n..];
        }
        if !(rest.is_empty() || rest == b"Z") {
            return None;
        }
    }
    let (y, m, d) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d < 1 || d > days_in[(m - 1) as usize] {
        return None;
    }
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    i32::try_from(era * 146_097 + doe - 719_468).ok()
}

/// A JSON value's text, for the reference readings in the tests: strings unescaped (borrowed when
/// they hold no escape), anything else as written (numbers keep every digit).
#[cfg(test)]
fn json_text<'a>(raw: &'a str) -> Result<Cow<'a, str>, String> {
    match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => Ok(Cow::Borrowed(inner)),
        Some(_) => sonic_rs::from_str::<String>(raw)
            .map(Cow::Owned)
            .map_err(|e| format!("bad string: {e}")),
        None => Ok(Cow::Borrowed(raw)),
    }
}

/// A tag's (key, value) text.
type TagPair<'a> = (Cow<'a, str>, Cow<'a, str>);

/// Tags (a JSON object) → canonical JSON text (keys sorted, the last of a repeated key wins) and the
/// (key, value) pairs, values as text (strings unescaped, other values as canonical JSON).
fn tags_of(text: &str) -> Result<(String, Vec<TagPair<'_>>), String> {
    use crate::transform::jsonscan::{Raw, Scanner};
    let bad = |e: &dyn std::fmt::Display| format!("tags are not a JSON object: {e}");
    let mut sc = Scanner::new(text);
    if sc.peek() != Some(b'{') {
        return Err(bad(&"not an object"));
    }
    // (key, value text, whether the value is a string)
    let mut pairs: Vec<(Cow<str>, Cow<str>, bool)> = Vec::new();
    sc.object(0, |sc, k| {
        let (v, string) = match sc.value(1)? {
            Raw::Other(raw) => {
                let value: serde_json::Value =
                    serde_json::from_str(raw).map_err(|e| e.to_string())?;
                (Cow::Owned(value.to_string()), false)
            }
            s => (s.text()?, true),
        };
        pairs.push((k, v, string));
        Ok(())
    })
    .and_then(|()| sc.end())
    .map_err(|e| bad(&e))?;
    // Sorted by key; of a repeated key the last (first after reversing, kept by the stable sort
    // and by `dedup_by`) wins.
    pairs.reverse();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs.dedup_by(|later, kept| later.0 == kept.0);
    let mut canonical = String::with_capacity(text.len());
    canonical.push('{');
    for (i, (k, v, string)) in pairs.iter().enumerate() {
        if i > 0 {
            canonical.push(',');
        }
        json_string(&mut canonical, k);
        canonical.push(':');
        if *string {
            json_string(&mut canonical, v);
        } else {
            canonical.push_str(v);
        }
    }
    canonical.push('}');
    Ok((
        canonical,
        pairs.into_iter().map(|(k, v, _)| (k, v)).collect(),
    ))
}

/// `s` as a JSON string, escaped as serde_json escapes it (which it does only for the bytes the
/// scanner stops at).
fn json_string(out: &mut String, s: &str) {
    if crate::transform::jsonscan::special(s.as_bytes(), 0) < s.len() {
        out.push_str(&serde_json::Value::from(s).to_string());
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

/// Usage columns by JSON property name.
fn json_index() -> &'static PlHashMap<&'static str, usize> {
    static INDEX: std::sync::OnceLock<PlHashMap<&'static str, usize>> = std::sync::OnceLock::new();
    INDEX.get_or_init(|| {
        USAGE_COLUMNS
            .iter()
            .enumerate()
            .filter(|(_, c)| c.3 != Kind::Json)
            .map(|(i, c)| (c.1, i))
            .collect()
    })
}

const N_COLS: usize = USAGE_COLUMNS.len();

/// The position of the column named `name` (a compile error if there is none).
const fn column(name: &str) -> usize {
    let mut i = 0;
    loop {
        let (a, b) = (USAGE_COLUMNS[i].0.as_bytes(), name.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return i;
            }
        }
        i += 1;
    }
}

const INVOICE: usize = column("invoice_id");
const COST: usize = column("cost_in_billing_currency");

impl Builder {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    pub fn with_capacity(rows: usize) -> Self {
        let cols = USAGE_COLUMNS
            .iter()
            .map(|(name, _, _, k)| match k {
                Kind::Str | Kind::Json => Col::Str(StringChunkedBuilder::new((*name).into(), rows)),
                Kind::Dec => Col::Dec(Vec::with_capacity(rows)),
                Kind::Date => Col::Date(Vec::with_capacity(rows)),
                Kind::Bool => Col::Bool(Vec::with_capacity(rows)),
            })
            .collect();
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Self {
            cols,
            tags: Tags {
                offsets,
                valid: Vec::with_capacity(rows),
                keys: StringChunkedBuilder::new("key".into(), rows),
                values: StringChunkedBuilder::new("value".into(), rows),
            },
            rows: 0,
            cost_by_invoice: BTreeMap::new(),
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// One row; `get(i)` returns column i's text (already unescaped), `None` when absent. A row
    /// that fails leaves the builder unusable (the caller drops it with the error).
    fn push<'r>(
        &mut self,
        get: impl Fn(usize) -> Result<Option<Cow<'r, str>>, String>,
    ) -> Result<(), String> {
        let mut cost = None;
        let mut invoice: Option<Cow<'r, str>> = None;
        for (i, (name, _, _, kind)) in USAGE_COLUMNS.iter().enumerate() {
            let err = |e: String| format!("{name}: {e}");
            let raw = get(i).map_err(err)?;
            if i == INVOICE {
                invoice = raw.clone();
            }
            let v = raw
                .as_deref()
                .map(trim)
                .filter(|s| !s.is_empty() && *s != "null");
            match (&mut self.cols[i], kind) {
                (Col::Str(c), Kind::Json) => match v {
                    Some(t) => {
                        let (canonical, pairs) = tags_of(t).map_err(err)?;
                        c.append_value(&canonical);
                        for (k, v) in &pairs {
                            self.tags.keys.append_value(k);
                            self.tags.values.append_value(v);
                        }
                        let last = self.tags.offsets.last().copied().unwrap_or(0);
                        self.tags.offsets.push(last + pairs.len() as i64);
                        self.tags.valid.push(true);
                    }
                    None => {
                        c.append_null();
                        let last = self.tags.offsets.last().copied().unwrap_or(0);
                        self.tags.offsets.push(last);
                        self.tags.valid.push(false);
                    }
                },
                (Col::Str(c), _) => c.append_option(v),
                (Col::Dec(c), _) => {
                    let x = v.map(dec18).transpose().map_err(err)?;
                    if i == COST {
                        cost = x;
                    }
                    c.push(x)
                }
                (Col::Date(c), _) => c.push(v.map(date_days).transpose().map_err(err)?),
                (Col::Bool(c), _) => c.push(v.map(|s| s.eq_ignore_ascii_case("true") || s == "1")),
            }
            if i == COST
                && let Some(c) = cost
                && let Some(inv) = invoice
                    .as_deref()
                    .map(trim)
                    .filter(|s| !s.is_empty() && *s != "null")
            {
                match self.cost_by_invoice.get_mut(inv) {
                    Some(sum) => *sum += Decimal::from_i128_with_scale(c, SCALE as u32),
                    None => {
                        self.cost_by_invoice.insert(
                            inv.to_owned(),
                            Decimal::from_i128_with_scale(c, SCALE as u32),
                        );
                    }
                }
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Every row of a `usageDetails` JSON page, decoded in one pass straight into the columns
    /// (each property's raw text is taken as it stands, so numbers keep every digit).
    pub fn push_json_page(&mut self, what: &str, body: &[u8]) -> Result<usize, DecodeError> {
        let bad = |reason: String| DecodeError {
            what: what.to_owned(),
            reason,
        };
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(0);
        }
        // SIMD validation; the standard library's only to say where, on failure.
        let body = simdutf8::basic::from_utf8(body).map_err(|_| {
            let e = std::str::from_utf8(body).err();
            bad(format!(
                "not UTF-8: {}",
                e.map(|e| e.to_string()).unwrap_or_default()
            ))
        })?;
        page::push_page(self, body).map_err(|e| {
            if e.starts_with("row ") {
                bad(e)
            } else {
                bad(format!("not a usage page: {e}"))
            }
        })
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
            self.push(|i| Ok(pos[i].and_then(|p| rec.get(p)).map(Cow::Borrowed)))
                .map_err(|r| bad(format!("line {}: {r}", k + 2)))?;
            n += 1;
        }
        Ok(n)
    }

    /// The frame, with the partition columns first and `tags_map` (the tags as a map:
    /// `list<struct<key, value>>`, how Parquet readers see a map; `{}` is an empty list, no tags
    /// null) last.
    pub fn finish(self, billing_period: &str, billing_profile: &str) -> PolarsResult<DataFrame> {
        let h = self.rows;
        let mut columns: Vec<Column> = vec![
            Column::new_scalar(
                "billing_period".into(),
                Scalar::from(PlSmallStr::from(billing_period)),
                h,
            ),
            Column::new_scalar(
                "billing_profile".into(),
                Scalar::from(PlSmallStr::from(billing_profile)),
                h,
            ),
        ];
        for ((name, ..), col) in USAGE_COLUMNS.iter().zip(self.cols) {
            columns.push(into_column(name, col)?);
        }
        columns.push(tags_column(self.tags)?);
        DataFrame::new(h, columns)
    }
}

/// The (key, value) pairs gathered while decoding → `list<struct<key: str, value: str>>`.
fn tags_column(t: Tags) -> PolarsResult<Column> {
    use polars_arrow::array::ListArray;
    use polars_arrow::bitmap::Bitmap;
    use polars_arrow::datatypes::Field as ArrowField;
    use polars_arrow::offset::{Offsets, OffsetsBuffer};
    let keys = t.keys.finish().into_series();
    let values = t.values.finish().into_series();
    let pairs = StructChunked::from_series("item".into(), keys.len(), [keys, values].iter())?
        .rechunk()
        .into_owned();
    let item = pairs
        .chunks()
        .first()
        .cloned()
        .ok_or_else(|| polars_err!(ComputeError: "tags: no struct chunk"))?;
    let dtype = ArrowDataType::LargeList(Box::new(ArrowField::new(
        "item".into(),
        item.dtype().clone(),
        true,
    )));
    let offsets: OffsetsBuffer<i64> = Offsets::try_from(t.offsets)?.into();
    let validity = t
        .valid
        .iter()
        .any(|v| !v)
        .then(|| Bitmap::from_iter(t.valid.iter().copied()));
    let list = ListArray::<i64>::try_new(dtype, offsets, item, validity)?;
    Ok(ListChunked::with_chunk("tags_map".into(), list)
        .into_series()
        .into_column())
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
        Col::Str(b) => b.finish().with_name(name.into()).into_column(),
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
mod differential {
    //! The page scanner gives exactly what a reading through sonic-rs's lazy iterators gives, on
    //! generated pages with every value shape, escapes, unknown and repeated keys, and whitespace.
    use super::*;
    use proptest::prelude::*;

    fn reference(body: &str) -> Result<DataFrame, String> {
        let e = |e: sonic_rs::Error| e.to_string();
        let mut b = Builder::new();
        for kv in sonic_rs::to_object_iter(body) {
            let (k, v) = kv.map_err(e)?;
            if k != "value" || v.as_raw_str() == "null" {
                continue;
            }
            for row in sonic_rs::to_array_iter(v.as_raw_str()) {
                let row = row.map_err(e)?;
                let mut vals: Vec<Option<String>> = vec![None; N_COLS];
                for kv in sonic_rs::to_object_iter(row.as_raw_str()) {
                    let (k, v) = kv.map_err(e)?;
                    if k == "tags" {
                        vals[N_COLS - 1] = Some(v.as_raw_str().to_owned());
                    } else if k == "properties" {
                        for kv in sonic_rs::to_object_iter(v.as_raw_str()) {
                            let (k, v) = kv.map_err(e)?;
                            if let Some(&i) = json_index().get(k.as_ref()) {
                                vals[i] = Some(v.as_raw_str().to_owned());
                            }
                        }
                    }
                }
                b.push(|i| vals[i].as_deref().map(json_text).transpose())?;
            }
        }
        b.finish("2026-10", "P").map_err(|e| e.to_string())
    }

    fn value(kind: Kind) -> BoxedStrategy<String> {
        let text = "[a-zA-Z0-9 .é/\\\"\n\u{1F600}-]{0,12}"
            .prop_map(|t| serde_json::to_string(&t).unwrap_or_default());
        let number = "-?(0|[1-9][0-9]{0,6})(\\.[0-9]{1,12})?";
        let nested = Just(r#"{"x":[1,{"y":"\u00e9"}],"z":null}"#.to_owned());
        match kind {
            Kind::Dec => prop_oneof![
                number.prop_map(String::from),
                number.prop_map(|n| format!("\"{n}\"")),
                Just("null".into())
            ]
            .boxed(),
            Kind::Date => prop_oneof![
                Just("\"2026-10-03T00:00:00.0000000Z\"".into()),
                Just("\"2024-02-29\"".into()),
                Just("null".into()),
                Just("\"\"".into())
            ]
            .boxed(),
            Kind::Bool => prop_oneof![
                Just("true".into()),
                Just("false".into()),
                Just("null".into()),
                Just("\"True\"".into())
            ]
            .boxed(),
            Kind::Str => prop_oneof![
                text,
                number.prop_map(String::from),
                Just("null".into()),
                nested
            ]
            .boxed(),
            Kind::Json => prop_oneof![
                Just("{}".into()),
                Just(r#"{"b":"2","a":1,"b":"3"}"#.into()),
                Just(r#"{"k\u0065y":"v\"w"}"#.into()),
                Just("null".into())
            ]
            .boxed(),
        }
    }

    /// A row: known properties (some twice, some missing), unknown ones, tags, in any order.
    fn row() -> impl Strategy<Value = String> {
        let props = proptest::collection::vec((0..N_COLS + 3, any::<u32>()), 0..N_COLS + 8)
            .prop_flat_map(|picks| {
                picks
                    .into_iter()
                    .map(|(i, _)| {
                        let (key, kind) = match USAGE_COLUMNS.get(i) {
                            Some(c) if c.3 != Kind::Json => (c.1.to_owned(), c.3),
                            _ => (format!("unknown{i}"), Kind::Str),
                        };
                        value(kind).prop_map(move |v| format!("{:?}:{v}", key))
                    })
                    .collect::<Vec<_>>()
            });
        (props, value(Kind::Json), any::<bool>(), " {0,2}").prop_map(
            |(props, tags, tags_first, ws)| {
                let props = format!("{{{}}}", props.join(&format!(",{ws}")));
                let tags = format!("\"tags\":{ws}{tags}");
                let props = format!("\"properties\":{props}");
                if tags_first {
                    format!("{{\"id\":\"x\",{tags},{ws}{props}}}")
                } else {
                    format!("{{{props},{tags},\"kind\":[1,2]}}")
                }
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]
        #[test]
        fn scanner_agrees_with_sonic_rs(rows in proptest::collection::vec(row(), 0..4), ws in "[ \n\t]{0,2}") {
            let page = format!("{ws}{{\"nextLink\":null,{ws}\"value\":[{}]}}{ws}", rows.join(&format!(",{ws}")));
            let theirs = reference(&page);
            let mut b = Builder::new();
            let ours = b
                .push_json_page("p", page.as_bytes())
                .map_err(|e| e.to_string())
                .and_then(|_| b.finish("2026-10", "P").map_err(|e| e.to_string()));
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => prop_assert!(a.equals_missing(b), "{}\n{}\n{}", page, a, b),
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "{}\nours {:?}\ntheirs {:?}", page, ours.map(|d| d.height()), theirs.map(|d| d.height())),
            }
        }
    }
}

#[cfg(test)]
mod tags {
    use super::*;
    use proptest::prelude::*;

    /// The previous implementation (BTreeMap, sonic-rs lazy iterator). Tags (a JSON object) → canonical JSON text (keys sorted, the last of a repeated key wins) and the
    /// (key, value) pairs, values as text (strings unescaped, other values as canonical JSON).
    fn tags_of_before(text: &str) -> Result<(String, Vec<(String, String)>), String> {
        let bad = |e: &dyn std::fmt::Display| format!("tags are not a JSON object: {e}");
        let mut pairs: BTreeMap<String, (String, Option<serde_json::Value>)> = BTreeMap::new();
        if !text.trim_start().starts_with('{') {
            return Err(bad(&"not an object"));
        }
        for kv in sonic_rs::to_object_iter(text) {
            let (k, v) = kv.map_err(|e| bad(&e))?;
            let raw = v.as_raw_str();
            let entry = if raw.starts_with('"') {
                (json_text(raw)?.into_owned(), None)
            } else {
                let value: serde_json::Value = serde_json::from_str(raw).map_err(|e| bad(&e))?;
                (value.to_string(), Some(value))
            };
            pairs.insert(k.into_owned(), entry);
        }
        let mut canonical = String::with_capacity(text.len());
        canonical.push('{');
        for (i, (k, (s, v))) in pairs.iter().enumerate() {
            if i > 0 {
                canonical.push(',');
            }
            canonical.push_str(&serde_json::to_string(k).map_err(|e| bad(&e))?);
            canonical.push(':');
            match v {
                Some(_) => canonical.push_str(s),
                None => canonical.push_str(&serde_json::to_string(s).map_err(|e| bad(&e))?),
            }
        }
        canonical.push('}');
        Ok((
            canonical,
            pairs.into_iter().map(|(k, (s, _))| (k, s)).collect(),
        ))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
        /// Same canonical text and pairs as before, on objects with repeated and escaped keys,
        /// strings needing escapes, numbers, nested values and whitespace.
        #[test]
        fn same_as_before(pairs in proptest::collection::vec(("[abk\\\\\"é]{0,3}", prop_oneof![
            "[a-z \"\\\\/é\n]{0,6}".prop_map(|v| serde_json::to_string(&v).unwrap_or_default()),
            "-?[0-9]{1,4}(\\.[0-9]{1,3})?(e[0-9])?".prop_map(String::from),
            Just("null".to_owned()), Just("true".to_owned()), Just(r#"{"z":[1, "a"],"y":{}}"#.to_owned()),
            Just(r#""\u0041\/""#.to_owned()),
        ]), 0..6), ws in " {0,2}") {
            let text = format!("{ws}{{{}}}{ws}", pairs.iter().map(|(k, v)| format!("{}{ws}:{ws}{v}", serde_json::to_string(k).unwrap_or_default())).collect::<Vec<_>>().join(","));
            let before = tags_of_before(&text).map_err(|_| ());
            let now = tags_of(&text).map(|(c, p)| (c, p.into_iter().map(|(k, v)| (k.into_owned(), v.into_owned())).collect::<Vec<_>>())).map_err(|_| ());
            prop_assert_eq!(now, before, "{}", text);
        }
    }
}

#[cfg(test)]
mod fast_paths {
    //! The fast decimal and date parsers agree with the general ones wherever they answer.
    use super::*;
    use proptest::prelude::*;

    fn slow_dec(t: &str) -> Option<i128> {
        let d = crate::azure::models::loose::parse_decimal(t).ok()?;
        let mut d = d.round_dp_with_strategy(
            SCALE as u32,
            rust_decimal::RoundingStrategy::MidpointAwayFromZero,
        );
        d.rescale(SCALE as u32);
        (d.scale() == SCALE as u32).then(|| d.mantissa())
    }

    fn slow_date(t: &str) -> Option<i32> {
        let d = crate::azure::models::loose::parse_datetime(t)?;
        Some((d.date_naive() - epoch()).num_days() as i32)
    }

    #[test]
    fn known_values() {
        for t in [
            "0",
            "-0.0",
            "11.59545212584",
            "0.123456789012345678",
            "-150",
            "007.50",
        ] {
            assert_eq!(dec18_plain(t.as_bytes()), slow_dec(t), "{t}");
        }
        for t in ["1e-7", "+1", "1.", "1.2.3", "", "-", ".5", "12345678901"] {
            assert_eq!(
                dec18_plain(t.as_bytes()),
                None,
                "{t} takes the general path"
            );
        }
        for t in [
            "2026-10-22T00:00:00.0000000Z",
            "2026-10-22",
            "2024-02-29T23:59:59Z",
            "1970-01-01T00:00:00",
            "1969-12-31T12:00:00.5Z",
            "2099-12-31T23:59:59Z",
        ] {
            assert_eq!(date_days_utc(t.as_bytes()), slow_date(t), "{t}");
        }
        for t in [
            "2026-10-22T20:00:00-08:00",
            "2026-02-30",
            "10/22/2026",
            "2026-10-22T24:00:00Z",
        ] {
            assert_eq!(
                date_days_utc(t.as_bytes()),
                None,
                "{t} takes the general path"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]
        #[test]
        fn decimals_agree(int in 0u64..10_000_000_000, frac in "[0-9]{0,18}", neg in any::<bool>(), dot in any::<bool>()) {
            let t = format!("{}{int}{}{frac}", if neg { "-" } else { "" }, if dot || !frac.is_empty() { "." } else { "" });
            if let Some(v) = dec18_plain(t.as_bytes()) {
                prop_assert_eq!(Some(v), slow_dec(&t), "{}", t);
            }
        }

        #[test]
        fn dates_agree(y in 1900i32..2200, m in 1u32..13, d in 1u32..32, h in 0u32..24, frac in "(\\.[0-9]{1,7})?", z in any::<bool>()) {
            let t = format!("{y:04}-{m:02}-{d:02}T{h:02}:30:00{frac}{}", if z { "Z" } else { "" });
            if let Some(v) = date_days_utc(t.as_bytes()) {
                prop_assert_eq!(Some(v), slow_date(&t), "{}", t);
            } else {
                prop_assert!(chrono::NaiveDate::from_ymd_opt(y, m, d).is_none(), "{} is a real date and must take the fast path", t);
            }
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

mod page {
    //! The page grammar, `{"value": [ {"tags": {...}, "properties": {...}, …}, … ], …}`, walked
    //! with the strict [`jsonscan`](crate::transform::jsonscan) scanner: each row's known values are
    //! kept as borrowed text and the row is pushed into the [`Builder`] at its closing brace (a key
    //! given twice: the last wins). Unknown members are checked and skipped.
    use super::{Builder, Kind, N_COLS, USAGE_COLUMNS, json_index};
    use crate::transform::jsonscan::{Raw, Scanner};
    use std::borrow::Cow;

    const TAGS: usize = {
        let mut i = 0;
        while !matches!(USAGE_COLUMNS[i].3, Kind::Json) {
            i += 1;
        }
        i
    };

    /// `a == b` for short strings such as keys, inline: eight bytes at a time, then the last eight
    /// (overlapping), instead of a call to `memcmp` for every key of every row.
    #[inline]
    fn same(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        let n = a.len();
        if n != b.len() {
            return false;
        }
        if n < 8 {
            return a.iter().zip(b).all(|(x, y)| x == y);
        }
        let word = |s: &[u8], i: usize| s[i..].first_chunk::<8>().map(|c| u64::from_ne_bytes(*c));
        let mut i = 0;
        while i + 8 < n {
            if word(a, i) != word(b, i) {
                return false;
            }
            i += 8;
        }
        word(a, n - 8) == word(b, n - 8)
    }

    /// Rows pushed; errors are `row N: …` for a row that does not decode, the scanner's message
    /// (with the byte offset) for a page that is not JSON of this shape.
    pub(super) fn push_page(b: &mut Builder, body: &str) -> Result<usize, String> {
        let mut sc = Scanner::new(body);
        let mut rows = 0usize;
        let index = json_index();
        let mut vals: [Option<Raw>; N_COLS] = [None; N_COLS];
        // Azure writes one key order for every row: each property's column is first looked for
        // where the previous row had that key, and only then by name.
        let mut order: Vec<(&str, Option<usize>)> = Vec::with_capacity(N_COLS + 16);
        sc.object(0, |sc, k| {
            if k != "value" {
                return sc.skip(1);
            }
            if sc.null() {
                return Ok(());
            }
            sc.array(1, |sc| {
                vals = [None; N_COLS];
                sc.object(2, |sc, k| match k.as_ref() {
                    "properties" => {
                        let mut j = 0;
                        sc.object(3, |sc, k| {
                            let col = match (order.get(j), &k) {
                                (Some(&(seen, col)), _) if same(seen, &k) => col,
                                (_, Cow::Borrowed(key)) => {
                                    let col = index.get(*key).copied();
                                    order.truncate(j);
                                    order.push((key, col));
                                    col
                                }
                                (_, Cow::Owned(key)) => index.get(key.as_str()).copied(),
                            };
                            j += 1;
                            match col {
                                Some(i) => sc.value(4).map(|v| vals[i] = Some(v)),
                                None => sc.skip(4),
                            }
                        })
                    }
                    "tags" => sc.value(3).map(|v| vals[TAGS] = Some(v)),
                    _ => sc.skip(3),
                })?;
                rows += 1;
                let n = rows;
                b.push(|i| vals[i].map(Raw::text).transpose())
                    .map_err(|e| format!("row {n}: {e}"))
            })
        })?;
        sc.end()?;
        Ok(rows)
    }

    #[cfg(test)]
    mod tests {
        proptest::proptest! {
            #[test]
            fn same_is_equality(a in "[ab]{0,20}", c in "[ab]{0,20}", flip in proptest::option::of(0usize..20)) {
                // The same string, one with a byte changed anywhere, or another one.
                let mut b = a.clone().into_bytes();
                match flip {
                    Some(i) if i < b.len() => b[i] = if b[i] == b'a' { b'b' } else { b'a' },
                    Some(_) => {}
                    None => b = c.into_bytes(),
                }
                let b = String::from_utf8(b).unwrap();
                proptest::prop_assert_eq!(super::same(&a, &b), a == b);
            }
        }
    }
}
