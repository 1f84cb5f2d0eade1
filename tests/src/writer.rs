//! A concurrent application writer that keeps an independent ledger of what it committed.
//!
//! The table shape is fixed: `id BIGINT` primary key, `k INT` (indexed), `c VARCHAR(64)`,
//! `u INT NULL` (unique). The writer mixes inserts inside, below and above the key range,
//! updates, deletes, key moves (delete + insert, and `UPDATE … SET id`), and swaps of the unique
//! value between two rows in one transaction. Its ledger changes only after a commit succeeds,
//! so it is the expectation a migrated table must equal, row for row.
//!
//! While [`Writer::hot`] holds key ranges (the fault campaign sets the chunks being copied),
//! half of the keys it picks and creates fall inside them.

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
    // Multi-row VALUES rather than MariaDB's sequence engine: the same seed on MySQL.
    let mut start = 1;
    while start <= rows {
        let end = (start + 4_999).min(rows);
        let values: Vec<String> = (start..=end)
            .map(|seq| format!("({}, {}, 'row-{seq}', {seq})", seq * 2, seq % 1000))
            .collect();
        connection
            .query_drop(format!(
                "INSERT INTO `{table}` (id, k, c, u) VALUES {}",
                values.join(", ")
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
    /// Deletes of a key inside a range marked hot (a chunk being copied).
    pub deletes_in_flight: AtomicU64,
    /// Key moves from or into a hot range.
    pub key_moves_in_flight: AtomicU64,
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
    /// Key ranges `[lower, upper)` to aim half of the operations at while non-empty (the fault
    /// campaign sets the chunks being copied).
    pub hot: HotRanges,
    /// The server's id of the writer's connection (so that a test killing connections can
    /// spare it).
    pub connection_id: u32,
}

/// Ranges the writer concentrates on, shared with whoever sets them.
pub type HotRanges = Arc<std::sync::Mutex<Vec<(i64, i64)>>>;

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
        let connection_id = connection.id();
        let stop = CancellationToken::new();
        let stats = Arc::new(Stats::default());
        let hot = HotRanges::default();
        let handle = tokio::spawn(write_loop(
            connection,
            Loop {
                table: table.to_owned(),
                random: SplitMix::new(seed),
                pause,
                stop: stop.clone(),
                stats: Arc::clone(&stats),
                hot: Arc::clone(&hot),
            },
            ledger,
        ));
        Ok(Self {
            stop,
            handle,
            stats,
            hot,
            connection_id,
        })
    }

    /// Stops the writer and returns its ledger.
    pub async fn stop(self) -> anyhow::Result<Ledger> {
        self.stop.cancel();
        self.handle.await.context("writer task")?
    }
}

/// Half the time while `hot` is non-empty: a random point inside one of its ranges (clipped to
/// `first..=last`).
fn hot_point(hot: &[(i64, i64)], first: i64, last: i64, random: &mut SplitMix) -> Option<i64> {
    if hot.is_empty() || random.below(2) == 0 {
        return None;
    }
    let (lower, upper) = hot[random.below(hot.len() as u64) as usize];
    let (lower, upper) = (lower.max(first), upper.min(last.saturating_add(1)));
    let span = u64::try_from(upper.checked_sub(lower)?)
        .ok()
        .filter(|span| *span > 0)?;
    Some(lower + i64::try_from(random.below(span)).unwrap_or(0))
}

/// Whether `key` lies in one of the hot ranges.
fn is_hot(hot: &[(i64, i64)], key: i64) -> bool {
    hot.iter()
        .any(|(lower, upper)| *lower <= key && key < *upper)
}

/// A random key of the ledger (the first at or after a random point, aimed at a hot range
/// half the time), if any.
fn pick(ledger: &Ledger, random: &mut SplitMix, hot: &[(i64, i64)]) -> Option<i64> {
    let (first, _) = ledger.first_key_value()?;
    let (last, _) = ledger.last_key_value()?;
    if let Some(point) = hot_point(hot, *first, *last, random)
        && let Some((id, _)) = ledger.range(point..).next()
    {
        return Some(*id);
    }
    let (last, _) = ledger.last_key_value()?;
    let span = u64::try_from(last - first).unwrap_or(0) + 1;
    let point = first + i64::try_from(random.below(span)).unwrap_or(0);
    ledger.range(point..).next().map(|(id, _)| *id)
}

/// A key not in the ledger: odd keys inside the range (in a hot range half the time), or
/// beyond either end.
fn fresh_key(ledger: &Ledger, random: &mut SplitMix, hot: &[(i64, i64)]) -> i64 {
    let first = ledger.first_key_value().map_or(0, |(id, _)| *id);
    let last = ledger.last_key_value().map_or(0, |(id, _)| *id);
    if let Some(point) = hot_point(hot, first, last, random)
        && !ledger.contains_key(&(point | 1))
    {
        return point | 1;
    }
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

/// The write loop's settings.
struct Loop {
    table: String,
    random: SplitMix,
    pause: Duration,
    stop: CancellationToken,
    stats: Arc<Stats>,
    hot: HotRanges,
}

async fn write_loop(
    mut connection: Conn,
    settings: Loop,
    mut ledger: Ledger,
) -> anyhow::Result<Ledger> {
    let Loop {
        table,
        mut random,
        pause,
        stop,
        stats,
        hot,
    } = settings;
    let mut next_unique: i32 = 50_000_000;
    while !stop.is_cancelled() {
        let choice = random.below(100);
        let hot = hot.lock().map(|ranges| ranges.clone()).unwrap_or_default();
        let outcome = one_operation(
            &mut connection,
            Operation {
                table: &table,
                choice,
                hot: &hot,
            },
            &mut ledger,
            &mut random,
            &mut next_unique,
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

/// One operation to run: on which table, which kind (`choice` in 0..100), aimed where.
struct Operation<'a> {
    table: &'a str,
    choice: u64,
    hot: &'a [(i64, i64)],
}

async fn one_operation(
    connection: &mut Conn,
    operation: Operation<'_>,
    ledger: &mut Ledger,
    random: &mut SplitMix,
    next_unique: &mut i32,
    stats: &Stats,
) -> Result<(), mysql_async::Error> {
    let Operation { table, choice, hot } = operation;
    let table = format!("`{table}`");
    match choice {
        // Insert a new row (inside, below or above the key range).
        0..=29 => {
            let id = fresh_key(ledger, random, hot);
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
            let Some(id) = pick(ledger, random, hot) else {
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
            let Some(id) = pick(ledger, random, hot) else {
                return Ok(());
            };
            connection
                .exec_drop(format!("DELETE FROM {table} WHERE id = ?"), (id,))
                .await?;
            ledger.remove(&id);
            stats.deletes.fetch_add(1, Ordering::Relaxed);
            if is_hot(hot, id) {
                stats.deletes_in_flight.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Move a key by delete + insert in one transaction.
        75..=82 => {
            let Some(id) = pick(ledger, random, hot) else {
                return Ok(());
            };
            let target = fresh_key(ledger, random, hot);
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
            if is_hot(hot, id) || is_hot(hot, target) {
                stats.key_moves_in_flight.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Move a key with UPDATE … SET id.
        83..=90 => {
            let Some(id) = pick(ledger, random, hot) else {
                return Ok(());
            };
            let target = fresh_key(ledger, random, hot);
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
            if is_hot(hot, id) || is_hot(hot, target) {
                stats.key_moves_in_flight.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Swap the unique value of two rows in one transaction.
        _ => {
            let (Some(first), Some(second)) =
                (pick(ledger, random, hot), pick(ledger, random, hot))
            else {
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

#[cfg(test)]
mod tests {
    use super::{Ledger, Row, SplitMix, fresh_key, is_hot, pick};

    fn ledger(keys: impl IntoIterator<Item = i64>) -> Ledger {
        keys.into_iter()
            .map(|id| {
                let row = Row {
                    k: 0,
                    c: String::new(),
                    u: None,
                };
                (id, row)
            })
            .collect()
    }

    #[test]
    fn without_hot_ranges_the_random_sequence_is_unchanged() {
        // Seeded runs measured before hot ranges existed must replay the same operations.
        let ledger = ledger((1..=1_000).map(|n| n * 2));
        let (mut with, mut without) = (SplitMix::new(7), SplitMix::new(7));
        for _ in 0..100 {
            assert_eq!(
                pick(&ledger, &mut with, &[]),
                pick(&ledger, &mut without, &[])
            );
        }
        assert_eq!(with.next_u64(), without.next_u64());
    }

    #[test]
    fn about_half_the_picks_and_new_keys_fall_in_the_hot_ranges() {
        let ledger = ledger((1..=10_000).map(|n| n * 2));
        let hot = [(1_000, 1_100), (15_000, i64::MAX)];
        let mut random = SplitMix::new(1);
        let picked = (0..1_000)
            .filter(|_| is_hot(&hot, pick(&ledger, &mut random, &hot).unwrap()))
            .count();
        let fresh = (0..1_000)
            .map(|_| fresh_key(&ledger, &mut random, &hot))
            .inspect(|key| assert!(!ledger.contains_key(key)))
            .filter(|key| is_hot(&hot, *key))
            .count();
        // The hot ranges hold under 30% of the key span: well above that means aimed picks.
        assert!(picked > 450, "{picked} of 1,000 picks were hot");
        assert!(fresh > 450, "{fresh} of 1,000 new keys were hot");
    }
}
