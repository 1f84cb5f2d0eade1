//! `shoal`: the operator's command line, a client of the coordinator's gRPC API.
//!
//! Exit codes: 0 success; 1 the command failed (the reason is printed on stderr); 2 bad usage;
//! 3 `shoal watch` saw the migration fail or be cancelled.

use std::process::ExitCode;

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use shoal_proto::auth::{BearerToken, Token};
use shoal_proto::v1;
use shoal_proto::v1::migration_service_client::MigrationServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// shoal: online schema changes for MySQL and MariaDB.
#[derive(Debug, Parser)]
#[command(
    name = "shoal",
    version,
    about,
    long_about = None,
    after_help = "Exit codes:\n  0  success\n  1  the command failed (the reason is on stderr)\n  2  bad usage\n  3  `watch`: the migration failed or was cancelled\n\nExamples:\n  shoal submit --target shop --alter 'ALTER TABLE orders ADD COLUMN note TEXT'\n  shoal watch orders-1a2b3c4d\n  shoal status orders-1a2b3c4d --output json"
)]
struct Cli {
    /// gRPC address of any coordinator replica.
    #[arg(
        long,
        global = true,
        env = "SHOAL_COORDINATOR",
        default_value = "http://127.0.0.1:7420"
    )]
    coordinator: String,

    /// File holding the bearer token the coordinators require (their --auth-token-file).
    #[arg(long, global = true, env = "SHOAL_AUTH_TOKEN_FILE")]
    auth_token_file: Option<std::path::PathBuf>,

    /// TLS to the coordinator (an https:// --coordinator), and a client certificate for
    /// coordinators that require one.
    #[command(flatten)]
    tls: shoal_proto::tls::ClientTlsArgs,

    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    /// Aligned columns for people.
    Table,
    /// One JSON document, for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the live workers of the fleet.
    #[command(after_help = "Example:\n  shoal workers --coordinator http://coordinator:7420")]
    Workers,
    /// List the migrations the fleet knows.
    #[command(after_help = "Example:\n  shoal list --output json")]
    List,
    /// Submit a migration to the fleet; prints its id.
    #[command(
        after_help = "Example:\n  shoal submit --target shop-primary --alter 'ALTER TABLE orders ADD COLUMN note VARCHAR(64)'\n\nThe coordinator and the workers resolve the target name to a DSN from their own\nconfiguration (SHOAL_TARGET_<NAME>); no password passes through this command."
    )]
    Submit(SubmitArgs),
    /// Follow a migration until it ends: a progress bar on a terminal, plain lines otherwise.
    #[command(
        after_help = "Exit code 0 when the migration completed, 3 when it failed or was cancelled.\n\nExample:\n  shoal watch orders-1a2b3c4d\n  shoal watch orders-1a2b3c4d --output json   # one status document per line"
    )]
    Watch {
        /// The migration id.
        id: String,
    },
    /// Show one migration's status.
    #[command(after_help = "Example:\n  shoal status orders-1a2b3c4d --output json")]
    Status {
        /// The migration id.
        id: String,
    },
    /// Pause a migration's copy: no new chunk is handed out; changes keep being applied.
    #[command(after_help = "Example:\n  shoal pause orders-1a2b3c4d")]
    Pause {
        /// The migration id.
        id: String,
    },
    /// Release a migration waiting before its cut-over (submitted with --defer-cutover).
    #[command(after_help = "Example:\n  shoal release orders-1a2b3c4d")]
    Release {
        /// The migration id.
        id: String,
    },
    /// Resume a paused migration.
    #[command(after_help = "Example:\n  shoal resume orders-1a2b3c4d")]
    Resume {
        /// The migration id.
        id: String,
    },
    /// Change how many chunks a migration copies at once, without restarting it.
    #[command(after_help = "Example:\n  shoal volume orders-1a2b3c4d --threads 8")]
    Volume {
        /// The migration id.
        id: String,
        /// Concurrent chunk copies across the fleet.
        #[arg(long)]
        threads: u32,
    },
    /// Cancel a migration before cut-over; the original table stays as it is.
    #[command(after_help = "Example:\n  shoal cancel orders-1a2b3c4d")]
    Cancel {
        /// The migration id.
        id: String,
    },
    /// Run one migration in this process (no coordinator, no Redis): in-process workers.
    #[command(
        after_help = "Example:\n  SHOAL_DSN='mysql://root:pw@127.0.0.1:3306/shop' \\\n    shoal run --alter 'ALTER TABLE orders ADD COLUMN note VARCHAR(64)' --threads 4\n\nExit code 0 when the table has its new schema, 1 (with a one-line reason) otherwise."
    )]
    Run(RunArgs),
    /// The dry run: checks, the new table, the column mapping and estimates; changes nothing.
    #[command(
        after_help = "Examples:\n  SHOAL_DSN='mysql://root:pw@127.0.0.1:3306/shop' \\\n    shoal plan --alter 'ALTER TABLE orders ADD COLUMN note VARCHAR(64)'\n  shoal plan --target shop-primary --alter '…'   # asks the coordinator\n\nExit code 0 when shoal can run it, 1 when it refuses (the reason and the fix are printed)."
    )]
    Plan(PlanArgs),
}

#[derive(Debug, clap::Args)]
struct PlanArgs {
    /// Ask the coordinator (--coordinator) to plan on this target instead of a local DSN.
    #[arg(long)]
    target: Option<String>,
    /// Schema of the table, with --target (default: the one the target's DSN selects).
    #[arg(long, default_value = "")]
    schema: String,
    /// The server, without --target.
    #[command(flatten)]
    server: DsnArgs,
    /// The ALTER TABLE statement.
    #[arg(long)]
    alter: String,
    /// Plan a copy without trying ALGORITHM=INSTANT first.
    #[arg(long)]
    no_instant: bool,
    /// Key span of the first copy chunks (for the chunk estimate).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
    chunk_rows: u64,
}

#[derive(Debug, clap::Args)]
struct SubmitArgs {
    /// Name of the server, resolved by coordinators and workers.
    #[arg(long)]
    target: String,
    /// Schema of the table (default: the one the target's DSN selects).
    #[arg(long, default_value = "")]
    schema: String,
    /// The ALTER TABLE statement.
    #[arg(long)]
    alter: String,
    /// Concurrent chunk copies across the fleet.
    #[arg(long, default_value_t = 4)]
    threads: u32,
    /// Server-side time each copy chunk aims at; 0 keeps chunks at 1,000 keys.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    target_chunk_time: std::time::Duration,
    /// server (default) or buffered.
    #[arg(long, default_value = "server")]
    copy_mode: shoal_common::task::CopyMode,
    /// Keep the original table as _<t>_old after cut-over.
    #[arg(long)]
    keep_old_table: bool,
    /// Do not try ALGORITHM=INSTANT first; always copy.
    #[arg(long)]
    no_instant: bool,
    /// Copy with the new table's secondary indexes in place. By default plain (non-unique)
    /// indexes are built after the copy, which is faster; they are kept anyway with replicas
    /// to watch, the latency gate or a nice ratio (the build is one statement no throttle
    /// pauses, and replicas replay it serially).
    #[arg(long)]
    keep_secondary_indexes: bool,
    /// Wait before the cut-over until `shoal release ID`, or until the `_shoal_sentinel` table
    /// is dropped (which releases every waiting migration).
    #[arg(long)]
    defer_cutover: bool,
    /// When resuming is impossible (the checkpoint's binlog file was purged), fail instead of
    /// starting afresh.
    #[arg(long)]
    strict: bool,
    /// A target (resolved like --target) whose replication lag holds the copy (repeatable).
    #[arg(long = "replica-target")]
    replica_targets: Vec<String>,
    /// Throttle limits.
    #[command(flatten)]
    limits: LimitArgs,
}

/// The throttle's limits, shared by `shoal run` and `shoal submit`.
#[derive(Debug, clap::Args)]
struct LimitArgs {
    /// Hold the copy while any replica lags more than this (0 turns the check off).
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    max_replica_lag: std::time::Duration,
    /// Fail the migration (before cut-over) when a replica's lag stays unknown this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    unknown_lag_abort_after: std::time::Duration,
    /// Hold the copy while the primary's Threads_running is above this (0: off).
    #[arg(long, default_value_t = 0)]
    max_threads_running: u64,
    /// Hold the copy while InnoDB's history list length is above this (0: off); a long
    /// transaction holding a read view makes it grow.
    #[arg(long, default_value_t = 0)]
    max_history_list_length: u64,
    /// Hold the copy while a probe commit on the primary (every 100 ms) takes more than this
    /// multiple of its latency measured before the copy, e.g. 2 (0: off). The application's
    /// latency then wins over the copy's speed.
    #[arg(long, default_value_t = 0.0, value_parser = parse_latency_factor)]
    max_latency_factor: f64,
    /// After each chunk, rest this many times as long as its statement took (gh-ost's nice
    /// ratio; 19: the copy runs a twentieth of the time), and pace the checksum the same way
    /// (0: off).
    #[arg(long, default_value_t = 0.0, value_parser = parse_nice_ratio)]
    nice_ratio: f64,
}

/// `--nice-ratio`: from 0 to 100.
fn parse_nice_ratio(value: &str) -> Result<f64, String> {
    let ratio: f64 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))?;
    shoal_common::throttle::percent_of_nice_ratio(ratio).map(|_| ratio)
}

/// `--max-latency-factor`: 0 or a factor above 1.
fn parse_latency_factor(value: &str) -> Result<f64, String> {
    let factor: f64 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))?;
    shoal_common::throttle::percent_of_factor(factor).map(|_| factor)
}

impl LimitArgs {
    fn limits(&self) -> shoal_common::throttle::Limits {
        shoal_common::throttle::Limits {
            max_replica_lag: self.max_replica_lag,
            unknown_lag_abort_after: self.unknown_lag_abort_after,
            max_threads_running: self.max_threads_running,
            max_history_list_length: self.max_history_list_length,
            // Checked when parsed.
            max_latency_percent: shoal_common::throttle::percent_of_factor(self.max_latency_factor)
                .unwrap_or(0),
            nice_percent: shoal_common::throttle::percent_of_nice_ratio(self.nice_ratio)
                .unwrap_or(0),
        }
    }
}

#[derive(Debug, clap::Args)]
struct DsnArgs {
    /// DSN of the server, selecting the schema: mysql://user:pass@host:port/schema.
    /// Prefer --dsn-file or SHOAL_DSN to keep the password out of the process list.
    #[arg(long, env = "SHOAL_DSN", hide_env_values = true)]
    dsn: Option<String>,
    /// File holding the DSN.
    #[arg(long, env = "SHOAL_DSN_FILE")]
    dsn_file: Option<std::path::PathBuf>,
}

impl DsnArgs {
    /// The DSN from --dsn (or SHOAL_DSN) or from --dsn-file.
    fn read(&self) -> anyhow::Result<String> {
        Ok(match (&self.dsn, &self.dsn_file) {
            (Some(dsn), _) => dsn.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("read --dsn-file {}", path.display()))?
                .trim()
                .to_owned(),
            (None, None) => anyhow::bail!("give the server with --dsn, --dsn-file or SHOAL_DSN"),
        })
    }
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The server.
    #[command(flatten)]
    server: DsnArgs,
    /// The ALTER TABLE statement.
    #[arg(long)]
    alter: String,
    /// Concurrent chunk copies.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    threads: u32,
    /// server (INSERT … SELECT by the server; the faster in `make bench`) or buffered (the worker
    /// reads and inserts batches).
    #[arg(long, default_value = "server")]
    copy_mode: shoal_common::task::CopyMode,
    /// Key span of the first copy chunks; later chunks are sized by --target-chunk-time.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
    chunk_rows: u64,
    /// Server-side time each copy chunk aims at (chunks grow or shrink toward it); 0 keeps
    /// --chunk-rows fixed.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    target_chunk_time: std::time::Duration,
    /// Keep the original table as _<t>_old after cut-over.
    #[arg(long)]
    keep_old_table: bool,
    /// Do not try ALGORITHM=INSTANT first; always copy.
    #[arg(long)]
    no_instant: bool,
    /// Copy with the new table's secondary indexes in place. By default plain (non-unique)
    /// indexes are built after the copy, which is faster; they are kept anyway with replicas
    /// to watch, the latency gate or a nice ratio (the build is one statement no throttle
    /// pauses, and replicas replay it serially).
    #[arg(long)]
    keep_secondary_indexes: bool,
    /// Bound on shoal's lock waits (DDL, fences, cut-over).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    lock_wait_timeout: std::time::Duration,
    /// Lease of one copy task.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    lease_ttl: std::time::Duration,
    /// How often progress is checkpointed (run again with the same ALTER to resume from it).
    #[arg(long, default_value = "50s", value_parser = humantime::parse_duration)]
    checkpoint_interval: std::time::Duration,
    /// How often a status line is logged until the cut-over.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    status_interval: std::time::Duration,
    /// When resuming is impossible (the checkpoint's binlog file was purged), fail instead of
    /// starting afresh.
    #[arg(long)]
    strict: bool,
    /// Wait before the cut-over until the `_shoal_sentinel` table is dropped, or this
    /// migration's row in it is deleted.
    #[arg(long)]
    defer_cutover: bool,
    /// Throttle limits.
    #[command(flatten)]
    throttle: ThrottleArgs,
    /// Most shoal migrations copying on this server at once, across every process that sets it
    /// (advisory locks `shoal/slot/<i>`); over the cap the run is refused. 0: no cap.
    #[arg(long, env = "SHOAL_MAX_CONCURRENT_MIGRATIONS", default_value_t = 0)]
    max_concurrent_migrations: u32,
    /// Log line format: text or json.
    #[arg(long, env = "SHOAL_LOG_FORMAT", default_value = "text")]
    log_format: shoal_common::telemetry::LogFormat,
}

/// When the copy holds (hands out no new chunk).
#[derive(Debug, clap::Args)]
struct ThrottleArgs {
    /// A replica whose lag holds the copy (repeatable): mysql://user:pass@host:port. shoal
    /// writes a heartbeat row on the primary and reads it there.
    #[arg(long = "replica-dsn")]
    replica_dsns: Vec<String>,
    /// A file holding one replica DSN (repeatable); keeps the password out of the process list.
    #[arg(long = "replica-dsn-file")]
    replica_dsn_files: Vec<std::path::PathBuf>,
    /// Throttle limits.
    #[command(flatten)]
    limits: LimitArgs,
}

impl ThrottleArgs {
    /// The replicas and limits.
    fn resolve(
        &self,
        lock_wait_timeout: std::time::Duration,
    ) -> anyhow::Result<(
        Vec<shoal_coordinator::migration::throttle::Replica>,
        shoal_common::throttle::Limits,
    )> {
        let mut dsns = self.replica_dsns.clone();
        for path in &self.replica_dsn_files {
            dsns.push(
                std::fs::read_to_string(path)
                    .with_context(|| format!("read --replica-dsn-file {}", path.display()))?
                    .trim()
                    .to_owned(),
            );
        }
        let replicas = dsns
            .iter()
            .map(|dsn| {
                shoal_coordinator::migration::throttle::Replica::from_dsn(
                    dsn,
                    None,
                    lock_wait_timeout,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((replicas, self.limits.limits()))
    }
}

/// The coordinator's MigrationService, every call carrying the bearer token if there is one.
type Client = MigrationServiceClient<InterceptedService<Channel, BearerToken>>;

async fn client(
    address: &str,
    token_file: Option<&std::path::Path>,
    tls: &shoal_proto::tls::ClientTlsArgs,
) -> anyhow::Result<Client> {
    let token = token_file
        .map(Token::from_file)
        .transpose()
        .context("--auth-token-file")?;
    let endpoint = Endpoint::from_shared(address.to_owned())
        .with_context(|| format!("--coordinator {address:?} is not a URL"))?;
    let endpoint = shoal_proto::connection::client(endpoint);
    let endpoint = match tls.config(address).context("TLS")? {
        Some(config) => endpoint.tls_config(config).context("TLS")?,
        None => endpoint,
    };
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connect to coordinator {address}"))?;
    Ok(MigrationServiceClient::with_interceptor(
        channel,
        BearerToken::new(token),
    ))
}

fn print_workers(workers: &[v1::WorkerInfo], output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => {
            let rows: Vec<serde_json::Value> = workers
                .iter()
                .map(|worker| {
                    serde_json::json!({
                        "worker_id": worker.worker_id,
                        "hostname": worker.hostname,
                        "pid": worker.pid,
                        "slots": worker.slots,
                        "busy_slots": worker.busy_slots,
                        "version": worker.version,
                        "last_heartbeat_unix": worker.last_heartbeat_at.map(|at| at.seconds),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        Output::Table => {
            println!(
                "{:<40} {:<20} {:>8} {:>9} {:<10}",
                "WORKER", "HOST", "PID", "BUSY", "VERSION"
            );
            for worker in workers {
                println!(
                    "{:<40} {:<20} {:>8} {:>4}/{:<4} {:<10}",
                    worker.worker_id,
                    worker.hostname,
                    worker.pid,
                    worker.busy_slots,
                    worker.slots,
                    worker.version
                );
            }
        }
    }
    Ok(())
}

fn print_migrations(response: &v1::ListMigrationsResponse, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => {
            let migrations: Vec<_> = response
                .migrations
                .iter()
                .map(shoal_coordinator::http::to_json)
                .collect();
            let document = serde_json::json!({
                "warnings": response.warnings,
                "total": response.total,
                "migrations": migrations,
            });
            println!("{}", serde_json::to_string_pretty(&document)?);
        }
        Output::Table => {
            for warning in &response.warnings {
                println!("warning: {warning}");
            }
            println!(
                "{:<28} {:<26} {:<10} {:>12} {:>6}  MESSAGE",
                "MIGRATION", "STATE", "OUTCOME", "ROWS", "PCT"
            );
            for status in &response.migrations {
                let progress = status.progress.clone().unwrap_or_default();
                println!(
                    "{:<28} {:<26} {:<10} {:>12} {:>5.1}%  {}",
                    status.migration_id,
                    state_label(status.state),
                    outcome_name(status).trim_start_matches("OUTCOME_"),
                    progress.rows_copied,
                    progress.percent,
                    status.message
                );
            }
            println!("{} migration(s)", response.total);
        }
    }
    Ok(())
}

async fn plan(
    coordinator: &str,
    token_file: Option<&std::path::Path>,
    tls: &shoal_proto::tls::ClientTlsArgs,
    output: Output,
    args: PlanArgs,
) -> anyhow::Result<()> {
    let response = match args.target {
        Some(target) => client(coordinator, token_file, tls)
            .await?
            .plan_migration(v1::PlanMigrationRequest {
                spec: Some(v1::MigrationSpec {
                    table: Some(v1::TableRef {
                        target,
                        schema: args.schema,
                        table: String::new(),
                    }),
                    alter_statement: args.alter,
                    options: Some(v1::MigrationOptions {
                        no_instant: args.no_instant,
                        ..Default::default()
                    }),
                }),
            })
            .await
            .map_err(|status| anyhow::anyhow!("{}", status.message()))?
            .into_inner(),
        None => {
            use shoal_coordinator::embedded::{LOCAL_TARGET, new_migration_id};
            let statement = shoal_coordinator::migration::alter::parse(&args.alter)?;
            let options = shoal_coordinator::migration::MigrationOptions {
                id: new_migration_id(&statement.table),
                target: LOCAL_TARGET.to_owned(),
                dsn: args.server.read()?,
                schema: None,
                alter: args.alter.clone(),
                threads: 1,
                chunk_rows: args.chunk_rows,
                target_chunk_time: std::time::Duration::ZERO,
                copy_mode: shoal_common::task::CopyMode::default(),
                keep_old_table: false,
                no_instant: args.no_instant,
                keep_secondary_indexes: false,
                lock_wait_timeout: std::time::Duration::from_secs(5),
                lease_ttl: std::time::Duration::from_secs(10),
                checkpoint_interval: std::time::Duration::from_secs(50),
                status_interval: std::time::Duration::from_secs(10),
                strict: false,
                defer_cutover: false,
                owner: "plan".to_owned(),
                fleet: None,
                take_over: false,
                replicas: Vec::new(),
                limits: shoal_common::throttle::Limits::default(),
                max_concurrent_migrations: 0,
            };
            shoal_coordinator::embedded::plan(options).await?
        }
    };
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&plan_json(&response))?),
        Output::Table => print_plan(&response),
    }
    if response
        .findings
        .iter()
        .any(|finding| finding.severity == v1::FindingSeverity::Refusal as i32)
    {
        anyhow::bail!("shoal refuses this migration (see above)");
    }
    Ok(())
}

fn severity_name(severity: i32) -> &'static str {
    v1::FindingSeverity::try_from(severity).map_or("UNKNOWN", |severity| {
        severity
            .as_str_name()
            .trim_start_matches("FINDING_SEVERITY_")
    })
}

fn plan_json(plan: &v1::PlanMigrationResponse) -> serde_json::Value {
    serde_json::json!({
        "findings": plan.findings.iter().map(|finding| serde_json::json!({
            "severity": severity_name(finding.severity),
            "code": finding.code,
            "message": finding.message,
            "fix": finding.fix,
        })).collect::<Vec<_>>(),
        "new_table_ddl": plan.shadow_table_ddl,
        "columns": plan.columns.iter().map(|mapping| serde_json::json!({
            "new_column": mapping.new_column,
            "source_column": mapping.source_column,
        })).collect::<Vec<_>>(),
        "estimated_rows": plan.estimated_rows,
        "estimated_chunks": plan.estimated_chunks,
        "estimated_copy_seconds": plan.estimated_copy_time.map(|time| time.seconds),
    })
}

fn print_plan(plan: &v1::PlanMigrationResponse) {
    for finding in &plan.findings {
        println!(
            "{:<8} {}: {}",
            severity_name(finding.severity),
            finding.code,
            finding.message
        );
        if !finding.fix.is_empty() {
            println!("         fix: {}", finding.fix);
        }
    }
    if plan.shadow_table_ddl.is_empty() {
        return;
    }
    println!(
        "\nnew table:\n{}\n\ncolumns (new <- source):",
        plan.shadow_table_ddl
    );
    for mapping in &plan.columns {
        let source = if mapping.source_column.is_empty() {
            "(its default, or generated by the server)"
        } else {
            mapping.source_column.as_str()
        };
        println!("  {} <- {source}", mapping.new_column);
    }
    println!(
        "\nestimated rows {}, first-pass chunks {}, rough copy time {}s",
        plan.estimated_rows,
        plan.estimated_chunks,
        plan.estimated_copy_time.map_or(0, |time| time.seconds)
    );
}

/// `shoal run`: the migration in this process. With `--output json`, stdout carries one JSON
/// object per line: a `progress` object every two seconds and one `result` object at the end
/// (`completed`; `refused`: shoal declined the ALTER or the table, which is as it was; `failed`;
/// `stopped`: checkpointed, run it again to resume), whatever the exit code.
async fn run_embedded(args: RunArgs, output: Output) -> anyhow::Result<()> {
    use shoal_coordinator::embedded::{LOCAL_TARGET, new_migration_id, run};
    use shoal_coordinator::migration::{ChangePath, MigrationOptions, Progress};

    let _telemetry = shoal_common::telemetry::init(Some("shoal"), args.log_format);
    let prepared = (|| -> anyhow::Result<_> {
        let dsn = args.server.read()?;
        let statement = shoal_coordinator::migration::alter::parse(&args.alter)?;
        Ok((
            dsn,
            statement,
            args.throttle.resolve(args.lock_wait_timeout)?,
        ))
    })();
    let (dsn, statement, (replicas, limits)) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            if let Output::Json = output {
                let refused = serde_json::json!({
                    "type": "result",
                    "outcome": "refused",
                    "error": format!("{error:#}"),
                });
                println!("{refused}");
            }
            return Err(error);
        }
    };
    let options = MigrationOptions {
        id: new_migration_id(&statement.table),
        target: LOCAL_TARGET.to_owned(),
        dsn,
        schema: None,
        alter: args.alter.clone(),
        threads: args.threads,
        chunk_rows: args.chunk_rows,
        target_chunk_time: args.target_chunk_time,
        copy_mode: args.copy_mode,
        keep_old_table: args.keep_old_table,
        no_instant: args.no_instant,
        keep_secondary_indexes: args.keep_secondary_indexes,
        lock_wait_timeout: args.lock_wait_timeout,
        lease_ttl: args.lease_ttl,
        checkpoint_interval: args.checkpoint_interval,
        status_interval: args.status_interval,
        strict: args.strict,
        defer_cutover: args.defer_cutover,
        owner: format!(
            "run@{}:{}",
            gethostname::gethostname().to_string_lossy(),
            std::process::id()
        ),
        fleet: None,
        take_over: false,
        replicas,
        limits,
        max_concurrent_migrations: args.max_concurrent_migrations,
    };
    let id = options.id.clone();
    let (progress, watcher) = tokio::sync::watch::channel(Progress::default());
    let watcher_final = watcher.clone();
    let reporter = tokio::spawn(report_progress(watcher, output));
    let started = std::time::Instant::now();
    let result = run(options, progress, shoal_common::signals::shutdown_token()).await;
    reporter.abort();
    // Aborted and awaited: no progress line follows the result.
    let _ = reporter.await;
    let last = watcher_final.borrow().clone();
    // A resumed migration keeps its checkpoint's id.
    let id = last.resumed_id.clone().unwrap_or_else(|| id.to_string());
    if let Output::Json = output {
        use shoal_coordinator::migration::Error as Failure;
        let (outcome, error) = match &result {
            Ok(_) => ("completed", None),
            Err(Failure::Deposed(_)) => ("stopped", None),
            // shoal declined the ALTER or the table (its finding names why); the original table
            // is as it was.
            Err(error @ (Failure::Preflight(_) | Failure::Alter(_))) => {
                ("refused", Some(error.to_string()))
            }
            Err(error) => ("failed", Some(error.to_string())),
        };
        let path = match &result {
            Ok(ChangePath::Instant) => Some("instant"),
            Ok(ChangePath::Copy) => Some("copy"),
            Err(_) => None,
        };
        let mut document = progress_json(&last);
        document["type"] = "result".into();
        document["migration_id"] = id.clone().into();
        document["outcome"] = outcome.into();
        document["path"] = path.into();
        document["error"] = error.into();
        document["seconds"] = started.elapsed().as_secs_f64().into();
        document["checksum_passes"] = last.checksum_passes.into();
        document["ranges_repaired"] = last.ranges_repaired.into();
        document["cutover_blocked_ms"] = u64::try_from(last.cutover_blocked.as_millis())
            .unwrap_or(u64::MAX)
            .into();
        document["resumed_from"] = last.resumed_at.map(|state| state.to_string()).into();
        println!("{document}");
    }
    if let Err(shoal_coordinator::migration::Error::Deposed(_)) = &result {
        anyhow::bail!(
            "migration {id} stopped; its progress is checkpointed in the database: run the same \
             command again to resume it"
        );
    }
    let path = result.with_context(|| format!("migration {id} failed"))?;
    if let Output::Json = output {
        return Ok(());
    }
    match path {
        ChangePath::Instant => println!(
            "migration {id} completed with ALGORITHM=INSTANT (no copy) in {:.1?}",
            started.elapsed()
        ),
        ChangePath::Copy => println!(
            "migration {id} completed by copy in {:.1?}: {} rows copied, {} changes applied, \
             {} checksum pass(es), {} range(s) repaired, writes blocked {:?} at cut-over",
            started.elapsed(),
            last.rows_copied,
            last.changes_applied,
            last.checksum_passes,
            last.ranges_repaired,
            last.cutover_blocked
        ),
    }
    if let Some(state) = last.resumed_at {
        println!(
            "resumed from its checkpoint at {state}: {} chunk(s) recopied, {} chunk(s) copied by this run",
            last.chunks_recopied, last.chunks_done
        );
    }
    Ok(())
}

/// A run's progress as JSON (the fields of `run --output json`).
fn progress_json(progress: &shoal_coordinator::migration::Progress) -> serde_json::Value {
    serde_json::json!({
        "type": "progress",
        "state": progress.state.to_string(),
        "rows_copied": progress.rows_copied,
        "rows_estimated": progress.rows_estimated,
        "chunks_done": progress.chunks_done,
        "chunks_in_flight": progress.chunks_in_flight,
        "changes_applied": progress.changes_applied,
        "changes_buffered": progress.changes_buffered,
        "paused": progress.paused,
        "throttled": progress.throttled,
    })
}

/// Prints a progress line every two seconds until aborted: text on stderr, or a JSON object
/// on stdout.
async fn report_progress(
    mut watcher: tokio::sync::watch::Receiver<shoal_coordinator::migration::Progress>,
    output: Output,
) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        ticker.tick().await;
        let progress = watcher.borrow_and_update().clone();
        if let Output::Json = output {
            println!("{}", progress_json(&progress));
            continue;
        }
        let percent = if progress.rows_estimated > 0 {
            100.0 * progress.rows_copied as f64 / progress.rows_estimated as f64
        } else {
            0.0
        };
        let throttled = progress
            .throttled
            .as_deref()
            .map(|reason| format!(", throttled: {reason}"))
            .unwrap_or_default();
        eprintln!(
            "shoal: {} rows {}/{} (~{percent:.0}%), chunks {} done {} in flight, changes applied {} buffered {}{throttled}",
            progress.state,
            progress.rows_copied,
            progress.rows_estimated,
            progress.chunks_done,
            progress.chunks_in_flight,
            progress.changes_applied,
            progress.changes_buffered,
        );
    }
}

/// What a one-shot command did: `text`, or `{"migration_id": …, "action": …}`.
fn print_done(output: Output, id: &str, action: &str, text: &str) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({ "migration_id": id, "action": action })
        ),
        Output::Table => println!("{text}"),
    }
}

fn outcome_name(status: &v1::MigrationStatus) -> &'static str {
    v1::Outcome::try_from(status.outcome)
        .map(|outcome| outcome.as_str_name())
        .unwrap_or("UNKNOWN")
}

fn state_name(status: &v1::MigrationStatus) -> &'static str {
    v1::State::try_from(status.state)
        .map(|state| state.as_str_name())
        .unwrap_or("UNKNOWN")
}

fn status_line(status: &v1::MigrationStatus) -> String {
    let summary = status
        .progress
        .as_ref()
        .map(|progress| progress.summary.clone())
        .unwrap_or_default();
    format!(
        "{} {} {}: {summary} ({})",
        status.migration_id,
        state_name(status),
        outcome_name(status),
        status.message
    )
}

fn proto_duration(duration: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

async fn submit(client: &mut Client, args: SubmitArgs, output: Output) -> anyhow::Result<()> {
    let request = v1::SubmitMigrationRequest {
        spec: Some(v1::MigrationSpec {
            table: Some(v1::TableRef {
                target: args.target,
                schema: args.schema,
                table: String::new(),
            }),
            alter_statement: args.alter,
            options: Some(v1::MigrationOptions {
                threads: args.threads,
                target_chunk_time: Some(proto_duration(args.target_chunk_time)),
                keep_old_table: args.keep_old_table,
                no_instant: args.no_instant,
                keep_secondary_indexes: args.keep_secondary_indexes,
                defer_cutover: args.defer_cutover,
                strict: args.strict,
                copy_mode: match args.copy_mode {
                    shoal_common::task::CopyMode::Buffered => v1::CopyMode::Buffered as i32,
                    shoal_common::task::CopyMode::Server => v1::CopyMode::Server as i32,
                },
                replica_targets: args.replica_targets,
                max_replica_lag: Some(proto_duration(args.limits.max_replica_lag)),
                unknown_lag_abort_after: Some(proto_duration(args.limits.unknown_lag_abort_after)),
                max_threads_running: args.limits.max_threads_running,
                max_history_list_length: args.limits.max_history_list_length,
                max_latency_factor: args.limits.max_latency_factor,
                nice_ratio: args.limits.nice_ratio,
                ..Default::default()
            }),
        }),
        request_id: String::new(),
    };
    let response = client
        .submit_migration(request)
        .await
        .map_err(|status| anyhow::anyhow!("{}", status.message()))?;
    let id = response.into_inner().migration_id;
    print_done(output, &id, "submitted", &id);
    Ok(())
}

/// How long `shoal watch` keeps asking for a migration the fleet does not know (for now):
/// after Redis lost its data a migration is unknown until its owner rebuilds it (about a
/// second), and a coordinator may be restarting.
const WATCH_GRACE_UNSEEN: std::time::Duration = std::time::Duration::from_secs(10);
/// The same once the migration was seen.
const WATCH_GRACE_SEEN: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether a watch may be asked again: the migration is unknown or the coordinator unreachable
/// for now.
fn watch_retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::NotFound | tonic::Code::Unavailable | tonic::Code::Cancelled
    )
}

async fn watch(client: &mut Client, id: String, output: Output) -> anyhow::Result<()> {
    // A bar on a terminal; plain lines (no control characters) anywhere else.
    let bar = matches!(output, Output::Table)
        .then(|| std::io::stdout().is_terminal())
        .filter(|terminal| *terminal)
        .map(|_| progress_bar(&id));
    let mut last: Option<v1::MigrationStatus> = None;
    let mut lost_since: Option<std::time::Instant> = None;
    loop {
        let ended = last.as_ref().is_some_and(|status| {
            v1::Outcome::try_from(status.outcome)
                .is_ok_and(|outcome| !matches!(outcome, v1::Outcome::Running))
        });
        if ended {
            break;
        }
        let opened = client
            .watch_migration(v1::WatchMigrationRequest {
                migration_id: id.clone(),
            })
            .await;
        let failure = match opened {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(message)) => {
                            if let Some(status) = message.status {
                                lost_since = None;
                                show(&bar, output, last.as_ref(), &status)?;
                                last = Some(status);
                            }
                        }
                        Ok(None) => break None,
                        Err(status) => break Some(status),
                    }
                }
            }
            Err(status) => Some(status),
        };
        match failure {
            // The stream ended before the migration did (a coordinator draining): ask again.
            None if last.is_some() => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            None => anyhow::bail!("no status for migration {id}"),
            Some(status) if watch_retryable(&status) => {
                let grace = if last.is_some() {
                    WATCH_GRACE_SEEN
                } else {
                    WATCH_GRACE_UNSEEN
                };
                let since = *lost_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > grace {
                    anyhow::bail!("{}", status.message());
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Some(status) => anyhow::bail!("{}", status.message()),
        }
    }
    let status = last.with_context(|| format!("no status for migration {id}"))?;
    finish_watch(&bar, &id, &status)
}

/// Shows one status of `shoal watch`.
fn show(
    bar: &Option<indicatif::ProgressBar>,
    output: Output,
    last: Option<&v1::MigrationStatus>,
    status: &v1::MigrationStatus,
) -> anyhow::Result<()> {
    match (bar, output) {
        (_, Output::Json) => println!(
            "{}",
            serde_json::to_string(&shoal_coordinator::http::to_json(status))?
        ),
        (Some(bar), Output::Table) => draw(bar, status),
        (None, Output::Table) => {
            // One line per change of state or progress, not per repeated status.
            let line = status_line(status);
            if last.is_none_or(|last| status_line(last) != line) {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// Ends `shoal watch` on the migration's last status.
fn finish_watch(
    bar: &Option<indicatif::ProgressBar>,
    id: &str,
    status: &v1::MigrationStatus,
) -> anyhow::Result<()> {
    let completed = v1::Outcome::try_from(status.outcome) == Ok(v1::Outcome::Completed);
    if let Some(bar) = bar {
        if completed {
            let length = bar.length().unwrap_or(0).max(bar.position()).max(1);
            bar.set_length(length);
            bar.set_position(length);
            bar.finish_with_message(format!("completed: {}", status.message));
        } else {
            bar.abandon_with_message(format!("{}: {}", outcome_name(status), status.message));
        }
    }
    if completed {
        Ok(())
    } else {
        Err(NotCompleted(format!(
            "migration {id} ended {}: {}",
            outcome_name(status),
            status.message
        ))
        .into())
    }
}

/// `shoal watch` saw the migration end without completing (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotCompleted(String);

/// Exit code of `shoal watch` when the migration failed or was cancelled.
const EXIT_NOT_COMPLETED: u8 = 3;

/// The live bar of `shoal watch` on a terminal.
fn progress_bar(id: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        // Not 0: indicatif shows an empty bar as complete.
        Some(1),
        indicatif::ProgressDrawTarget::stdout(),
    );
    let style = indicatif::ProgressStyle::with_template(
        "{prefix} [{bar:30.cyan/blue}] {percent:>3}% {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(id.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(500));
    bar
}

fn draw(bar: &indicatif::ProgressBar, status: &v1::MigrationStatus) {
    let progress = status.progress.clone().unwrap_or_default();
    // The estimate is the server's; never let the bar run past its end.
    bar.set_length(progress.rows_estimated.max(progress.rows_copied).max(1));
    bar.set_position(progress.rows_copied);
    bar.set_message(progress_text(status, &progress));
}

/// State, rows, rate, ETA, applier lag and workers in one line.
fn progress_text(status: &v1::MigrationStatus, progress: &v1::Progress) -> String {
    let mut text = format!(
        "{}{} {}/{} rows",
        state_label(status.state),
        if status.paused { " (paused)" } else { "" },
        progress.rows_copied,
        progress.rows_estimated
    );
    if progress.rows_per_second > 0.0 {
        text.push_str(&format!(" {:.0} rows/s", progress.rows_per_second));
    }
    if let Some(eta) = &progress.eta {
        text.push_str(&format!(" ETA {}s", eta.seconds));
    }
    let lag = progress.applier_lag.as_ref().map_or(0, |lag| lag.seconds);
    text.push_str(&format!(
        " lag {} events/{lag}s workers {}",
        progress.applier_lag_events, progress.workers
    ));
    text
}

fn state_label(state: i32) -> String {
    v1::State::try_from(state)
        .map(|state| state.as_str_name().trim_start_matches("STATE_").to_owned())
        .unwrap_or_else(|_| "UNKNOWN".to_owned())
}

/// `shoal status ID` as a table of fields.
fn print_status(status: &v1::MigrationStatus) {
    let progress = status.progress.clone().unwrap_or_default();
    let mut rows = vec![
        ("migration", status.migration_id.clone()),
        ("state", state_label(status.state)),
        (
            "outcome",
            outcome_name(status)
                .trim_start_matches("OUTCOME_")
                .to_owned(),
        ),
        ("paused", status.paused.to_string()),
        ("healthy", status.healthy.to_string()),
        ("message", status.message.clone()),
        (
            "rows",
            format!(
                "{} of ~{} ({:.1}%)",
                progress.rows_copied, progress.rows_estimated, progress.percent
            ),
        ),
        ("rows/s", format!("{:.0}", progress.rows_per_second)),
        (
            "eta",
            progress
                .eta
                .as_ref()
                .map_or_else(|| "-".to_owned(), |eta| format!("{}s", eta.seconds)),
        ),
        (
            "chunks",
            format!(
                "{} done, {} in flight",
                progress.chunks_done, progress.chunks_leased
            ),
        ),
        (
            "applier lag",
            format!(
                "{} events, {}s",
                progress.applier_lag_events,
                progress.applier_lag.as_ref().map_or(0, |lag| lag.seconds)
            ),
        ),
        ("workers", progress.workers.to_string()),
        (
            "binlog",
            format!("{}:{}", progress.binlog_file, progress.binlog_position),
        ),
    ];
    let mut metadata: Vec<_> = status.metadata.iter().collect();
    metadata.sort();
    rows.extend(
        metadata
            .into_iter()
            .map(|(key, value)| (key.as_str(), value.clone())),
    );
    for (field, value) in rows {
        println!("{field:<14} {value}");
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run_embedded(args, cli.output).await,
        Command::Plan(args) => {
            plan(
                &cli.coordinator,
                cli.auth_token_file.as_deref(),
                &cli.tls,
                cli.output,
                args,
            )
            .await
        }
        Command::Submit(args) => {
            submit(
                &mut client(&cli.coordinator, cli.auth_token_file.as_deref(), &cli.tls).await?,
                args,
                cli.output,
            )
            .await
        }
        Command::Watch { id } => {
            watch(
                &mut client(&cli.coordinator, cli.auth_token_file.as_deref(), &cli.tls).await?,
                id,
                cli.output,
            )
            .await
        }
        Command::Status { id } => {
            let response = client(&cli.coordinator, cli.auth_token_file.as_deref(), &cli.tls)
                .await?
                .get_migration(v1::GetMigrationRequest { migration_id: id })
                .await
                .map_err(|status| anyhow::anyhow!("{}", status.message()))?;
            let status = response.into_inner().status.context("no status")?;
            match cli.output {
                // The same document as `GET /api/v1/migrations/{id}/status`.
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&shoal_coordinator::http::to_json(&status))?
                ),
                Output::Table => print_status(&status),
            }
            Ok(())
        }
        Command::Pause { id } => {
            client(&cli.coordinator, cli.auth_token_file.as_deref(), &cli.tls)
                .await?
                .pause_migration(v1::PauseMigrationRequest {
                    migration_id: id.clone(),
                    reason: "shoal pause".to_owned(),
                })
                .await
                .map_err(|status| anyhow::anyhow!("{}", status.message()))?;
            print_done(cli.output, &id, "paused", &format!("paused {id}"));
            Ok(())
        }
        Command::Release { id } => {
            client(&cli.coordinator, cli.auth_token_file.as_deref(), &cli.tls)
                .await?
                .release_cutover(v1::ReleaseCutoverRequest {
                    migration_id: id.clone(),
                })
                .await
                .map_err(|status| anyhow::anyhow!("{}", status.message()))?;
            print_done(cli.output, &id, "released", &format!("released {id}"));
            Ok(())
        }
        Command::Resume { id } => {
            client(&cli.coordinator, cli.auth_token_file.as_deref(), &cli.tls)
                .await?
                .resume_migration(v1::ResumeMigrationRequest {
                    migration_id: id.clone(),
                })
                .await
                .map_err(|status| anyhow::anyhow!("{}", status.message()))?;
            print_done(cli.output, &id, "resumed", &format!("resumed {id}"));
            Ok(())
        }
        Command::Volume { id, threads } => {
            client(&cli.coordinator, cli.auth_token_file.as_deref(), &cli.tls)
                .await?
                .set_volume(v1::SetVolumeRequest {
                    migration_id: id.clone(),
                    threads,
                    target_chunk_time: None,
                })
                .await
                .map_err(|status| anyhow::anyhow!("{}", status.message()))?;
            print_done(
                cli.output,
                &id,
                "volume set",
                &format!("{id}: {threads} threads"),
            );
            Ok(())
        }
        Command::Cancel { id } => {
            client(&cli.coordinator, cli.auth_token_file.as_deref(), &cli.tls)
                .await?
                .cancel_migration(v1::CancelMigrationRequest {
                    migration_id: id.clone(),
                    reason: "shoal cancel".to_owned(),
                })
                .await
                .map_err(|status| anyhow::anyhow!("{}", status.message()))?;
            print_done(cli.output, &id, "cancelling", &format!("cancelling {id}"));
            Ok(())
        }
        Command::Workers => {
            let mut client =
                client(&cli.coordinator, cli.auth_token_file.as_deref(), &cli.tls).await?;
            let response = client
                .list_workers(v1::ListWorkersRequest {})
                .await
                .context("list workers")?;
            print_workers(&response.into_inner().workers, cli.output)
        }
        Command::List => {
            let mut client =
                client(&cli.coordinator, cli.auth_token_file.as_deref(), &cli.tls).await?;
            let response = client
                .list_migrations(v1::ListMigrationsRequest::default())
                .await
                .context("list migrations")?;
            print_migrations(&response.into_inner(), cli.output)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let coordinator = cli.coordinator.clone();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is::<NotCompleted>() => {
            eprintln!("shoal: {error:#}");
            ExitCode::from(EXIT_NOT_COMPLETED)
        }
        Err(error) => {
            eprintln!("shoal: {error:#}");
            let text = format!("{error:#}");
            if text.contains("transport error") || text.contains("operation was canceled") {
                eprintln!(
                    "shoal: hint: the connection to {coordinator} failed below gRPC. A coordinator \
                     serving TLS needs an https:// address and --tls-ca; one with \
                     --tls-client-ca also needs --tls-cert and --tls-key (a certificate its CA \
                     signed)."
                );
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
