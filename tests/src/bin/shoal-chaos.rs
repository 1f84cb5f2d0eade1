//! `make chaos`: a seeded fault campaign on private servers (MariaDB with the row binlog, a
//! Redis it may restart), each run a fleet of two coordinators and three workers migrating a
//! table under a writer; prints a markdown report and exits 1 unless every run completed
//! exactly with nothing left behind.
//!
//! Flags: `--seed S` (default 1), `--runs R` (default 10), `--faults F` per run (default 5),
//! `--rows N` (default 200,000).

use anyhow::{Context, bail};
use shoal_tests::chaos::{self, Fault, RunReport};
use shoal_tests::mariadb::MariaDb;
use shoal_tests::redis_server::RedisServer;
use shoal_tests::servers::TestDatabase;

struct Args {
    seed: u64,
    runs: u32,
    faults: u32,
    rows: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        seed: 1,
        runs: 10,
        faults: 5,
        rows: 200_000,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        let mut value = || iter.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--seed" => args.seed = value()?.parse()?,
            "--runs" => args.runs = value()?.parse()?,
            "--faults" => args.faults = value()?.parse()?,
            "--rows" => args.rows = value()?.parse()?,
            other => {
                bail!("unknown argument {other}; use --seed S, --runs R, --faults F, --rows N")
            }
        }
    }
    Ok(args)
}

/// The fleet's account: only the grants shoal needs (`docs/operations.md`), so that
/// `RefuseConnections` refuses it (SUPER and CONNECTION ADMIN accounts are always let in).
fn create_shoal_account(mariadb: &MariaDb) -> anyhow::Result<()> {
    mariadb.info.root_sql(
        "CREATE USER 'fleet'@'127.0.0.1' IDENTIFIED BY 'fleet-test-password'; \
         GRANT REPLICATION SLAVE, BINLOG MONITOR, PROCESS ON *.* TO 'fleet'@'127.0.0.1'; \
         GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, LOCK TABLES \
         ON `chaos\\_%`.* TO 'fleet'@'127.0.0.1'",
    )?;
    Ok(())
}

fn shoal_dsn(mariadb: &MariaDb, database: &str) -> String {
    format!(
        "mysql://fleet:fleet-test-password@127.0.0.1:{}/{database}",
        mariadb.info.port
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let scratch = tempfile::Builder::new().prefix("shoal-chaos-").tempdir()?;
    let mariadb = MariaDb::start(&scratch.path().join("mariadb"))?;
    let mut redis = RedisServer::start(&scratch.path().join("redis"))?;
    create_shoal_account(&mariadb)?;
    println!(
        "## Campaign: seed {}, {} run(s), {} fault(s) per run, {} rows\n",
        args.seed, args.runs, args.faults, args.rows
    );
    let mut reports: Vec<RunReport> = Vec::new();
    for (index, run_seed) in chaos::run_seeds(args.seed, args.runs)
        .into_iter()
        .enumerate()
    {
        let name = format!("chaos_{index}");
        mariadb
            .info
            .root_sql(&format!("CREATE DATABASE `{name}`"))?;
        let database = TestDatabase {
            dsn: mariadb.info.dsn(&name),
            name,
        };
        eprintln!("chaos: run {index} (seed {run_seed:#x})");
        let report = chaos::run_once(
            &database,
            &mut redis,
            args.rows,
            args.faults,
            run_seed,
            &chaos::Plan {
                classes: &Fault::ALL,
                shoal_dsn: Some(&shoal_dsn(&mariadb, &database.name)),
                late: Some(chaos::Late::for_run(index, &Fault::ALL)),
            },
        )
        .await?;
        eprintln!(
            "chaos: run {index}: {} after {} fault(s), {} difference(s), {:.1} s",
            report.outcome,
            report.faults.len(),
            report.differences,
            report.seconds
        );
        reports.push(report);
    }
    if !chaos::summarize(&reports) {
        bail!("some runs did not complete exactly (see above)");
    }
    Ok(())
}
