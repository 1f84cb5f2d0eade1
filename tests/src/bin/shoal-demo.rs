//! `make demo`: an online schema change end to end on private servers, then everything cleaned up.
//!
//! Starts a private MariaDB (row binlog on) and Redis, loads a 1,000,000-row table, starts an
//! application writer, one `shoal-coordinator` and two `shoal-worker` processes, submits the
//! ALTER with the `shoal` CLI, follows it with `shoal watch`, and verifies the result against
//! the writer's own ledger. `SHOAL_DEMO_ROWS` changes the table size; `SHOAL_DEMO_SERVER=mysql`
//! (`make demo SERVER=mysql`) runs it on a private MySQL 9.7 (Debian sid's, in the chroot that
//! `scripts/ensure-deps.sh` builds) instead of MariaDB.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mysql_async::prelude::Queryable;
use shoal_tests::mariadb::MariaDb;
use shoal_tests::mysql::MySql;
use shoal_tests::processes::{CoordinatorOptions, CoordinatorProcess, bin_dir, start_worker};
use shoal_tests::redis_server::RedisServer;
use shoal_tests::wait;
use shoal_tests::writer::{self, Writer};

const ALTER: &str =
    "ALTER TABLE orders ADD COLUMN note VARCHAR(32) NOT NULL DEFAULT 'n/a', ADD INDEX idx_c (c)";

fn shoal_cli(coordinator_url: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(bin_dir()?.join("shoal"))
        .args(["--coordinator", coordinator_url])
        .args(args)
        .output()
        .context("run the shoal CLI")?;
    if !output.status.success() {
        bail!(
            "shoal {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The private server the demo runs on (stopped when dropped).
#[allow(dead_code)] // held for its Drop
enum Server {
    MariaDb(MariaDb),
    MySql(MySql),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows: u64 = std::env::var("SHOAL_DEMO_ROWS")
        .ok()
        .and_then(|rows| rows.parse().ok())
        .unwrap_or(1_000_000);
    let scratch = tempfile::Builder::new().prefix("shoal-demo-").tempdir()?;
    let server = match std::env::var("SHOAL_DEMO_SERVER").as_deref() {
        Ok("mysql") => {
            println!(
                "==> starting a private MySQL 9.7 (GTIDs on, binlog_format=ROW, binlog_row_image=FULL)"
            );
            let mysql = MySql::start()?;
            mysql.root_sql("CREATE DATABASE shop")?;
            Server::MySql(mysql)
        }
        Ok("mariadb") | Ok("") | Err(_) => {
            println!("==> starting a private MariaDB (binlog_format=ROW, binlog_row_image=FULL)");
            let mariadb = MariaDb::start(&scratch.path().join("mariadb"))?;
            mariadb.info.root_sql("CREATE DATABASE shop")?;
            Server::MariaDb(mariadb)
        }
        Ok(other) => bail!("SHOAL_DEMO_SERVER={other:?}: use mariadb or mysql"),
    };
    let dsn = match &server {
        Server::MariaDb(mariadb) => mariadb.info.dsn("shop"),
        Server::MySql(mysql) => mysql.dsn("shop"),
    };
    println!("==> starting a private Redis (no persistence)");
    let redis = RedisServer::start(&scratch.path().join("redis"))?;

    println!("==> loading {rows} rows into shop.orders");
    let loaded = Instant::now();
    let mut connection = mysql_async::Conn::new(mysql_async::Opts::from_url(&dsn)?).await?;
    writer::seed(&mut connection, "orders", rows).await?;
    let ledger = writer::read_table(&mut connection, "orders").await?;
    println!("    loaded in {:.1?}", loaded.elapsed());

    println!("==> starting shoal-coordinator and two shoal-worker processes (target 'demo')");
    let env = vec![("SHOAL_TARGET_DEMO", dsn.clone())];
    let options = CoordinatorOptions {
        redis_url: Some(redis.info.url()),
        namespace: "demo".to_owned(),
        worker_ttl: Duration::from_secs(5),
        env: env.clone(),
        args: Vec::new(),
    };
    let coordinator = CoordinatorProcess::start("coordinator", &options).await?;
    let workers = [
        start_worker("demo-worker-1", &coordinator.url, 2, &env)?,
        start_worker("demo-worker-2", &coordinator.url, 2, &env)?,
    ];
    wait::until(
        "both workers to register",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            shoal_cli(&coordinator.url, &["workers", "--output", "json"])
                .ok()
                .filter(|json| json.contains("demo-worker-1") && json.contains("demo-worker-2"))
        },
    )
    .await?;
    print!("{}", shoal_cli(&coordinator.url, &["workers"])?);

    println!(
        "==> starting the application writer (inserts, updates, deletes, key moves, unique swaps)"
    );
    let writer = Writer::start(&dsn, "orders", ledger, 2026, Duration::from_millis(1)).await?;

    println!("==> shoal submit --target demo --alter \"{ALTER}\"");
    let id = shoal_cli(
        &coordinator.url,
        &[
            "submit",
            "--target",
            "demo",
            "--alter",
            ALTER,
            "--no-instant",
            "--threads",
            "4",
        ],
    )?;
    let id = id.trim().to_owned();
    println!("    migration {id}");
    println!("==> shoal watch {id}");
    let started = Instant::now();
    let watched = Command::new(bin_dir()?.join("shoal"))
        .args(["--coordinator", &coordinator.url, "watch", &id])
        .status()
        .context("run shoal watch")?;
    if !watched.success() {
        bail!(
            "the migration did not complete; coordinator log:\n{}",
            coordinator.process.logs()
        );
    }
    println!("    done in {:.1?}", started.elapsed());

    let after = writer.stats.committed() + 500;
    wait::until(
        "writes after the cut-over",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { (writer.stats.committed() >= after).then_some(()) },
    )
    .await?;
    let stats = std::sync::Arc::clone(&writer.stats);
    let expected = writer.stop().await?;
    println!(
        "==> verifying: the writer committed {} operations ({} key moves, {} unique swaps), {} errors",
        stats.committed(),
        stats.key_moves.load(Ordering::Relaxed),
        stats.unique_swaps.load(Ordering::Relaxed),
        stats.unexpected_errors.load(Ordering::Relaxed)
    );
    let actual = writer::read_table(&mut connection, "orders").await?;
    let differences = writer::differences(&expected, &actual);
    let columns: Vec<String> = connection
        .query("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'shop' AND TABLE_NAME = 'orders' ORDER BY ORDINAL_POSITION")
        .await?;
    println!("    orders columns now: {}", columns.join(", "));
    println!(
        "    {} rows in the table, {} expected by the writer, {} differences",
        actual.len(),
        expected.len(),
        differences.len()
    );
    print!("{}", shoal_cli(&coordinator.url, &["status", &id])?);
    connection.disconnect().await.ok();

    println!("==> cleaning up (processes and servers stop, the scratch directory is removed)");
    drop(workers);
    drop(coordinator);
    drop(redis);
    drop(server);
    if !differences.is_empty() || stats.unexpected_errors.load(Ordering::Relaxed) > 0 {
        bail!(
            "the migrated table differs from the writer's ledger: {:?}",
            &differences[..differences.len().min(5)]
        );
    }
    println!("demo finished: the table was altered online with nothing lost");
    Ok(())
}
