//! The command line: `costlake simulate` and the listing commands (`accounts`, `profiles`,
//! `customers`, `subscriptions`, `invoices`). Data goes to stdout (a table, or JSON with `--json`);
//! logs go to stderr (`RUST_LOG`, `-v`), and respect `NO_COLOR`.

use crate::auth::ClientSecretCredential;
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
    /// Customer view-charges policy: get or set, for one customer or all.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// One budget at partner or customer scope.
    #[command(subcommand)]
    Budget(BudgetCmd),
    /// Budgets as code: diff a file against Azure, or make Azure match it.
    #[command(subcommand)]
    Budgets(BudgetsCmd),
    /// Aggregated costs (Cost Management query), every page.
    Query(QueryArgs),
}

#[derive(Subcommand, Debug)]
enum PolicyCmd {
    /// Show the policy of one customer or all.
    Get {
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        who: Who,
    },
    /// Set viewCharges where it differs (idempotent); --dry-run only shows what would change.
    Set {
        #[command(flatten)]
        list: ListArgs,
        #[command(flatten)]
        who: Who,
        /// allowed or not-allowed.
        #[arg(long)]
        view_charges: String,
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
struct Who {
    /// One customer (its id, as `costlake customers` lists it).
    #[arg(long)]
    customer: Option<String>,
    /// Every customer of the billing account.
    #[arg(long)]
    all: bool,
}

#[derive(Subcommand, Debug)]
enum BudgetCmd {
    /// List budgets at partner scope, or at a customer's with --customer.
    List {
        #[command(flatten)]
        list: ListArgs,
        #[arg(long)]
        customer: Option<String>,
    },
    Get {
        #[command(flatten)]
        list: ListArgs,
        name: String,
        #[arg(long)]
        customer: Option<String>,
    },
    /// Create (or overwrite) a budget from flags or from a file with one [[budgets]] entry.
    Create {
        #[command(flatten)]
        list: ListArgs,
        name: Option<String>,
        #[arg(long)]
        customer: Option<String>,
        #[arg(long)]
        amount: Option<String>,
        #[arg(long, default_value = "Monthly")]
        time_grain: String,
        /// First month, YYYY-MM or YYYY-MM-01.
        #[arg(long)]
        start: Option<String>,
        #[arg(long)]
        end: Option<String>,
        /// THRESHOLD=EMAIL[,EMAIL…] (Actual, GreaterThan); repeatable.
        #[arg(long)]
        notify: Vec<String>,
        /// A budgets file; its [[budgets]] entries are created instead of the flags.
        #[arg(long, conflicts_with_all = ["amount", "start", "notify"])]
        file: Option<String>,
    },
    Delete {
        #[command(flatten)]
        list: ListArgs,
        name: String,
        #[arg(long)]
        customer: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum BudgetsCmd {
    /// Print what `apply` would create, update and delete.
    Plan {
        #[command(flatten)]
        list: ListArgs,
        /// A budgets file, or a pipeline file with [[budgets]].
        file: String,
    },
    /// Make Azure match the file (budgets absent from it are deleted).
    Apply {
        #[command(flatten)]
        list: ListArgs,
        file: String,
    },
}

#[derive(Args, Debug, Clone)]
struct QueryArgs {
    #[command(flatten)]
    list: ListArgs,
    /// billing-account, billing-profile:NAME or customer:ID.
    #[arg(long, default_value = "billing-account")]
    scope: String,
    /// First day, YYYY-MM-DD.
    #[arg(long)]
    from: String,
    /// Last day, YYYY-MM-DD.
    #[arg(long)]
    to: String,
    /// Daily or None.
    #[arg(long, default_value = "Daily")]
    granularity: String,
    /// ALIAS=COLUMN (PreTaxCost, CostUSD, Quantity), at most two; default totalCost=PreTaxCost.
    #[arg(long)]
    aggregate: Vec<String>,
    /// Dimension (ResourceGroup, SubscriptionName, CustomerName, MeterCategory, …) or tag:NAME; at most two.
    #[arg(long)]
    group_by: Vec<String>,
    /// DIMENSION=V1,V2: keep rows whose dimension is one of the values.
    #[arg(long)]
    filter: Option<String>,
    /// table, csv or json (stdout).
    #[arg(long, default_value = "table")]
    format: String,
    /// Also write the result as the Parquet dataset `aggregated_costs` under this lake location.
    #[arg(long)]
    lake: Option<String>,
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
    /// Rows per Cost Management query page.
    #[arg(long)]
    query_page_rows: Option<u32>,
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
            let mut shown = e.to_string();
            eprintln!("error: {}", crate::secret::redact_text(&shown));
            // Our messages already name their cause; print only what the chain adds.
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !shown.contains(&c) {
                    eprintln!("  caused by: {}", crate::secret::redact_text(&c));
                    shown.push_str(&c);
                }
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
        Command::Policy(c) => policy_cmd(c).await,
        Command::Budget(c) => budget_cmd(c).await,
        Command::Budgets(c) => budgets_cmd(c).await,
        Command::Query(a) => query_cmd(a).await,
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
    Ok((AzureClient::from_environment(endpoints)?, None))
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
    // A simulated page is generated in well under a second; a stalled one is given up on after 10 s.
    opts.request_timeout = Duration::from_secs(10);
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
    if let Some(q) = a.query_page_rows {
        cfg.query_page_rows = q;
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

async fn policy_cmd(c: PolicyCmd) -> anyhow::Result<()> {
    use crate::manage::{Outcome, policy};
    let (list, who) = match &c {
        PolicyCmd::Get { list, who } | PolicyCmd::Set { list, who, .. } => {
            (list.clone(), who.clone())
        }
    };
    let (client, _sim) = connect(&list.target).await?;
    let ba = billing_account(&client, list.billing_account.as_deref()).await?;
    let one = if who.all {
        None
    } else {
        who.customer.as_deref()
    };
    let rows = match c {
        PolicyCmd::Get { .. } => policy::get(&client, &ba, one).await?,
        PolicyCmd::Set {
            view_charges,
            dry_run,
            ..
        } => {
            let v = policy::parse_view_charges(&view_charges).with_context(|| {
                format!("--view-charges {view_charges}: use allowed or not-allowed")
            })?;
            policy::set(&client, &ba, one, v, dry_run).await?
        }
    };
    print_rows(
        &list.target,
        &rows,
        &[
            "customer",
            "displayName",
            "viewCharges",
            "desired",
            "outcome",
        ],
        |r| {
            vec![
                r.customer_id.clone(),
                r.display_name.clone(),
                r.view_charges.clone(),
                r.desired.clone().unwrap_or_default(),
                r.outcome
                    .as_ref()
                    .map(|o| o.to_string())
                    .unwrap_or_default(),
            ]
        },
    )?;
    let failed = rows
        .iter()
        .filter(|r| matches!(r.outcome, Some(Outcome::Failed(_))))
        .count();
    if failed > 0 {
        let changed = rows
            .iter()
            .filter(|r| r.outcome == Some(Outcome::Changed))
            .count();
        bail!(
            "{failed} of {} customers failed ({changed} changed, the rest unchanged); see the table above, then rerun: customers already set are left alone",
            rows.len()
        );
    }
    Ok(())
}

async fn budget_cmd(c: BudgetCmd) -> anyhow::Result<()> {
    use crate::manage::budgets;
    match c {
        BudgetCmd::List { list, customer } => {
            let (client, _sim) = connect(&list.target).await?;
            let ba = billing_account(&client, list.billing_account.as_deref()).await?;
            let v = client.budgets(&ba, customer.as_deref()).await?;
            print_rows(
                &list.target,
                &v,
                &["name", "amount", "timeGrain", "start", "eTag"],
                |b| {
                    let p = &b["properties"];
                    vec![
                        b["name"].as_str().unwrap_or("").into(),
                        p["amount"].to_string(),
                        p["timeGrain"].as_str().unwrap_or("").into(),
                        p["timePeriod"]["startDate"].as_str().unwrap_or("").into(),
                        b["eTag"].as_str().unwrap_or("").into(),
                    ]
                },
            )
        }
        BudgetCmd::Get {
            list,
            name,
            customer,
        } => {
            let (client, _sim) = connect(&list.target).await?;
            let ba = billing_account(&client, list.billing_account.as_deref()).await?;
            match client.budget(&ba, customer.as_deref(), &name).await? {
                Some(b) => {
                    println!("{}", serde_json::to_string_pretty(&b)?);
                    Ok(())
                }
                None => bail!(
                    "budget `{name}` does not exist at {} scope",
                    customer
                        .map(|c| format!("customer {c}"))
                        .unwrap_or_else(|| "partner".into())
                ),
            }
        }
        BudgetCmd::Create {
            list,
            name,
            customer,
            amount,
            time_grain,
            start,
            end,
            notify,
            file,
        } => {
            let desired = match file {
                Some(f) => budgets::load(&f)?.1,
                None => {
                    let name = name.context("give the budget's NAME, or --file")?;
                    let mut notifications = Vec::new();
                    for n in &notify {
                        let (t, emails) = n.split_once('=').with_context(|| {
                            format!("--notify {n}: write THRESHOLD=EMAIL[,EMAIL]")
                        })?;
                        notifications.push(budgets::NotificationSpec {
                            threshold: toml::Value::String(t.into()),
                            operator: "GreaterThan".into(),
                            contact_emails: emails
                                .split(',')
                                .map(|e| e.trim().to_owned())
                                .filter(|e| !e.is_empty())
                                .collect(),
                            threshold_type: "Actual".into(),
                            enabled: true,
                        });
                    }
                    let spec = budgets::BudgetSpec {
                        name,
                        customer: customer.clone(),
                        category: "Cost".into(),
                        amount: toml::Value::String(amount.context("--amount is required")?),
                        time_grain,
                        start: start.context("--start is required")?,
                        end,
                        notifications,
                    };
                    budgets::from_specs("command line", None, &[spec])?.1
                }
            };
            let (client, _sim) = connect(&list.target).await?;
            let ba = billing_account(&client, list.billing_account.as_deref()).await?;
            for b in &desired {
                let current = client.budget(&ba, b.customer.as_deref(), &b.name).await?;
                let etag = current
                    .as_ref()
                    .and_then(|c| c["eTag"].as_str().map(str::to_owned));
                let (status, _) = client
                    .put_budget(
                        &ba,
                        b.customer.as_deref(),
                        &b.name,
                        &budgets::body(b, etag.as_deref()),
                    )
                    .await?;
                println!(
                    "{} budget `{}` at {} scope",
                    if status == 201 { "created" } else { "updated" },
                    b.name,
                    b.customer
                        .as_ref()
                        .map(|c| format!("customer {c}"))
                        .unwrap_or_else(|| "partner".into())
                );
            }
            Ok(())
        }
        BudgetCmd::Delete {
            list,
            name,
            customer,
        } => {
            let (client, _sim) = connect(&list.target).await?;
            let ba = billing_account(&client, list.billing_account.as_deref()).await?;
            client
                .delete_budget(&ba, customer.as_deref(), &name)
                .await?;
            println!("deleted budget `{name}`");
            Ok(())
        }
    }
}

async fn budgets_cmd(c: BudgetsCmd) -> anyhow::Result<()> {
    use crate::manage::{Outcome, budgets};
    let (list, file, apply) = match c {
        BudgetsCmd::Plan { list, file } => (list, file, false),
        BudgetsCmd::Apply { list, file } => (list, file, true),
    };
    // Validate everything before any call.
    let (file_ba, desired) = budgets::load(&file)?;
    let (client, _sim) = connect(&list.target).await?;
    let ba = match list.billing_account.clone().or(file_ba) {
        Some(b) => b,
        None => billing_account(&client, None).await?,
    };
    let mut changes = budgets::plan(&client, &ba, &desired).await?;
    if apply {
        changes = budgets::apply(&client, &ba, changes).await;
    }
    print_rows(
        &list.target,
        &changes,
        &["action", "scope", "budget", "changes", "outcome"],
        |c| {
            vec![
                format!("{:?}", c.action).to_lowercase(),
                c.scope.clone(),
                c.name.clone(),
                c.changes.join("; "),
                c.outcome
                    .as_ref()
                    .map(|o| o.to_string())
                    .unwrap_or_default(),
            ]
        },
    )?;
    let failed: Vec<&budgets::Change> = changes
        .iter()
        .filter(|c| matches!(c.outcome, Some(Outcome::Failed(_))))
        .collect();
    if !failed.is_empty() {
        let done = changes
            .iter()
            .filter(|c| c.outcome == Some(Outcome::Changed))
            .count();
        bail!(
            "{} change(s) failed, {done} applied; rerun `costlake budgets apply {file}` after fixing: the plan is recomputed from Azure",
            failed.len()
        );
    }
    Ok(())
}

async fn query_cmd(a: QueryArgs) -> anyhow::Result<()> {
    use crate::manage::query::{QuerySpec, run};
    let day = |s: &str, what: &str| {
        NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .with_context(|| format!("{what} `{s}`: write YYYY-MM-DD"))
    };
    let (from, to) = (day(&a.from, "--from")?, day(&a.to, "--to")?);
    let mut aggregations = Vec::new();
    for g in &a.aggregate {
        let (alias, col) = g
            .split_once('=')
            .with_context(|| format!("--aggregate {g}: write ALIAS=COLUMN"))?;
        aggregations.push((alias.to_owned(), col.to_owned()));
    }
    if aggregations.is_empty() {
        aggregations.push(("totalCost".into(), "PreTaxCost".into()));
    }
    let filter = match &a.filter {
        Some(f) => {
            let (d, v) = f
                .split_once('=')
                .with_context(|| format!("--filter {f}: write DIMENSION=V1,V2"))?;
            Some((d.to_owned(), v.split(',').map(str::to_owned).collect()))
        }
        None => None,
    };
    if !["table", "csv", "json"].contains(&a.format.as_str()) {
        bail!("--format {}: use table, csv or json", a.format);
    }
    let (client, _sim) = connect(&a.list.target).await?;
    let ba = billing_account(&client, a.list.billing_account.as_deref()).await?;
    let base = format!("/providers/Microsoft.Billing/billingAccounts/{ba}");
    let scope = match a.scope.split_once(':') {
        None if a.scope == "billing-account" => base.clone(),
        Some(("billing-profile", bp)) => format!("{base}/billingProfiles/{bp}"),
        Some(("customer", c)) => format!("{base}/customers/{c}"),
        _ => bail!(
            "--scope {}: use billing-account, billing-profile:NAME or customer:ID",
            a.scope
        ),
    };
    let spec = QuerySpec {
        scope,
        from,
        to,
        granularity: a.granularity.clone(),
        aggregations,
        group_by: a.group_by.clone(),
        filter,
    };
    let table = run(&client, &spec).await?;
    eprintln!(
        "query: {} rows in {} page(s)",
        table.rows.len(),
        table.pages
    );
    match a.format.as_str() {
        "csv" => print!("{}", table.to_csv()),
        "json" => println!("{}", serde_json::to_string_pretty(&table.to_json())?),
        _ => {
            let t = Target {
                json: false,
                ..a.list.target.clone()
            };
            print_rows(
                &t,
                &table.rows,
                &table.columns.iter().map(String::as_str).collect::<Vec<_>>(),
                |r| r.iter().map(|c| c.to_string()).collect(),
            )?;
        }
    }
    if let Some(lake) = &a.lake {
        let df = table.to_frame()?;
        let output = crate::storage::Store::open(lake)?;
        let run_id = crate::pipeline::new_run_id();
        let loader = crate::load::Loader {
            output,
            run_id,
            zstd_level: 3,
            row_group_size: 128 * 1024,
        };
        let label = spec.scope.rsplit('/').next().unwrap_or("scope").to_owned();
        let part = crate::transform::Partition {
            dataset: "aggregated_costs",
            keys: vec![
                ("scope".into(), label),
                ("period".into(), format!("{from}_{to}")),
            ],
            file: "part-00000".into(),
            df,
        };
        let entry = loader.stage(part).await?;
        loader.complete(&[entry]).await?;
        let r = loader.publish().await?;
        eprintln!(
            "aggregated_costs: {} partition(s) written, {} unchanged under {lake}",
            r.partitions_written, r.partitions_unchanged
        );
    }
    Ok(())
}
