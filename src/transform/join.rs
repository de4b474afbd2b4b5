//! The join of usage to prices, and what it costs.
//!
//! The rule (derived from the contract's field definitions, `fields.md` §D; documented in the README):
//!
//! 1. `charge_type` other than `Usage` (purchases, refunds, …) → `purchase_or_refund`: one-time
//!    charges are priced per order, not by the sheet.
//! 2. `publisher_type` `Marketplace`, or no `meter_id` → `marketplace`: third-party charges are not
//!    on a Microsoft price sheet.
//! 3. Otherwise the candidates are the sheet rows of the same billing profile with the same meter
//!    (case-insensitive), the same price type — from `pricing_model`: `On Demand` → `Consumption`,
//!    `Reservation` (or any row with a reservation id) → `ReservedInstance`, `Spot` → `Spot`,
//!    `SavingsPlan` → `SavingsPlan` — and the same term (usage months `12` ↔ sheet `P1Y`, `36` ↔
//!    `P3Y`, empty ↔ empty), whose effective range contains the usage date, and whose tier minimum
//!    the quantity (absolute) reaches. Of those, the tier with the highest minimum wins.
//! 4. No candidate → `no_price_row`; more than one distinct unit price at the winning tier →
//!    `ambiguous`; else `matched`.
//!
//! Output per usage row: `list_unit_price` (sheet `MarketPrice`), `contracted_unit_price` (sheet
//! `UnitPrice`), `list_cost` and `contracted_cost` = quantity × unit price × exchange rate (billing
//! currency, Consumption prices only: reservation sheet prices are whole-term prices), and
//! `effective_cost` = what was charged (`cost_in_billing_currency`); `price_match` and
//! `price_match_reason` say why.

use super::usage::{SCALE, decimal_column};
use polars::prelude::*;
use rust_decimal::Decimal;

pub const MATCHED: &str = "matched";
pub const NO_PRICE_ROW: &str = "no_price_row";
pub const MARKETPLACE: &str = "marketplace";
pub const PURCHASE_OR_REFUND: &str = "purchase_or_refund";
pub const AMBIGUOUS: &str = "ambiguous";

fn price_type(pricing_model: Option<&str>, reservation_id: Option<&str>) -> String {
    let m: String = pricing_model
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    match m.as_str() {
        "reservation" => "ReservedInstance".into(),
        "spot" => "Spot".into(),
        "savingsplan" => "SavingsPlan".into(),
        "" if reservation_id.is_some() => "ReservedInstance".into(),
        "" | "ondemand" => "Consumption".into(),
        other => other.to_owned(),
    }
}

fn term_key(term: Option<&str>) -> String {
    match term.map(str::trim).filter(|t| !t.is_empty()) {
        None => String::new(),
        Some(t) => match t.parse::<u32>() {
            Ok(n) if n > 0 && n % 12 == 0 => format!("P{}Y", n / 12),
            Ok(n) => format!("P{n}M"),
            Err(_) => t.to_ascii_uppercase(),
        },
    }
}

fn strs(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<String>>> {
    Ok(df
        .column(name)?
        .str()?
        .iter()
        .map(|s| s.map(str::to_owned))
        .collect())
}

fn decs(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<i128>>> {
    let c = df.column(name)?.as_materialized_series().clone();
    let d = c.decimal()?;
    Ok(d.physical().iter().collect())
}

fn to_dec(v: i128) -> Decimal {
    Decimal::from_i128_with_scale(v, SCALE as u32)
}

fn from_dec(d: Decimal) -> Option<i128> {
    let mut d = d.round_dp_with_strategy(
        SCALE as u32,
        rust_decimal::RoundingStrategy::MidpointAwayFromZero,
    );
    d.rescale(SCALE as u32);
    (d.scale() == SCALE as u32).then(|| d.mantissa())
}

/// `usage` + `prices` (one billing profile and period) → `costs`.
pub fn join(usage: &DataFrame, prices: &DataFrame) -> PolarsResult<DataFrame> {
    let n = usage.height();
    // Keys prepared row by row (string rules are clearer in Rust than as expressions).
    let meter = strs(usage, "meter_id")?;
    let pm = strs(usage, "pricing_model")?;
    let rid = strs(usage, "reservation_id")?;
    let term = strs(usage, "term")?;
    let qty = decs(usage, "quantity")?;
    let ptype: Vec<String> = (0..n)
        .map(|i| price_type(pm[i].as_deref(), rid[i].as_deref()))
        .collect();
    let tkey: Vec<String> = term.iter().map(|t| term_key(t.as_deref())).collect();
    let mkey: Vec<Option<String>> = meter
        .iter()
        .map(|m| m.as_ref().map(|s| s.to_ascii_lowercase()))
        .collect();
    let abs_qty: Vec<Option<i128>> = qty.iter().map(|q| q.map(i128::abs)).collect();
    let keys = DataFrame::new(
        n,
        vec![
            Column::new("_row".into(), (0..n as u32).collect::<Vec<u32>>()),
            Column::new("_meter".into(), mkey),
            Column::new("_ptype".into(), ptype),
            Column::new("_term".into(), tkey),
            usage.column("date")?.clone().with_name("_date".into()),
            decimal_column("_abs_qty", abs_qty)?,
        ],
    )?;
    let p_meter: Vec<Option<String>> = strs(prices, "meter_id")?
        .into_iter()
        .map(|m| m.map(|s| s.to_ascii_lowercase()))
        .collect();
    let p_term: Vec<String> = strs(prices, "term")?
        .into_iter()
        .map(|t| t.unwrap_or_default().to_ascii_uppercase())
        .collect();
    let p = DataFrame::new(
        prices.height(),
        vec![
            Column::new("_meter".into(), p_meter),
            prices
                .column("price_type")?
                .clone()
                .with_name("_ptype".into()),
            Column::new("_term".into(), p_term),
            prices.column("tier_minimum_units")?.clone(),
            prices.column("effective_start_date")?.clone(),
            prices.column("effective_end_date")?.clone(),
            prices.column("unit_price")?.clone(),
            prices.column("market_price")?.clone(),
        ],
    )?;
    let on = [col("_meter"), col("_ptype"), col("_term")];
    let cand = keys
        .lazy()
        .join(p.lazy(), on.clone(), on, JoinArgs::new(JoinType::Inner))
        .filter(
            col("effective_start_date")
                .lt_eq(col("_date"))
                .and(
                    col("effective_end_date")
                        .is_null()
                        .or(col("effective_end_date").gt_eq(col("_date"))),
                )
                .and(
                    col("tier_minimum_units")
                        .fill_null(lit(0))
                        .lt_eq(col("_abs_qty")),
                ),
        )
        .with_column(col("tier_minimum_units").fill_null(lit(0)).alias("_tier"));
    let best = cand
        .clone()
        .group_by([col("_row")])
        .agg([col("_tier").max().alias("_best")]);
    let picked = cand
        .join(
            best,
            [col("_row")],
            [col("_row")],
            JoinArgs::new(JoinType::Inner),
        )
        .filter(col("_tier").eq(col("_best")))
        .group_by([col("_row")])
        .agg([
            col("unit_price").n_unique().alias("_prices"),
            col("unit_price").first().alias("_unit"),
            col("market_price").first().alias("_market"),
        ])
        .collect()?;
    // Back to row order.
    let mut n_prices = vec![0u32; n];
    let mut unit = vec![None; n];
    let mut market = vec![None; n];
    let rows: Vec<Option<u32>> = picked.column("_row")?.u32()?.iter().collect();
    let np: Vec<Option<u32>> = picked
        .column("_prices")?
        .cast(&DataType::UInt32)?
        .u32()?
        .iter()
        .collect();
    let up = decs(&picked, "_unit")?;
    let mp = decs(&picked, "_market")?;
    for (k, r) in rows.iter().enumerate() {
        if let Some(r) = r {
            let r = *r as usize;
            n_prices[r] = np[k].unwrap_or(0);
            unit[r] = up[k];
            market[r] = mp[k];
        }
    }
    let charge = strs(usage, "charge_type")?;
    let publisher = strs(usage, "publisher_type")?;
    let fx = decs(usage, "exchange_rate")?;
    let mut status = Vec::with_capacity(n);
    let mut reason = Vec::with_capacity(n);
    let (mut list_u, mut con_u, mut list_c, mut con_c) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for i in 0..n {
        let (s, why): (&str, String) = if charge[i]
            .as_deref()
            .is_some_and(|c| !c.eq_ignore_ascii_case("Usage"))
        {
            (
                PURCHASE_OR_REFUND,
                format!(
                    "charge type {} is priced per order, not by the price sheet",
                    charge[i].as_deref().unwrap_or("")
                ),
            )
        } else if publisher[i]
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case("Marketplace"))
            || meter[i].is_none()
        {
            (
                MARKETPLACE,
                "third-party charge: not on a Microsoft price sheet".into(),
            )
        } else if n_prices[i] == 0 {
            (
                NO_PRICE_ROW,
                format!(
                    "no {} price row for this meter, term and date",
                    price_type(pm[i].as_deref(), rid[i].as_deref())
                ),
            )
        } else if n_prices[i] > 1 {
            (
                AMBIGUOUS,
                format!("{} different unit prices at the same tier", n_prices[i]),
            )
        } else {
            (MATCHED, String::new())
        };
        // An ambiguous row gets no price: picking one of several would be a guess.
        let priced = s == MATCHED;
        let (lu, cu) = if priced {
            (market[i], unit[i])
        } else {
            (None, None)
        };
        let consumption = price_type(pm[i].as_deref(), rid[i].as_deref()) == "Consumption";
        let cost = |u: Option<i128>| -> Option<i128> {
            if !(priced && consumption) {
                return None;
            }
            from_dec(
                to_dec(qty[i]?) * to_dec(u?) * to_dec(fx[i].unwrap_or(1_000_000_000_000_000_000)),
            )
        };
        list_c.push(cost(lu));
        con_c.push(cost(cu));
        list_u.push(lu);
        con_u.push(cu);
        status.push(s);
        reason.push(if why.is_empty() { None } else { Some(why) });
    }
    let mut out = usage.clone();
    out.with_column(decimal_column("list_unit_price", list_u)?)?;
    out.with_column(decimal_column("contracted_unit_price", con_u)?)?;
    out.with_column(decimal_column("list_cost", list_c)?)?;
    out.with_column(decimal_column("contracted_cost", con_c)?)?;
    out.with_column(
        usage
            .column("cost_in_billing_currency")?
            .clone()
            .with_name("effective_cost".into()),
    )?;
    out.with_column(Column::new("price_match".into(), status))?;
    out.with_column(Column::new("price_match_reason".into(), reason))?;
    Ok(out)
}

/// Matched / unmatched by reason and meter: rows and effective cost.
pub fn coverage(costs: &DataFrame) -> PolarsResult<DataFrame> {
    costs
        .clone()
        .lazy()
        .group_by([
            col("billing_period"),
            col("billing_profile"),
            col("price_match"),
            col("meter_id"),
            col("meter_name"),
            col("billing_currency"),
        ])
        .agg([
            len().cast(DataType::UInt64).alias("rows"),
            col("effective_cost").sum().alias("effective_cost"),
        ])
        .sort(
            ["price_match", "meter_id"],
            SortMultipleOptions::default().with_nulls_last(true),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::prices::PriceBuilder;
    use crate::transform::usage::Builder;

    const PRICES: &str = "MeterId,UnitPrice,MarketPrice,EffectiveStartDate,EffectiveEndDate,PriceType,Term,TierMinimumUnits
tiered,1.00,1.20,2026-09-01,2099-12-31,Consumption,,0
tiered,0.80,1.00,2026-09-01,2099-12-31,Consumption,,100
change,2.00,2.50,2026-09-01,2026-09-14,Consumption,,0
change,2.10,2.60,2026-09-15,2026-09-30,Consumption,,0
VM,0.50,0.60,2026-09-01,2099-12-31,Consumption,,0
vm,2628.00,2628.00,2026-09-01,2099-12-31,ReservedInstance,P1Y,0
dup,1.00,1.00,2026-09-01,2099-12-31,Consumption,,0
dup,1.10,1.10,2026-09-01,2099-12-31,Consumption,,0
";

    #[allow(clippy::too_many_arguments)] // one argument per usage field the rule reads
    fn row(
        meter: &str,
        date: &str,
        qty: &str,
        model: &str,
        charge: &str,
        publisher: &str,
        term: &str,
        fx: &str,
    ) -> String {
        format!(
            r#"{{"properties":{{"meterId":"{meter}","date":"{date}T00:00:00.0000000Z","quantity":{qty},"pricingModel":"{model}","chargeType":"{charge}","publisherType":"{publisher}","term":"{term}","exchangeRatePricingToBilling":{fx},"costInBillingCurrency":1}}}}"#
        )
    }

    /// Every branch of the rule, with explicit expected values.
    #[test]
    fn every_branch_with_explicit_values() {
        let rows = [
            row(
                "tiered",
                "2026-09-03",
                "50",
                "On Demand",
                "Usage",
                "Microsoft",
                "",
                "1",
            ), // tier 0
            row(
                "tiered",
                "2026-09-03",
                "150",
                "On Demand",
                "Usage",
                "Microsoft",
                "",
                "0.9",
            ), // tier 100, FX
            row(
                "change",
                "2026-09-14",
                "10",
                "On Demand",
                "Usage",
                "Microsoft",
                "",
                "1",
            ), // old price, last day
            row(
                "change",
                "2026-09-15",
                "10",
                "On Demand",
                "Usage",
                "Microsoft",
                "",
                "1",
            ), // new price, first day
            row(
                "vm",
                "2026-09-03",
                "5",
                "Reservation",
                "Usage",
                "Microsoft",
                "12",
                "1",
            ), // RI 12 months ↔ P1Y
            row(
                "vm",
                "2026-09-03",
                "5",
                "Spot",
                "Usage",
                "Microsoft",
                "",
                "1",
            ), // no Spot price
            row(
                "dup",
                "2026-09-03",
                "5",
                "On Demand",
                "Usage",
                "Microsoft",
                "",
                "1",
            ), // two prices, one tier
            row("", "2026-09-03", "1", "", "Usage", "Marketplace", "", "1"), // third party
            row(
                "vm",
                "2026-09-03",
                "1",
                "Reservation",
                "Purchase",
                "Microsoft",
                "12",
                "1",
            ), // one-time purchase
            row(
                "nowhere",
                "2026-09-03",
                "1",
                "On Demand",
                "Usage",
                "Microsoft",
                "",
                "1",
            ), // unknown meter
            row(
                "tiered",
                "2026-09-03",
                "-150",
                "On Demand",
                "Usage",
                "Microsoft",
                "",
                "1",
            ), // negative: tier by |qty|
            row(
                "change",
                "2026-10-01",
                "1",
                "On Demand",
                "Usage",
                "Microsoft",
                "",
                "1",
            ), // after the window
        ];
        let mut u = Builder::new();
        u.push_json_page(
            "t",
            format!(r#"{{"value":[{}]}}"#, rows.join(",")).as_bytes(),
        )
        .unwrap();
        let usage = u.finish("2026-09", "P").unwrap();
        let mut p = PriceBuilder::new();
        p.push_csv("p", PRICES.as_bytes()).unwrap();
        let out = join(&usage, &p.finish("2026-09", "P").unwrap()).unwrap();
        let status: Vec<String> = out
            .column("price_match")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .map(|s| s.unwrap().to_owned())
            .collect();
        let dec = |c: &str| -> Vec<Option<String>> {
            decs(&out, c)
                .unwrap()
                .into_iter()
                .map(|v| v.map(|v| to_dec(v).normalize().to_string()))
                .collect()
        };
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let o = |v: &[Option<&str>]| v.iter().map(|x| x.map(str::to_owned)).collect::<Vec<_>>();
        assert_eq!(
            status,
            s(&[
                MATCHED,
                MATCHED,
                MATCHED,
                MATCHED,
                MATCHED,
                NO_PRICE_ROW,
                AMBIGUOUS,
                MARKETPLACE,
                PURCHASE_OR_REFUND,
                NO_PRICE_ROW,
                MATCHED,
                NO_PRICE_ROW
            ])
        );
        assert_eq!(
            dec("contracted_unit_price"),
            o(&[
                Some("1"),
                Some("0.8"),
                Some("2"),
                Some("2.1"),
                Some("2628"),
                None,
                None,
                None,
                None,
                None,
                Some("0.8"),
                None
            ])
        );
        assert_eq!(
            dec("list_unit_price"),
            o(&[
                Some("1.2"),
                Some("1"),
                Some("2.5"),
                Some("2.6"),
                Some("2628"),
                None,
                None,
                None,
                None,
                None,
                Some("1"),
                None
            ])
        );
        // quantity × price × FX; a reservation's whole-term price gives no per-row cost
        assert_eq!(
            dec("contracted_cost"),
            o(&[
                Some("50"),
                Some("108"),
                Some("20"),
                Some("21"),
                None,
                None,
                None,
                None,
                None,
                None,
                Some("-120"),
                None
            ])
        );
        assert_eq!(
            dec("list_cost"),
            o(&[
                Some("60"),
                Some("135"),
                Some("25"),
                Some("26"),
                None,
                None,
                None,
                None,
                None,
                None,
                Some("-150"),
                None
            ])
        );
        assert_eq!(dec("effective_cost")[0].as_deref(), Some("1"));
    }

    #[test]
    fn keys() {
        assert_eq!(price_type(Some("On Demand"), None), "Consumption");
        assert_eq!(price_type(Some("OnDemand"), None), "Consumption");
        assert_eq!(price_type(None, Some("r")), "ReservedInstance");
        assert_eq!(price_type(Some("Spot"), None), "Spot");
        assert_eq!(
            (
                term_key(Some("12")),
                term_key(Some("36")),
                term_key(Some("1")),
                term_key(None)
            ),
            ("P1Y".into(), "P3Y".into(), "P1M".into(), String::new())
        );
    }
}
