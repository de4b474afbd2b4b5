//! The pipeline file (`pipelines/*.toml`), in two phases: [`RawPipeline`] is what serde reads
//! (unknown keys are errors), [`Pipeline::from_toml`] validates all of it at once and reports every
//! problem with its key and how to fix it.

use crate::azure::api::{PriceSheetApi, UsageApi};
use crate::config::ConfigError;
use chrono::{Datelike, NaiveDate};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    pub name: Option<String>,
    pub source: RawSource,
    #[serde(default)]
    pub scope: RawScope,
    pub periods: RawPeriods,
    #[serde(default)]
    pub extract: RawExtract,
    pub landing: RawLocation,
    pub output: RawOutput,
    /// Budgets as code may live in the pipeline file; `costlake budgets plan|apply FILE` reads them.
    #[serde(default)]
    pub budgets: Option<toml::Value>,
    #[serde(default)]
    pub billing_account: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// `simulator` or `azure`.
    pub kind: String,
    // azure
    pub cloud: Option<String>,
    pub management_endpoint: Option<String>,
    pub authority_host: Option<String>,
    // simulator
    pub seed: Option<u64>,
    pub scale: Option<String>,
    pub customers: Option<u32>,
    pub rows_per_invoice: Option<u64>,
    /// Meters in the simulated catalogue (the price sheet has about 1.6 rows per meter).
    pub meters: Option<u32>,
    /// Wall-clock milliseconds the simulator adds to every request (extract benchmarks).
    pub latency_ms: Option<u64>,
    pub open_month: Option<String>,
    pub time_scale: Option<f64>,
    pub page_size: Option<u32>,
    /// How many times the simulator has restated the open month (its rows change with each).
    pub restatements: Option<u64>,
    /// Probability of an injected fault per request (every family, every kind unless narrowed).
    pub fault_rate: Option<f64>,
    /// Fault kinds to inject (default: all), e.g. ["reset", "stall"].
    pub faults: Option<Vec<String>>,
    /// Endpoint families to inject into (default: all), e.g. ["usage", "blob"].
    pub fault_families: Option<Vec<String>>,
    /// Seed of the fault dice (default 1).
    pub fault_seed: Option<u64>,
    /// Billing profile names full of characters a path must not trust (tests).
    pub hostile_names: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawScope {
    #[serde(default)]
    pub billing_accounts: Vec<String>,
    #[serde(default)]
    pub customers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeriods {
    pub from: Option<String>,
    pub to: Option<String>,
    pub last_months: Option<u32>,
    #[serde(default = "one")]
    pub lag_months: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawExtract {
    pub usage_api: Option<String>,
    pub usage_api_version: Option<String>,
    pub price_sheet_api: Option<String>,
    pub concurrency: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocation {
    pub location: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    pub location: String,
    #[serde(default)]
    pub datasets: Vec<String>,
    pub partition_by: Option<Vec<String>>,
    pub row_group_size: Option<usize>,
    pub zstd_level: Option<i32>,
}

/// Which usage API extract uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UsageSource {
    UsageDetails,
    CostDetails,
}

#[derive(Clone, Debug)]
pub enum Source {
    Azure {
        cloud: Option<String>,
        management_endpoint: Option<String>,
        authority_host: Option<String>,
    },
    Simulator {
        seed: u64,
        scale: crate::simulate::Scale,
        open_month: Option<NaiveDate>,
        time_scale: f64,
        page_size: Option<u32>,
        latency_ms: u64,
        restatements: u64,
        faults: Option<crate::simulate::FaultPlan>,
    },
}

pub const DATASETS: &[&str] = &[
    "billing_accounts",
    "billing_profiles",
    "customers",
    "subscriptions",
    "invoices",
    "usage",
    "prices",
    "costs",
    "price_coverage",
    "reconciliation",
];
pub const PARTITION_KEYS: &[&str] = &["billing_period", "billing_profile"];

/// A validated pipeline.
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub name: String,
    pub file: String,
    pub source: Source,
    pub billing_accounts: Vec<String>,
    pub customers: Vec<String>,
    pub periods: Periods,
    pub usage_source: UsageSource,
    pub usage_api: UsageApi,
    pub price_sheet_api: PriceSheetApi,
    pub concurrency: usize,
    pub landing: String,
    pub output: String,
    pub datasets: Vec<String>,
    pub partition_by: Vec<String>,
    pub row_group_size: usize,
    pub zstd_level: i32,
}

#[derive(Clone, Debug)]
pub enum Periods {
    Range {
        from: NaiveDate,
        to: NaiveDate,
        lag_months: u32,
    },
    Last {
        months: u32,
        lag_months: u32,
    },
}

impl Periods {
    /// Months covered, as first days, given the current (open) month.
    pub fn months(&self, current: NaiveDate) -> Vec<NaiveDate> {
        let (from, to) = match self {
            Periods::Range { from, to, .. } => (*from, *to),
            Periods::Last { months, .. } => (add_months(current, -(*months as i32 - 1)), current),
        };
        let mut out = Vec::new();
        let mut m = from;
        while m <= to {
            out.push(m);
            m = add_months(m, 1);
        }
        out
    }
    pub fn lag_months(&self) -> u32 {
        match self {
            Periods::Range { lag_months, .. } | Periods::Last { lag_months, .. } => *lag_months,
        }
    }
}

pub fn add_months(m: NaiveDate, n: i32) -> NaiveDate {
    let total = m.year() * 12 + m.month0() as i32 + n;
    NaiveDate::from_ymd_opt(total.div_euclid(12), total.rem_euclid(12) as u32 + 1, 1).unwrap_or(m)
}

fn month(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(&format!("{}-01", s.trim()), "%Y-%m-%d").ok()
}

/// Keys that would hold a secret; refused with the environment variable to use instead.
const SECRET_KEYS: &[(&str, &str)] = &[
    ("client_secret", "AZURE_CLIENT_SECRET"),
    ("secret", "AZURE_CLIENT_SECRET"),
    ("password", "AZURE_CLIENT_SECRET"),
    ("access_token", "AZURE_FEDERATED_TOKEN_FILE or az login"),
    ("token", "AZURE_FEDERATED_TOKEN_FILE or az login"),
    ("account_key", "AZURE_STORAGE_ACCOUNT_KEY"),
    ("storage_key", "AZURE_STORAGE_ACCOUNT_KEY"),
    ("sas", "AZURE_STORAGE_SAS_KEY"),
    ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
];

fn find_secrets(v: &toml::Value, path: &str, out: &mut Vec<String>) {
    if let toml::Value::Table(t) = v {
        for (k, val) in t {
            let here = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            if let Some((_, env)) = SECRET_KEYS.iter().find(|(s, _)| k.eq_ignore_ascii_case(s)) {
                out.push(format!("{here}: secrets are never read from a pipeline file; remove it and set {env} in the environment"));
            }
            find_secrets(val, &here, out);
        }
    }
}

impl Pipeline {
    pub fn load(path: &str) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Invalid(format!("{path}: cannot read: {e}")))?;
        Self::from_toml(path, &text)
    }

    /// Parses and validates; the error lists every problem, one per line, each with its key.
    pub fn from_toml(file: &str, text: &str) -> Result<Self, ConfigError> {
        let fail = |errs: Vec<String>| {
            ConfigError::Invalid(format!(
                "{file}: {} problem(s):\n  - {}",
                errs.len(),
                errs.join("\n  - ")
            ))
        };
        let value: toml::Value = toml::from_str(text)
            .map_err(|e| fail(vec![e.to_string().trim().replace('\n', "\n    ")]))?;
        let mut errs = Vec::new();
        find_secrets(&value, "", &mut errs);
        if !errs.is_empty() {
            return Err(fail(errs));
        }
        let raw: RawPipeline = toml::from_str(text)
            .map_err(|e| fail(vec![e.to_string().trim().replace('\n', "\n    ")]))?;
        let source = match raw.source.kind.as_str() {
            "simulator" => {
                let scale_name = raw.source.scale.clone().unwrap_or_else(|| "demo".into());
                let mut scale = crate::simulate::Scale::preset(&scale_name).unwrap_or_else(|| {
                    errs.push(format!("source.scale: `{scale_name}` is not a preset; use tiny, demo, medium or large"));
                    crate::simulate::Scale::default()
                });
                if let Some(c) = raw.source.customers {
                    scale.customers = c;
                }
                if let Some(r) = raw.source.rows_per_invoice {
                    scale.rows_per_invoice = r;
                }
                if let Some(m) = raw.source.meters {
                    if m == 0 {
                        errs.push("source.meters: must be at least 1".into());
                    }
                    scale.meters = m.max(1);
                }
                if let Some(h) = raw.source.hostile_names {
                    scale.hostile_names = h;
                }
                let open_month = raw.source.open_month.as_deref().and_then(|m| {
                    let d = month(m);
                    if d.is_none() {
                        errs.push(format!(
                            "source.open_month: `{m}` is not a month; write YYYY-MM"
                        ));
                    }
                    d
                });
                let time_scale = raw.source.time_scale.unwrap_or(600.0);
                if !(time_scale.is_finite() && time_scale > 0.0) {
                    errs.push(
                        "source.time_scale: must be a positive number (1 = Azure's real pace)"
                            .into(),
                    );
                }
                for (k, v) in [
                    ("cloud", &raw.source.cloud),
                    ("management_endpoint", &raw.source.management_endpoint),
                    ("authority_host", &raw.source.authority_host),
                ] {
                    if v.is_some() {
                        errs.push(format!("source.{k}: only for kind = \"azure\""));
                    }
                }
                let faults = raw.source.fault_rate.map(|rate| {
                    use crate::simulate::{FaultKind, FaultPlan, SimFamily};
                    if !(0.0..=1.0).contains(&rate) {
                        errs.push(format!("source.fault_rate: {rate} is outside 0..=1"));
                    }
                    let kinds: Vec<FaultKind> = match &raw.source.faults {
                        None => FaultKind::ALL.to_vec(),
                        Some(k) => k
                            .iter()
                            .filter_map(|n| {
                                let f = FaultKind::parse(n);
                                if f.is_none() {
                                    errs.push(format!(
                                        "source.faults: `{n}` is not one of {}",
                                        FaultKind::ALL.map(|f| f.name()).join(", ")
                                    ));
                                }
                                f
                            })
                            .collect(),
                    };
                    let families: Vec<SimFamily> = match &raw.source.fault_families {
                        None => SimFamily::ALL.to_vec(),
                        Some(f) => f
                            .iter()
                            .filter_map(|n| {
                                let x = SimFamily::parse(n);
                                if x.is_none() {
                                    errs.push(format!(
                                        "source.fault_families: `{n}` is not one of {}",
                                        SimFamily::ALL.map(|f| f.name()).join(", ")
                                    ));
                                }
                                x
                            })
                            .collect(),
                    };
                    FaultPlan {
                        rates: families.into_iter().map(|f| (f, rate)).collect(),
                        kinds,
                        stall: std::time::Duration::from_secs(15),
                        retry_after_secs: 0,
                        seed: raw.source.fault_seed.unwrap_or(1),
                    }
                });
                Source::Simulator {
                    seed: raw.source.seed.unwrap_or(42),
                    scale,
                    open_month,
                    time_scale,
                    page_size: raw.source.page_size,
                    latency_ms: raw.source.latency_ms.unwrap_or(0),
                    restatements: raw.source.restatements.unwrap_or(0),
                    faults,
                }
            }
            "azure" => {
                for (k, set) in [
                    ("seed", raw.source.seed.is_some()),
                    ("scale", raw.source.scale.is_some()),
                    ("open_month", raw.source.open_month.is_some()),
                    ("customers", raw.source.customers.is_some()),
                    ("meters", raw.source.meters.is_some()),
                    ("latency_ms", raw.source.latency_ms.is_some()),
                ] {
                    if set {
                        errs.push(format!("source.{k}: only for kind = \"simulator\""));
                    }
                }
                if let Some(m) = &raw.source.management_endpoint
                    && let Err(e) = crate::config::checked_url("source.management_endpoint", m)
                {
                    errs.push(e.to_string());
                }
                if let Some(a) = &raw.source.authority_host
                    && let Err(e) = crate::config::checked_url("source.authority_host", a)
                {
                    errs.push(e.to_string());
                }
                if let Some(c) = &raw.source.cloud
                    && let Err(e) = crate::config::CloudEndpoints::named(c)
                {
                    errs.push(format!("source.cloud: {e}"));
                }
                Source::Azure {
                    cloud: raw.source.cloud.clone(),
                    management_endpoint: raw.source.management_endpoint.clone(),
                    authority_host: raw.source.authority_host.clone(),
                }
            }
            other => {
                errs.push(format!(
                    "source.kind: `{other}` is not `azure` or `simulator`"
                ));
                Source::Simulator {
                    seed: 0,
                    scale: crate::simulate::Scale::default(),
                    open_month: None,
                    time_scale: 1.0,
                    page_size: None,
                    latency_ms: 0,
                    restatements: 0,
                    faults: None,
                }
            }
        };
        let p = &raw.periods;
        let periods = match (&p.from, &p.to, p.last_months) {
            (Some(f), Some(t), None) => match (month(f), month(t)) {
                (Some(from), Some(to)) if from <= to => Periods::Range {
                    from,
                    to,
                    lag_months: p.lag_months,
                },
                (Some(_), Some(_)) => {
                    errs.push(format!("periods: from `{f}` is after to `{t}`"));
                    Periods::Last {
                        months: 1,
                        lag_months: 0,
                    }
                }
                (a, b) => {
                    if a.is_none() {
                        errs.push(format!("periods.from: `{f}` is not a month; write YYYY-MM"));
                    }
                    if b.is_none() {
                        errs.push(format!("periods.to: `{t}` is not a month; write YYYY-MM"));
                    }
                    Periods::Last {
                        months: 1,
                        lag_months: 0,
                    }
                }
            },
            (None, None, Some(n)) if (1..=36).contains(&n) => Periods::Last {
                months: n,
                lag_months: p.lag_months,
            },
            (None, None, Some(n)) => {
                errs.push(format!("periods.last_months: {n} is outside 1..=36"));
                Periods::Last {
                    months: 1,
                    lag_months: 0,
                }
            }
            _ => {
                errs.push(
                    "periods: give either `from` and `to` (YYYY-MM), or `last_months`".into(),
                );
                Periods::Last {
                    months: 1,
                    lag_months: 0,
                }
            }
        };
        if p.lag_months > 12 {
            errs.push(format!(
                "periods.lag_months: {} is more than 12",
                p.lag_months
            ));
        }
        let e = &raw.extract;
        let usage_source = match e.usage_api.as_deref().unwrap_or("usage-details") {
            "usage-details" => UsageSource::UsageDetails,
            "cost-details" => UsageSource::CostDetails,
            other => {
                errs.push(format!(
                    "extract.usage_api: `{other}` is not `usage-details` or `cost-details`"
                ));
                UsageSource::UsageDetails
            }
        };
        let usage_api = match e.usage_api_version.as_deref().unwrap_or("2024-08-01") {
            "2019-10-01" => UsageApi::V2019,
            "2024-08-01" => UsageApi::V2024,
            other => {
                errs.push(format!(
                    "extract.usage_api_version: `{other}` is not 2019-10-01 or 2024-08-01"
                ));
                UsageApi::V2024
            }
        };
        let price_sheet_api = match e
            .price_sheet_api
            .as_deref()
            .unwrap_or("cost-management-2024")
        {
            "billing-2019" => PriceSheetApi::Billing2019,
            "cost-management-2024" => PriceSheetApi::CostManagement2024,
            other => {
                errs.push(format!("extract.price_sheet_api: `{other}` is not `billing-2019` or `cost-management-2024`"));
                PriceSheetApi::CostManagement2024
            }
        };
        let concurrency = e.concurrency.unwrap_or(4);
        if !(1..=64).contains(&concurrency) {
            errs.push(format!(
                "extract.concurrency: {concurrency} is outside 1..=64"
            ));
        }
        for (k, loc) in [
            ("landing.location", &raw.landing.location),
            ("output.location", &raw.output.location),
        ] {
            if loc.trim().is_empty() {
                errs.push(format!(
                    "{k}: empty; give a path or a URL (file://, az://, abfss://, s3://, gs://)"
                ));
            } else if let Ok(u) = url::Url::parse(loc)
                && u.scheme().len() > 1
                && ![
                    "file", "memory", "az", "azure", "abfs", "abfss", "adl", "s3", "s3a", "gs",
                ]
                .contains(&u.scheme())
            {
                errs.push(format!("{k}: scheme `{}` is not supported", u.scheme()));
            }
        }
        if raw.landing.location.trim_end_matches('/') == raw.output.location.trim_end_matches('/') {
            errs.push("landing.location and output.location must differ".into());
        }
        for d in &raw.output.datasets {
            if !DATASETS.contains(&d.as_str()) {
                errs.push(format!(
                    "output.datasets: `{d}` is not one of {}",
                    DATASETS.join(", ")
                ));
            }
        }
        let partition_by = raw
            .output
            .partition_by
            .clone()
            .unwrap_or_else(|| PARTITION_KEYS.iter().map(|s| s.to_string()).collect());
        if partition_by.is_empty()
            || partition_by[0] != "billing_period"
            || partition_by
                .iter()
                .any(|k| !PARTITION_KEYS.contains(&k.as_str()))
        {
            errs.push("output.partition_by: must start with billing_period, optionally followed by billing_profile".into());
        }
        let zstd_level = raw.output.zstd_level.unwrap_or(3);
        if !(1..=22).contains(&zstd_level) {
            errs.push(format!("output.zstd_level: {zstd_level} is outside 1..=22"));
        }
        if !errs.is_empty() {
            return Err(fail(errs));
        }
        Ok(Self {
            name: raw.name.unwrap_or_else(|| {
                std::path::Path::new(file)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            }),
            file: file.to_owned(),
            source,
            billing_accounts: raw.scope.billing_accounts,
            customers: raw.scope.customers,
            periods,
            usage_source,
            usage_api,
            price_sheet_api,
            concurrency,
            landing: raw.landing.location,
            output: raw.output.location,
            datasets: if raw.output.datasets.is_empty() {
                DATASETS.iter().map(|s| s.to_string()).collect()
            } else {
                raw.output.datasets
            },
            partition_by,
            row_group_size: raw.output.row_group_size.unwrap_or(128 * 1024),
            zstd_level,
        })
    }

    pub fn wants(&self, dataset: &str) -> bool {
        self.datasets.iter().any(|d| d == dataset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
[source]
kind = "simulator"
[periods]
from = "2026-09"
to = "2026-10"
[landing]
location = "data/x/landing"
[output]
location = "data/x/lake"
"#;

    #[test]
    fn minimal_file_validates() {
        let p = Pipeline::from_toml("x.toml", OK).unwrap();
        assert_eq!(p.name, "x");
        assert_eq!(p.datasets.len(), DATASETS.len());
        assert_eq!(
            p.periods
                .months(NaiveDate::from_ymd_opt(2026, 11, 1).unwrap())
                .len(),
            2
        );
    }

    #[test]
    fn every_error_at_once_with_its_key() {
        let bad = r#"
[source]
kind = "simulator"
scale = "huge"
cloud = "public"
[periods]
from = "2026-13"
to = "2026-10"
lag_months = 40
[extract]
usage_api = "both"
concurrency = 0
[landing]
location = "ftp://x"
[output]
location = "data/x"
datasets = ["usage", "nope"]
"#;
        let e = Pipeline::from_toml("bad.toml", bad)
            .unwrap_err()
            .to_string();
        for needle in [
            "source.scale",
            "source.cloud",
            "periods.from",
            "periods.lag_months",
            "extract.usage_api",
            "extract.concurrency",
            "landing.location",
            "output.datasets",
        ] {
            assert!(e.contains(needle), "missing {needle} in:\n{e}");
        }
        assert!(e.contains("8 problem(s)"), "{e}");
    }

    #[test]
    fn unknown_keys_and_inline_secrets_are_refused() {
        let e = Pipeline::from_toml(
            "x.toml",
            &OK.replace("kind = \"simulator\"", "kind = \"simulator\"\nfoo = 1"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field") && e.contains("foo"), "{e}");
        let e = Pipeline::from_toml(
            "x.toml",
            &OK.replace(
                "kind = \"simulator\"",
                "kind = \"azure\"\nclient_secret = \"hunter2\"",
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("source.client_secret")
                && e.contains("AZURE_CLIENT_SECRET")
                && !e.contains("hunter2"),
            "{e}"
        );
    }
}
