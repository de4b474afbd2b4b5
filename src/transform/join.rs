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
use std::borrow::Cow;

pub const MATCHED: &str = "matched";
pub const NO_PRICE_ROW: &str = "no_price_row";
pub const MARKETPLACE: &str = "marketplace";
pub const PURCHASE_OR_REFUND: &str = "purchase_or_refund";
pub const AMBIGUOUS: &str = "ambiguous";

/// The sheet's price type for a usage row's pricing model: no allocation for the spellings Azure
/// writes (`On Demand`, `Reservation`, `Spot`, `SavingsPlan`, empty); anything else is compared
/// without whitespace and case.
fn price_type(pricing_model: Option<&str>, reservation_id: Option<&str>) -> Cow<'static, str> {
    let fixed = match pricing_model.unwrap_or("") {
        "On Demand" | "OnDemand" => Some("Consumption"),
        "Reservation" => Some("ReservedInstance"),
        "Spot" => Some("Spot"),
        "SavingsPlan" | "Savings Plan" => Some("SavingsPlan"),
        _ => None,
    };
    if let Some(t) = fixed {
        return t.into();
    }
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
        other => Cow::Owned(other.to_owned()),
    }
}

/// A usage term in the sheet's form: months `12` → `P1Y`, `36` → `P3Y`, other whole years
/// `PnY`, other months `PnM`, empty → empty, anything else upper-cased.
fn term_key(term: Option<&str>) -> Cow<'static, str> {
    match term.map(str::trim).filter(|t| !t.is_empty()) {
        None => "".into(),
        Some("12") => "P1Y".into(),
        Some("36") => "P3Y".into(),
        Some(t) => Cow::Owned(match t.parse::<u32>() {
            Ok(n) if n > 0 && n % 12 == 0 => format!("P{}Y", n / 12),
            Ok(n) => format!("P{n}M"),
            Err(_) => t.to_ascii_uppercase(),
        }),
    }
}

/// `kinds`' key for a (price type, term) pair: the type's length first, so no two pairs share a
/// key whatever characters they hold.
fn kind_key(key: &mut String, ptype: &str, term: impl Iterator<Item = char>) {
    use std::fmt::Write;
    key.clear();
    let _ = write!(key, "{}:{ptype}", ptype.len());
    key.extend(term);
}

fn decs(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<i128>>> {
    let c = df.column(name)?.as_materialized_series().clone();
    let d = c.decimal()?;
    Ok(d.physical().iter().collect())
}

fn to_dec(v: i128) -> Option<Decimal> {
    Decimal::try_from_i128_with_scale(v, SCALE as u32).ok()
}

fn from_dec(d: Decimal) -> Option<i128> {
    let mut d = d.round_dp_with_strategy(
        SCALE as u32,
        rust_decimal::RoundingStrategy::MidpointAwayFromZero,
    );
    d.rescale(SCALE as u32);
    (d.scale() == SCALE as u32).then(|| d.mantissa())
}

/// One price-sheet row as the rule reads it.
struct Price {
    /// The row's (price type, term), numbered by [`PriceIndex::kinds`].
    kind: u32,
    tier: i128,
    start: Option<i32>,
    end: Option<i32>,
    unit: Option<i128>,
    market: Option<i128>,
}

/// A meter id as a key: a GUID in its 36-character hyphenated form (what Azure writes) as its
/// number, any other id lower-cased. Two ids equal but for ASCII case get the same key, and no
/// others do (the hyphenated form is the only one read as a number).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum MeterKey {
    Guid(u128),
    Text(String),
}

impl MeterKey {
    fn guid(m: &str) -> Option<u128> {
        let b = m.as_bytes();
        (b.len() == 36 && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-'))
            .then(|| uuid::Uuid::try_parse(m).ok())
            .flatten()
            .map(|u| u.as_u128())
    }
}

/// The prices of one billing profile and period, by meter (case-insensitive), in sheet order:
/// each meter's rows lie together in one array (a probe touches the table and one run of it).
/// Built once per group and probed by every usage chunk.
pub struct PriceIndex {
    guids: PlHashMap<u128, (u32, u32)>,
    texts: PlHashMap<String, (u32, u32)>,
    /// By meter, then sheet order; `guids` and `texts` give each meter's (start, end).
    prices: Vec<Price>,
    /// Each (price type, term upper-cased) the sheet holds, by [`kind_key`]: a usage row's pair
    /// is looked up once, then candidates are told apart by number.
    kinds: PlHashMap<String, u32>,
}

impl PriceIndex {
    pub fn new(prices: &DataFrame) -> PolarsResult<Self> {
        let meter = prices.column("meter_id")?.str()?.clone();
        let ptype = prices.column("price_type")?.str()?.clone();
        let term = prices.column("term")?.str()?.clone();
        let tier = decs(prices, "tier_minimum_units")?;
        let start: Vec<Option<i32>> = prices
            .column("effective_start_date")?
            .date()?
            .physical()
            .iter()
            .collect();
        let end: Vec<Option<i32>> = prices
            .column("effective_end_date")?
            .date()?
            .physical()
            .iter()
            .collect();
        let unit = decs(prices, "unit_price")?;
        let market = decs(prices, "market_price")?;
        // Each row's meter number (order of first appearance) and price.
        let mut meters: PlHashMap<MeterKey, u32> = PlHashMap::default();
        let mut rows: Vec<(u32, Price)> = Vec::with_capacity(prices.height());
        let mut kinds: PlHashMap<String, u32> = PlHashMap::default();
        let mut key = String::new();
        for (i, ((m, pt), t)) in meter.iter().zip(ptype.iter()).zip(term.iter()).enumerate() {
            // A row without meter or price type can never be a candidate (null never equals).
            let (Some(m), Some(pt)) = (m, pt) else {
                continue;
            };
            kind_key(
                &mut key,
                pt,
                t.unwrap_or_default()
                    .chars()
                    .map(|c| c.to_ascii_uppercase()),
            );
            let next = kinds.len() as u32;
            let kind = *kinds.entry_ref(key.as_str()).or_insert(next);
            let mk = match MeterKey::guid(m) {
                Some(g) => MeterKey::Guid(g),
                None => MeterKey::Text(m.to_ascii_lowercase()),
            };
            let next = meters.len() as u32;
            let m = *meters.entry(mk).or_insert(next);
            rows.push((
                m,
                Price {
                    kind,
                    tier: tier[i].unwrap_or(0),
                    start: start[i],
                    end: end[i],
                    unit: unit[i],
                    market: market[i],
                },
            ));
        }
        // Stable: each meter's rows keep sheet order.
        rows.sort_by_key(|(m, _)| *m);
        let mut ranges = vec![(0u32, 0u32); meters.len()];
        for (i, (m, _)) in rows.iter().enumerate() {
            let r = &mut ranges[*m as usize];
            if r.1 == 0 {
                r.0 = i as u32;
            }
            r.1 = i as u32 + 1;
        }
        let (mut guids, mut texts) = (PlHashMap::default(), PlHashMap::default());
        for (k, m) in meters {
            match k {
                MeterKey::Guid(g) => guids.insert(g, ranges[m as usize]),
                MeterKey::Text(t) => texts.insert(t, ranges[m as usize]),
            };
        }
        Ok(Self {
            guids,
            texts,
            prices: rows.into_iter().map(|(_, p)| p).collect(),
            kinds,
        })
    }

    /// A meter's rows (`lower` is a scratch buffer).
    fn meter(&self, meter: &str, lower: &mut String) -> &[Price] {
        let range = match MeterKey::guid(meter) {
            Some(g) => self.guids.get(&g),
            None => {
                lower.clear();
                lower.push_str(meter);
                lower.make_ascii_lowercase();
                self.texts.get(lower.as_str())
            }
        };
        range.map_or(&[], |&(a, b)| &self.prices[a as usize..b as usize])
    }

    /// The number [`Price::kind`] gives this (price type, term), if the sheet has it.
    fn kind(&self, key: &mut String, ptype: &str, term: &str) -> Option<u32> {
        kind_key(key, ptype, term.chars());
        self.kinds.get(key.as_str()).copied()
    }

    /// (distinct unit prices at the winning tier, its unit price, its market price): the sheet
    /// rows of this meter and kind whose range holds `date` and whose tier minimum `abs_qty`
    /// reaches; the highest such tier wins, the first of its rows in sheet order gives the prices.
    fn lookup(
        &self,
        cands: &[Price],
        kind: u32,
        date: Option<i32>,
        abs_qty: Option<i128>,
    ) -> (u32, Option<i128>, Option<i128>) {
        let (Some(date), Some(q)) = (date, abs_qty) else {
            return (0, None, None);
        };
        let ok = |p: &&Price| {
            p.kind == kind
                && p.start.is_some_and(|s| s <= date)
                && p.end.is_none_or(|e| e >= date)
                && p.tier <= q
        };
        let Some(best) = cands.iter().filter(ok).map(|p| p.tier).max() else {
            return (0, None, None);
        };
        let mut first: Option<&Price> = None;
        // Unit prices other than the first one's (allocated only when there are any).
        let mut others: Vec<Option<i128>> = Vec::new();
        for p in cands.iter().filter(ok).filter(|p| p.tier == best) {
            match first {
                None => first = Some(p),
                Some(f) if p.unit != f.unit && !others.contains(&p.unit) => others.push(p.unit),
                Some(_) => {}
            }
        }
        (
            1 + others.len() as u32,
            first.and_then(|p| p.unit),
            first.and_then(|p| p.market),
        )
    }
}

/// `usage` + `prices` (one billing profile and period) → `costs`.
pub fn join(usage: &DataFrame, prices: &DataFrame) -> PolarsResult<DataFrame> {
    join_indexed(usage, &PriceIndex::new(prices)?)
}

/// `usage` (any slice of one billing profile and period) priced by that group's [`PriceIndex`].
pub fn join_indexed(usage: &DataFrame, index: &PriceIndex) -> PolarsResult<DataFrame> {
    let n = usage.height();
    let s = |name: &str| -> PolarsResult<StringChunked> { Ok(usage.column(name)?.str()?.clone()) };
    let (meter, pm, rid, term, charge, publisher) = (
        s("meter_id")?,
        s("pricing_model")?,
        s("reservation_id")?,
        s("term")?,
        s("charge_type")?,
        s("publisher_type")?,
    );
    let qty = decs(usage, "quantity")?;
    let fx = decs(usage, "exchange_rate")?;
    let date: Vec<Option<i32>> = usage.column("date")?.date()?.physical().iter().collect();
    let mut status = Vec::with_capacity(n);
    let mut reason: Vec<Option<String>> = Vec::with_capacity(n);
    let (mut list_u, mut con_u, mut list_c, mut con_c) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut mkey, mut kkey) = (String::new(), String::new());
    let mut kinds: Vec<(Cow<str>, Cow<str>, Option<u32>)> = Vec::with_capacity(8);
    let rows = meter
        .iter()
        .zip(pm.iter())
        .zip(rid.iter())
        .zip(term.iter())
        .zip(charge.iter())
        .zip(publisher.iter());
    for (i, (((((meter, pm), rid), term), charge), publisher)) in rows.enumerate() {
        let ptype = price_type(pm, rid);
        let (s, why): (&str, Option<String>) =
            if charge.is_some_and(|c| !c.eq_ignore_ascii_case("Usage")) {
                (
                    PURCHASE_OR_REFUND,
                    Some(format!(
                        "charge type {} is priced per order, not by the price sheet",
                        charge.unwrap_or("")
                    )),
                )
            } else if publisher.is_some_and(|p| p.eq_ignore_ascii_case("Marketplace"))
                || meter.is_none()
            {
                (
                    MARKETPLACE,
                    Some("third-party charge: not on a Microsoft price sheet".into()),
                )
            } else {
                let term = term_key(term);
                // Rows mostly share a few (price type, term) pairs: the last ones are kept.
                let kind = match kinds.iter().find(|(p, t, _)| *p == ptype && *t == term) {
                    Some(&(_, _, k)) => k,
                    None => {
                        let k = index.kind(&mut kkey, &ptype, &term);
                        if kinds.len() == 8 {
                            kinds.remove(0);
                        }
                        kinds.push((ptype.clone(), term, k));
                        k
                    }
                };
                let found = match kind {
                    Some(kind) => index.lookup(
                        index.meter(meter.unwrap_or(""), &mut mkey),
                        kind,
                        date[i],
                        qty[i].map(i128::abs),
                    ),
                    None => (0, None, None),
                };
                let (np, unit, market) = found;
                if np == 0 {
                    (
                        NO_PRICE_ROW,
                        Some(format!(
                            "no {ptype} price row for this meter, term and date"
                        )),
                    )
                } else if np > 1 {
                    (
                        AMBIGUOUS,
                        Some(format!("{np} different unit prices at the same tier")),
                    )
                } else {
                    // An ambiguous row gets no price: picking one of several would be a guess.
                    list_u.push(market);
                    con_u.push(unit);
                    (MATCHED, None)
                }
            };
        if s != MATCHED {
            list_u.push(None);
            con_u.push(None);
        }
        let consumption = ptype == "Consumption";
        let cost = |u: Option<i128>| -> Option<i128> {
            if !(s == MATCHED && consumption) {
                return None;
            }
            let one = 1_000_000_000_000_000_000;
            let priced = to_dec(qty[i]?)?.checked_mul(to_dec(u?)?)?;
            // × 1 changes nothing (the product's digits are kept exactly, then rounded once).
            match fx[i].unwrap_or(one) {
                f if f == one => from_dec(priced),
                f => from_dec(priced.checked_mul(to_dec(f)?)?),
            }
        };
        list_c.push(cost(list_u[i]));
        con_c.push(cost(con_u[i]));
        status.push(s);
        reason.push(why);
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

/// The columns a coverage row is grouped by, in output order.
const COVERAGE_KEYS: [&str; 6] = [
    "billing_period",
    "billing_profile",
    "price_match",
    "meter_id",
    "meter_name",
    "billing_currency",
];

/// Matched / unmatched by reason and meter: rows and effective cost (unordered: chunks of a group
/// are folded by [`merge_coverage`], which orders the result). One pass with a hash table of
/// borrowed keys (null is a key like any other; a group's cost is the sum of its non-null costs,
/// 0 when it has none, as polars sums).
pub fn coverage(costs: &DataFrame) -> PolarsResult<DataFrame> {
    let keys = coverage_keys(costs)?;
    let cost = costs
        .column("effective_cost")?
        .decimal()?
        .physical()
        .clone();
    let mut groups = Groups::default();
    fold(&mut groups, &keys, cost.iter().map(|c| (1, c)))?;
    coverage_frame(groups.len(), groups.into_iter())
}

/// Coverage groups: keys in [`COVERAGE_KEYS`] order → (rows, effective cost).
type Groups<'a> = PlIndexMap<[Option<&'a str>; 6], (u64, i128)>;

/// The [`COVERAGE_KEYS`] columns of `df`.
fn coverage_keys(df: &DataFrame) -> PolarsResult<Vec<StringChunked>> {
    COVERAGE_KEYS
        .iter()
        .map(|k| Ok(df.column(k)?.str()?.clone()))
        .collect()
}

/// Adds each row — its keys read from `keys`, its (row count, cost) from `rows` — to its group.
fn fold<'a>(
    groups: &mut Groups<'a>,
    keys: &'a [StringChunked],
    rows: impl Iterator<Item = (u64, Option<i128>)>,
) -> PolarsResult<()> {
    let mut iters: Vec<_> = keys.iter().map(|k| k.iter()).collect();
    for (r, c) in rows {
        let mut key = [None; 6];
        for (k, it) in key.iter_mut().zip(iters.iter_mut()) {
            *k = it.next().flatten();
        }
        let g = groups.entry(key).or_insert((0, 0));
        g.0 += r;
        g.1 = g
            .1
            .checked_add(c.unwrap_or(0))
            .ok_or_else(|| polars_err!(ComputeError: "price coverage: effective cost overflows"))?;
    }
    Ok(())
}

/// A coverage frame from its groups (keys in [`COVERAGE_KEYS`] order, rows, effective cost).
fn coverage_frame<'a>(
    n: usize,
    groups: impl Iterator<Item = ([Option<&'a str>; 6], (u64, i128))>,
) -> PolarsResult<DataFrame> {
    let mut keys: [Vec<Option<&str>>; 6] = Default::default();
    let (mut rows, mut cost) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (k, (r, c)) in groups {
        for (col, v) in keys.iter_mut().zip(k) {
            col.push(v);
        }
        rows.push(r);
        cost.push(Some(c));
    }
    let mut cols: Vec<Column> = keys
        .into_iter()
        .zip(COVERAGE_KEYS)
        .map(|(v, name)| Column::new(name.into(), v))
        .collect();
    cols.push(Column::new("rows".into(), rows));
    cols.push(decimal_column("effective_cost", cost)?);
    DataFrame::new(n, cols)
}

/// Coverage frames of several chunks of one group → the group's coverage, ordered by price match,
/// meter id, meter name, currency, period, profile (nulls last). One hash pass over borrowed keys
/// and a sort of the groups (a polars group-by and sort cost more than the rest of the coverage).
pub fn merge_coverage(parts: Vec<DataFrame>) -> PolarsResult<DataFrame> {
    let cols = parts
        .iter()
        .map(|p| {
            let rows = p.column("rows")?.u64()?.clone();
            let cost = p.column("effective_cost")?.decimal()?.physical().clone();
            Ok((coverage_keys(p)?, rows, cost))
        })
        .collect::<PolarsResult<Vec<_>>>()?;
    let mut groups = Groups::default();
    for (keys, rows, cost) in &cols {
        let rows = rows
            .iter()
            .zip(cost.iter())
            .map(|(r, c)| (r.unwrap_or(0), c));
        fold(&mut groups, keys, rows)?;
    }
    // Sort keys: price_match, meter_id, meter_name, billing_currency, billing_period,
    // billing_profile; a null after every value (`None < Some` reversed).
    const ORDER: [usize; 6] = [2, 3, 4, 5, 0, 1];
    let mut sorted: Vec<_> = groups.into_iter().collect();
    sorted.sort_unstable_by(|(a, _), (b, _)| {
        ORDER
            .iter()
            .map(|&i| match (a[i], b[i]) {
                (Some(x), Some(y)) => x.cmp(y),
                (x, y) => y.is_some().cmp(&x.is_some()),
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    coverage_frame(sorted.len(), sorted.into_iter())
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
                .map(|v| v.map(|v| to_dec(v).unwrap_or_default().normalize().to_string()))
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
        // The spellings taken without allocating read as their normalized forms do.
        for (fast, slow) in [
            ("On Demand", " on  demand "),
            ("Reservation", "RESERVATION"),
            ("Spot", "s p o t"),
            ("SavingsPlan", "Savings\u{a0}plan"),
            ("Savings Plan", "savingsplan"),
        ] {
            assert!(matches!(price_type(Some(fast), None), Cow::Borrowed(_)));
            assert_eq!(price_type(Some(fast), None), price_type(Some(slow), None));
        }
        assert_eq!(price_type(Some(" "), Some("r")), "ReservedInstance");
        assert_eq!(price_type(Some("Other Model"), None), "othermodel");
        let key = |p: &str, t: &str| {
            let mut k = String::new();
            kind_key(&mut k, p, t.chars());
            k
        };
        assert_ne!(key("a:b", ""), key("a", ":b"));
        assert_eq!(term_key(Some(" 24 ")), "P2Y");
        // Meters: GUIDs by number, whatever their case; other forms as lower-cased text.
        let g = "6F1D3A0E-1B2C-4D5E-8F90-A1B2C3D4E5F6";
        assert!(MeterKey::guid(g).is_some());
        assert_eq!(MeterKey::guid(g), MeterKey::guid(&g.to_ascii_lowercase()));
        assert_eq!(MeterKey::guid(&format!("{{{g}}}")), None);
        assert_eq!(MeterKey::guid(&g.replace('-', "")), None);
        let mut p = PriceBuilder::new();
        p.push_csv(
            "sheet",
            format!("MeterId,UnitPrice,EffectiveStartDate,PriceType\n{g},1,2026-09-01,Consumption\n{{{g}}},2,2026-09-01,Consumption\nAbC,3,2026-09-01,Consumption\n{g},4,2026-09-01,Spot\n").as_bytes(),
        )
        .unwrap();
        let index = PriceIndex::new(&p.finish("2026-09", "P").unwrap()).unwrap();
        let units = |m: &str| -> Vec<Option<i128>> {
            index
                .meter(m, &mut String::new())
                .iter()
                .map(|p| p.unit)
                .collect()
        };
        let e18 = 10i128.pow(18);
        assert_eq!(units(&g.to_ascii_lowercase()), [Some(e18), Some(4 * e18)]);
        assert_eq!(
            units(&format!("{{{}}}", g.to_ascii_lowercase())),
            [Some(2 * e18)]
        );
        assert_eq!(units("abc"), [Some(3 * e18)]);
        assert_eq!(units("ab"), []);
        assert_eq!(
            (
                term_key(Some("12")),
                term_key(Some("36")),
                term_key(Some("1")),
                term_key(None)
            ),
            ("P1Y".into(), "P3Y".into(), "P1M".into(), "".into())
        );
    }

    proptest::proptest! {
        /// Costs skip the multiplication by an exchange rate of exactly 1: the same digits as
        /// multiplying by it.
        #[test]
        fn times_one_changes_nothing(q in -(10i128.pow(28))..10i128.pow(28), u in 0i128..10i128.pow(26)) {
            let one = 1_000_000_000_000_000_000i128;
            let p = to_dec(q).zip(to_dec(u)).and_then(|(q, u)| q.checked_mul(u));
            let with = p.and_then(|p| p.checked_mul(to_dec(one)?)).and_then(from_dec);
            proptest::prop_assert_eq!(p.and_then(from_dec), with);
        }
    }

    /// The polars group-by that [`coverage`] replaced: the reference it must agree with.
    fn coverage_before(costs: &DataFrame) -> PolarsResult<DataFrame> {
        costs
            .clone()
            .lazy()
            .group_by(COVERAGE_KEYS.map(col))
            .agg([
                len().cast(DataType::UInt64).alias("rows"),
                col("effective_cost").sum().alias("effective_cost"),
            ])
            .collect()
    }

    /// The previous merge, a polars group-by and sort: the reference for [`merge_coverage`].
    fn merge_before(parts: Vec<DataFrame>) -> PolarsResult<DataFrame> {
        let lazy: Vec<LazyFrame> = parts.into_iter().map(DataFrame::lazy).collect();
        concat(lazy, UnionArgs::default())?
            .group_by(COVERAGE_KEYS.map(col))
            .agg([col("rows").sum(), col("effective_cost").sum()])
            .sort(
                [
                    "price_match",
                    "meter_id",
                    "meter_name",
                    "billing_currency",
                    "billing_period",
                    "billing_profile",
                ],
                SortMultipleOptions::default().with_nulls_last(true),
            )
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 200, ..Default::default() })]
        /// Same groups, rows and sums as polars' group-by, nulls included, on several chunks;
        /// merged and ordered as polars' group-by and sort did.
        #[test]
        fn coverage_agrees_with_polars(
            rows in proptest::collection::vec(
                (proptest::collection::vec(proptest::option::of(0u8..3), 6), proptest::option::of(-5i128..5)),
                1..60,
            ),
            split in 0usize..60,
        ) {
            let text = |i: usize, v: Option<u8>| v.map(|v| format!("{}{v}", COVERAGE_KEYS[i]));
            let mut cols: Vec<Column> = (0..6)
                .map(|i| Column::new(COVERAGE_KEYS[i].into(), rows.iter().map(|(k, _)| text(i, k[i])).collect::<Vec<_>>()))
                .collect();
            cols.push(decimal_column("effective_cost", rows.iter().map(|(_, c)| c.map(|c| c * 10i128.pow(17))).collect()).unwrap());
            let mut df = DataFrame::new(rows.len(), cols).unwrap();
            // Two chunks, as a chunk of stacked pages can be.
            let at = split.min(rows.len());
            let (a, b) = (df.slice(0, at), df.slice(at as i64, rows.len() - at));
            // A chunk folded with another (here: its first part again).
            let a2 = a.clone();
            df = a;
            df.vstack_mut_owned(b).unwrap();
            let ours = merge_coverage(vec![coverage(&a2).unwrap(), coverage(&df).unwrap()]).unwrap();
            let theirs = merge_before(vec![coverage_before(&a2).unwrap(), coverage_before(&df).unwrap()]).unwrap();
            proptest::prop_assert_eq!(ours.schema(), theirs.schema());
            proptest::prop_assert!(ours.equals_missing(&theirs), "{ours}\n{theirs}");
            let (x, y) = (coverage(&df).unwrap(), coverage_before(&df).unwrap());
            proptest::prop_assert_eq!(x.schema(), y.schema());
        }
    }
}
