//! The pipeline: a validated [`config::Pipeline`] run as extract → transform → load, each stage also
//! runnable alone, each resumable. A run report (rows, bytes, calls, 429s, retries, durations per stage
//! and work unit) is stored under the output at `_runs/{run_id}.json`, and summarized on stderr.

pub mod config;
pub mod lease;

use crate::azure::AzureClient;
use crate::extract::{ExtractReport, Extractor};
use crate::load::{FileEntry, LoadReport, Loader};
use crate::simulate::{SimConfig, Simulator};
use crate::storage::Store;
use crate::transform::{Transformer, Turn};
use anyhow::Context;
use chrono::{Datelike, NaiveDate, Utc};
use config::{Pipeline, Source};
use futures::StreamExt;
use serde::Serialize;
use std::time::Instant;

/// A connection to the pipeline's source: Azure, or an embedded simulator kept alive with it.
pub struct Connection {
    pub client: AzureClient,
    pub current_month: NaiveDate,
    pub simulator: Option<Simulator>,
}

pub async fn connect(p: &Pipeline) -> anyhow::Result<Connection> {
    match &p.source {
        Source::Simulator {
            seed,
            scale,
            open_month,
            time_scale,
            page_size,
            latency_ms,
            restatements,
            faults,
        } => {
            let mut cfg = SimConfig::fast(*seed, scale.clone());
            if let Some(m) = open_month {
                cfg.open_month = *m;
            }
            cfg.time_scale = *time_scale;
            cfg.latency = std::time::Duration::from_millis(*latency_ms);
            if let Some(s) = page_size {
                cfg.page_size = *s;
            }
            if let Ok(port) = std::env::var("COSTLAKE_SIM_PORT")
                && let Ok(port) = port.parse()
            {
                cfg.arm_port = port;
            }
            if let Ok(port) = std::env::var("COSTLAKE_SIM_BLOB_PORT")
                && let Ok(port) = port.parse()
            {
                cfg.blob_port = port;
            }
            if let Some(f) = faults {
                cfg.faults = f.clone();
            }
            let current_month = cfg.open_month;
            let sim = Simulator::start(cfg)
                .await
                .context("starting the embedded simulator")?;
            for _ in 0..*restatements {
                sim.restate_open_month();
            }
            let client = crate::cli::sim_client(&sim)?;
            Ok(Connection {
                client,
                current_month,
                simulator: Some(sim),
            })
        }
        Source::Azure {
            cloud,
            management_endpoint,
            authority_host,
        } => {
            let endpoints = crate::config::CloudEndpoints::resolve(
                cloud.as_deref(),
                management_endpoint.as_deref(),
                authority_host.as_deref(),
            )?;
            let client = AzureClient::from_environment(endpoints)?;
            let today = Utc::now().date_naive();
            Ok(Connection {
                client,
                current_month: today.with_day(1).unwrap_or(today),
                simulator: None,
            })
        }
    }
}

pub fn new_run_id() -> String {
    format!(
        "{}-{:04x}",
        Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        rand::random::<u16>()
    )
}

fn progress(len: u64, stage: &'static str) -> indicatif::ProgressBar {
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new(len)
    } else {
        indicatif::ProgressBar::hidden()
    };
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:>9} [{bar:30}] {pos}/{len} {elapsed}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(stage);
    bar
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TransformReport {
    pub groups: u64,
    pub files_staged: u64,
    pub rows: std::collections::BTreeMap<String, u64>,
    pub seconds: f64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub pipeline: String,
    pub started_at: String,
    pub finished_at: String,
    pub extract: Option<ExtractReport>,
    pub calls: Option<crate::azure::Stats>,
    pub transform: Option<TransformReport>,
    pub load: Option<LoadReport>,
    /// Invoices whose usage does not add up to the invoice, to the cent.
    pub reconciliation_mismatches: Vec<String>,
}

impl RunReport {
    fn new(run_id: &str, p: &Pipeline) -> Self {
        Self {
            run_id: run_id.into(),
            pipeline: p.file.clone(),
            started_at: Utc::now().to_rfc3339(),
            ..Default::default()
        }
    }

    async fn save(&mut self, output: &Store) -> anyhow::Result<()> {
        self.finished_at = Utc::now().to_rfc3339();
        let path = format!("_runs/{}.json", self.run_id);
        output
            .put(&path, bytes::Bytes::from(serde_json::to_vec_pretty(self)?))
            .await
            .with_context(|| format!("writing the run report {path}"))?;
        Ok(())
    }

    /// The short summary for stderr.
    pub fn summary(&self) -> String {
        let mut s = format!("run {}:", self.run_id);
        if let Some(e) = &self.extract {
            let fetched: u64 = e.units.iter().map(|u| u.pages_fetched).sum();
            let skipped = e.units.iter().filter(|u| u.skipped).count();
            s += &format!(
                " extract {} units ({skipped} already landed), {fetched} pages fetched in {:.1}s;",
                e.units.len(),
                e.seconds
            );
        }
        if let Some(c) = &self.calls {
            s += &format!(
                " {} calls, {} retries, {} throttled;",
                c.calls, c.retries, c.throttled
            );
        }
        if let Some(t) = &self.transform {
            s += &format!(
                " transform {} groups, {} usage rows in {:.1}s;",
                t.groups,
                t.rows.get("usage").copied().unwrap_or(0),
                t.seconds
            );
        }
        if let Some(l) = &self.load {
            s += &format!(
                " load {} partitions written, {} unchanged in {:.1}s",
                l.partitions_written, l.partitions_unchanged, l.seconds
            );
        }
        if !self.reconciliation_mismatches.is_empty() {
            s += &format!(
                "; RECONCILIATION MISMATCH: {}",
                self.reconciliation_mismatches.join(", ")
            );
        }
        s
    }
}

pub async fn extract(
    p: &Pipeline,
    conn: &Connection,
    run_id: &str,
    report: &mut RunReport,
) -> anyhow::Result<()> {
    let landing = Store::open(&p.landing)?;
    let bar = progress(0, "extract");
    let ex = Extractor {
        client: conn.client.clone(),
        landing,
        pipeline: p,
        run_id: run_id.into(),
        current_month: conn.current_month,
        progress: bar.clone(),
        dry_run: false,
    };
    let result = ex.run().await;
    bar.finish_and_clear();
    report.calls = Some(conn.client.stats());
    let (_, r) = result?;
    report.extract = Some(r);
    Ok(())
}

pub async fn transform(p: &Pipeline, run_id: &str, report: &mut RunReport) -> anyhow::Result<()> {
    let t = Instant::now();
    let landing = Store::open(&p.landing)?;
    let output = Store::open(&p.output)?;
    let tr = Transformer::open(landing, p.partition_by.clone()).await?;
    let loader = Loader {
        output,
        run_id: run_id.into(),
        zstd_level: p.zstd_level,
        row_group_size: p.row_group_size,
    };
    let groups = tr.groups();
    let bar = progress(groups.len() as u64 + 1, "transform");
    let mut staged: Vec<FileEntry> = Vec::new();
    let mut rep = TransformReport::default();
    for part in tr.dimensions().await? {
        if p.wants(part.dataset) {
            staged.push(loader.stage(part).await?);
        }
    }
    bar.inc(1);
    let wants: Vec<&str> = crate::pipeline::config::DATASETS
        .iter()
        .copied()
        .filter(|d| p.wants(d))
        .collect();
    // Two groups at a time, taking turns to decode (see `Turn`); results come in group order.
    let (tr, loader_ref, wants_ref) = (&tr, &loader, &wants);
    let mut outs = futures::stream::iter(groups.iter().zip(Turn::chain(groups.len())))
        .map(|(((period, profile), units), turn)| async move {
            tr.group(period, profile, units, loader_ref, wants_ref, turn)
                .await
        })
        .buffered(2);
    while let Some(out) = outs.next().await {
        let out = out?;
        staged.extend(out.staged);
        for part in out.small {
            if part.dataset == "reconciliation" {
                let status = part.df.column("status")?.str()?.clone();
                let ids = part.df.column("invoice_id")?.str()?.clone();
                for (s, id) in status.iter().zip(ids.iter()) {
                    if s == Some("mismatch") {
                        report
                            .reconciliation_mismatches
                            .push(id.unwrap_or("").to_owned());
                    }
                }
            }
            if p.wants(part.dataset) {
                staged.push(loader.stage(part).await?);
            }
        }
        rep.groups += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    for f in &staged {
        *rep.rows.entry(f.dataset.clone()).or_default() += f.rows;
    }
    rep.files_staged = staged.len() as u64;
    loader.complete(&staged).await?;
    rep.seconds = t.elapsed().as_secs_f64();
    report.transform = Some(rep);
    Ok(())
}

pub async fn load(p: &Pipeline, run_id: &str, report: &mut RunReport) -> anyhow::Result<()> {
    let output = Store::open(&p.output)?;
    let loader = Loader {
        output,
        run_id: run_id.into(),
        zstd_level: p.zstd_level,
        row_group_size: p.row_group_size,
    };
    report.load = Some(loader.publish().await?);
    Ok(())
}

/// Which stages to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stages {
    All,
    Extract,
    Transform,
    Load,
}

/// Runs stages and stores the report; returns it.
pub async fn run(p: &Pipeline, stages: Stages) -> anyhow::Result<RunReport> {
    let run_id = new_run_id();
    let mut report = RunReport::new(&run_id, p);
    let output = Store::open(&p.output)?;
    let lease = lease::Lease::acquire(
        &output,
        &run_id,
        &p.file,
        std::time::Duration::from_secs(120),
    )
    .await?;
    let result: anyhow::Result<()> = async {
        if matches!(stages, Stages::All | Stages::Extract) {
            let conn = connect(p).await?;
            extract(p, &conn, &run_id, &mut report).await?;
        }
        if matches!(stages, Stages::All | Stages::Transform) {
            transform(p, &run_id, &mut report).await?;
        }
        if matches!(stages, Stages::All | Stages::Load) {
            load(p, &run_id, &mut report).await?;
        }
        Ok(())
    }
    .await;
    let saved = report.save(&output).await;
    let released = lease.release().await;
    // The stage that failed is the news; a report or lease that could not be written is secondary.
    match (result, saved) {
        (Err(e), Err(r)) => {
            tracing::error!(error = %r, "the run report could not be written either");
            Err(e)
        }
        (Err(e), Ok(())) => Err(e),
        (Ok(()), Err(r)) => Err(r),
        (Ok(()), Ok(())) => {
            released?;
            Ok(report)
        }
    }
}

/// The work units a run would do, and which are already landed, without landing anything.
pub async fn plan(p: &Pipeline) -> anyhow::Result<String> {
    use std::fmt::Write;
    let conn = connect(p).await?;
    let landing = Store::open(&p.landing)?;
    let ex = Extractor {
        client: conn.client.clone(),
        landing: landing.clone(),
        pipeline: p,
        run_id: "plan".into(),
        current_month: conn.current_month,
        progress: indicatif::ProgressBar::hidden(),
        dry_run: true,
    };
    let (accounts, units) = ex.plan().await?;
    let mut out = String::new();
    writeln!(
        out,
        "pipeline {} ({}): {} billing account(s), current month {}",
        p.name,
        p.file,
        accounts.len(),
        conn.current_month.format("%Y-%m")
    )?;
    writeln!(
        out,
        "{:<6} {:<9} {:<24} {:<8} {:<9} {:>6}  unit",
        "action", "period", "billing profile", "kind", "landed", "pages"
    )?;
    let (mut fetch, mut skip, mut calls) = (0, 0, 0u64);
    for u in &units {
        let ledger =
            crate::extract::ledger::Ledger::load(&landing, &format!("{}/_ledger.json", u.dir))
                .await?;
        let (state, pages) = ledger
            .as_ref()
            .map(|l| (format!("{:?}", l.state).to_lowercase(), l.pages.len()))
            .unwrap_or(("new".into(), 0));
        let done = state == "done";
        let action = if done && !u.open {
            "skip"
        } else if state == "started" {
            "resume"
        } else {
            "fetch"
        };
        if action == "skip" {
            skip += 1
        } else {
            fetch += 1;
            // The least a unit can cost: a page; a start, a poll and a download; or a report's start,
            // poll and two blobs. Usage pages beyond the first are not known until they are listed.
            calls += match &u.kind {
                crate::extract::UnitKind::Usage { .. } | crate::extract::UnitKind::OpenUsage => 1,
                crate::extract::UnitKind::Prices => 3,
                crate::extract::UnitKind::CostDetails { .. } => 4,
            };
        }
        let kind = match &u.kind {
            crate::extract::UnitKind::Usage { .. } => "usage",
            crate::extract::UnitKind::OpenUsage => "open",
            crate::extract::UnitKind::CostDetails { .. } => "cost-det",
            crate::extract::UnitKind::Prices => "prices",
        };
        writeln!(
            out,
            "{action:<6} {:<9} {:<24} {kind:<8} {state:<9} {pages:>6}  {}",
            u.period, u.billing_profile, u.dir
        )?;
    }
    writeln!(
        out,
        "{} units: {fetch} to fetch or resume, {skip} already landed; at least {calls} calls to extract them (usage pages beyond the first are unknown until listed); {} listing calls made to plan",
        units.len(),
        conn.client.stats().calls
    )?;
    Ok(out)
}
