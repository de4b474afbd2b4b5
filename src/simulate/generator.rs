//! A deterministic partner world, generated from a seed and a scale.
//!
//! Nothing large is stored: customers, subscriptions and meters are small tables; every usage row is a
//! pure function of `(seed, invoice, row index)`, so a page is generated when it is asked for and
//! 10 M rows cost no memory. The same functions give the truth tests compare against: counts, exact
//! decimal sums, invoice totals to the cent and the price match each row should get.

use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use std::fmt::Write as _;

/// splitmix64: fast, well-mixed, and stable across platforms and releases.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn h3(seed: u64, a: u64, b: u64) -> u64 {
    mix(mix(seed ^ mix(a)) ^ b)
}

pub fn guid(x: u64) -> String {
    let y = mix(x ^ 0xA5A5);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        x >> 32,
        (x >> 16) & 0xffff,
        0x4000 | (x & 0x0fff),
        0x8000 | ((y >> 48) & 0x3fff),
        y & 0xffff_ffff_ffff
    )
}

fn code(x: u64, len: usize) -> String {
    const A: &[u8] = b"0123456789BCDFGHJKLMNPQRSTVWXZ";
    let mut v = x;
    (0..len)
        .map(|_| {
            let c = A[(v % A.len() as u64) as usize] as char;
            v = (v / A.len() as u64) ^ (mix(v) >> 40);
            c
        })
        .collect()
}

/// How big the world is.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scale {
    pub customers: u32,
    pub subscriptions_per_customer: u32,
    /// Usage rows of each invoice (one invoice per billing profile and closed month).
    pub rows_per_invoice: u64,
    /// Closed (invoiced) months before the open month.
    pub months: u32,
    pub meters: u32,
    /// Billing profile names with `:`, `%`, dots, spaces and unicode, to test that nothing
    /// taken from the API can change a path's shape.
    #[serde(default)]
    pub hostile_names: bool,
}

impl Default for Scale {
    fn default() -> Self {
        Self {
            customers: 6,
            subscriptions_per_customer: 2,
            rows_per_invoice: 1_200,
            months: 2,
            meters: 40,
            hostile_names: false,
        }
    }
}

impl Scale {
    /// Named presets for the CLI.
    pub fn preset(name: &str) -> Option<Self> {
        Some(match name {
            "tiny" => Self {
                customers: 4,
                subscriptions_per_customer: 2,
                rows_per_invoice: 150,
                months: 2,
                meters: 30,
                hostile_names: false,
            },
            "demo" | "small" => Self::default(),
            "medium" => Self {
                customers: 50,
                subscriptions_per_customer: 3,
                rows_per_invoice: 50_000,
                months: 2,
                meters: 400,
                hostile_names: false,
            },
            "large" => Self {
                customers: 500,
                subscriptions_per_customer: 4,
                rows_per_invoice: 500_000,
                months: 2,
                meters: 4_000,
                hostile_names: false,
            },
            _ => return None,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Profile {
    pub name: String,
    pub display_name: String,
    pub currency: &'static str,
}

#[derive(Clone, Debug)]
pub struct Cust {
    pub id: String,
    pub tenant_id: String,
    pub display_name: String,
    pub profile: usize,
    pub reseller: Option<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct Sub {
    pub id: String,
    pub display_name: String,
    pub customer: usize,
    pub resource_groups: [String; 2],
}

/// Why a price is the way it is in the sheet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeterKind {
    Flat,
    /// Tiers at 0, 100 and 1000 units.
    Tiered,
    /// A new price from the 15th of every month.
    MidMonthChange,
    /// Has a one-year reservation price.
    Reservable,
    /// Not on the price sheet at all.
    Unpriced,
    /// Two conflicting consumption rows on the sheet.
    Ambiguous,
}

#[derive(Clone, Debug)]
pub struct Meter {
    pub id: String,
    pub name: String,
    pub category: &'static str,
    pub sub_category: String,
    pub service_family: &'static str,
    pub region: &'static str,
    pub unit: &'static str,
    pub product_id: String,
    pub sku_id: String,
    pub product: String,
    pub consumed_service: &'static str,
    /// List price in USD (pricing currency), 6 decimals.
    pub market: Decimal,
    pub kind: MeterKind,
}

/// One price row of the sheet.
#[derive(Clone, Debug)]
pub struct PriceRow {
    pub meter: usize,
    pub profile: usize,
    pub price_type: &'static str,
    pub term: &'static str,
    pub tier_min: Decimal,
    pub start: NaiveDate,
    pub end: NaiveDate,
    pub unit_price: Decimal,
    pub market_price: Decimal,
    pub base_price: Decimal,
}

#[derive(Clone, Debug)]
pub struct Invoice {
    pub name: String,
    pub profile: usize,
    pub month: NaiveDate,
    pub rows: u64,
}

/// What the join should say about a row (issue 3 tests use it as the truth).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedMatch {
    Matched,
    NoPriceRow,
    Marketplace,
    PurchaseOrRefund,
    Ambiguous,
}

/// One usage row, fully decided; serialized to JSON or CSV by `wire`.
#[derive(Clone, Debug)]
pub struct UsageRow {
    pub index: u64,
    pub name: String,
    pub date: NaiveDate,
    pub profile: usize,
    pub sub: usize,
    pub meter: Option<usize>,
    pub quantity: Decimal,
    pub unit_price: Decimal,
    pub effective_price: Decimal,
    pub market_price: Decimal,
    pub cost_pricing: Decimal,
    pub cost_billing: Decimal,
    pub payg_cost_billing: Decimal,
    pub fx: Decimal,
    pub charge_type: &'static str,
    pub pricing_model: &'static str,
    pub frequency: &'static str,
    pub term: &'static str,
    pub publisher_type: &'static str,
    pub publisher_name: &'static str,
    pub reservation: Option<(String, String)>,
    pub invoice_name: String,
    pub expected: ExpectedMatch,
}

const CATEGORIES: &[(&str, &str, &str, &str)] = &[
    ("Virtual Machines", "Compute", "1 Hour", "Microsoft.Compute"),
    ("Storage", "Storage", "1 GB/Month", "Microsoft.Storage"),
    ("Bandwidth", "Networking", "1 GB", "Microsoft.Network"),
    ("Azure App Service", "Compute", "1 Hour", "Microsoft.Web"),
    ("SQL Database", "Databases", "1 Hour", "Microsoft.Sql"),
    (
        "Azure Cosmos DB",
        "Databases",
        "100 RU/s/Hour",
        "Microsoft.DocumentDB",
    ),
    (
        "Log Analytics",
        "Management and Governance",
        "1 GB",
        "Microsoft.OperationalInsights",
    ),
    ("Functions", "Compute", "10K", "Microsoft.Web"),
];
const REGIONS: &[&str] = &[
    "US East",
    "EU West",
    "EU North",
    "US West 2",
    "UK South",
    "Japan East",
];
const COMPANIES: &[&str] = &[
    "Contoso",
    "Fabrikam",
    "Northwind",
    "Tailspin",
    "Woodgrove",
    "Litware",
    "Adatum",
    "Proseware",
    "Wingtip",
    "Alpine Ski House",
];
const SUFFIXES: &[&str] = &["Ltd", "GmbH", "SAS", "Inc.", "BV", "AB", "Oy", "S.p.A."];

/// The whole world; small and immutable.
#[derive(Clone, Debug)]
pub struct World {
    pub seed: u64,
    pub scale: Scale,
    pub tenant: String,
    pub account_name: String,
    pub account_display: String,
    pub profiles: Vec<Profile>,
    pub customers: Vec<Cust>,
    pub subs: Vec<Sub>,
    pub subs_by_profile: Vec<Vec<usize>>,
    pub meters: Vec<Meter>,
    pub prices: Vec<PriceRow>,
    /// Closed months, oldest first.
    pub months: Vec<NaiveDate>,
    pub open_month: NaiveDate,
    pub invoices: Vec<Invoice>,
    /// Indices of the reservable meters.
    reservable: Vec<usize>,
    /// Indices into `prices` by (profile, meter), so a row finds its prices without a scan.
    price_index: std::collections::HashMap<(usize, usize), Vec<usize>>,
}

pub fn month_end(m: NaiveDate) -> NaiveDate {
    next_month(m).pred_opt().unwrap_or(m)
}

pub fn next_month(m: NaiveDate) -> NaiveDate {
    let (y, mo) = if m.month() == 12 {
        (m.year() + 1, 1)
    } else {
        (m.year(), m.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, mo, 1).unwrap_or(m)
}

fn prev_month(m: NaiveDate) -> NaiveDate {
    let (y, mo) = if m.month() == 1 {
        (m.year() - 1, 12)
    } else {
        (m.year(), m.month() - 1)
    };
    NaiveDate::from_ymd_opt(y, mo, 1).unwrap_or(m)
}

fn dec(mantissa: u64, scale: u32) -> Decimal {
    Decimal::new(mantissa as i64, scale)
}

impl World {
    pub fn new(seed: u64, scale: Scale, open_month: NaiveDate) -> Self {
        let open_month = open_month.with_day(1).unwrap_or(open_month);
        let s = |a: u64, b: u64| h3(seed, a, b);
        let tenant = guid(s(1, 0));
        // MPA account name: <guid>:<guid>_YYYY-MM-DD, with the colon.
        let account_name = format!("{}:{}_2019-05-31", guid(s(2, 0)), guid(s(2, 1)));
        let profiles = vec![
            Profile {
                name: format!(
                    "{}-{}-{}-{}",
                    code(s(3, 0), 4),
                    code(s(3, 1), 4),
                    code(s(3, 2), 3),
                    code(s(3, 3), 3)
                ),
                display_name: "Partner Billing USD".into(),
                currency: "USD",
            },
            Profile {
                name: format!(
                    "{}-{}-{}-{}",
                    code(s(3, 4), 4),
                    code(s(3, 5), 4),
                    code(s(3, 6), 3),
                    code(s(3, 7), 3)
                ),
                display_name: "Partner Billing EUR".into(),
                currency: "EUR",
            },
        ];
        let mut profiles = profiles;
        if scale.hostile_names {
            // Still valid in an ARM path segment (no `/`), but every character a path must not trust.
            for (i, p) in profiles.iter_mut().enumerate() {
                p.name = format!("{}:ü€ 100%..x{i}", p.name);
            }
        }
        let customers: Vec<Cust> = (0..scale.customers as u64)
            .map(|i| {
                let x = s(4, i);
                let name = format!(
                    "{} {} {}",
                    COMPANIES[(x % COMPANIES.len() as u64) as usize],
                    i + 1,
                    SUFFIXES[((x >> 8) % SUFFIXES.len() as u64) as usize]
                );
                Cust {
                    id: guid(x),
                    tenant_id: guid(s(5, i)),
                    display_name: name,
                    profile: (i % 2) as usize,
                    reseller: (x % 3 == 0).then(|| {
                        (
                            format!("{}", 1_000_000 + x % 8_999_999),
                            format!("Reseller {}", x % 17),
                        )
                    }),
                }
            })
            .collect();
        let mut subs = Vec::new();
        let mut subs_by_profile = vec![Vec::new(); profiles.len()];
        for (ci, c) in customers.iter().enumerate() {
            for j in 0..scale.subscriptions_per_customer as u64 {
                let x = s(6, ci as u64 * 1000 + j);
                subs_by_profile[c.profile].push(subs.len());
                subs.push(Sub {
                    id: guid(x),
                    display_name: format!(
                        "{} {}",
                        ["Production", "Development", "Analytics", "Shared"][(j % 4) as usize],
                        ci + 1
                    ),
                    customer: ci,
                    resource_groups: [
                        format!("rg-app-{}", x % 97),
                        format!("rg-data-{}", (x >> 7) % 97),
                    ],
                });
            }
        }
        let meters: Vec<Meter> = (0..scale.meters.max(8) as u64)
            .map(|j| {
                let x = s(7, j);
                let (category, family, unit, service) =
                    CATEGORIES[(j % CATEGORIES.len() as u64) as usize];
                let kind = match j % 10 {
                    _ if j + 1 == scale.meters.max(8) as u64 => MeterKind::Ambiguous,
                    _ if j + 2 == scale.meters.max(8) as u64 => MeterKind::Unpriced,
                    1 | 6 => MeterKind::Tiered,
                    3 => MeterKind::MidMonthChange,
                    0 | 5 => MeterKind::Reservable,
                    _ => MeterKind::Flat,
                };
                let kind = if kind == MeterKind::Reservable && category != "Virtual Machines" {
                    MeterKind::Flat
                } else {
                    kind
                };
                let size = [
                    "D2s v5",
                    "E4s v5",
                    "B2ms",
                    "F8s v2",
                    "LRS Data Stored",
                    "Hot ZRS",
                    "Standard",
                    "P1v3",
                ][((x >> 12) % 8) as usize];
                let region = REGIONS[((x >> 20) % REGIONS.len() as u64) as usize];
                let product_id = code(x, 12);
                Meter {
                    id: guid(x),
                    name: format!(
                        "{size} {}",
                        if unit == "1 Hour" {
                            "Compute Hours"
                        } else {
                            "Usage"
                        }
                    ),
                    category,
                    sub_category: format!("{category} {size}"),
                    service_family: family,
                    region,
                    unit,
                    sku_id: code(x >> 3, 4),
                    product: format!("{category} {size} - {region}"),
                    product_id,
                    consumed_service: service,
                    market: dec(1_000 + x % 2_500_000, 6),
                    kind,
                }
            })
            .collect();
        let mut months: Vec<NaiveDate> = Vec::new();
        let mut m = open_month;
        for _ in 0..scale.months {
            m = prev_month(m);
            months.insert(0, m);
        }
        let first = months.first().copied().unwrap_or(open_month);
        let far = NaiveDate::from_ymd_opt(2099, 12, 31).unwrap_or(first);
        let mut prices = Vec::new();
        for (p, _) in profiles.iter().enumerate() {
            let discount = [dec(5, 2), dec(12, 2)][p];
            for (mi, me) in meters.iter().enumerate() {
                let contract = |market: Decimal| (market * (Decimal::ONE - discount)).round_dp(6);
                let row = |tier_min: Decimal, start, end, market: Decimal| PriceRow {
                    meter: mi,
                    profile: p,
                    price_type: "Consumption",
                    term: "",
                    tier_min,
                    start,
                    end,
                    unit_price: contract(market),
                    market_price: market,
                    base_price: market,
                };
                match me.kind {
                    MeterKind::Unpriced => {}
                    MeterKind::Flat => prices.push(row(Decimal::ZERO, first, far, me.market)),
                    MeterKind::Tiered => {
                        for (t, f) in [(0u64, 100u64), (100, 90), (1000, 80)] {
                            prices.push(row(
                                Decimal::from(t),
                                first,
                                far,
                                (me.market * dec(f, 2)).round_dp(6),
                            ));
                        }
                    }
                    MeterKind::MidMonthChange => {
                        let mut mm = first;
                        while mm <= open_month {
                            let mid = mm.with_day(15).unwrap_or(mm);
                            prices.push(row(
                                Decimal::ZERO,
                                mm,
                                mid.pred_opt().unwrap_or(mid),
                                me.market,
                            ));
                            prices.push(row(
                                Decimal::ZERO,
                                mid,
                                month_end(mm),
                                (me.market * dec(105, 2)).round_dp(6),
                            ));
                            mm = next_month(mm);
                        }
                    }
                    MeterKind::Reservable => {
                        prices.push(row(Decimal::ZERO, first, far, me.market));
                        let term_price = (me.market * Decimal::from(8760) * dec(60, 2)).round_dp(2);
                        prices.push(PriceRow {
                            price_type: "ReservedInstance",
                            term: "P1Y",
                            unit_price: term_price,
                            market_price: term_price,
                            base_price: term_price,
                            ..row(Decimal::ZERO, first, far, me.market)
                        });
                    }
                    MeterKind::Ambiguous => {
                        prices.push(row(Decimal::ZERO, first, far, me.market));
                        prices.push(row(
                            Decimal::ZERO,
                            first,
                            far,
                            (me.market * dec(110, 2)).round_dp(6),
                        ));
                    }
                }
            }
        }
        let mut invoices = Vec::new();
        for (mi, m) in months.iter().enumerate() {
            for (p, subs) in subs_by_profile.iter().enumerate() {
                let x = s(8, (mi * 10 + p) as u64);
                invoices.push(Invoice {
                    name: format!("G{:09}", x % 1_000_000_000),
                    profile: p,
                    month: *m,
                    rows: if subs.is_empty() {
                        0
                    } else {
                        scale.rows_per_invoice
                    },
                });
            }
        }
        let reservable: Vec<usize> = meters
            .iter()
            .enumerate()
            .filter(|(_, m)| m.kind == MeterKind::Reservable)
            .map(|(i, _)| i)
            .collect();
        let mut price_index: std::collections::HashMap<(usize, usize), Vec<usize>> =
            std::collections::HashMap::new();
        for (i, r) in prices.iter().enumerate() {
            price_index.entry((r.profile, r.meter)).or_default().push(i);
        }
        Self {
            seed,
            scale,
            tenant,
            account_name,
            account_display: "Contoso Partner Holdings".into(),
            profiles,
            customers,
            subs,
            subs_by_profile,
            meters,
            prices,
            months,
            open_month,
            invoices,
            reservable,
            price_index,
        }
    }

    /// Pricing→billing exchange rate of a profile in a month (USD→EUR moves a little every month).
    pub fn fx(&self, profile: usize, month: NaiveDate) -> Decimal {
        if self.profiles[profile].currency == "USD" {
            return Decimal::ONE;
        }
        let x = h3(
            self.seed,
            9,
            (month.year() * 12 + month.month() as i32) as u64,
        );
        dec(8_900 + x % 400, 4)
    }

    /// Rows in the open month of a profile so far (about half a month), for a `version` of restatement.
    pub fn open_rows(&self, profile: usize) -> u64 {
        if self.subs_by_profile[profile].is_empty() {
            0
        } else {
            self.scale.rows_per_invoice / 2
        }
    }

    /// The price rows a (profile, meter, type, term, date, quantity) finds, following the join rule:
    /// same profile, meter, price type and term, date inside the effective range, and the tier with the
    /// highest minimum that the quantity reaches.
    pub fn prices_for(
        &self,
        profile: usize,
        meter: usize,
        price_type: &str,
        term: &str,
        date: NaiveDate,
        qty: Decimal,
    ) -> Vec<&PriceRow> {
        let cands: Vec<&PriceRow> = self
            .price_index
            .get(&(profile, meter))
            .into_iter()
            .flatten()
            .map(|&i| &self.prices[i])
            .filter(|r| {
                r.profile == profile
                    && r.meter == meter
                    && r.price_type == price_type
                    && r.term == term
                    && r.start <= date
                    && date <= r.end
                    && r.tier_min <= qty.abs()
            })
            .collect();
        let best = cands.iter().map(|r| r.tier_min).max();
        cands
            .into_iter()
            .filter(|r| Some(r.tier_min) == best)
            .collect()
    }

    /// Usage row `i` of invoice `inv` (closed month) — or of the open month of profile `inv - invoices.len()`.
    pub fn usage_row(&self, inv: usize, i: u64, version: u64) -> UsageRow {
        let (profile, month, invoice_name, salt) = match self.invoices.get(inv) {
            Some(v) => (v.profile, v.month, v.name.clone(), inv as u64),
            None => {
                let p = inv - self.invoices.len();
                (
                    p,
                    self.open_month,
                    String::new(),
                    1_000_000 + p as u64 * 1000 + version,
                )
            }
        };
        let x = h3(self.seed, 100 + salt, i);
        let y = mix(x);
        let subs = &self.subs_by_profile[profile];
        let sub = subs[(x % subs.len() as u64) as usize];
        let days = if invoice_name.is_empty() {
            14
        } else {
            month_end(month).day() as u64
        };
        let date = month
            .with_day(1 + ((x >> 20) % days) as u32)
            .unwrap_or(month);
        let fx = self.fx(profile, month);
        let roll = (x >> 8) % 1000;
        let n_meters = self.meters.len() as u64;
        let mut row = UsageRow {
            index: i,
            name: guid(y),
            date,
            profile,
            sub,
            meter: None,
            quantity: Decimal::ZERO,
            unit_price: Decimal::ZERO,
            effective_price: Decimal::ZERO,
            market_price: Decimal::ZERO,
            cost_pricing: Decimal::ZERO,
            cost_billing: Decimal::ZERO,
            payg_cost_billing: Decimal::ZERO,
            fx,
            charge_type: "Usage",
            pricing_model: "On Demand",
            frequency: "UsageBased",
            term: "",
            publisher_type: "Microsoft",
            publisher_name: "Microsoft",
            reservation: None,
            invoice_name,
            expected: ExpectedMatch::Matched,
        };
        let reservable = &self.reservable;
        let finish = |r: &mut UsageRow| {
            r.cost_billing = r.cost_pricing * r.fx;
            r.payg_cost_billing = (r.quantity * r.market_price) * r.fx;
        };
        if roll < 30 {
            // Marketplace: third party, no meter, never on the price sheet.
            row.publisher_type = "Marketplace";
            row.publisher_name = "Contoso Software";
            row.frequency = "Recurring";
            row.quantity = Decimal::ONE;
            row.unit_price = dec(1_000 + y % 90_000, 2);
            row.effective_price = row.unit_price;
            row.market_price = row.unit_price;
            row.cost_pricing = row.unit_price;
            row.expected = ExpectedMatch::Marketplace;
        } else if roll < 50 && !reservable.is_empty() {
            // Reservation purchase (or its refund): one-time, priced per term.
            let m = reservable[(y % reservable.len() as u64) as usize];
            let refund = roll >= 45;
            row.meter = Some(m);
            row.charge_type = if refund { "Refund" } else { "Purchase" };
            row.pricing_model = "Reservation";
            row.frequency = "OneTime";
            row.term = "12";
            row.quantity = if refund { -Decimal::ONE } else { Decimal::ONE };
            let term_price = (self.meters[m].market * Decimal::from(8760) * dec(60, 2)).round_dp(2);
            row.unit_price = term_price;
            row.effective_price = term_price;
            row.market_price = term_price;
            row.cost_pricing = row.quantity * term_price;
            row.reservation = Some((
                guid(h3(self.seed, 11, m as u64)),
                format!("RI_{}_1y", self.meters[m].name.replace(' ', "_")),
            ));
            row.expected = ExpectedMatch::PurchaseOrRefund;
        } else if roll < 120 && !reservable.is_empty() {
            // Usage covered by a reservation: zero actual cost, matches the RI price row.
            let m = reservable[(y % reservable.len() as u64) as usize];
            row.meter = Some(m);
            row.pricing_model = "Reservation";
            row.term = "12";
            row.quantity = dec(1 + y % 240_000, 4);
            row.market_price = self.meters[m].market;
            row.reservation = Some((
                guid(h3(self.seed, 11, m as u64)),
                format!("RI_{}_1y", self.meters[m].name.replace(' ', "_")),
            ));
            row.expected = if self
                .prices_for(profile, m, "ReservedInstance", "P1Y", date, row.quantity)
                .len()
                == 1
            {
                ExpectedMatch::Matched
            } else {
                ExpectedMatch::NoPriceRow
            };
        } else {
            // Consumption, On Demand or Spot.
            let m = ((y >> 5) % n_meters) as usize;
            let meter = &self.meters[m];
            row.meter = Some(m);
            let spot = roll < 140 && meter.category == "Virtual Machines";
            let big = meter.kind == MeterKind::Tiered && !(y >> 40).is_multiple_of(3);
            row.quantity = if big {
                dec(1 + (y >> 9) % 20_000_000, 4)
            } else {
                dec(1 + (y >> 9) % 240_000, 4)
            };
            if spot {
                row.pricing_model = "Spot";
                row.unit_price = (meter.market * dec(30, 2)).round_dp(6);
                row.effective_price = row.unit_price;
                row.market_price = meter.market;
                row.cost_pricing = row.quantity * row.unit_price;
                row.expected = ExpectedMatch::NoPriceRow;
            } else {
                let found = self.prices_for(profile, m, "Consumption", "", date, row.quantity);
                match found.as_slice() {
                    [one] => {
                        row.unit_price = one.unit_price;
                        row.effective_price = one.unit_price;
                        row.market_price = one.market_price;
                        row.expected = ExpectedMatch::Matched;
                    }
                    [] => {
                        row.unit_price = (meter.market * dec(93, 2)).round_dp(6);
                        row.effective_price = row.unit_price;
                        row.market_price = meter.market;
                        row.expected = ExpectedMatch::NoPriceRow;
                    }
                    [a, ..] => {
                        row.unit_price = a.unit_price;
                        row.effective_price = a.unit_price;
                        row.market_price = a.market_price;
                        row.expected = ExpectedMatch::Ambiguous;
                    }
                }
                row.cost_pricing = row.quantity * row.effective_price;
            }
        }
        finish(&mut row);
        row
    }

    /// Exact sums over an invoice's rows (or an open month's), computed by generating every row.
    pub fn totals(&self, inv: usize, version: u64) -> Totals {
        let n = self
            .invoices
            .get(inv)
            .map(|v| v.rows)
            .unwrap_or_else(|| self.open_rows(inv - self.invoices.len()));
        let mut t = Totals::default();
        for i in 0..n {
            let r = self.usage_row(inv, i, version);
            t.rows += 1;
            t.cost_billing += r.cost_billing;
            t.cost_pricing += r.cost_pricing;
            t.quantity += r.quantity;
            *t.by_match.entry(r.expected).or_default() += 1;
        }
        t
    }

    pub fn sub_customer(&self, sub: usize) -> &Cust {
        &self.customers[self.subs[sub].customer]
    }

    pub fn profile_id(&self, p: usize) -> String {
        format!(
            "/providers/Microsoft.Billing/billingAccounts/{}/billingProfiles/{}",
            self.account_name, self.profiles[p].name
        )
    }

    pub fn invoice_id(&self, inv: usize) -> String {
        format!(
            "{}/invoices/{}",
            self.profile_id(self.invoices[inv].profile),
            self.invoices[inv].name
        )
    }

    /// `additionalInfo` text for a row, as Azure sends it: JSON inside a string.
    pub fn additional_info(&self, r: &UsageRow) -> String {
        let mut s = String::new();
        let m = r.meter.map(|m| &self.meters[m]);
        match m {
            Some(m) if m.category == "Virtual Machines" => {
                let _ = write!(
                    s,
                    "{{  \"UsageType\": \"ComputeHR\",  \"ImageType\": \"Canonical\",  \"ServiceType\": \"Standard_{}\",  \"VMName\": null,  \"VMProperties\": null,  \"VCPUs\": {},  \"CPUs\": 0}}",
                    m.name.split(' ').next().unwrap_or("D2"),
                    2 + r.index % 6
                );
            }
            _ => {}
        }
        s
    }
}

/// Exact sums of a set of usage rows.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Totals {
    pub rows: u64,
    pub cost_billing: Decimal,
    pub cost_pricing: Decimal,
    pub quantity: Decimal,
    pub by_match: std::collections::BTreeMap<ExpectedMatch, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> World {
        World::new(
            7,
            Scale::default(),
            NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
        )
    }

    #[test]
    fn deterministic_and_shaped_like_azure() {
        let a = world();
        let b = world();
        assert_eq!(a.account_name, b.account_name);
        assert!(a.account_name.contains(':') && a.account_name.ends_with("_2019-05-31"));
        let ra = a.usage_row(1, 77, 0);
        let rb = b.usage_row(1, 77, 0);
        assert_eq!((ra.name, ra.cost_billing), (rb.name, rb.cost_billing));
        assert_eq!(a.invoices.len(), 4);
        assert!(
            a.invoices
                .iter()
                .all(|i| i.name.len() == 10 && i.name.chars().all(|c| c.is_ascii_alphanumeric()))
        );
    }

    #[test]
    fn every_kind_of_row_occurs_and_costs_are_exact() {
        let w = world();
        let t = w.totals(1, 0);
        assert_eq!(t.rows, w.scale.rows_per_invoice);
        for k in [
            ExpectedMatch::Matched,
            ExpectedMatch::NoPriceRow,
            ExpectedMatch::Marketplace,
            ExpectedMatch::PurchaseOrRefund,
            ExpectedMatch::Ambiguous,
        ] {
            assert!(
                t.by_match.get(&k).copied().unwrap_or(0) > 0,
                "{k:?} missing: {:?}",
                t.by_match
            );
        }
        // EUR profile: billing = pricing × fx, exactly
        assert_eq!(
            t.cost_billing,
            (0..t.rows)
                .map(|i| {
                    let r = w.usage_row(1, i, 0);
                    r.cost_pricing * r.fx
                })
                .sum()
        );
        assert_ne!(w.fx(1, w.months[0]), Decimal::ONE);
    }

    #[test]
    fn tiers_and_mid_month_change() {
        let w = world();
        let tiered = w
            .meters
            .iter()
            .position(|m| m.kind == MeterKind::Tiered)
            .unwrap();
        let d = w.months[0].with_day(3).unwrap();
        let p =
            |q: i64| w.prices_for(0, tiered, "Consumption", "", d, Decimal::from(q))[0].tier_min;
        assert_eq!(
            (p(5), p(100), p(999), p(5000)),
            (
                Decimal::ZERO,
                Decimal::from(100),
                Decimal::from(100),
                Decimal::from(1000)
            )
        );
        let ch = w
            .meters
            .iter()
            .position(|m| m.kind == MeterKind::MidMonthChange)
            .unwrap();
        let early = w.prices_for(
            0,
            ch,
            "Consumption",
            "",
            w.months[0].with_day(14).unwrap(),
            Decimal::ONE,
        )[0]
        .unit_price;
        let late = w.prices_for(
            0,
            ch,
            "Consumption",
            "",
            w.months[0].with_day(15).unwrap(),
            Decimal::ONE,
        )[0]
        .unit_price;
        assert!(late > early);
    }
}
