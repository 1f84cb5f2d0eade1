//! `make chaos`: a seeded fault campaign on private servers (MariaDB with the row binlog, or
//! MySQL 9.7 with `--server mysql`; a Redis it may restart), each run a fleet of two
//! coordinators and three workers migrating a table under a writer; prints a markdown report and
//! exits 1 unless every run completed exactly with nothing left behind.
//!
//! Flags: `--seed S` (default 1), `--runs R` (default 10), `--faults F` per run (default 5),
//! `--rows N` (default 200,000), `--server mariadb|mysql` (default mariadb).

use anyhow::{Context, bail};
use shoal_tests::chaos::{self, Fault, RunReport};
use shoal_tests::mariadb::MariaDb;
use shoal_tests::mysql::MySql;
use shoal_tests::redis_server::RedisServer;
use shoal_tests::servers::TestDatabase;

struct Args {
    seed: u64,
    runs: u32,
    faults: u32,
    rows: u64,
    mysql: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        seed: 1,
        runs: 10,
        faults: 5,
        rows: 200_000,
        mysql: false,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        let mut value = || iter.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--seed" => args.seed = value()?.parse()?,
            "--runs" => args.runs = value()?.parse()?,
            "--faults" => args.faults = value()?.parse()?,
            "--rows" => args.rows = value()?.parse()?,
            "--server" => {
                args.mysql = match value()?.as_str() {
                    "mysql" => true,
                    "mariadb" => false,
                    other => bail!("--server {other}: use mariadb or mysql"),
                }
            }
            other => {
                bail!(
                    "unknown argument {other}; use --seed S, --runs R, --faults F, --rows N, \
                     --server mariadb|mysql"
                )
            }
        }
    }
    Ok(args)
}

/// The campaign's server.
enum Server {
    MariaDb(MariaDb),
    MySql(MySql),
}

impl Server {
    fn root_sql(&self, sql: &str) -> anyhow::Result<String> {
        match self {
            Server::MariaDb(server) => server.info.root_sql(sql),
            Server::MySql(server) => server.root_sql(sql),
        }
    }

    fn port(&self) -> u16 {
        match self {
            Server::MariaDb(server) => server.info.port,
            Server::MySql(server) => server.port,
        }
    }

    fn dsn(&self, database: &str) -> String {
        match self {
            Server::MariaDb(server) => server.info.dsn(database),
            Server::MySql(server) => server.dsn(database),
        }
    }
}

/// The fleet's account: only the grants shoal needs (`docs/operations.md`), so that
/// `RefuseConnections` refuses it (SUPER and CONNECTION ADMIN accounts are always let in).
fn create_shoal_account(server: &Server) -> anyhow::Result<()> {
    let binlog = match server {
        Server::MariaDb(_) => "BINLOG MONITOR",
        Server::MySql(_) => "REPLICATION CLIENT, XA_RECOVER_ADMIN",
    };
    server.root_sql(&format!(
        "CREATE USER 'fleet'@'127.0.0.1' IDENTIFIED BY 'fleet-test-password'; \
         GRANT REPLICATION SLAVE, {binlog}, PROCESS ON *.* TO 'fleet'@'127.0.0.1'; \
         GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, LOCK TABLES \
         ON `chaos\\_%`.* TO 'fleet'@'127.0.0.1'"
    ))?;
    if let Server::MySql(mysql) = server {
        mysql.root_sql(
            "GRANT SELECT ON performance_schema.data_lock_waits TO 'fleet'@'127.0.0.1'",
        )?;
        mysql.prime_login("fleet", "fleet-test-password")?;
    }
    Ok(())
}

fn shoal_dsn(server: &Server, database: &str) -> String {
    format!(
        "mysql://fleet:fleet-test-password@127.0.0.1:{}/{database}",
        server.port()
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let scratch = tempfile::Builder::new().prefix("shoal-chaos-").tempdir()?;
    let server = if args.mysql {
        Server::MySql(MySql::start()?)
    } else {
        Server::MariaDb(MariaDb::start(&scratch.path().join("mariadb"))?)
    };
    let mut redis = RedisServer::start(&scratch.path().join("redis"))?;
    create_shoal_account(&server)?;
    println!(
        "## Campaign: seed {}, {} run(s), {} fault(s) per run, {} rows, {}\n",
        args.seed,
        args.runs,
        args.faults,
        args.rows,
        if args.mysql {
            "MySQL 9.7"
        } else {
            "MariaDB 10.11"
        }
    );
    let mut reports: Vec<RunReport> = Vec::new();
    for (index, run_seed) in chaos::run_seeds(args.seed, args.runs)
        .into_iter()
        .enumerate()
    {
        let name = format!("chaos_{index}");
        server.root_sql(&format!("CREATE DATABASE `{name}`"))?;
        let database = TestDatabase {
            dsn: server.dsn(&name),
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
                shoal_dsn: Some(&shoal_dsn(&server, &database.name)),
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
