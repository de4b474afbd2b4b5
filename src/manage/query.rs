//! Aggregated costs: the Cost Management query for a scope, every page, typed (numbers exact,
//! `UsageDate` a real date), as a table, CSV, JSON, or a Parquet dataset `aggregated_costs`.

use crate::azure::{AzureClient, AzureError};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// What to ask for.
#[derive(Clone, Debug)]
pub struct QuerySpec {
    /// ARM id of the scope (billing account, billing profile or customer).
    pub scope: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// `Daily` or `None`.
    pub granularity: String,
    /// (alias, column), at most two.
    pub aggregations: Vec<(String, String)>,
    /// Dimension names, at most two (`tag:NAME` groups by a tag).
    pub group_by: Vec<String>,
    /// (dimension, values): `In` filter.
    pub filter: Option<(String, Vec<String>)>,
}

impl QuerySpec {
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Vec::new();
        if self.aggregations.is_empty() || self.aggregations.len() > 2 {
            p.push("give one or two aggregations".to_owned());
        }
        if self.group_by.len() > 2 {
            p.push("at most two groupings".to_owned());
        }
        if self.to < self.from {
            p.push(format!("--to {} is before --from {}", self.to, self.from));
        }
        if !["Daily", "None"].contains(&self.granularity.as_str()) {
            p.push(format!(
                "granularity `{}` must be Daily or None",
                self.granularity
            ));
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(p.join("; "))
        }
    }

    /// The 2019-10-01 `QueryDefinition` (singular `dimension` / `tag` in filters).
    pub fn body(&self) -> Value {
        let aggregation: serde_json::Map<String, Value> = self
            .aggregations
            .iter()
            .map(|(a, c)| (a.clone(), json!({"name": c, "function": "Sum"})))
            .collect();
        let grouping: Vec<Value> = self
            .group_by
            .iter()
            .map(|g| match g.strip_prefix("tag:") {
                Some(t) => json!({"type": "Tag", "name": t}),
                None => json!({"type": "Dimension", "name": g}),
            })
            .collect();
        let mut dataset = json!({"granularity": self.granularity, "aggregation": aggregation});
        if !grouping.is_empty() {
            dataset["grouping"] = json!(grouping);
        }
        if let Some((d, values)) = &self.filter {
            dataset["filter"] =
                json!({"dimension": {"name": d, "operator": "In", "values": values}});
        }
        json!({"type": "ActualCost", "timeframe": "Custom", "timePeriod": {"from": format!("{}T00:00:00Z", self.from), "to": format!("{}T23:59:59Z", self.to)}, "dataset": dataset})
    }
}

/// A typed cell.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Cell {
    Number(Decimal),
    Date(NaiveDate),
    Text(String),
    Null,
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Number(d) => write!(f, "{}", d.normalize()),
            Cell::Date(d) => write!(f, "{d}"),
            Cell::Text(s) => f.write_str(s),
            Cell::Null => Ok(()),
        }
    }
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct QueryTable {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
    pub pages: usize,
}

/// Runs the query over every page and types the cells.
pub async fn run(client: &AzureClient, spec: &QuerySpec) -> Result<QueryTable, AzureError> {
    spec.validate().map_err(AzureError::Invalid)?;
    let pages = client.query(&spec.scope, &spec.body()).await?;
    let mut t = QueryTable {
        pages: pages.len(),
        ..Default::default()
    };
    for (i, page) in pages.iter().enumerate() {
        let cols: Vec<(String, String)> = page
            .properties
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.ty.clone()))
            .collect();
        if i == 0 {
            t.columns = cols.iter().map(|c| c.0.clone()).collect();
        } else if cols.iter().map(|c| &c.0).ne(t.columns.iter()) {
            return Err(AzureError::Decode {
                what: format!("query page {}", i + 1),
                reason: "columns differ from the first page".into(),
            });
        }
        for r in &page.properties.rows {
            let mut row = Vec::with_capacity(r.len());
            for (j, raw) in r.iter().enumerate() {
                let text = raw.get();
                let (name, ty) = cols
                    .get(j)
                    .map(|c| (c.0.as_str(), c.1.as_str()))
                    .unwrap_or(("", ""));
                let cell = if text == "null" {
                    Cell::Null
                } else if name.eq_ignore_ascii_case("UsageDate") {
                    let s = text.trim_matches('"');
                    NaiveDate::parse_from_str(s, "%Y%m%d")
                        .map(Cell::Date)
                        .or_else(|_| {
                            crate::azure::models::loose::parse_datetime(s)
                                .map(|d| Cell::Date(d.date_naive()))
                                .ok_or(())
                        })
                        .unwrap_or(Cell::Text(s.to_owned()))
                } else if ty.eq_ignore_ascii_case("Number") {
                    crate::azure::models::loose::parse_decimal(text.trim_matches('"'))
                        .map(Cell::Number)
                        .map_err(|e| AzureError::Decode {
                            what: "query".into(),
                            reason: format!("{name}: {e}"),
                        })?
                } else {
                    Cell::Text(
                        serde_json::from_str::<String>(text).unwrap_or_else(|_| text.to_owned()),
                    )
                };
                row.push(cell);
            }
            t.rows.push(row);
        }
    }
    Ok(t)
}

impl QueryTable {
    pub fn to_csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        let _ = w.write_record(&self.columns);
        for r in &self.rows {
            let _ = w.write_record(r.iter().map(|c| c.to_string()));
        }
        String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
    }

    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let m: serde_json::Map<String, Value> = self
                    .columns
                    .iter()
                    .zip(r)
                    .map(|(c, v)| {
                        let v = match v {
                            Cell::Number(d) => json!(d.normalize().to_string()),
                            Cell::Date(d) => json!(d.to_string()),
                            Cell::Text(s) => json!(s),
                            Cell::Null => Value::Null,
                        };
                        (c.clone(), v)
                    })
                    .collect();
                Value::Object(m)
            })
            .collect();
        Value::Array(rows)
    }

    /// Columns typed: numbers `Decimal(38, 18)`, `UsageDate` → `usage_date` as a date, text as text.
    pub fn to_frame(&self) -> polars::prelude::PolarsResult<polars::prelude::DataFrame> {
        use crate::transform::usage::{date_column, dec18, decimal_column};
        use polars::prelude::*;
        let n = self.rows.len();
        let mut cols = Vec::new();
        for (j, name) in self.columns.iter().enumerate() {
            let out = if name.eq_ignore_ascii_case("UsageDate") {
                "usage_date".to_owned()
            } else {
                name.clone()
            };
            let cells: Vec<&Cell> = self
                .rows
                .iter()
                .map(|r| r.get(j).unwrap_or(&Cell::Null))
                .collect();
            if cells.iter().any(|c| matches!(c, Cell::Number(_))) {
                cols.push(decimal_column(
                    &out,
                    cells
                        .iter()
                        .map(|c| {
                            if let Cell::Number(d) = c {
                                dec18(&d.to_string()).ok()
                            } else {
                                None
                            }
                        })
                        .collect(),
                )?);
            } else if cells.iter().any(|c| matches!(c, Cell::Date(_))) {
                let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
                cols.push(date_column(
                    &out,
                    cells
                        .iter()
                        .map(|c| {
                            if let Cell::Date(d) = c {
                                Some((*d - epoch).num_days() as i32)
                            } else {
                                None
                            }
                        })
                        .collect(),
                ));
            } else {
                cols.push(Column::new(
                    out.as_str().into(),
                    cells
                        .iter()
                        .map(|c| {
                            if let Cell::Null = c {
                                None
                            } else {
                                Some(c.to_string())
                            }
                        })
                        .collect::<Vec<_>>(),
                ));
            }
        }
        DataFrame::new(n, cols)
    }
}
