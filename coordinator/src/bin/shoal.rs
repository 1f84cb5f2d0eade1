//! `shoal`: the operator's command line, a client of the coordinator's gRPC API.
//!
//! Exit codes: 0 success; 1 the command failed (the reason is printed on stderr); 2 bad usage.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use shoal_proto::v1;
use shoal_proto::v1::migration_service_client::MigrationServiceClient;
use tonic::transport::{Channel, Endpoint};

/// shoal: online schema changes for MySQL and MariaDB.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about, long_about = None)]
struct Cli {
    /// gRPC address of any coordinator replica.
    #[arg(
        long,
        global = true,
        env = "SHOAL_COORDINATOR",
        default_value = "http://127.0.0.1:7420"
    )]
    coordinator: String,

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
}

async fn client(address: &str) -> anyhow::Result<MigrationServiceClient<Channel>> {
    let endpoint = Endpoint::from_shared(address.to_owned())
        .with_context(|| format!("--coordinator {address:?} is not a URL"))?;
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connect to coordinator {address}"))?;
    Ok(MigrationServiceClient::new(channel))
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
            let rows: Vec<serde_json::Value> = response
                .migrations
                .iter()
                .map(|status| {
                    serde_json::json!({
                        "migration_id": status.migration_id,
                        "state": v1::State::try_from(status.state).map(|s| s.as_str_name()).unwrap_or("UNKNOWN"),
                        "outcome": v1::Outcome::try_from(status.outcome).map(|o| o.as_str_name()).unwrap_or("UNKNOWN"),
                        "message": status.message,
                    })
                })
                .collect();
            let document = serde_json::json!({ "total": response.total, "migrations": rows });
            println!("{}", serde_json::to_string_pretty(&document)?);
        }
        Output::Table => {
            println!("{:<24} {:<32} {:<20}", "MIGRATION", "STATE", "OUTCOME");
            for status in &response.migrations {
                let state = v1::State::try_from(status.state)
                    .map(|s| s.as_str_name())
                    .unwrap_or("UNKNOWN");
                let outcome = v1::Outcome::try_from(status.outcome)
                    .map(|o| o.as_str_name())
                    .unwrap_or("UNKNOWN");
                println!("{:<24} {:<32} {:<20}", status.migration_id, state, outcome);
            }
            println!("{} migration(s)", response.total);
        }
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut client = client(&cli.coordinator).await?;
    match cli.command {
        Command::Workers => {
            let response = client
                .list_workers(v1::ListWorkersRequest {})
                .await
                .context("list workers")?;
            print_workers(&response.into_inner().workers, cli.output)
        }
        Command::List => {
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
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shoal: {error:#}");
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
