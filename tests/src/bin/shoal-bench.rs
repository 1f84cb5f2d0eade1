//! `make bench`: shoal against the server's own copy and pt-online-schema-change, side by side in
//! one run on the same private MariaDB, as ratios (machines here are noisy: never compare runs).
//!
//! Table: sysbench-style `sbtest1 (id, k indexed, c CHAR(120), pad CHAR(60))`. ALTER:
//! `ADD COLUMN x INT`, run by shoal with `--no-instant` so every tool copies. Measured:
//! - the server's references: `INSERT INTO copy SELECT *` and offline `ALTER … ALGORITHM=COPY`;
//! - shoal's fleet (Redis, one coordinator) in both copy modes with 1 and 2 worker processes;
//! - pt-online-schema-change (Debian's percona-toolkit), when installed;
//! - the coordinator's peak RSS migrating 200k and then 1M rows under a writer (lazy plan).
//!
//! Flags: `--rows N` (default 1,000,000), `--reps R` (median of R, default 1), `--skip-ptosc`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use shoal_tests::mariadb::{MariaDb, TEST_PASSWORD, TEST_USER};
use shoal_tests::processes::{CoordinatorOptions, CoordinatorProcess, bin_dir, start_worker};
use shoal_tests::redis_server::RedisServer;
use shoal_tests::system::find_program;
use shoal_tests::wait;
use shoal_tests::writer::{self, Writer};

const ALTER: &str = "ALTER TABLE sbtest1 ADD COLUMN x INT";

struct Args {
    rows: u64,
    reps: usize,
    skip_ptosc: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        rows: 1_000_000,
        reps: 1,
        skip_ptosc: false,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--rows" => args.rows = iter.next().context("--rows N")?.parse()?,
            "--reps" => args.reps = iter.next().context("--reps R")?.parse()?,
            "--skip-ptosc" => args.skip_ptosc = true,
            other => bail!("unknown argument {other}; use --rows N, --reps R, --skip-ptosc"),
        }
    }
    Ok(args)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn seed_sbtest(connection: &mut Conn, rows: u64) -> anyhow::Result<()> {
    connection
        .query_drop("DROP TABLE IF EXISTS sbtest1")
        .await?;
    connection
        .query_drop(
            "CREATE TABLE sbtest1 (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, k INT NOT NULL DEFAULT 0, \
             c CHAR(120) NOT NULL DEFAULT '', pad CHAR(60) NOT NULL DEFAULT '', KEY k_1 (k)) ENGINE=InnoDB",
        )
        .await?;
    let mut start = 1;
    while start <= rows {
        let end = (start + 99_999).min(rows);
        connection
            .query_drop(format!(
                "INSERT INTO sbtest1 (id, k, c, pad) SELECT seq, (seq * 7919) % {rows}, \
                 CONCAT(MD5(seq), MD5(seq + 1), MD5(seq + 2), LEFT(MD5(seq + 3), 24)), \
                 CONCAT(MD5(seq * 7), LEFT(MD5(seq * 11), 28)) FROM seq_{start}_to_{end}"
            ))
            .await?;
        start = end + 1;
    }
    Ok(())
}

/// Puts the table back to its original shape (MariaDB drops a column instantly).
async fn reset(connection: &mut Conn) -> anyhow::Result<()> {
    let has_x: Option<String> = connection
        .query_first("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'bench' AND TABLE_NAME = 'sbtest1' AND COLUMN_NAME = 'x'")
        .await?;
    if has_x.is_some() {
        connection
            .query_drop("ALTER TABLE sbtest1 DROP COLUMN x")
            .await?;
    }
    connection
        .query_drop("DROP TABLE IF EXISTS sbtest1_copy, _sbtest1_old, _sbtest1_new")
        .await?;
    Ok(())
}

async fn timed<F, Fut>(reps: usize, connection: &mut Conn, mut run: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<f64>>,
{
    let mut seconds = Vec::new();
    for _ in 0..reps {
        reset(connection).await?;
        seconds.push(run().await?);
    }
    reset(connection).await?;
    Ok(median(seconds))
}

/// Runs one fleet migration; returns seconds and the coordinator's peak RSS in KiB.
async fn fleet_run(
    redis_url: &str,
    dsn: &str,
    workers: u32,
    copy_mode: &str,
    table_alter: &str,
) -> anyhow::Result<(f64, u64)> {
    let env = vec![("SHOAL_TARGET_BENCH", dsn.to_owned())];
    let options = CoordinatorOptions {
        redis_url: Some(redis_url.to_owned()),
        namespace: shoal_tests::servers::unique_name("bench"),
        worker_ttl: Duration::from_secs(5),
        env: env.clone(),
        args: Vec::new(),
    };
    let coordinator = CoordinatorProcess::start("coordinator", &options).await?;
    let mut processes = Vec::new();
    for index in 0..workers {
        processes.push(start_worker(
            &format!("bench-worker-{index}"),
            &coordinator.url,
            2,
            &env,
        )?);
    }
    let threads = (workers * 2).to_string();
    let started = Instant::now();
    let submit = Command::new(bin_dir()?.join("shoal"))
        .args([
            "--coordinator",
            &coordinator.url,
            "submit",
            "--target",
            "bench",
            "--alter",
            table_alter,
        ])
        .args([
            "--no-instant",
            "--threads",
            &threads,
            "--copy-mode",
            copy_mode,
        ])
        .output()?;
    if !submit.status.success() {
        bail!("submit failed: {}", String::from_utf8_lossy(&submit.stderr));
    }
    let id = String::from_utf8_lossy(&submit.stdout).trim().to_owned();
    let watched = Command::new(bin_dir()?.join("shoal"))
        .args(["--coordinator", &coordinator.url, "watch", &id])
        .stdout(Stdio::null())
        .status()?;
    let seconds = started.elapsed().as_secs_f64();
    if !watched.success() {
        bail!("migration failed:\n{}", coordinator.process.logs());
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", coordinator.process.pid()))?;
    let peak_kib = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    drop(processes);
    Ok((seconds, peak_kib))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let scratch = tempfile::Builder::new().prefix("shoal-bench-").tempdir()?;
    let mariadb = MariaDb::start(&scratch.path().join("mariadb"))?;
    mariadb.info.root_sql("CREATE DATABASE bench")?;
    let redis = RedisServer::start(&scratch.path().join("redis"))?;
    let dsn = mariadb.info.dsn("bench");
    let mut connection = Conn::new(Opts::from_url(&dsn)?).await?;
    eprintln!("bench: seeding {} rows", args.rows);
    seed_sbtest(&mut connection, args.rows).await?;
    let mut results: Vec<(String, f64)> = Vec::new();

    eprintln!("bench: server INSERT INTO … SELECT *");
    let insert_select = timed(args.reps, &mut connection, || {
        let dsn = dsn.clone();
        async move {
            let mut session = Conn::new(Opts::from_url(&dsn)?).await?;
            session
                .query_drop("CREATE TABLE sbtest1_copy LIKE sbtest1")
                .await?;
            let started = Instant::now();
            session
                .query_drop("INSERT INTO sbtest1_copy SELECT * FROM sbtest1")
                .await?;
            Ok(started.elapsed().as_secs_f64())
        }
    })
    .await?;
    results.push((
        "server: INSERT INTO copy SELECT * (one transaction)".to_owned(),
        insert_select,
    ));

    eprintln!("bench: server ALTER … ALGORITHM=COPY (offline)");
    let alter_copy = timed(args.reps, &mut connection, || {
        let dsn = dsn.clone();
        async move {
            let mut session = Conn::new(Opts::from_url(&dsn)?).await?;
            let started = Instant::now();
            session
                .query_drop(format!("{ALTER}, ALGORITHM=COPY"))
                .await?;
            Ok(started.elapsed().as_secs_f64())
        }
    })
    .await?;
    results.push((
        "server: ALTER … ALGORITHM=COPY (offline, blocks writes)".to_owned(),
        alter_copy,
    ));

    for copy_mode in ["buffered", "server"] {
        for workers in [1, 2] {
            eprintln!("bench: shoal fleet, {copy_mode} copy, {workers} worker process(es)");
            let seconds = timed(args.reps, &mut connection, || {
                let redis_url = redis.info.url();
                let dsn = dsn.clone();
                async move {
                    Ok(fleet_run(&redis_url, &dsn, workers, copy_mode, ALTER)
                        .await?
                        .0)
                }
            })
            .await?;
            eprintln!("bench:   {seconds:.1} s");
            results.push((
                format!("shoal fleet: {copy_mode} copy, {workers} worker(s) × 2 slots"),
                seconds,
            ));
        }
    }

    if args.skip_ptosc {
        eprintln!("bench: pt-online-schema-change skipped");
    } else if let Ok(ptosc) = find_program("pt-online-schema-change", "percona-toolkit") {
        eprintln!("bench: pt-online-schema-change");
        let port = mariadb.info.port;
        let seconds = timed(args.reps, &mut connection, || {
            let ptosc = ptosc.clone();
            async move {
                let target = format!(
                    "h=127.0.0.1,P={port},u={TEST_USER},p={TEST_PASSWORD},D=bench,t=sbtest1"
                );
                let started = Instant::now();
                let output = Command::new(&ptosc)
                    .args(["--alter", "ADD COLUMN x INT", &target, "--execute"])
                    .args(["--recursion-method=none", "--no-check-replication-filters"])
                    .output()?;
                if !output.status.success() {
                    bail!(
                        "pt-online-schema-change failed: {}",
                        String::from_utf8_lossy(&output.stdout)
                    );
                }
                Ok(started.elapsed().as_secs_f64())
            }
        })
        .await?;
        results.push((
            "pt-online-schema-change 3.x (default chunking)".to_owned(),
            seconds,
        ));
    } else {
        eprintln!(
            "bench: pt-online-schema-change not installed (apt-get install percona-toolkit); skipped"
        );
    }

    // Peak RSS of the coordinator: 200k rows vs 1M rows, both under a writer.
    let mut rss = Vec::new();
    for rows in [200_000, 1_000_000] {
        eprintln!("bench: coordinator peak RSS at {rows} rows under a writer");
        connection.query_drop("DROP TABLE IF EXISTS orders").await?;
        writer::seed(&mut connection, "orders", rows).await?;
        let ledger = writer::read_table(&mut connection, "orders").await?;
        let writer = Writer::start(&dsn, "orders", ledger, 5, Duration::from_millis(1)).await?;
        wait::until(
            "writer to start",
            Duration::from_secs(30),
            Duration::from_millis(20),
            || async { (writer.stats.committed() > 100).then_some(()) },
        )
        .await?;
        let (seconds, peak) = fleet_run(
            &redis.info.url(),
            &dsn,
            2,
            "buffered",
            "ALTER TABLE orders ADD COLUMN note VARCHAR(32) NOT NULL DEFAULT 'n/a', ADD INDEX idx_c (c)",
        )
        .await?;
        let expected = writer.stop().await?;
        let actual = writer::read_table(&mut connection, "orders").await?;
        let differences = writer::differences(&expected, &actual).len();
        if differences > 0 {
            bail!("{differences} differences after the {rows}-row migration");
        }
        eprintln!("bench:   {seconds:.1} s, peak RSS {peak} KiB");
        rss.push((rows, seconds, peak));
    }

    let baseline = alter_copy;
    println!(
        "\n## Results: {} rows, ALTER `ADD COLUMN x INT`, median of {}\n",
        args.rows, args.reps
    );
    println!("| method | seconds | × offline ALTER COPY |");
    println!("|---|---:|---:|");
    for (name, seconds) in &results {
        println!("| {name} | {seconds:.1} | {:.2} |", seconds / baseline);
    }
    println!("\n## Coordinator peak RSS (fleet, 2 workers, buffered, under a writer)\n");
    println!("| rows | seconds | peak RSS (MiB) |");
    println!("|---:|---:|---:|");
    for (rows, seconds, peak) in &rss {
        println!("| {rows} | {seconds:.1} | {:.1} |", *peak as f64 / 1024.0);
    }
    if let [(_, _, small), (_, _, large)] = rss.as_slice() {
        println!(
            "\nRSS ratio 1M / 200k: {:.2} (acceptance: ≤ 1.20)",
            *large as f64 / *small as f64
        );
    }
    connection.disconnect().await.ok();
    drop(redis);
    drop(mariadb);
    Ok(())
}
