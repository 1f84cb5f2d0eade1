//! `make bench`: shoal against the server's own copy and pt-online-schema-change, side by side in
//! one run on the same private MariaDB, as ratios (machines here are noisy: never compare runs).
//!
//! Table: sysbench-style `sbtest1 (id, k indexed, c CHAR(120), pad CHAR(60))`. ALTER:
//! `ADD COLUMN x INT`, run by shoal with `--no-instant` so every tool copies. Measured:
//! - the server's references: `INSERT INTO copy SELECT *`, offline `ALTER … ALGORITHM=COPY`,
//!   raw checksum scans, and the native `ALGORITHM=INSTANT` path (with shoal's);
//! - `shoal run` with 1, 2, 4 threads, with chunks sized by a byte budget instead of time, and
//!   with the secondary indexes maintained by the copy instead of built after it;
//! - shoal's fleet (Redis, one coordinator) in both copy modes with 1, 2 and 4 worker processes;
//! - pt-online-schema-change (Debian's percona-toolkit), when installed;
//! - a second ALTER that also adds an index (offline copy, shoal with and without
//!   `--keep-secondary-indexes`, pt-osc);
//! - the application's view: sysbench at 100 tps alone and beside shoal (plain, gentle, under
//!   the latency gate, and paced by a nice ratio) and pt-osc;
//! - the coordinator's and workers' peak RSS migrating two table sizes under a writer;
//! - where the server's CPU goes (`perf record` of mariadbd) in chosen cases.
//!
//! A full run rewrites the generated part of `docs/benchmarks.md` (between its markers) with the
//! machine, versions, command and every table; the runs recorded below it are kept.
//!
//! Flags: `--rows N` (default 1,000,000), `--reps R` (median of R, default 1), `--skip-ptosc`,
//! `--skip-sysbench`, `--skip-perf`, `--quick` (only the fleet with server copy and two
//! workers, with its time and CPU profile), `--rss-rows A,B` (the peak-RSS case's table sizes,
//! default 200000,1000000), `--only-rss` (only that case), `--no-docs` (leave the docs alone),
//! `--only-throttle` (only sysbench alone and the paced cases: the latency gate and the nice
//! ratio), `--throttle-chunk-time T`, `--latency-factor F`, `--nice-ratio R` (their settings).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use shoal_tests::mariadb::{MariaDb, TEST_PASSWORD, TEST_USER};
use shoal_tests::perf::Recording;
use shoal_tests::processes::{CoordinatorOptions, CoordinatorProcess, bin_dir, start_worker};
use shoal_tests::redis_server::RedisServer;
use shoal_tests::system::find_program;
use shoal_tests::wait;
use shoal_tests::writer::{self, Writer};
use shoal_worker::checksum::{HashColumn, RowHash, digest_select};

const ALTER: &str = "ALTER TABLE sbtest1 ADD COLUMN x INT";
/// [`ALTER`] as pt-online-schema-change takes it.
const PTOSC_ALTER: &str = "ADD COLUMN x INT";
/// The second case: the same column and a secondary index on `c` (`CHAR(120)`).
const ALTER_INDEX: &str = "ALTER TABLE sbtest1 ADD COLUMN x INT, ADD INDEX idx_c (c)";

/// Where the report of a full run is written, between [`DOCS_BEGIN`] and [`DOCS_END`].
const DOCS: &str = "docs/benchmarks.md";
const DOCS_BEGIN: &str = "<!-- make bench: latest run, generated; edits here are overwritten -->";
const DOCS_END: &str = "<!-- make bench: end of the latest run -->";

/// Prints a line of the report and appends it to `$report`.
macro_rules! out {
    ($report:expr, $($arg:tt)*) => {{
        let line = format!($($arg)*);
        println!("{line}");
        $report.push_str(&line);
        $report.push('\n');
    }};
}

/// The server as the peers' baselines ran it (`../shared/bench/peers/mariadb-up.sh`): a buffer
/// pool that holds both copies of the table, full durability, SSD flushing rates.
const SERVER_SETTINGS: &str = "innodb_buffer_pool_size=2G\n\
    innodb_log_file_size=512M\n\
    innodb_flush_log_at_trx_commit=1\n\
    sync_binlog=1\n\
    innodb_io_capacity=2000\n\
    innodb_io_capacity_max=4000\n\
    max_binlog_size=256M\n";

struct Args {
    rows: u64,
    reps: usize,
    skip_ptosc: bool,
    /// Skip the application's view (sysbench).
    skip_sysbench: bool,
    /// Only shoal's fleet with server copy and 2 workers, for iterating on performance.
    quick: bool,
    /// Table sizes of the coordinator's peak-RSS case (two, smaller first).
    rss_rows: Vec<u64>,
    /// Only the peak-RSS case.
    only_rss: bool,
    /// Do not rewrite the generated part of `docs/benchmarks.md`.
    no_docs: bool,
    /// Skip the `perf` profiles of the server.
    skip_perf: bool,
    /// Only sysbench alone and the paced cases, for iterating on the throttle.
    only_throttle: bool,
    /// The paced cases' chunk time, latency factor and nice ratio.
    throttle_chunk_time: String,
    latency_factor: String,
    nice_ratio: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        rows: 1_000_000,
        reps: 1,
        skip_ptosc: false,
        skip_sysbench: false,
        quick: false,
        rss_rows: vec![1_000_000, 5_000_000],
        only_rss: false,
        no_docs: false,
        skip_perf: false,
        only_throttle: false,
        throttle_chunk_time: "100ms".to_owned(),
        latency_factor: "2".to_owned(),
        nice_ratio: "19".to_owned(),
    };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--rows" => args.rows = iter.next().context("--rows N")?.parse()?,
            "--reps" => args.reps = iter.next().context("--reps R")?.parse()?,
            "--skip-ptosc" => args.skip_ptosc = true,
            "--quick" => args.quick = true,
            "--skip-sysbench" => args.skip_sysbench = true,
            "--rss-rows" => {
                args.rss_rows = iter
                    .next()
                    .context("--rss-rows A,B")?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--only-rss" => args.only_rss = true,
            "--no-docs" => args.no_docs = true,
            "--skip-perf" => args.skip_perf = true,
            "--only-throttle" => args.only_throttle = true,
            "--throttle-chunk-time" => {
                args.throttle_chunk_time = iter.next().context("--throttle-chunk-time T")?;
            }
            "--latency-factor" => {
                args.latency_factor = iter.next().context("--latency-factor F")?;
            }
            "--nice-ratio" => args.nice_ratio = iter.next().context("--nice-ratio R")?,
            other => {
                bail!(
                    "unknown argument {other}; use --rows N, --reps R, --skip-ptosc, \
                     --skip-sysbench, --skip-perf, --quick, --rss-rows A,B, --only-rss, --no-docs, \
                     --only-throttle, --throttle-chunk-time T, --latency-factor F, --nice-ratio R"
                )
            }
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
    let has_index: Option<String> = connection
        .query_first("SELECT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = 'bench' AND TABLE_NAME = 'sbtest1' AND INDEX_NAME = 'idx_c' LIMIT 1")
        .await?;
    if has_index.is_some() {
        connection
            .query_drop("ALTER TABLE sbtest1 DROP INDEX idx_c")
            .await?;
    }
    if has_x.is_some() {
        connection
            .query_drop("ALTER TABLE sbtest1 DROP COLUMN x")
            .await?;
    }
    connection
        .query_drop("DROP TABLE IF EXISTS sbtest1_copy, _sbtest1_old, _sbtest1_new")
        .await?;
    wait_clean(connection).await
}

/// Waits (up to 2 minutes) until InnoDB has flushed almost every dirty page, so that one
/// case's background flushing does not bleed into the next measurement (as the peers' scripts).
async fn wait_clean(connection: &mut Conn) -> anyhow::Result<()> {
    connection
        .query_drop(
            "SET GLOBAL innodb_max_dirty_pages_pct_lwm = 0.001, GLOBAL innodb_max_dirty_pages_pct = 0",
        )
        .await?;
    for _ in 0..240 {
        let dirty: Option<(String, u64)> = connection
            .query_first("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")
            .await?;
        if dirty.is_none_or(|(_, pages)| pages < 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    connection
        .query_drop(
            "SET GLOBAL innodb_max_dirty_pages_pct = 90, GLOBAL innodb_max_dirty_pages_pct_lwm = 0",
        )
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

/// Seconds `statement` takes on a fresh session, after `setup` (not timed).
async fn time_sql(dsn: String, setup: &'static str, statement: String) -> anyhow::Result<f64> {
    let mut session = Conn::new(Opts::from_url(&dsn)?).await?;
    session.query_drop(setup).await?;
    let started = Instant::now();
    session.query_drop(statement).await?;
    Ok(started.elapsed().as_secs_f64())
}

/// The median seconds of `statement` on a fresh session, `reps` times, the table reset before
/// each.
async fn server_case(
    reps: usize,
    connection: &mut Conn,
    dsn: &str,
    statement: String,
) -> anyhow::Result<f64> {
    timed(reps, connection, || {
        time_sql(dsn.to_owned(), "DO 0", statement.clone())
    })
    .await
}

/// Seconds pt-online-schema-change takes to run the ALTER on `sbtest1` (default chunking).
fn ptosc_run(ptosc: &std::path::Path, port: u16, alter: &str) -> anyhow::Result<f64> {
    let target = format!("h=127.0.0.1,P={port},u={TEST_USER},p={TEST_PASSWORD},D=bench,t=sbtest1");
    let started = Instant::now();
    let output = Command::new(ptosc)
        .args(["--alter", alter, &target, "--execute"])
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

/// CPU seconds (user + system) a process has used so far; 0 if it is gone.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds used by this process's reaped children so far.
fn children_cpu_seconds() -> anyhow::Result<f64> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
    let seconds =
        |time: nix::sys::time::TimeVal| time.tv_sec() as f64 + time.tv_usec() as f64 / 1e6;
    Ok(seconds(usage.user_time()) + seconds(usage.system_time()))
}

/// Where the time and the CPU of one shoal run went.
#[derive(Debug, Default, Clone)]
struct Profile {
    /// CPU seconds per process during the run.
    cpu: Vec<(String, f64)>,
    /// Seconds spent in each lifecycle state, in order.
    phases: Vec<(String, f64)>,
}

impl Profile {
    fn line(&self) -> String {
        let cpu: Vec<String> = self
            .cpu
            .iter()
            .map(|(name, seconds)| format!("{name} {seconds:.1}"))
            .collect();
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|(name, seconds)| format!("{name} {seconds:.1}"))
            .collect();
        format!("CPU s: {}; phases s: {}", cpu.join(", "), phases.join(", "))
    }
}

/// Seconds per state from a status document's transitions.
fn phases(status: &serde_json::Value) -> Vec<(String, f64)> {
    let transitions = status["lastTransitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let at = |transition: &serde_json::Value| {
        transition["at"]
            .as_str()
            .and_then(|text| text.parse::<prost_types::Timestamp>().ok())
            .map(|stamp| stamp.seconds as f64 + f64::from(stamp.nanos) / 1e9)
    };
    transitions
        .windows(2)
        .filter_map(|pair| {
            let name = pair[0]["to"].as_str()?.to_lowercase();
            Some((name, at(&pair[1])? - at(&pair[0])?))
        })
        .collect()
}

/// What the application saw: sysbench `oltp_write_only` at a fixed rate, whole-window figures.
#[derive(Debug, Clone)]
struct AppView {
    window: f64,
    tps: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Errors sysbench counted and went on (see [`sysbench_start`]).
    errors: u64,
    /// sysbench's per-second report lines (`[ 1s ] … lat (ms,95%): …`).
    per_second: Vec<String>,
}

/// Starts sysbench `oltp_write_only` on `sbtest1` at 100 transactions/s (4 threads) for
/// `seconds`, with its latency histogram. Besides sysbench's default (deadlocks, lock waits), a
/// missing table (1146) is counted instead of ending the run: pt-online-schema-change's
/// triggers name `_sbtest1_new`, which a statement can still reach after its swap (seen here).
fn sysbench_start(port: u16, rows: u64, seconds: u64) -> anyhow::Result<std::process::Child> {
    let sysbench = find_program("sysbench", "sysbench")?;
    Ok(Command::new(sysbench)
        .arg("oltp_write_only")
        .args(["--db-driver=mysql", "--mysql-host=127.0.0.1"])
        .arg(format!("--mysql-port={port}"))
        .arg(format!("--mysql-user={TEST_USER}"))
        .arg(format!("--mysql-password={TEST_PASSWORD}"))
        .args(["--mysql-db=bench", "--tables=1"])
        .arg(format!("--table-size={rows}"))
        .args([
            "--rate=100",
            "--threads=4",
            "--histogram=on",
            "--percentile=95",
            "--report-interval=1",
            "--mysql-ignore-errors=1213,1020,1205,1146",
        ])
        .arg(format!("--time={seconds}"))
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}

/// Waits for sysbench and reads tps, p95, p99 and max over its whole window.
fn sysbench_finish(child: std::process::Child, window: f64) -> anyhow::Result<AppView> {
    let output = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "sysbench failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let number_after = |label: &str| {
        text.lines()
            .find(|line| line.trim_start().starts_with(label))
            .and_then(|line| line.split(label).nth(1))
            .and_then(|rest| {
                rest.trim()
                    .trim_start_matches(|c: char| !c.is_ascii_digit())
                    .split(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .next()
                    .and_then(|number| number.parse::<f64>().ok())
            })
    };
    // "transactions:  5989   (99.76 per sec.)"
    let tps = text
        .lines()
        .find(|line| line.trim_start().starts_with("transactions:"))
        .and_then(|line| line.split('(').nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse::<f64>().ok())
        .context("sysbench printed no transaction rate")?;
    let max_ms = number_after("max:").context("sysbench printed no max latency")?;
    // Histogram lines: "       2.350 |****     12".
    let mut histogram: Vec<(f64, u64)> = text
        .lines()
        .filter(|line| line.contains('|'))
        .filter_map(|line| {
            let value = line.split('|').next()?.trim().parse::<f64>().ok()?;
            let count = line.split_whitespace().last()?.parse::<u64>().ok()?;
            Some((value, count))
        })
        .collect();
    histogram.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: u64 = histogram.iter().map(|(_, count)| count).sum();
    let percentile = |fraction: f64| {
        let wanted = (total as f64 * fraction).ceil() as u64;
        let mut seen = 0;
        for (value, count) in &histogram {
            seen += count;
            if seen >= wanted {
                return *value;
            }
        }
        max_ms
    };
    Ok(AppView {
        window,
        tps,
        p95_ms: percentile(0.95),
        p99_ms: percentile(0.99),
        max_ms,
        errors: number_after("ignored errors:").map_or(0, |errors| errors as u64),
        per_second: text
            .lines()
            .filter(|line| line.starts_with("[ "))
            .map(str::to_owned)
            .collect(),
    })
}

/// Seconds per state from `shoal run`'s "entering state" log lines (timestamp first).
fn phases_from_log(log: &str) -> Vec<(String, f64)> {
    let mut entered: Vec<(String, f64)> = Vec::new();
    for line in log.lines().filter(|line| line.contains("entering state")) {
        let Some(stamp) = line
            .split_whitespace()
            .next()
            .and_then(|text| text.parse::<prost_types::Timestamp>().ok())
        else {
            continue;
        };
        let Some(state) = line
            .split(" state=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
        else {
            continue;
        };
        let at = stamp.seconds as f64 + f64::from(stamp.nanos) / 1e9;
        entered.push((state.to_owned(), at));
    }
    entered
        .windows(2)
        .map(|pair| (pair[0].0.clone(), pair[1].1 - pair[0].1))
        .collect()
}

/// `shoal run`'s flag that makes it copy even where the server could ALTER instantly.
fn no_instant() -> Vec<String> {
    vec!["--no-instant".to_owned()]
}

/// Runs one `shoal run` (in-process workers, no Redis) with `threads`; returns its seconds and
/// where the time and CPU went.
fn run_mode(
    dsn: &str,
    alter: &str,
    threads: u32,
    extra: &[String],
    server_pid: u32,
) -> anyhow::Result<(f64, Profile)> {
    let server_before = cpu_seconds(server_pid);
    let children_before = children_cpu_seconds()?;
    let started = Instant::now();
    let output = Command::new(bin_dir()?.join("shoal"))
        .args(["run", "--alter", alter, "--threads"])
        .arg(threads.to_string())
        .args(extra)
        .env("SHOAL_DSN", dsn)
        .env("RUST_LOG", "info")
        .output()?;
    let seconds = started.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("shoal run failed:\n{log}");
    }
    // The child is reaped: its CPU is the growth of this process's children's usage.
    let shoal_cpu = children_cpu_seconds()? - children_before;
    let profile = Profile {
        cpu: vec![
            (
                "mariadbd".to_owned(),
                cpu_seconds(server_pid) - server_before,
            ),
            ("shoal run".to_owned(), shoal_cpu),
        ],
        phases: phases_from_log(&log),
    };
    Ok((seconds, profile))
}

/// [`timed`] for a shoal case: the median seconds and the profile of the last repetition.
async fn profiled<F, Fut>(
    reps: usize,
    connection: &mut Conn,
    mut run: F,
) -> anyhow::Result<(f64, Profile)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<(f64, Profile)>>,
{
    let mut last = Profile::default();
    let mut seconds = Vec::new();
    for _ in 0..reps {
        reset(connection).await?;
        let (took, profile) = run().await?;
        eprintln!("bench:   {took:.1} s; {}", profile.line());
        seconds.push(took);
        last = profile;
    }
    reset(connection).await?;
    Ok((median(seconds), last))
}

/// Byte budgets per copy chunk compared with the adaptive sizing (Spirit's alternative).
const BYTE_BUDGETS_MIB: [u64; 3] = [2, 8, 32];

/// The paced cases under load: the latency gate, and the nice ratio.
fn pacings(args: &Args) -> [[&str; 2]; 2] {
    [
        ["--max-latency-factor", args.latency_factor.as_str()],
        ["--nice-ratio", args.nice_ratio.as_str()],
    ]
}

/// A paced fleet (1 worker × 1 slot, chunks of `--throttle-chunk-time`, `pacing`: the latency
/// gate or the nice ratio) idle and under load; see [`fitted_case`].
async fn throttled_case(
    connection: &mut Conn,
    redis_url: &str,
    dsn: &str,
    servers: &[(&str, u32)],
    port: u16,
    args: &Args,
    pacing: [&str; 2],
) -> anyhow::Result<(String, f64, AppView, f64, Profile)> {
    let chunk_time = &args.throttle_chunk_time;
    let extra = [
        "--target-chunk-time",
        chunk_time.as_str(),
        pacing[0],
        pacing[1],
    ];
    let case = FleetCase {
        workers: 1,
        slots: 1,
        copy_mode: "server",
        alter: ALTER,
        extra: &extra,
    };
    let name = format!(
        "shoal fleet: server copy, 1 worker × 1 slot, {chunk_time} chunks, {} {}",
        pacing[0], pacing[1]
    );
    let (idle, view, seconds, profile) = fitted_case(
        connection, redis_url, dsn, servers, port, args.rows, &name, &case,
    )
    .await?;
    Ok((name, idle, view, seconds, profile))
}

/// The application's view beside a fleet case, in a window that is the migration's own. Its
/// time under load cannot be known beforehand (a throttle stretches it, the load slows it), and
/// sysbench reports only at the end of a fixed window: the case runs idle once, then under load
/// to learn its time, then again with the window set to the last time until the migration fits
/// its window within 10% (three attempts at most), so that quiet seconds after the migration do
/// not dilute the percentiles. Returns the idle seconds and the last attempt's view, time and
/// profile.
#[allow(clippy::too_many_arguments)]
async fn fitted_case(
    connection: &mut Conn,
    redis_url: &str,
    dsn: &str,
    servers: &[(&str, u32)],
    port: u16,
    rows: u64,
    name: &str,
    case: &FleetCase<'_>,
) -> anyhow::Result<(f64, AppView, f64, Profile)> {
    reset(connection).await?;
    eprintln!("bench: {name}, idle");
    let (idle, _, _) = fleet_run(redis_url, dsn, case, servers).await?;
    reset(connection).await?;
    eprintln!("bench: sysbench during {name}, learning its time");
    let load = sysbench_start(port, rows, idle.ceil() as u64)?;
    let (mut learnt, _, _) = fleet_run(redis_url, dsn, case, servers).await?;
    sysbench_finish(load, idle.ceil())?;
    let mut attempt = 1;
    let (view, seconds, profile) = loop {
        reset(connection).await?;
        let window = learnt.ceil() as u64;
        eprintln!("bench: sysbench during {name} ({window} s window, attempt {attempt})");
        let load = sysbench_start(port, rows, window)?;
        let (seconds, _, profile) = fleet_run(redis_url, dsn, case, servers).await?;
        let view = sysbench_finish(load, window as f64)?;
        // A window much longer than the migration would dilute the figures with quiet
        // seconds, a shorter one would miss its end: within 10%, or the third attempt.
        if (seconds - window as f64).abs() <= 0.1 * window as f64 || attempt == 3 {
            break (view, seconds, profile);
        }
        learnt = seconds;
        attempt += 1;
    };
    reset(connection).await?;
    Ok((idle, view, seconds, profile))
}

/// One fleet configuration: worker processes, slots per worker (the migration's `--threads` is
/// their product), the copy mode, the ALTER and extra `submit` flags.
struct FleetCase<'a> {
    workers: u32,
    slots: u32,
    copy_mode: &'a str,
    alter: &'a str,
    extra: &'a [&'a str],
}

impl FleetCase<'static> {
    /// `workers` × 2 slots, `copy_mode`, the benchmark's ALTER.
    fn of(workers: u32, copy_mode: &'static str) -> Self {
        Self {
            workers,
            slots: 2,
            copy_mode,
            alter: ALTER,
            extra: &[],
        }
    }
}

/// Runs one fleet migration; returns seconds, the coordinator's peak RSS in KiB, and where the
/// time and CPU went (`servers`: other processes to account, e.g. mariadbd and redis).
async fn fleet_run(
    redis_url: &str,
    dsn: &str,
    case: &FleetCase<'_>,
    servers: &[(&str, u32)],
) -> anyhow::Result<(f64, Peaks, Profile)> {
    let FleetCase {
        workers,
        slots,
        copy_mode,
        alter: table_alter,
        extra,
    } = *case;
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
            slots,
            &env,
        )?);
    }
    let threads = (workers * slots).to_string();
    let mut accounted: Vec<(String, u32)> = servers
        .iter()
        .map(|(name, pid)| ((*name).to_owned(), *pid))
        .collect();
    accounted.push(("coordinator".to_owned(), coordinator.process.pid()));
    for (index, process) in processes.iter().enumerate() {
        accounted.push((format!("worker-{index}"), process.pid()));
    }
    let cpu_before: Vec<f64> = accounted.iter().map(|(_, pid)| cpu_seconds(*pid)).collect();
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
        .args(extra)
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
    let cpu = accounted
        .iter()
        .zip(cpu_before)
        .map(|((name, pid), before)| (name.clone(), cpu_seconds(*pid) - before))
        .collect();
    let status = Command::new(bin_dir()?.join("shoal"))
        .args([
            "--coordinator",
            &coordinator.url,
            "status",
            &id,
            "--output",
            "json",
        ])
        .output()?;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    let profile = Profile {
        cpu,
        phases: phases(&status),
    };
    let peaks = Peaks {
        coordinator: peak_rss_kib(coordinator.process.pid()),
        worker: processes
            .iter()
            .map(|process| peak_rss_kib(process.pid()))
            .max()
            .unwrap_or(0),
    };
    drop(processes);
    Ok((seconds, peaks, profile))
}

/// Peak resident memory of the fleet's processes, KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Peaks {
    coordinator: u64,
    /// The largest of the workers'.
    worker: u64,
}

/// A live process's peak resident memory (`VmHWM`), KiB; 0 if unreadable.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|value| value.parse().ok())
        })
        .unwrap_or(0)
}

/// The coordinator's peak RSS migrating an `orders` table of each size in `sizes` under a
/// writer (fleet, 2 workers, buffered copy); each result compared with the writer's ledger.
async fn rss_case(
    connection: &mut Conn,
    dsn: &str,
    redis_url: &str,
    servers: &[(&str, u32)],
    sizes: &[u64],
) -> anyhow::Result<Vec<(u64, f64, Peaks)>> {
    let mut rss = Vec::new();
    for &rows in sizes {
        eprintln!("bench: coordinator peak RSS at {rows} rows under a writer");
        connection.query_drop("DROP TABLE IF EXISTS orders").await?;
        writer::seed(connection, "orders", rows).await?;
        let ledger = writer::read_table(connection, "orders").await?;
        let writer = Writer::start(dsn, "orders", ledger, 5, Duration::from_millis(1)).await?;
        wait::until(
            "writer to start",
            Duration::from_secs(30),
            Duration::from_millis(20),
            || async { (writer.stats.committed() > 100).then_some(()) },
        )
        .await?;
        let case = FleetCase {
            alter: "ALTER TABLE orders ADD COLUMN note VARCHAR(32) NOT NULL DEFAULT 'n/a', \
                    ADD INDEX idx_c (c)",
            ..FleetCase::of(2, "buffered")
        };
        let (seconds, peak, _) = fleet_run(redis_url, dsn, &case, servers).await?;
        let expected = writer.stop().await?;
        let actual = writer::read_table(connection, "orders").await?;
        let differences = writer::differences(&expected, &actual).len();
        if differences > 0 {
            bail!("{differences} differences after the {rows}-row migration");
        }
        eprintln!("bench:   {seconds:.1} s, peak RSS {peak:?} KiB");
        rss.push((rows, seconds, peak));
    }
    Ok(rss)
}

fn print_rss(report: &mut String, rss: &[(u64, f64, Peaks)]) {
    out!(
        report,
        "\n### Peak RSS (fleet, 2 workers, buffered copy, under a writer; ALTER adds a column and an index)\n"
    );
    out!(
        report,
        "| rows | seconds | coordinator peak RSS (MiB) | largest worker peak RSS (MiB) |"
    );
    out!(report, "|---:|---:|---:|---:|");
    for (rows, seconds, peak) in rss {
        out!(
            report,
            "| {rows} | {seconds:.1} | {:.1} | {:.1} |",
            peak.coordinator as f64 / 1024.0,
            peak.worker as f64 / 1024.0
        );
    }
    if let [(small_rows, _, small), (large_rows, _, large)] = rss {
        out!(
            report,
            "\nCoordinator RSS ratio {large_rows} / {small_rows} rows: {:.2} (acceptance at 5M / 1M: \
             ≤ 1.20); worker: {:.2}",
            large.coordinator as f64 / small.coordinator as f64,
            large.worker as f64 / small.worker as f64
        );
    }
}

/// shoal's default configuration (adaptive chunks, server copy, deferred indexes): the cases the
/// idle targets are read from.
fn is_default_case(name: &str) -> bool {
    let run = name
        .strip_prefix("shoal run: server copy, --threads ")
        .is_some_and(|threads| threads.parse::<u32>().is_ok());
    let fleet = name
        .strip_prefix("shoal fleet: server copy, ")
        .and_then(|rest| rest.strip_suffix(" worker(s) × 2 slots"))
        .is_some_and(|workers| workers.parse::<u32>().is_ok());
    run || fleet
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**not met**" }
}

/// The issue's targets, read from this run's figures.
struct Figures<'a> {
    results: &'a [(String, f64)],
    profiles: &'a [(String, Profile)],
    app: &'a [(String, AppView, Option<f64>)],
    idle_of: &'a [(String, f64)],
    same_hash_scan: f64,
    rss: &'a [(u64, f64, Peaks)],
}

fn print_targets(report: &mut String, figures: &Figures) {
    let seconds_of = |name: &str| {
        figures
            .results
            .iter()
            .find(|(case, _)| case == name)
            .map(|(_, seconds)| *seconds)
    };
    out!(report, "\n### Against the issue's targets (this run)\n");
    out!(report, "| target | figure | |");
    out!(report, "|---|---|---|");
    let best = figures
        .results
        .iter()
        .filter(|(name, _)| is_default_case(name))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((best_name, best)) = best {
        if let Some(ptosc) = seconds_of("pt-online-schema-change 3.x (default chunking)") {
            out!(
                report,
                "| idle: faster than pt-osc's default | best default shoal ({best_name}) {best:.1} s \
                 / pt-osc {ptosc:.1} s = {:.2} | {} |",
                best / ptosc,
                verdict(*best < ptosc)
            );
        }
        if let Some(insert) = seconds_of("server: INSERT INTO copy SELECT * (one transaction)") {
            out!(
                report,
                "| idle: ≤ 1.1× the server's `INSERT … SELECT` | {best:.1} / {insert:.1} s = {:.2} | {} |",
                best / insert,
                verdict(*best <= 1.1 * insert)
            );
        }
        if let Some(floor) = seconds_of("server: ALTER … ALGORITHM=COPY (offline, blocks writes)")
        {
            out!(
                report,
                "| idle: distance to the offline `ALGORITHM=COPY` floor (reported) | {best:.1} / \
                 {floor:.1} s = {:.2} | - |",
                best / floor
            );
        }
    }
    let checksum_ratios: Vec<f64> = figures
        .profiles
        .iter()
        .filter(|(name, _)| is_default_case(name))
        .filter_map(|(_, profile)| {
            profile
                .phases
                .iter()
                .find(|(phase, _)| phase.eq_ignore_ascii_case("checksum"))
                .map(|(_, seconds)| seconds / figures.same_hash_scan)
        })
        .collect();
    if let Some(worst) = checksum_ratios.iter().copied().reduce(f64::max) {
        let least = checksum_ratios.iter().copied().fold(worst, f64::min);
        out!(
            report,
            "| checksum phase ≤ 3× one raw scan with the same hash | {least:.2}–{worst:.2}× over \
             the default cases | {} |",
            verdict(worst <= 3.0)
        );
    }
    let cutover = figures
        .profiles
        .iter()
        .flat_map(|(_, profile)| &profile.phases)
        .filter(|(phase, _)| phase.replace('_', "").eq_ignore_ascii_case("cutover"))
        .map(|(_, seconds)| *seconds)
        .fold(0.0, f64::max);
    let shoal_max = figures
        .app
        .iter()
        .filter(|(name, _, _)| figures.idle_of.iter().any(|(case, _)| case == name))
        .map(|(_, view, _)| view.max_ms)
        .fold(0.0, f64::max);
    out!(
        report,
        "| cut-over blocks writes < 1 s | longest cut-over phase {cutover:.2} s; the application's \
         max latency in every shoal window ≤ {shoal_max:.0} ms | {} |",
        verdict(cutover < 1.0 && shoal_max < 1000.0)
    );
    if let [(small_rows, _, small), (large_rows, _, large)] = figures.rss {
        let ratio = large.coordinator as f64 / small.coordinator as f64;
        out!(
            report,
            "| coordinator peak RSS at 5M rows ≤ 1.2× at 1M | {large_rows} / {small_rows} rows: \
             {ratio:.2} | {} |",
            if *small_rows == 1_000_000 && *large_rows == 5_000_000 {
                verdict(ratio <= 1.2)
            } else {
                "not the target's sizes"
            }
        );
    }
    let Some((_, alone, _)) = figures
        .app
        .iter()
        .find(|(name, _, _)| name == "sysbench alone")
    else {
        return;
    };
    out!(
        report,
        "\nUnder the fixed 100 tps load (targets: tps ≥ 0.97× alone, whole-window p95 ≤ 2× alone, \
         max ≤ 1 s, time under load ≤ 1.5× the same configuration idle):\n"
    );
    out!(
        report,
        "| case | tps × alone | p95 × alone | max ms | under load / idle s | all four |"
    );
    out!(report, "|---|---:|---:|---:|---:|---|");
    for (name, view, seconds) in figures.app {
        let (Some((_, idle)), Some(seconds)) = (
            figures.idle_of.iter().find(|(case, _)| case == name),
            seconds,
        ) else {
            continue;
        };
        let tps = view.tps / alone.tps;
        let p95 = view.p95_ms / alone.p95_ms;
        let time = seconds / idle;
        out!(
            report,
            "| {name} | {tps:.2} | {p95:.2} | {:.0} | {seconds:.1} / {idle:.1} = {time:.2} | {} |",
            view.max_ms,
            verdict(tps >= 0.97 && p95 <= 2.0 && view.max_ms <= 1000.0 && time <= 1.5)
        );
    }
}

/// The first line a command prints, or why there is none.
fn first_line(program: &str, args: &[&str]) -> String {
    match Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
    {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned(),
        Ok(output) => format!("`{program}` exited {}", output.status),
        Err(_) => format!("`{program}` not found"),
    }
}

/// The machine, versions and command of this run, one bullet each (as the tools print them).
fn environment(server_version: &str) -> Vec<String> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let command = if arguments.is_empty() {
        "make bench".to_owned()
    } else {
        format!("make bench BENCH_ARGS='{}'", arguments.join(" "))
    };
    vec![
        format!("- command: `{command}`"),
        format!(
            "- date (UTC): {}",
            first_line("date", &["-u", "+%Y-%m-%d %H:%M"])
        ),
        format!(
            "- machine: {} cores (`nproc`), kernel {}",
            first_line("nproc", &[]),
            first_line("uname", &["-r"])
        ),
        format!(
            "- server: MariaDB {server_version} (private instance, settings as the peers' baselines)"
        ),
        format!(
            "- shoal: commit {}",
            first_line("git", &["rev-parse", "--short", "HEAD"])
        ),
        format!("- sysbench: {}", first_line("sysbench", &["--version"])),
        format!(
            "- pt-online-schema-change: {}",
            first_line("pt-online-schema-change", &["--version"])
        ),
        format!("- perf: {}", first_line("perf", &["--version"])),
    ]
}

/// Server CPU profiles taken during chosen cases: name, then top symbols or why there are none.
type ServerProfiles = Vec<(String, Result<Vec<(f64, String)>, String>)>;

/// Starts a `perf` profile of `pid` for the case `name`, unless profiles are off or unavailable.
fn perf_start(args: &Args, pid: u32, dir: &std::path::Path, name: &str) -> Option<Recording> {
    if args.skip_perf {
        return None;
    }
    let data = dir.join(format!(
        "perf-{}.data",
        name.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    ));
    match Recording::start(pid, &data) {
        Ok(recording) => Some(recording),
        Err(error) => {
            eprintln!("bench: no perf profile for {name}: {error:#}");
            None
        }
    }
}

/// Runs a case once more, after its timed runs, under `perf record` of the server (so that the
/// profiler's overhead stays out of every figure), and keeps the profile under `name`.
async fn profile_once<F, Fut, T>(
    args: &Args,
    server: (u32, &std::path::Path),
    connection: &mut Conn,
    profiles: &mut ServerProfiles,
    name: &str,
    case: F,
) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    if args.skip_perf {
        return Ok(());
    }
    eprintln!("bench: {name}, once more under perf (not timed)");
    reset(connection).await?;
    let recording = perf_start(args, server.0, server.1, name);
    case().await?;
    perf_finish(recording, name, profiles);
    reset(connection).await?;
    Ok(())
}

/// Ends a profile started by [`perf_start`] and keeps its top symbols under `name`.
fn perf_finish(recording: Option<Recording>, name: &str, profiles: &mut ServerProfiles) {
    if let Some(recording) = recording {
        profiles.push((
            name.to_owned(),
            recording.finish(12).map_err(|error| format!("{error:#}")),
        ));
    }
}

/// Replaces the generated part of `docs/benchmarks.md` (or puts it before the first section).
fn write_docs(report: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(DOCS).with_context(|| format!("read {DOCS}"))?;
    let generated = format!("{DOCS_BEGIN}\n{report}{DOCS_END}");
    let updated = match (text.find(DOCS_BEGIN), text.find(DOCS_END)) {
        (Some(begin), Some(end)) if begin < end => format!(
            "{}{generated}{}",
            &text[..begin],
            &text[end + DOCS_END.len()..]
        ),
        _ => match text.find("\n## ") {
            Some(at) => format!("{}\n{generated}\n{}", &text[..at], &text[at..]),
            None => format!("{text}\n{generated}\n"),
        },
    };
    std::fs::write(DOCS, updated).with_context(|| format!("write {DOCS}"))?;
    eprintln!("bench: wrote the latest run into {DOCS}");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let scratch = tempfile::Builder::new().prefix("shoal-bench-").tempdir()?;
    let mariadb = MariaDb::start_with(&scratch.path().join("mariadb"), SERVER_SETTINGS)?;
    mariadb.info.root_sql("CREATE DATABASE bench")?;
    let redis = RedisServer::start(&scratch.path().join("redis"))?;
    let dsn = mariadb.info.dsn("bench");
    let mut connection = Conn::new(Opts::from_url(&dsn)?).await?;
    let servers = [("mariadbd", mariadb.info.pid), ("redis", redis.info.pid)];
    if args.only_rss {
        let rss = rss_case(
            &mut connection,
            &dsn,
            &redis.info.url(),
            &servers,
            &args.rss_rows,
        )
        .await?;
        let mut report = String::new();
        print_rss(&mut report, &rss);
        return Ok(());
    }
    eprintln!("bench: seeding {} rows", args.rows);
    seed_sbtest(&mut connection, args.rows).await?;
    let mut results: Vec<(String, f64)> = Vec::new();
    if args.only_throttle {
        wait_clean(&mut connection).await?;
        let alone = sysbench_finish(sysbench_start(mariadb.info.port, args.rows, 20)?, 20.0)?;
        println!("sysbench alone: {alone:?}");
        for pacing in pacings(&args) {
            let (name, idle, view, seconds, profile) = throttled_case(
                &mut connection,
                &redis.info.url(),
                &dsn,
                &servers,
                mariadb.info.port,
                &args,
                pacing,
            )
            .await?;
            println!(
                "{name}: idle {idle:.1} s; under load {seconds:.1} s; {}",
                profile.line()
            );
            for line in &view.per_second {
                println!("  {line}");
            }
            println!(
                "  tps {:.1}, p95 {:.2} ms, p99 {:.2} ms, max {:.1} ms over {:.0} s",
                view.tps, view.p95_ms, view.p99_ms, view.max_ms, view.window
            );
        }
        return Ok(());
    }

    let mut server_profiles: ServerProfiles = Vec::new();
    eprintln!("bench: server INSERT INTO … SELECT *");
    let name = "server: INSERT INTO copy SELECT *";
    let insert_select_sql = || {
        time_sql(
            dsn.clone(),
            "CREATE TABLE sbtest1_copy LIKE sbtest1",
            "INSERT INTO sbtest1_copy SELECT * FROM sbtest1".to_owned(),
        )
    };
    let insert_select = timed(args.reps, &mut connection, insert_select_sql).await?;
    let server = (mariadb.info.pid, scratch.path());
    profile_once(
        &args,
        server,
        &mut connection,
        &mut server_profiles,
        name,
        insert_select_sql,
    )
    .await?;
    results.push((
        "server: INSERT INTO copy SELECT * (one transaction)".to_owned(),
        insert_select,
    ));

    eprintln!("bench: server ALTER … ALGORITHM=COPY (offline)");
    let alter_copy = server_case(
        args.reps,
        &mut connection,
        &dsn,
        format!("{ALTER}, ALGORITHM=COPY"),
    )
    .await?;
    results.push((
        "server: ALTER … ALGORITHM=COPY (offline, blocks writes)".to_owned(),
        alter_copy,
    ));

    eprintln!("bench: server raw checksum scan");
    let raw_scan = server_case(
        args.reps,
        &mut connection,
        &dsn,
        "SELECT COUNT(*), BIT_XOR(CRC32(CONCAT_WS('#', id, k, c, pad))) FROM sbtest1".to_owned(),
    )
    .await?;
    results.push((
        "server: one raw checksum scan, BIT_XOR(CRC32(CONCAT_WS(…))) (not a migration)".to_owned(),
        raw_scan,
    ));
    eprintln!("bench: server raw scan with shoal's row hash");
    // sbtest1 as shoal's checksum sees it: two integers, two CHAR columns, none nullable.
    let columns: Vec<HashColumn> = [("id", false), ("k", false), ("c", true), ("pad", true)]
        .map(|(name, text)| HashColumn {
            name: name.to_owned(),
            text,
            nullable: false,
        })
        .to_vec();
    let version: String = connection
        .query_first("SELECT VERSION()")
        .await?
        .unwrap_or_default();
    let hash = RowHash::detect(&mut connection, &version).await?;
    let name = "server: one raw scan with shoal's row hash";
    let scan = format!(
        "SELECT {} FROM sbtest1 FORCE INDEX (PRIMARY)",
        digest_select(hash, &columns)
    );
    let same_hash_scan = server_case(args.reps, &mut connection, &dsn, scan.clone()).await?;
    let session = Conn::new(Opts::from_url(&dsn)?).await?;
    profile_once(
        &args,
        server,
        &mut connection,
        &mut server_profiles,
        name,
        || async move {
            let mut session = session;
            session.query_drop(scan).await?;
            anyhow::Ok(())
        },
    )
    .await?;
    results.push((
        format!("server: one raw scan with shoal's row hash ({hash:?}) (not a migration)"),
        same_hash_scan,
    ));

    if args.quick {
        let (seconds, _, profile) = fleet_run(
            &redis.info.url(),
            &dsn,
            &FleetCase::of(2, "server"),
            &servers,
        )
        .await?;
        println!(
            "quick: shoal fleet, server copy, 2 workers: {seconds:.1} s; {}",
            profile.line()
        );
        return Ok(());
    }
    let mut profiles: Vec<(String, Profile)> = Vec::new();
    for threads in [1, 2, 4] {
        eprintln!("bench: shoal run, server copy, --threads {threads}");
        let name = format!("shoal run: server copy, --threads {threads}");
        let case = || {
            let dsn = dsn.clone();
            async move { run_mode(&dsn, ALTER, threads, &no_instant(), mariadb.info.pid) }
        };
        let (seconds, profile) = profiled(args.reps, &mut connection, case).await?;
        if threads == 4 {
            profile_once(
                &args,
                server,
                &mut connection,
                &mut server_profiles,
                &name,
                case,
            )
            .await?;
        }
        profiles.push((name.clone(), profile));
        results.push((name, seconds));
    }
    // The same with the secondary index maintained by the copy (by default it is built after).
    let keep_indexes = || {
        let mut extra = no_instant();
        extra.push("--keep-secondary-indexes".to_owned());
        extra
    };
    eprintln!("bench: shoal run, server copy, --threads 4 --keep-secondary-indexes");
    let (seconds, profile) = profiled(args.reps, &mut connection, || {
        let dsn = dsn.clone();
        let extra = keep_indexes();
        async move { run_mode(&dsn, ALTER, 4, &extra, mariadb.info.pid) }
    })
    .await?;
    let name = "shoal run: server copy, --threads 4, --keep-secondary-indexes".to_owned();
    profiles.push((name.clone(), profile));
    results.push((name, seconds));
    // Chunks sized by a byte budget (fixed keys per chunk: the budget over the table's average
    // row length) against the adaptive sizing above (500 ms statements), both `--threads 4`.
    let row_bytes: u64 = connection
        .query_first(
            "SELECT AVG_ROW_LENGTH FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = 'bench' AND TABLE_NAME = 'sbtest1'",
        )
        .await?
        .unwrap_or(200)
        .max(1);
    for mib in BYTE_BUDGETS_MIB {
        let keys = (mib << 20) / row_bytes;
        eprintln!("bench: shoal run, --threads 4, {mib} MiB chunks ({keys} keys)");
        let extra = vec![
            "--no-instant".to_owned(),
            "--target-chunk-time".to_owned(),
            "0".to_owned(),
            "--chunk-rows".to_owned(),
            keys.to_string(),
        ];
        let (seconds, profile) = profiled(args.reps, &mut connection, || {
            let dsn = dsn.clone();
            let extra = extra.clone();
            async move { run_mode(&dsn, ALTER, 4, &extra, mariadb.info.pid) }
        })
        .await?;
        let name = format!(
            "shoal run: server copy, --threads 4, byte budget {mib} MiB ({keys} keys of \
             {row_bytes} B average row)"
        );
        profiles.push((name.clone(), profile));
        results.push((name, seconds));
    }
    for (copy_mode, workers) in [("server", 1), ("server", 2), ("server", 4), ("buffered", 2)] {
        eprintln!("bench: shoal fleet, {copy_mode} copy, {workers} worker process(es)");
        let (seconds, profile) = profiled(args.reps, &mut connection, || {
            let redis_url = redis.info.url();
            let dsn = dsn.clone();
            async move {
                let (seconds, _, profile) = fleet_run(
                    &redis_url,
                    &dsn,
                    &FleetCase::of(workers, copy_mode),
                    &servers,
                )
                .await?;
                Ok((seconds, profile))
            }
        })
        .await?;
        let name = format!("shoal fleet: {copy_mode} copy, {workers} worker(s) × 2 slots");
        profiles.push((name.clone(), profile));
        results.push((name, seconds));
    }

    if args.skip_ptosc {
        eprintln!("bench: pt-online-schema-change skipped");
    } else if let Ok(ptosc) = find_program("pt-online-schema-change", "percona-toolkit") {
        eprintln!("bench: pt-online-schema-change");
        let port = mariadb.info.port;
        let seconds = timed(args.reps, &mut connection, || {
            let ptosc = ptosc.clone();
            async move { ptosc_run(&ptosc, port, PTOSC_ALTER) }
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

    // The native INSTANT path, which every case above skips: the server's own and shoal's.
    eprintln!("bench: server ALTER … ALGORITHM=INSTANT");
    let instant = server_case(
        args.reps,
        &mut connection,
        &dsn,
        format!("{ALTER}, ALGORITHM=INSTANT"),
    )
    .await?;
    results.push((
        "server: ALTER … ALGORITHM=INSTANT (no copy)".to_owned(),
        instant,
    ));
    eprintln!("bench: shoal run, native INSTANT path");
    let (seconds, _) = profiled(args.reps, &mut connection, || {
        let dsn = dsn.clone();
        async move { run_mode(&dsn, ALTER, 4, &[], mariadb.info.pid) }
    })
    .await?;
    results.push((
        "shoal run: without --no-instant (the server's INSTANT path, no copy)".to_owned(),
        seconds,
    ));

    // The second ALTER: the column and a secondary index.
    let mut index_results: Vec<(String, f64)> = Vec::new();
    eprintln!("bench: second ALTER, server ALGORITHM=COPY (offline)");
    let index_copy = server_case(
        args.reps,
        &mut connection,
        &dsn,
        format!("{ALTER_INDEX}, ALGORITHM=COPY"),
    )
    .await?;
    index_results.push((
        "server: ALTER … ALGORITHM=COPY (offline, blocks writes)".to_owned(),
        index_copy,
    ));
    eprintln!("bench: second ALTER, shoal run --threads 4");
    let (seconds, profile) = profiled(args.reps, &mut connection, || {
        let dsn = dsn.clone();
        async move { run_mode(&dsn, ALTER_INDEX, 4, &no_instant(), mariadb.info.pid) }
    })
    .await?;
    let name = "second ALTER, shoal run: server copy, --threads 4".to_owned();
    profiles.push((name.clone(), profile));
    index_results.push((name, seconds));
    eprintln!("bench: second ALTER, shoal run --threads 4 --keep-secondary-indexes");
    let (seconds, profile) = profiled(args.reps, &mut connection, || {
        let dsn = dsn.clone();
        let extra = keep_indexes();
        async move { run_mode(&dsn, ALTER_INDEX, 4, &extra, mariadb.info.pid) }
    })
    .await?;
    let name =
        "second ALTER, shoal run: server copy, --threads 4, --keep-secondary-indexes".to_owned();
    profiles.push((name.clone(), profile));
    index_results.push((name, seconds));
    eprintln!("bench: second ALTER, shoal fleet 1 worker × 2 slots");
    let (seconds, profile) = profiled(args.reps, &mut connection, || {
        let redis_url = redis.info.url();
        let dsn = dsn.clone();
        async move {
            let case = FleetCase {
                alter: ALTER_INDEX,
                ..FleetCase::of(1, "server")
            };
            let (seconds, _, profile) = fleet_run(&redis_url, &dsn, &case, &servers).await?;
            Ok((seconds, profile))
        }
    })
    .await?;
    let name = "second ALTER, shoal fleet: server copy, 1 worker(s) × 2 slots".to_owned();
    profiles.push((name.clone(), profile));
    index_results.push((name, seconds));
    if !args.skip_ptosc
        && let Ok(ptosc) = find_program("pt-online-schema-change", "percona-toolkit")
    {
        eprintln!("bench: second ALTER, pt-online-schema-change");
        let port = mariadb.info.port;
        let seconds = timed(args.reps, &mut connection, || {
            let ptosc = ptosc.clone();
            async move { ptosc_run(&ptosc, port, "ADD COLUMN x INT, ADD INDEX idx_c (c)") }
        })
        .await?;
        index_results.push((
            "pt-online-schema-change 3.x (default chunking)".to_owned(),
            seconds,
        ));
    }

    // The application's view: sysbench at a fixed 100 tps alone, during shoal, during pt-osc.
    let mut app: Vec<(String, AppView, Option<f64>)> = Vec::new();
    // Each shoal case under load with its idle time (the same configuration without the load).
    let mut idle_of: Vec<(String, f64)> = Vec::new();
    if args.skip_sysbench {
        eprintln!("bench: application view skipped");
    } else {
        let shoal_idle = results
            .iter()
            .find(|(name, _)| name.starts_with("shoal fleet: server copy, 2 worker"))
            .map_or(20.0, |(_, seconds)| *seconds);
        let window = (shoal_idle * 1.5).ceil() as u64;
        reset(&mut connection).await?;
        eprintln!("bench: sysbench alone for {window} s");
        let (port, rows) = (mariadb.info.port, args.rows);
        let alone_case =
            || async move { sysbench_finish(sysbench_start(port, rows, window)?, window as f64) };
        let alone = alone_case().await?;
        app.push(("sysbench alone".to_owned(), alone, None));
        profile_once(
            &args,
            server,
            &mut connection,
            &mut server_profiles,
            "sysbench alone",
            alone_case,
        )
        .await?;
        // A shoal case under load, its idle time (listed among the results if `list_idle`) and
        // its profile.
        let mut record = |name: &str,
                          (idle, view, seconds, profile): (f64, AppView, f64, Profile),
                          list_idle: bool| {
            profiles.push((format!("under load: {name}"), profile));
            if list_idle {
                results.push((format!("{name} (idle, once)"), idle));
            }
            let during = format!(
                "during {} (window = its time under load)",
                name.trim_start_matches("shoal fleet: server copy, ")
            );
            idle_of.push((during.clone(), idle));
            app.push((during, view, Some(seconds)));
        };
        // The fleet as in the idle cases (2 workers × 2 slots), then gentle ones: one copy at a
        // time (a core left to the application), chunks sized for 500 ms and 100 ms statements.
        for (name, case) in [
            (
                "shoal fleet: server copy, 2 worker(s) × 2 slots",
                FleetCase::of(2, "server"),
            ),
            (
                "shoal fleet: server copy, 1 worker × 1 slot, 500ms chunks",
                FleetCase {
                    slots: 1,
                    extra: &["--target-chunk-time", "500ms"],
                    ..FleetCase::of(1, "server")
                },
            ),
            (
                "shoal fleet: server copy, 1 worker × 1 slot, 100ms chunks",
                FleetCase {
                    slots: 1,
                    extra: &["--target-chunk-time", "100ms"],
                    ..FleetCase::of(1, "server")
                },
            ),
        ] {
            let (idle, view, seconds, profile) = fitted_case(
                &mut connection,
                &redis.info.url(),
                &dsn,
                &servers,
                port,
                rows,
                name,
                &case,
            )
            .await?;
            // The 2 × 2 fleet's idle time is already among the timed cases.
            record(name, (idle, view, seconds, profile), case.workers == 1);
        }
        // The server's profile beside the fleet, in a separate untimed run.
        let during_case = || {
            let redis_url = redis.info.url();
            let dsn = dsn.clone();
            async move {
                let load = sysbench_start(port, rows, window)?;
                fleet_run(&redis_url, &dsn, &FleetCase::of(2, "server"), &servers).await?;
                sysbench_finish(load, window as f64)
            }
        };
        profile_once(
            &args,
            server,
            &mut connection,
            &mut server_profiles,
            "sysbench during shoal fleet, 2 workers × 2 slots",
            during_case,
        )
        .await?;
        for pacing in pacings(&args) {
            let (name, idle, view, seconds, profile) = throttled_case(
                &mut connection,
                &redis.info.url(),
                &dsn,
                &servers,
                mariadb.info.port,
                &args,
                pacing,
            )
            .await?;
            record(&name, (idle, view, seconds, profile), true);
        }
        if let Ok(ptosc) = find_program("pt-online-schema-change", "percona-toolkit")
            && !args.skip_ptosc
        {
            reset(&mut connection).await?;
            eprintln!("bench: sysbench during pt-online-schema-change");
            let load = sysbench_start(mariadb.info.port, args.rows, window)?;
            let seconds = ptosc_run(&ptosc, mariadb.info.port, PTOSC_ALTER)?;
            let view = sysbench_finish(load, window as f64)?;
            app.push((
                "during pt-online-schema-change".to_owned(),
                view,
                Some(seconds),
            ));
        }
        // Diagnostic, not a configuration to run: the application alone and beside the gentle
        // case with commits that do not wait for fsync (`sync_binlog=0`,
        // `innodb_flush_log_at_trx_commit=2`). If the latency gap closes, the copy hurts the
        // application through the commit's flushes (its redo and binlog writes lengthen every
        // fsync an application commit waits for), not through CPU.
        connection.query_drop("SET GLOBAL sync_binlog = 0").await?;
        connection
            .query_drop("SET GLOBAL innodb_flush_log_at_trx_commit = 2")
            .await?;
        let relaxed = async {
            let case = FleetCase {
                workers: 1,
                slots: 1,
                copy_mode: "server",
                alter: ALTER,
                extra: &["--target-chunk-time", "500ms"],
            };
            reset(&mut connection).await?;
            eprintln!("bench: sysbench alone, commits without fsync ({window} s)");
            let alone = sysbench_finish(
                sysbench_start(mariadb.info.port, args.rows, window)?,
                window as f64,
            )?;
            reset(&mut connection).await?;
            eprintln!("bench: sysbench during the gentle case, commits without fsync");
            let load = sysbench_start(mariadb.info.port, args.rows, window)?;
            let (seconds, _, _) = fleet_run(&redis.info.url(), &dsn, &case, &servers).await?;
            let view = sysbench_finish(load, window as f64)?;
            anyhow::Ok([
                (
                    "diagnostic: sysbench alone, commits without fsync".to_owned(),
                    alone,
                    None,
                ),
                (
                    "diagnostic: during shoal fleet, 1 worker × 1 slot, 500ms chunks, commits \
                     without fsync"
                        .to_owned(),
                    view,
                    Some(seconds),
                ),
            ])
        }
        .await;
        connection.query_drop("SET GLOBAL sync_binlog = 1").await?;
        connection
            .query_drop("SET GLOBAL innodb_flush_log_at_trx_commit = 1")
            .await?;
        app.extend(relaxed?);
        reset(&mut connection).await?;
    }

    let rss = rss_case(
        &mut connection,
        &dsn,
        &redis.info.url(),
        &servers,
        &args.rss_rows,
    )
    .await?;

    let baseline = alter_copy;
    let server_version: String = connection
        .query_first("SELECT VERSION()")
        .await?
        .unwrap_or_default();
    let mut report = String::new();
    out!(report, "## Latest run (generated by `make bench`)\n");
    for line in environment(&server_version) {
        out!(report, "{line}");
    }
    out!(
        report,
        "\n### Results: {} rows, ALTER `ADD COLUMN x INT`, median of {}\n",
        args.rows,
        args.reps
    );
    out!(report, "| method | seconds | × offline ALTER COPY |");
    out!(report, "|---|---:|---:|");
    for (name, seconds) in &results {
        out!(
            report,
            "| {name} | {seconds:.1} | {:.2} |",
            seconds / baseline
        );
    }
    out!(
        report,
        "\n### Results: the second ALTER, `ADD COLUMN x INT, ADD INDEX idx_c (c)`, median of {}\n",
        args.reps
    );
    out!(report, "| method | seconds | × its offline ALTER COPY |");
    out!(report, "|---|---:|---:|");
    for (name, seconds) in &index_results {
        out!(
            report,
            "| {name} | {seconds:.1} | {:.2} |",
            seconds / index_copy
        );
    }
    if !app.is_empty() {
        out!(
            report,
            "\n### The application's view: sysbench oltp_write_only at 100 tps, 4 threads, whole window\n"
        );
        out!(
            report,
            "| case | window s | tool s | tps | p95 ms | p99 ms | max ms | errors |"
        );
        out!(report, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for (name, view, seconds) in &app {
            out!(
                report,
                "| {name} | {:.0} | {} | {:.1} | {:.2} | {:.2} | {:.1} | {} |",
                view.window,
                seconds.map_or_else(|| "-".to_owned(), |seconds| format!("{seconds:.1}")),
                view.tps,
                view.p95_ms,
                view.p99_ms,
                view.max_ms,
                view.errors
            );
        }
    }
    out!(
        report,
        "\n### Where shoal's time and CPU went (last run of each case)\n"
    );
    for (name, profile) in &profiles {
        let checksum = profile
            .phases
            .iter()
            .find(|(phase, _)| phase.eq_ignore_ascii_case("checksum"))
            .map_or(0.0, |(_, seconds)| *seconds);
        let cpu: f64 = profile.cpu.iter().map(|(_, seconds)| seconds).sum();
        out!(
            report,
            "- {name}: {}; {:.0} rows per CPU-second of all of them; checksum phase / raw scan \
             with the same hash = {:.2} (/ the CONCAT_WS scan = {:.2})",
            profile.line(),
            args.rows as f64 / cpu.max(0.001),
            checksum / same_hash_scan,
            checksum / raw_scan
        );
    }
    print_rss(&mut report, &rss);
    print_targets(
        &mut report,
        &Figures {
            results: &results,
            profiles: &profiles,
            app: &app,
            idle_of: &idle_of,
            same_hash_scan,
            rss: &rss,
        },
    );
    if !server_profiles.is_empty() {
        out!(
            report,
            "\n### Where the server's CPU went (`perf record -e cpu-clock` of mariadbd, top symbols)\n"
        );
        for (name, profile) in &server_profiles {
            match profile {
                Ok(symbols) => {
                    let top: Vec<String> = symbols
                        .iter()
                        .map(|(share, symbol)| format!("{share:.1}% `{symbol}`"))
                        .collect();
                    out!(report, "- {name}: {}", top.join(", "));
                }
                Err(error) => out!(report, "- {name}: no profile ({error})"),
            }
        }
    }
    if !args.no_docs {
        write_docs(&report)?;
    }
    connection.disconnect().await.ok();
    drop(redis);
    drop(mariadb);
    Ok(())
}
