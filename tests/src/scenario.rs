//! Building blocks of end-to-end scenarios: the seeded table, the ALTER, the exact comparison.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // assertion helpers for tests

use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::processes::ShoalProcess;
use crate::servers::{self, TestDatabase};
use crate::writer;

/// The ALTER the scenarios run: a column and an index, which MariaDB cannot do INSTANT.
pub const ALTER: &str =
    "ALTER TABLE orders ADD COLUMN note VARCHAR(32) NOT NULL DEFAULT 'n/a', ADD INDEX idx_c (c)";

/// A fresh database holding `orders` with `rows` seeded rows, and its content.
pub async fn seeded(label: &str, rows: u64) -> (TestDatabase, writer::Ledger) {
    let database = servers::shared().database(label).await.unwrap();
    let mut connection = database.connect().await.unwrap();
    writer::seed(&mut connection, "orders", rows).await.unwrap();
    let ledger = writer::read_table(&mut connection, "orders").await.unwrap();
    assert_eq!(ledger.len() as u64, rows);
    (database, ledger)
}

/// A database `name` on a private `server` holding `orders` with `rows` rows, and its content.
pub async fn seeded_on(
    server: &crate::mariadb::MariaDb,
    name: &str,
    rows: u64,
) -> (TestDatabase, writer::Ledger) {
    server
        .info
        .root_sql(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let database = TestDatabase {
        name: name.to_owned(),
        dsn: server.info.dsn(name),
    };
    let mut connection = database.connect().await.unwrap();
    writer::seed(&mut connection, "orders", rows).await.unwrap();
    let ledger = writer::read_table(&mut connection, "orders").await.unwrap();
    (database, ledger)
}

/// Asserts the migrated table has the new schema and equals the ledger exactly.
pub async fn assert_migrated_exactly(database: &TestDatabase, expected: &writer::Ledger) {
    let mut connection = database.connect().await.unwrap();
    let columns = columns(&mut connection, &database.name, "orders").await;
    assert_eq!(
        columns,
        vec!["id", "k", "c", "u", "note"],
        "the new column is there"
    );
    // Every key as the ALTER makes it, in its place: the plain ones are built after the copy.
    assert_eq!(
        keys(&mut connection, "orders").await,
        [
            "PRIMARY KEY (`id`)",
            "UNIQUE KEY `uk` (`u`)",
            "KEY `kk` (`k`)",
            "KEY `idx_c` (`c`)"
        ],
        "the table's keys, with the new index"
    );
    let leftovers: Vec<String> = connection
        .exec(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME LIKE '\\_orders\\_%'",
            (&database.name,),
        )
        .await
        .unwrap();
    assert!(
        leftovers.is_empty(),
        "shoal's tables are removed: {leftovers:?}"
    );
    let actual = writer::read_table(&mut connection, "orders").await.unwrap();
    let differences = writer::differences(expected, &actual);
    assert!(
        differences.is_empty(),
        "{} differences between the writer's ledger ({} rows) and the table ({} rows); first: {:#?}",
        differences.len(),
        expected.len(),
        actual.len(),
        &differences[..differences.len().min(10)]
    );
    let defaults: Option<i64> = connection
        .query_first("SELECT COUNT(*) FROM orders WHERE note <> 'n/a'")
        .await
        .unwrap();
    assert_eq!(defaults, Some(0), "added column holds its default");
}

/// The key lines of `SHOW CREATE TABLE table`, in order.
pub async fn keys(connection: &mut mysql_async::Conn, table: &str) -> Vec<String> {
    let shown: Option<(String, String)> = connection
        .query_first(format!("SHOW CREATE TABLE `{table}`"))
        .await
        .unwrap();
    let (_, shown) = shown.unwrap_or_else(|| panic!("no table {table}"));
    shown
        .lines()
        .map(|line| line.trim().trim_end_matches(','))
        .filter(|line| line.contains("KEY ") && !line.starts_with('`'))
        .map(str::to_owned)
        .collect()
}

/// The `shoal` CLI against a coordinator; returns its log (stdout and stderr) once it exits 0.
pub async fn shoal_cli(coordinator_url: &str, args: &[&str]) -> String {
    let mut full = vec!["--coordinator".to_owned(), coordinator_url.to_owned()];
    full.extend(args.iter().map(|arg| (*arg).to_owned()));
    let mut process = ShoalProcess::spawn("shoal-cli", "shoal", &full, &[]).unwrap();
    let status = process.wait_exit(Duration::from_secs(600)).await.unwrap();
    assert!(
        status.success(),
        "shoal {args:?} failed ({status}):\n{}",
        process.logs()
    );
    process.logs()
}

/// Follows migration `id` with `shoal watch` until it ends; on failure, panics with the
/// coordinator's log.
pub async fn watch_to_completion(
    coordinator: &crate::processes::CoordinatorProcess,
    id: &str,
) -> String {
    let args = vec![
        "--coordinator".to_owned(),
        coordinator.url.clone(),
        "watch".to_owned(),
        id.to_owned(),
    ];
    let mut process = ShoalProcess::spawn("shoal-watch", "shoal", &args, &[]).unwrap();
    let status = process.wait_exit(Duration::from_secs(600)).await.unwrap();
    assert!(
        status.success(),
        "shoal watch {id} failed ({status}):\n{}\ncoordinator log (DEBUG lines left out):\n{}",
        process.logs(),
        without_debug(&coordinator.process.logs())
    );
    process.logs()
}

/// `log` without its DEBUG lines: a failure's excerpt then shows the warnings and errors.
fn without_debug(log: &str) -> String {
    log.lines()
        .filter(|line| !line.contains(" DEBUG "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Keeps the writer going for `more` commits after the cut-over (those writes must land in the
/// new table), stops it, checks the application saw no error, and returns its ledger and stats.
pub async fn finish_writer(
    writer: writer::Writer,
    more: u64,
) -> (writer::Ledger, std::sync::Arc<writer::Stats>) {
    let target = writer.stats.committed() + more;
    crate::wait::until(
        "writes after cut-over",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { (writer.stats.committed() >= target).then_some(()) },
    )
    .await
    .unwrap();
    let stats = std::sync::Arc::clone(&writer.stats);
    let expected = writer.stop().await.unwrap();
    assert_eq!(
        stats
            .unexpected_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the application saw no errors"
    );
    (expected, stats)
}

/// The columns of `schema`.`table`, in order.
pub async fn columns(connection: &mut mysql_async::Conn, schema: &str, table: &str) -> Vec<String> {
    connection
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
            (schema, table),
        )
        .await
        .unwrap()
}

/// `SHOW CREATE TABLE` of `table` in `database`.
pub async fn show_create(database: &TestDatabase, table: &str) -> String {
    let mut connection = database.connect().await.unwrap();
    let create: (String, String) = connection
        .query_first(format!("SHOW CREATE TABLE `{}`", table.replace('`', "``")))
        .await
        .unwrap()
        .unwrap();
    without_int_widths(&create.1)
}

/// `text` without integer display widths (`bigint(20)` → `bigint`): MariaDB prints them,
/// MySQL 8.0.19+ does not, and they mean nothing to the data.
pub fn without_int_widths(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while !rest.is_empty() {
        for kind in ["tinyint(", "smallint(", "mediumint(", "bigint(", "int("] {
            if let Some(after) = rest.strip_prefix(kind) {
                let digits = after.chars().take_while(char::is_ascii_digit).count();
                let boundary = out
                    .chars()
                    .last()
                    .is_none_or(|c| !c.is_ascii_alphanumeric());
                if boundary && digits > 0 && after[digits..].starts_with(')') {
                    out.push_str(&kind[..kind.len() - 1]);
                    rest = &after[digits + 1..];
                    continue 'scan;
                }
            }
        }
        let next = rest.chars().next().map_or(1, char::len_utf8);
        out.push_str(&rest[..next]);
        rest = &rest[next..];
    }
    out
}

/// A derived table of the integers 1..=`n` (≤ 99,999) in a column `seq`, on both servers
/// (MariaDB's `seq_1_to_n` engine does not exist on MySQL).
pub fn numbers(n: u64) -> String {
    let digits = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
                  UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
                  UNION ALL SELECT 8 UNION ALL SELECT 9)";
    format!(
        "(SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d + 1 AS seq \
         FROM {digits} a, {digits} b, {digits} c, {digits} e, {digits} f \
         HAVING seq <= {n}) AS numbers"
    )
}

/// `sql` with each MariaDB sequence table `seq_1_to_<n>` replaced by [`numbers`]`(n)`, so that
/// a setup statement runs on both servers.
pub fn portable(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find("seq_1_to_") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "seq_1_to_".len()..];
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        match after[..digits].parse::<u64>() {
            Ok(n) => out.push_str(&numbers(n)),
            Err(_) => out.push_str("seq_1_to_"),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// The statement reporting the binlog position on this run's server (the database layer's rule).
pub fn binlog_status() -> &'static str {
    let mariadb = servers::flavour() == servers::Flavour::MariaDb;
    // Both servers here are past the version the rule turns on (MySQL 8.2).
    shoal_mysql::flavour::binary_log_status(mariadb, "9.7.0")
}

/// The process list on this run's server (the database layer's rule).
pub fn processlist() -> &'static str {
    shoal_mysql::flavour::processlist(servers::flavour() == servers::Flavour::MariaDb)
}

/// The tables of `schema`, by name.
pub async fn tables(connection: &mut mysql_async::Conn, schema: &str) -> Vec<String> {
    connection
        .exec(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME",
            (schema,),
        )
        .await
        .unwrap()
}

/// `shoal submit` of [`ALTER`] on target `local` with `extra` flags; returns the migration id.
pub async fn submit(coordinator_url: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "submit",
        "--target",
        "local",
        "--alter",
        ALTER,
        "--no-instant",
    ];
    args.extend_from_slice(extra);
    submitted_id(&shoal_cli(coordinator_url, &args).await)
}

/// The migration id `shoal submit` printed (its last line) in `output`.
pub fn submitted_id(output: &str) -> String {
    let id = output.lines().last().unwrap().trim().to_owned();
    assert!(
        id.starts_with("orders-"),
        "submit prints the migration id: {output}"
    );
    id
}

/// Starts the writer on `orders` with `seed` (500 µs between transactions) and waits until it
/// has committed 100 transactions.
pub async fn start_writer(
    database: &TestDatabase,
    ledger: writer::Ledger,
    seed: u64,
) -> writer::Writer {
    let writer = writer::Writer::start(
        &database.dsn,
        "orders",
        ledger,
        seed,
        Duration::from_micros(500),
    )
    .await
    .unwrap();
    crate::wait::until(
        "the writer to commit",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { (writer.stats.committed() >= 100).then_some(()) },
    )
    .await
    .unwrap();
    writer
}

/// A coordinator on the shared Redis (namespace from `label`, worker TTL 3 s) with `env`.
pub async fn start_fleet_coordinator(
    label: &str,
    env: Vec<(&'static str, String)>,
) -> crate::processes::CoordinatorProcess {
    let servers = servers::shared();
    let options = crate::processes::CoordinatorOptions {
        redis_url: Some(servers.redis.url()),
        namespace: servers.redis_namespace(label),
        worker_ttl: Duration::from_secs(3),
        env,
        args: Vec::new(),
    };
    crate::processes::CoordinatorProcess::start("coordinator", &options)
        .await
        .unwrap()
}

/// Waits until `process` has logged `needle`; panics with its log otherwise.
pub async fn wait_for_log(process: &ShoalProcess, needle: &str, timeout: Duration) {
    let what = format!("{} to log {needle:?}", process.name);
    let found = crate::wait::until(&what, timeout, Duration::from_millis(20), || async {
        process.logs().contains(needle).then_some(())
    })
    .await;
    if let Err(error) = found {
        panic!("{error}; log:\n{}", process.logs());
    }
}

/// Rows in the shadow table `_orders_new` (0 while it does not exist).
pub async fn shadow_rows(database: &TestDatabase) -> u64 {
    let mut connection = database.connect().await.unwrap();
    connection
        .query_first::<u64, _>("SELECT COUNT(*) FROM _orders_new")
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// Waits until the shadow table holds at least `rows` rows (the copy is under way).
pub async fn wait_for_shadow_rows(database: &TestDatabase, rows: u64) {
    crate::wait::until(
        "the copy to write rows",
        Duration::from_secs(120),
        Duration::from_millis(20),
        || async { (shadow_rows(database).await >= rows).then_some(()) },
    )
    .await
    .unwrap();
}

/// The JSON detail of `orders`' checkpoint, if its table and row exist.
pub async fn checkpoint(database: &TestDatabase) -> Option<shoal_common::checkpoint::Detail> {
    let mut connection = database.connect().await.unwrap();
    let text: Option<String> = match connection
        .query_first("SELECT detail FROM _orders_chkpnt WHERE id = 1")
        .await
    {
        Ok(text) => text,
        Err(mysql_async::Error::Server(error)) if error.code == 1146 => None,
        Err(error) => panic!("read the checkpoint: {error}"),
    };
    text.map(|text| serde_json::from_str(&text).unwrap())
}

/// Waits until `orders`' checkpoint satisfies `accept` (`what` names it in a timeout) and
/// returns it.
pub async fn wait_for_checkpoint(
    database: &TestDatabase,
    what: &str,
    accept: impl Fn(&shoal_common::checkpoint::Detail) -> bool,
) -> shoal_common::checkpoint::Detail {
    let (detail, _) = crate::wait::until(
        what,
        Duration::from_secs(120),
        Duration::from_millis(50),
        || async { checkpoint(database).await.filter(|detail| accept(detail)) },
    )
    .await
    .unwrap();
    detail
}

/// `shoal run` of `alter` on `database` (`--no-instant --threads 2`) with `extra` flags and
/// `failpoints`.
pub fn shoal_run(
    database: &TestDatabase,
    alter: &str,
    extra: &[&str],
    failpoints: &str,
) -> ShoalProcess {
    let mut args: Vec<String> = ["run", "--alter", alter, "--no-instant", "--threads", "2"]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    let env = [
        ("SHOAL_DSN", database.dsn.clone()),
        ("SHOAL_FAILPOINTS", failpoints.to_owned()),
    ];
    ShoalProcess::spawn("shoal-run", "shoal", &args, &env).unwrap()
}

/// The connection id `victim=<id>` in the log line of failpoint `step`.
pub fn connection_id(logs: &str, step: &str, victim: &str) -> u64 {
    let line = logs
        .lines()
        .find(|line| line.contains("failpoint hit") && line.contains(step))
        .unwrap_or_else(|| panic!("no failpoint line for {step}:\n{logs}"));
    let (_, rest) = line
        .split_once(&format!("{victim}="))
        .unwrap_or_else(|| panic!("no {victim}= in {line}"));
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// Waits for a `shoal run` to exit 0 and returns its log.
pub async fn expect_success(process: &mut ShoalProcess) -> String {
    let status = process.wait_exit(Duration::from_secs(600)).await.unwrap();
    let logs = process.logs();
    assert!(
        status.success(),
        "shoal run failed ({status}); its last warnings and errors first (a truncated test \
         output keeps its head):\n{}\n\nits whole log:\n{logs}",
        last_warnings(&logs, 20)
    );
    logs
}

/// The last `count` warning and error lines of a log, failpoint hits left out.
fn last_warnings(logs: &str, count: usize) -> String {
    let lines: Vec<&str> = logs
        .lines()
        .filter(|line| {
            (line.contains(" WARN ") || line.contains(" ERROR ") || line.starts_with("shoal: "))
                && !line.contains("failpoint hit")
        })
        .collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// The grants `docs/operations.md` documents for shoal's account `account` (`'user'@'host'`)
/// on `schema`, for this run's server flavour: exactly those.
pub fn documented_grants(account: &str, schema: &str) -> Vec<String> {
    let schema = shoal_common::sql::quote_identifier(schema);
    let mut grants = vec![format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, LOCK TABLES, \
         CREATE TEMPORARY TABLES ON {schema}.* TO {account}"
    )];
    match servers::flavour() {
        servers::Flavour::MariaDb => grants.push(format!(
            "GRANT REPLICATION SLAVE, BINLOG MONITOR, PROCESS ON *.* TO {account}"
        )),
        servers::Flavour::MySql => grants.extend([
            format!("GRANT REPLICATION SLAVE, REPLICATION CLIENT, PROCESS ON *.* TO {account}"),
            format!("GRANT SELECT ON performance_schema.data_lock_waits TO {account}"),
        ]),
    }
    grants
}

/// A copy of `database` reached through account `user` with `password` (created here with the
/// documented grants, [`documented_grants`]) over the test server's address.
pub async fn as_documented_account(
    database: &TestDatabase,
    user: &str,
    password: &str,
) -> TestDatabase {
    let account = format!("'{user}'@'127.0.0.1'");
    let mut connection = database.connect().await.unwrap();
    connection
        .query_drop(format!("CREATE USER {account} IDENTIFIED BY '{password}'"))
        .await
        .unwrap();
    for grant in documented_grants(&account, &database.name) {
        connection.query_drop(grant).await.unwrap();
    }
    let opts = mysql_async::Opts::from_url(&database.dsn).unwrap();
    TestDatabase {
        name: database.name.clone(),
        dsn: format!(
            "mysql://{user}:{password}@127.0.0.1:{}/{}",
            opts.tcp_port(),
            database.name
        ),
    }
}
