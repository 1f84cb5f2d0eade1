//! A concurrent application writer that keeps an independent ledger of what it committed.
//!
//! The table shape is fixed: `id BIGINT` primary key, `k INT` (indexed), `c VARCHAR(64)`,
//! `u INT NULL` (unique). The writer mixes inserts inside, below and above the key range,
//! updates, deletes, key moves (delete + insert, and `UPDATE … SET id`), and swaps of the unique
//! value between two rows in one transaction. Its ledger changes only after a commit succeeds,
//! so it is the expectation a migrated table must equal, row for row.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, TxOpts};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One row's content besides its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Indexed integer.
    pub k: i32,
    /// Text.
    pub c: String,
    /// Unique, nullable.
    pub u: Option<i32>,
}

/// The expected content of the table.
pub type Ledger = BTreeMap<i64, Row>;

/// `CREATE TABLE` for the writer's table.
pub fn create_table_sql(table: &str) -> String {
    format!(
        "CREATE TABLE `{table}` (id BIGINT NOT NULL PRIMARY KEY, k INT NOT NULL, c VARCHAR(64) NOT NULL, \
         u INT NULL, UNIQUE KEY uk (u), KEY kk (k)) ENGINE=InnoDB"
    )
}

/// Creates the table and fills it with `rows` rows at even ids 2, 4, … (gaps for inserts).
pub async fn seed(connection: &mut Conn, table: &str, rows: u64) -> anyhow::Result<()> {
    connection
        .query_drop(create_table_sql(table))
        .await
        .context("create table")?;
    let mut start = 1;
    while start <= rows {
        let end = (start + 99_999).min(rows);
        connection
            .query_drop(format!(
                "INSERT INTO `{table}` (id, k, c, u) SELECT seq * 2, seq % 1000, CONCAT('row-', seq), seq \
                 FROM seq_{start}_to_{end}"
            ))
            .await
            .context("seed rows")?;
        start = end + 1;
    }
    Ok(())
}

/// Reads the whole table as a ledger (id, k, c, u).
pub async fn read_table(connection: &mut Conn, table: &str) -> anyhow::Result<Ledger> {
    let rows: Vec<(i64, i32, String, Option<i32>)> = connection
        .query(format!("SELECT id, k, c, u FROM `{table}` ORDER BY id"))
        .await
        .with_context(|| format!("read table {table}"))?;
    Ok(rows
        .into_iter()
        .map(|(id, k, c, u)| (id, Row { k, c, u }))
        .collect())
}

/// Differences between an expectation and a table, for assertion messages.
pub fn differences(expected: &Ledger, actual: &Ledger) -> Vec<String> {
    let mut found = Vec::new();
    for (id, row) in expected {
        match actual.get(id) {
            None => found.push(format!("missing id {id}: expected {row:?}")),
            Some(other) if other != row => {
                found.push(format!("id {id}: expected {row:?}, found {other:?}"))
            }
            Some(_) => {}
        }
    }
    for (id, row) in actual {
        if !expected.contains_key(id) {
            found.push(format!("extra id {id}: {row:?}"));
        }
    }
    found
}

/// Deterministic pseudo-random numbers (SplitMix64), so a failing run can be replayed by seed.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

/// Counts of what the writer committed.
#[derive(Debug, Default)]
pub struct Stats {
    /// Committed operations by kind.
    pub inserts: AtomicU64,
    pub updates: AtomicU64,
    pub deletes: AtomicU64,
    pub key_moves: AtomicU64,
    pub unique_swaps: AtomicU64,
    /// Transactions rolled back on deadlock or lock wait (retried with new choices).
    pub retried: AtomicU64,
    /// Any other error (a defect: the test asserts zero).
    pub unexpected_errors: AtomicU64,
}

impl Stats {
    /// Total committed operations.
    pub fn committed(&self) -> u64 {
        self.inserts.load(Ordering::Relaxed)
            + self.updates.load(Ordering::Relaxed)
            + self.deletes.load(Ordering::Relaxed)
            + self.key_moves.load(Ordering::Relaxed)
            + self.unique_swaps.load(Ordering::Relaxed)
    }
}

/// A running writer.
#[derive(Debug)]
pub struct Writer {
    stop: CancellationToken,
    handle: JoinHandle<anyhow::Result<Ledger>>,
    /// Live counters.
    pub stats: Arc<Stats>,
}

impl Writer {
    /// Starts writing to `table` through `dsn`, pausing `pause` between operations, starting
    /// from `ledger` (the table's current content).
    pub async fn start(
        dsn: &str,
        table: &str,
        ledger: Ledger,
        seed: u64,
        pause: Duration,
    ) -> anyhow::Result<Self> {
        let connection = Conn::new(Opts::from_url(dsn)?)
            .await
            .context("writer connects")?;
        let stop = CancellationToken::new();
        let stats = Arc::new(Stats::default());
        let handle = tokio::spawn(write_loop(
            connection,
            table.to_owned(),
            ledger,
            SplitMix::new(seed),
            pause,
            stop.clone(),
            Arc::clone(&stats),
        ));
        Ok(Self {
            stop,
            handle,
            stats,
        })
    }

    /// Stops the writer and returns its ledger.
    pub async fn stop(self) -> anyhow::Result<Ledger> {
        self.stop.cancel();
        self.handle.await.context("writer task")?
    }
}

/// A random key of the ledger (the first at or after a random point), if any.
fn pick(ledger: &Ledger, random: &mut SplitMix) -> Option<i64> {
    let (first, _) = ledger.first_key_value()?;
    let (last, _) = ledger.last_key_value()?;
    let span = u64::try_from(last - first).unwrap_or(0) + 1;
    let point = first + i64::try_from(random.below(span)).unwrap_or(0);
    ledger.range(point..).next().map(|(id, _)| *id)
}

/// A key not in the ledger: odd keys inside the range, or beyond either end.
fn fresh_key(ledger: &Ledger, random: &mut SplitMix) -> i64 {
    let first = ledger.first_key_value().map_or(0, |(id, _)| *id);
    let last = ledger.last_key_value().map_or(0, |(id, _)| *id);
    loop {
        let candidate = match random.below(10) {
            0 => first - 1 - i64::try_from(random.below(1_000)).unwrap_or(0),
            1 | 2 => last + 1 + i64::try_from(random.below(1_000)).unwrap_or(0),
            _ => {
                let span = u64::try_from(last - first).unwrap_or(0) + 1;
                (first + i64::try_from(random.below(span)).unwrap_or(0)) | 1
            }
        };
        if !ledger.contains_key(&candidate) {
            return candidate;
        }
    }
}

async fn write_loop(
    mut connection: Conn,
    table: String,
    mut ledger: Ledger,
    mut random: SplitMix,
    pause: Duration,
    stop: CancellationToken,
    stats: Arc<Stats>,
) -> anyhow::Result<Ledger> {
    let mut next_unique: i32 = 50_000_000;
    while !stop.is_cancelled() {
        let choice = random.below(100);
        let outcome = one_operation(
            &mut connection,
            &table,
            &mut ledger,
            &mut random,
            &mut next_unique,
            choice,
            &stats,
        )
        .await;
        if let Err(error) = outcome {
            let transient = matches!(&error, mysql_async::Error::Server(server) if matches!(server.code, 1205 | 1213));
            if transient {
                stats.retried.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.unexpected_errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("writer: unexpected error: {error}");
            }
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    connection.disconnect().await.ok();
    Ok(ledger)
}

async fn one_operation(
    connection: &mut Conn,
    table: &str,
    ledger: &mut Ledger,
    random: &mut SplitMix,
    next_unique: &mut i32,
    choice: u64,
    stats: &Stats,
) -> Result<(), mysql_async::Error> {
    let table = format!("`{table}`");
    match choice {
        // Insert a new row (inside, below or above the key range).
        0..=29 => {
            let id = fresh_key(ledger, random);
            *next_unique += 1;
            let row = Row {
                k: i32::try_from(random.below(1_000)).unwrap_or(0),
                c: format!("ins-{}", random.next_u64() % 1_000_000),
                u: Some(*next_unique),
            };
            connection
                .exec_drop(
                    format!("INSERT INTO {table} (id, k, c, u) VALUES (?, ?, ?, ?)"),
                    (id, row.k, &row.c, row.u),
                )
                .await?;
            ledger.insert(id, row);
            stats.inserts.fetch_add(1, Ordering::Relaxed);
        }
        // Update a row's k and c.
        30..=59 => {
            let Some(id) = pick(ledger, random) else {
                return Ok(());
            };
            let k = i32::try_from(random.below(1_000)).unwrap_or(0);
            let c = format!("upd-{}", random.next_u64() % 1_000_000);
            connection
                .exec_drop(
                    format!("UPDATE {table} SET k = ?, c = ? WHERE id = ?"),
                    (k, &c, id),
                )
                .await?;
            if let Some(row) = ledger.get_mut(&id) {
                row.k = k;
                row.c = c;
            }
            stats.updates.fetch_add(1, Ordering::Relaxed);
        }
        // Delete a row.
        60..=74 => {
            let Some(id) = pick(ledger, random) else {
                return Ok(());
            };
            connection
                .exec_drop(format!("DELETE FROM {table} WHERE id = ?"), (id,))
                .await?;
            ledger.remove(&id);
            stats.deletes.fetch_add(1, Ordering::Relaxed);
        }
        // Move a key by delete + insert in one transaction.
        75..=82 => {
            let Some(id) = pick(ledger, random) else {
                return Ok(());
            };
            let target = fresh_key(ledger, random);
            let Some(row) = ledger.get(&id).cloned() else {
                return Ok(());
            };
            let mut transaction = connection.start_transaction(TxOpts::default()).await?;
            transaction
                .exec_drop(format!("DELETE FROM {table} WHERE id = ?"), (id,))
                .await?;
            transaction
                .exec_drop(
                    format!("INSERT INTO {table} (id, k, c, u) VALUES (?, ?, ?, ?)"),
                    (target, row.k, &row.c, row.u),
                )
                .await?;
            transaction.commit().await?;
            ledger.remove(&id);
            ledger.insert(target, row);
            stats.key_moves.fetch_add(1, Ordering::Relaxed);
        }
        // Move a key with UPDATE … SET id.
        83..=90 => {
            let Some(id) = pick(ledger, random) else {
                return Ok(());
            };
            let target = fresh_key(ledger, random);
            connection
                .exec_drop(
                    format!("UPDATE {table} SET id = ? WHERE id = ?"),
                    (target, id),
                )
                .await?;
            if let Some(row) = ledger.remove(&id) {
                ledger.insert(target, row);
            }
            stats.key_moves.fetch_add(1, Ordering::Relaxed);
        }
        // Swap the unique value of two rows in one transaction.
        _ => {
            let (Some(first), Some(second)) = (pick(ledger, random), pick(ledger, random)) else {
                return Ok(());
            };
            if first == second {
                return Ok(());
            }
            let first_u = ledger.get(&first).and_then(|row| row.u);
            let second_u = ledger.get(&second).and_then(|row| row.u);
            let mut transaction = connection.start_transaction(TxOpts::default()).await?;
            transaction
                .exec_drop(
                    format!("UPDATE {table} SET u = NULL WHERE id = ?"),
                    (first,),
                )
                .await?;
            transaction
                .exec_drop(
                    format!("UPDATE {table} SET u = ? WHERE id = ?"),
                    (first_u, second),
                )
                .await?;
            transaction
                .exec_drop(
                    format!("UPDATE {table} SET u = ? WHERE id = ?"),
                    (second_u, first),
                )
                .await?;
            transaction.commit().await?;
            if let Some(row) = ledger.get_mut(&first) {
                row.u = second_u;
            }
            if let Some(row) = ledger.get_mut(&second) {
                row.u = first_u;
            }
            stats.unique_swaps.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}
