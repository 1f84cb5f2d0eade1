//! Hostile identifiers: schema, table, column and index names built from backticks, quotes, spaces,
//! backslashes, `%`/`_`, dots, unicode (identifiers are utf8mb3: no 4-byte characters) and
//! reserved words, generated from seeds, round-trip
//! through every statement shoal builds (shadow, copy, change apply, checksum, cut-over). Each
//! case migrates under its own writer and ends equal to the writer's ledger.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use shoal_tests::scenario::{expect_success, shoal_run, tables};
use shoal_tests::servers::{self, TestDatabase};
use shoal_tests::wait;
use shoal_tests::writer::SplitMix;
use tokio_util::sync::CancellationToken;

const FRAGMENTS: [&str; 15] = [
    "`", "``", "'", "\"", " ", "\\", "%", "_", ".", "-", "ü", "名", "select", "ORDER", "key",
];

/// A name of 3 to 6 fragments after `prefix` (distinct prefixes keep columns distinct, which
/// compare case-insensitively), ending in a letter (trailing spaces are not allowed).
fn name(random: &mut SplitMix, prefix: &str) -> String {
    let mut name = prefix.to_owned();
    for _ in 0..3 + random.below(4) {
        name.push_str(FRAGMENTS[random.below(FRAGMENTS.len() as u64) as usize]);
    }
    name.push('z');
    name
}

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

type Ledger = BTreeMap<i64, (String, i64)>;

/// Inserts, updates and deletes on `table` until stopped, counting statements in `statements`;
/// returns what the table must hold.
async fn write(
    dsn: String,
    table: String,
    columns: [String; 3],
    mut ledger: Ledger,
    seed: u64,
    stop: CancellationToken,
    statements: Arc<AtomicU64>,
) -> Ledger {
    let opts = mysql_async::Opts::from_url(&dsn).unwrap();
    let mut connection = mysql_async::Conn::new(opts).await.unwrap();
    let mut random = SplitMix::new(seed);
    let [key, text, number] = columns.map(|column| quote(&column));
    let table = quote(&table);
    while !stop.is_cancelled() {
        statements.fetch_add(1, Ordering::Relaxed);
        let id = 1 + random.below(3_000) as i64;
        let value = (
            format!("v'`\\{}", random.below(1_000)),
            random.below(100) as i64,
        );
        match random.below(3) {
            0 => {
                connection
                    .exec_drop(
                        format!("REPLACE INTO {table} ({key}, {text}, {number}) VALUES (?, ?, ?)"),
                        (id, &value.0, value.1),
                    )
                    .await
                    .unwrap();
                ledger.insert(id, value);
            }
            1 => {
                connection
                    .exec_drop(
                        format!("UPDATE {table} SET {text} = ?, {number} = ? WHERE {key} = ?"),
                        (&value.0, value.1, id),
                    )
                    .await
                    .unwrap();
                if let Some(row) = ledger.get_mut(&id) {
                    *row = value;
                }
            }
            _ => {
                connection
                    .exec_drop(format!("DELETE FROM {table} WHERE {key} = ?"), (id,))
                    .await
                    .unwrap();
                ledger.remove(&id);
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    ledger
}

/// Every byte but ASCII letters and digits as `%XX`: a schema name in a DSN's path.
fn percent_encoded(name: &str) -> String {
    name.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// A database with a generated hostile name (and a unique suffix).
async fn hostile_database(random: &mut SplitMix, seed: u64) -> TestDatabase {
    let name = format!(
        "{}{}",
        name(random, "s"),
        servers::unique_name(&format!("_{seed}"))
    );
    let mariadb = &servers::shared().mariadb;
    let opts = mysql_async::Opts::from_url(&mariadb.dsn("")).unwrap();
    let mut connection = mysql_async::Conn::new(opts).await.unwrap();
    connection
        .query_drop(format!("CREATE DATABASE {}", quote(&name)))
        .await
        .unwrap_or_else(|error| panic!("seed {seed}: create database {name:?}: {error}"));
    TestDatabase {
        dsn: mariadb.dsn(&percent_encoded(&name)),
        name,
    }
}

async fn migrate_one(seed: u64) {
    let mut random = SplitMix::new(seed);
    let database = hostile_database(&mut random, seed).await;
    let table = name(&mut random, "t");
    let columns = [
        name(&mut random, "k"),
        name(&mut random, "c"),
        name(&mut random, "n"),
    ];
    let (index, added, added_index) = (
        name(&mut random, "i"),
        name(&mut random, "a"),
        name(&mut random, "j"),
    );
    println!(
        "seed {seed}: schema {:?}, table {table:?}, columns {columns:?}, index {index:?}",
        database.name
    );
    let [key, text, number] = columns.clone().map(|column| quote(&column));
    let mut connection = database.connect().await.unwrap();
    connection
        .query_drop(format!(
            "CREATE TABLE {} ({key} INT NOT NULL PRIMARY KEY, {text} VARCHAR(32) NOT NULL, \
             {number} INT NOT NULL, KEY {} ({number})) ENGINE=InnoDB",
            quote(&table),
            quote(&index)
        ))
        .await
        .unwrap_or_else(|error| panic!("seed {seed}: create {table:?}: {error}"));
    connection
        .query_drop(shoal_tests::scenario::portable(&format!(
            "INSERT INTO {} SELECT seq, CONCAT('s', seq), seq % 100 FROM seq_1_to_2000",
            quote(&table)
        )))
        .await
        .unwrap();
    let ledger: Ledger = (1..=2000)
        .map(|id| (id, (format!("s{id}"), id % 100)))
        .collect();
    let stop = CancellationToken::new();
    let statements = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(write(
        database.dsn.clone(),
        table.clone(),
        columns.clone(),
        ledger,
        seed,
        stop.clone(),
        Arc::clone(&statements),
    ));
    let alter = format!(
        "ALTER TABLE {} ADD COLUMN {} INT NOT NULL DEFAULT 3, ADD INDEX {} ({text})",
        quote(&table),
        quote(&added),
        quote(&added_index)
    );
    let mut run = shoal_run(
        &database,
        &alter,
        &["--chunk-rows", "200", "--target-chunk-time", "0"],
        "",
    );
    expect_success(&mut run).await;
    // Writes after the cut-over must land in the new table too.
    let target = statements.load(Ordering::Relaxed) + 50;
    wait::until(
        "writes after the cut-over",
        Duration::from_secs(30),
        Duration::from_millis(10),
        || async { (statements.load(Ordering::Relaxed) >= target).then_some(()) },
    )
    .await
    .unwrap();
    stop.cancel();
    let expected = writer.await.unwrap();
    let statements = statements.load(Ordering::Relaxed);
    assert!(
        statements > 50,
        "seed {seed}: the writer ran ({statements} statements)"
    );
    let actual: Ledger = connection
        .query_map(
            format!(
                "SELECT {key}, {text}, {number} FROM {} ORDER BY {key}",
                quote(&table)
            ),
            |(id, text, number)| (id, (text, number)),
        )
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert!(
        actual == expected,
        "seed {seed}, table {table:?}: {} rows, expected {}",
        actual.len(),
        expected.len()
    );
    let defaults: Option<i64> = connection
        .query_first(format!(
            "SELECT COUNT(*) FROM {} WHERE {} <> 3",
            quote(&table),
            quote(&added)
        ))
        .await
        .unwrap();
    assert_eq!(defaults, Some(0), "seed {seed}: the added column is there");
    assert_eq!(
        tables(&mut connection, &database.name).await,
        std::slice::from_ref(&table),
        "seed {seed}: only the table is left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_hostile_names_round_trip_through_a_migration() {
    for seed in 1..=4 {
        migrate_one(seed).await;
    }
}
