//! The command line: `costlake simulate` and the listing commands (`accounts`, `profiles`,
//! `customers`, `subscriptions`, `invoices`). Data goes to stdout (a table, or JSON with `--json`);
//! logs go to stderr (`RUST_LOG`, `-v`), and respect `NO_COLOR`.

use crate::auth::{ChainOptions, ClientSecretCredential, TokenCredential, default_chain};
use crate::azure::governor::Limits;
use crate::azure::{AzureClient, ClientOptions, http_client};
use crate::config::CloudEndpoints;
use crate::secret::Secret;
use crate::simulate::{FaultKind, FaultPlan, Scale, SimConfig, SimFamily, Simulator};
use anyhow::{Context, bail};
use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "costlake",
    version,
    about = "Azure partner billing → Parquet lake",
    propagate_version = true
)]
pub struct Cli {
    /// More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the Azure simulator until interrupted (prints its endpoints and credentials).
    Simulate(SimArgs),
    /// List billing accounts.
    Accounts(ListArgs),
    /// List billing profiles of a billing account.
    Profiles(ListArgs),
    /// List customers of a billing account.
    Customers(ListArgs),
    /// List billing subscriptions of a billing account.
    Subscriptions(ListArgs),
    /// List invoices of a billing account for a range of months.
    Invoices(InvoiceArgs),
    /// Check a pipeline file; reports every problem at once.
    Validate(PipelineArgs),
    /// Print the work units a run would do (and what is already landed), without extracting.
    Plan(PipelineArgs),
    /// Run a pipeline: extract, transform and load.
    Run(PipelineArgs),
    /// Extract only: land raw responses (resumable).
    Extract(PipelineArgs),
    /// Transform only: landed data → staged Parquet.
    Transform(PipelineArgs),
    /// Load only: publish staged Parquet into the lake.
    Load(PipelineArgs),
}

#[derive(Args, Debug, Clone)]
struct PipelineArgs {
    /// The pipeline file, e.g. pipelines/demo.toml.
    pipeline: String,
}

#[derive(Args, Debug, Clone)]
struct SimArgs {
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// tiny, demo, medium or large.
    #[arg(long, default_value = "demo")]
    scale: String,
    #[arg(long)]
    customers: Option<u32>,
    #[arg(long)]
    rows_per_invoice: Option<u64>,
    /// Usage rows per page.
    #[arg(long)]
    page_size: Option<u32>,
    /// Port of the management endpoint (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[arg(long, default_value_t = 0)]
    blob_port: u16,
    /// Simulated clock speed for rate-limit windows and operation delays (1 = Azure's real pace).
    #[arg(long, default_value_t = 60.0)]
    time_scale: f64,
    /// Do not enforce Azure's rate limits.
    #[arg(long)]
    no_limits: bool,
    /// Probability of a fault per request.
    #[arg(long, default_value_t = 0.0)]
    fault_rate: f64,
    /// Families to inject faults into (default: all): token, billing, usage, price-sheet, cost-details, query, budgets, policy, blob.
    #[arg(long, value_delimiter = ',')]
    fault_families: Vec<String>,
    /// Fault kinds to choose from (default: all).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// The open (not yet invoiced) month, YYYY-MM (default: this month).
    #[arg(long)]
    open_month: Option<String>,
}

#[derive(Args, Debug, Clone)]
struct Target {
    /// public, china or usgov.
    #[arg(long, env = "COSTLAKE_CLOUD")]
    cloud: Option<String>,
    /// ARM endpoint (also COSTLAKE_MANAGEMENT_ENDPOINT).
    #[arg(long)]
    management_endpoint: Option<String>,
    /// Entra ID authority (also AZURE_AUTHORITY_HOST).
    #[arg(long)]
    authority_host: Option<String>,
    /// Run against an embedded simulator instead of Azure (no credentials needed).
    #[arg(long)]
    simulate: bool,
    /// Seed of the embedded simulator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug, Clone)]
struct ListArgs {
    #[command(flatten)]
    target: Target,
    /// Billing account name (default: the only one visible).
    #[arg(long)]
    billing_account: Option<String>,
}

#[derive(Args, Debug, Clone)]
struct InvoiceArgs {
    #[command(flatten)]
    list: ListArgs,
    /// First month, YYYY-MM.
    #[arg(long)]
    from: String,
    /// Last month, YYYY-MM.
    #[arg(long)]
    to: String,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", crate::secret::redact_text(&e.to_string()));
            for cause in e.chain().skip(1) {
                eprintln!(
                    "  caused by: {}",
                    crate::secret::redact_text(&cause.to_string())
                );
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "costlake=info",
        2 => "costlake=debug",
        _ => "costlake=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::env::var_os("NO_COLOR").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    use crate::pipeline::{Stages, config::Pipeline};
    let stages = match &cli.command {
        Command::Run(_) => Some(Stages::All),
        Command::Extract(_) => Some(Stages::Extract),
        Command::Transform(_) => Some(Stages::Transform),
        Command::Load(_) => Some(Stages::Load),
        _ => None,
    };
    match cli.command {
        Command::Validate(a) => {
            let p = Pipeline::load(&a.pipeline)?;
            println!(
                "{}: ok ({} source, {} datasets, landing {}, output {})",
                a.pipeline,
                match p.source {
                    crate::pipeline::config::Source::Azure { .. } => "azure",
                    _ => "simulator",
                },
                p.datasets.len(),
                p.landing,
                p.output
            );
            Ok(())
        }
        Command::Plan(a) => {
            let p = Pipeline::load(&a.pipeline)?;
            print!("{}", crate::pipeline::plan(&p).await?);
            Ok(())
        }
        Command::Run(a) | Command::Extract(a) | Command::Transform(a) | Command::Load(a) => {
            let p = Pipeline::load(&a.pipeline)?;
            let report = crate::pipeline::run(&p, stages.unwrap_or(Stages::All)).await?;
            eprintln!("{}", report.summary());
            eprintln!(
                "report: {}/_runs/{}.json",
                p.output.trim_end_matches('/'),
                report.run_id
            );
            if !report.reconciliation_mismatches.is_empty() {
                anyhow::bail!(
                    "usage does not reconcile with {} invoice(s): {}",
                    report.reconciliation_mismatches.len(),
                    report.reconciliation_mismatches.join(", ")
                );
            }
            Ok(())
        }
        Command::Simulate(a) => simulate(a).await,
        Command::Accounts(a) => {
            let (client, _sim) = connect(&a.target).await?;
            let v = client.billing_accounts().await?;
            print_rows(
                &a.target,
                &v,
                &["name", "displayName", "agreementType"],
                |x| {
                    let p = x.props();
                    vec![
                        x.name.clone(),
                        p.display_name.unwrap_or_default(),
                        p.agreement_type.unwrap_or_default(),
                    ]
                },
            )
        }
        Command::Profiles(a) => {
            let (client, _sim) = connect(&a.target).await?;
            let ba = billing_account(&client, a.billing_account.as_deref()).await?;
            let v = client.billing_profiles(&ba).await?;
            print_rows(&a.target, &v, &["name", "displayName", "currency"], |x| {
                let p = x.props();
                vec![
                    x.name.clone(),
                    p.display_name.unwrap_or_default(),
                    p.currency.unwrap_or_default(),
                ]
            })
        }
        Command::Customers(a) => {
            let (client, _sim) = connect(&a.target).await?;
            let ba = billing_account(&client, a.billing_account.as_deref()).await?;
            let v = client.customers(&ba).await?;
            print_rows(
                &a.target,
                &v,
                &["name", "displayName", "billingProfile"],
                |x| {
                    let p = x.props();
                    vec![
                        x.name.clone(),
                        p.display_name.unwrap_or_default(),
                        p.billing_profile_display_name.unwrap_or_default(),
                    ]
                },
            )
        }
        Command::Subscriptions(a) => {
            let (client, _sim) = connect(&a.target).await?;
            let ba = billing_account(&client, a.billing_account.as_deref()).await?;
            let v = client.billing_subscriptions(&ba).await?;
            print_rows(
                &a.target,
                &v,
                &["subscriptionId", "displayName", "customer", "status"],
                |x| {
                    let p = x.props();
                    vec![
                        p.subscription_id.unwrap_or_default(),
                        p.display_name.unwrap_or_default(),
                        p.customer_display_name.unwrap_or_default(),
                        p.subscription_billing_status.unwrap_or_default(),
                    ]
                },
            )
        }
        Command::Invoices(a) => {
            let from = parse_month(&a.from).with_context(|| format!("--from {}", a.from))?;
            let to = parse_month(&a.to).with_context(|| format!("--to {}", a.to))?;
            if to < from {
                bail!("--to {} is before --from {}", a.to, a.from);
            }
            let to = crate::simulate::generator::month_end(to);
            let (client, _sim) = connect(&a.list.target).await?;
            let ba = billing_account(&client, a.list.billing_account.as_deref()).await?;
            let v = client.invoices(&ba, from, to).await?;
            print_rows(
                &a.list.target,
                &v,
                &["name", "period", "status", "totalAmount", "currency"],
                |x| {
                    let p = x.props();
                    let total = p.total_amount.clone().unwrap_or_default();
                    vec![
                        x.name.clone(),
                        p.invoice_period_start_date
                            .map(|d| d.format("%Y-%m").to_string())
                            .unwrap_or_default(),
                        p.status.unwrap_or_default(),
                        total.value.map(|d| d.to_string()).unwrap_or_default(),
                        total.currency.unwrap_or_default(),
                    ]
                },
            )
        }
    }
}

fn parse_month(s: &str) -> anyhow::Result<NaiveDate> {
    NaiveDate::parse_from_str(&format!("{}-01", s.trim()), "%Y-%m-%d")
        .map_err(|_| anyhow::anyhow!("`{s}` is not a month; write YYYY-MM"))
}

async fn billing_account(client: &AzureClient, given: Option<&str>) -> anyhow::Result<String> {
    if let Some(b) = given {
        return Ok(b.to_owned());
    }
    let all = client.billing_accounts().await?;
    match all.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => bail!("no billing account is visible to this identity; check its billing role"),
        many => bail!(
            "{} billing accounts are visible; choose one with --billing-account ({})",
            many.len(),
            many.iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A client for the target: real Azure (credential chain) or an embedded simulator.
async fn connect(t: &Target) -> anyhow::Result<(AzureClient, Option<Simulator>)> {
    if t.simulate {
        let sim = Simulator::start(SimConfig::fast(t.seed, Scale::default())).await?;
        let client = sim_client(&sim)?;
        return Ok((client, Some(sim)));
    }
    let endpoints = CloudEndpoints::resolve(
        t.cloud.as_deref(),
        t.management_endpoint.as_deref(),
        t.authority_host.as_deref(),
    )?;
    let http = http_client(Duration::from_secs(60))?;
    let cred: Arc<dyn TokenCredential> = Arc::new(default_chain(
        http,
        &ChainOptions {
            authority: endpoints.authority.clone(),
            imds: true,
        },
    ));
    Ok((AzureClient::new(ClientOptions::new(endpoints), cred)?, None))
}

/// A client wired to a running simulator with its own credentials and its clock's limits.
pub fn sim_client(sim: &Simulator) -> anyhow::Result<AzureClient> {
    let endpoints = CloudEndpoints::resolve(None, Some(&sim.arm_url()), Some(&sim.arm_url()))?;
    let cfg = sim.config();
    let cred = ClientSecretCredential::new(
        http_client(Duration::from_secs(30))?,
        endpoints.authority.clone(),
        sim.world().tenant.clone(),
        cfg.client_id.clone(),
        Secret::new(cfg.client_secret.clone()),
    );
    let mut opts = ClientOptions::new(endpoints);
    opts.limits = if cfg.enforce_limits {
        Limits::azure().scaled(cfg.time_scale)
    } else {
        Limits::none()
    };
    opts.default_poll_interval = Duration::from_secs_f64(30.0 / cfg.time_scale);
    Ok(AzureClient::new(opts, Arc::new(cred))?)
}

fn print_rows<T: serde::Serialize>(
    t: &Target,
    items: &[T],
    header: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if t.json {
        serde_json::to_writer_pretty(&mut out, items)?;
        writeln!(out)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(
        out,
        "{}",
        line(header.iter().map(|s| s.to_string()).collect())
    )?;
    for r in rows {
        writeln!(out, "{}", line(r))?;
    }
    Ok(())
}

async fn simulate(a: SimArgs) -> anyhow::Result<()> {
    let mut scale = Scale::preset(&a.scale).with_context(|| {
        format!(
            "unknown --scale {}; use tiny, demo, medium or large",
            a.scale
        )
    })?;
    if let Some(c) = a.customers {
        scale.customers = c;
    }
    if let Some(r) = a.rows_per_invoice {
        scale.rows_per_invoice = r;
    }
    let mut cfg = SimConfig::new(a.seed, scale);
    cfg.arm_port = a.port;
    cfg.blob_port = a.blob_port;
    cfg.time_scale = a.time_scale;
    cfg.enforce_limits = !a.no_limits;
    if let Some(p) = a.page_size {
        cfg.page_size = p;
    }
    if let Some(m) = &a.open_month {
        cfg.open_month = parse_month(m).with_context(|| format!("--open-month {m}"))?;
    }
    if a.fault_rate > 0.0 {
        let families: Vec<SimFamily> = if a.fault_families.is_empty() {
            SimFamily::ALL.to_vec()
        } else {
            a.fault_families
                .iter()
                .map(|f| SimFamily::parse(f).with_context(|| format!("unknown fault family `{f}`")))
                .collect::<anyhow::Result<_>>()?
        };
        let kinds: Vec<FaultKind> = if a.faults.is_empty() {
            FaultKind::ALL.to_vec()
        } else {
            a.faults
                .iter()
                .map(|k| FaultKind::parse(k).with_context(|| format!("unknown fault kind `{k}`")))
                .collect::<anyhow::Result<_>>()?
        };
        cfg.faults = FaultPlan {
            rates: families.into_iter().map(|f| (f, a.fault_rate)).collect(),
            kinds,
            ..FaultPlan::default()
        };
    }
    let sim = Simulator::start(cfg).await?;
    let w = sim.world();
    println!(
        "# costlake simulator (seed {}, {} customers, {} invoices of {} rows)",
        a.seed,
        w.customers.len(),
        w.invoices.len(),
        w.scale.rows_per_invoice
    );
    println!("export COSTLAKE_MANAGEMENT_ENDPOINT={}", sim.arm_url());
    println!("export AZURE_AUTHORITY_HOST={}", sim.arm_url());
    println!("export AZURE_TENANT_ID={}", w.tenant);
    println!("export AZURE_CLIENT_ID={}", sim.config().client_id);
    // The simulator's own throwaway credential: printing it is how a user connects to it.
    println!("export AZURE_CLIENT_SECRET={}", sim.config().client_secret);
    println!("# billing account: {}", w.account_name);
    println!("# blob host: {}", sim.blob_url());
    println!("# press Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    eprintln!("{}", serde_json::to_string_pretty(&sim.counters())?);
    Ok(())
}
