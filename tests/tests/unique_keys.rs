//! UNIQUE keys the ALTER adds, and values the application writes after the copy. A REPLACE of a
//! change removes any other row holding the same value under a unique key; shoal accepts that
//! only while the source no longer holds the removed row with that value. A duplicate written
//! after the copy, after the checksum, or while the cut-over is deferred fails the migration
//! naming the value, and the original table stays in place, exact. (Unique values moving between
//! rows under the writer — swaps, key moves — complete exactly: every writer test exercises
//! them, and the many-keys case below.)

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use mysql_async::prelude::Queryable;
use shoal_tests::scenario::{
    expect_success, finish_writer, seeded, shoal_run, show_create, start_writer, tables,
    wait_for_log,
};
use shoal_tests::servers::{self, TestDatabase};
use shoal_tests::writer;

const ALTER: &str = "ALTER TABLE t ADD UNIQUE KEY uk_email (email)";

/// `t` with 2,000 distinct addresses and alice, bob and charlie.
async fn emails(label: &str) -> TestDatabase {
    let database = servers::shared().database(label).await.unwrap();
    let mut connection = database.connect().await.unwrap();
    for statement in [
        "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, email VARCHAR(100) NOT NULL)",
        "INSERT INTO t (email) SELECT CONCAT('user', seq, '@example.com') FROM seq_1_to_2000",
        "INSERT INTO t (id, email) VALUES (3001, 'alice@example.com'), \
         (3002, 'bob@example.com'), (3003, 'charlie@example.com')",
    ] {
        connection
            .query_drop(shoal_tests::scenario::portable(statement))
            .await
            .unwrap();
    }
    database
}

async fn rows(database: &TestDatabase) -> Vec<(i32, String)> {
    let mut connection = database.connect().await.unwrap();
    connection
        .query("SELECT id, email FROM t ORDER BY id")
        .await
        .unwrap()
}

/// Runs the ALTER with `flags` and `failpoint`; once the log shows `reached`, runs `duplicate`
/// (then `release`); expects a failure naming alice's address, the original exact, and nothing
/// of shoal's left.
async fn a_duplicate_fails_the_migration(
    label: &str,
    flags: &[&str],
    failpoint: &str,
    reached: &str,
    duplicate: &str,
    release: &[&str],
) {
    let database = emails(label).await;
    let mut run = shoal_run(&database, ALTER, flags, failpoint);
    wait_for_log(&run, reached, Duration::from_secs(120)).await;
    let mut connection = database.connect().await.unwrap();
    connection.query_drop(duplicate).await.unwrap();
    let expected = rows(&database).await;
    for statement in release {
        connection.query_drop(*statement).await.unwrap();
    }
    let status = run.wait_exit(Duration::from_secs(300)).await.unwrap();
    let logs = run.logs();
    assert!(
        !status.success(),
        "{label}: a row was lost and shoal exited 0:\n{logs}"
    );
    assert!(
        logs.contains("'alice@example.com'") && logs.contains("uk_email"),
        "{label}: the error does not name the value and the index:\n{logs}"
    );
    assert_eq!(
        rows(&database).await,
        expected,
        "{label}: the original changed"
    );
    let create = show_create(&database, "t").await;
    assert!(
        !create.contains("uk_email"),
        "{label}: the table was swapped"
    );
    assert_eq!(
        tables(&mut connection, &database.name).await,
        ["t"],
        "{label}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_inserted_after_the_copy_fails_naming_it() {
    a_duplicate_fails_the_migration(
        "uq_after_copy",
        &[],
        "checksum.before=1*sleep(3000)",
        "failpoint hit",
        "INSERT INTO t (email) VALUES ('alice@example.com')",
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_moved_in_after_the_checksum_fails_naming_it() {
    a_duplicate_fails_the_migration(
        "uq_after_checksum",
        &[],
        "cutover.before=1*sleep(3000)",
        "failpoint hit",
        "UPDATE t SET id = 5000, email = 'alice@example.com' WHERE id = 3002",
        &[],
    )
    .await;
}

/// Written just before the cut-over lock: the removal happens in the final flush under the lock,
/// where the source cannot be read by the flush; the check after it catches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_flushed_under_the_cut_over_lock_fails_naming_it() {
    a_duplicate_fails_the_migration(
        "uq_under_lock",
        &[],
        "cutover.locking=1*sleep(3000)",
        "failpoint hit",
        "INSERT INTO t (email) VALUES ('alice@example.com')",
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_written_while_the_cut_over_is_deferred_fails_naming_it() {
    a_duplicate_fails_the_migration(
        "uq_deferred",
        &["--defer-cutover"],
        "",
        "WaitingOnSentinelTable",
        "INSERT INTO t (email) VALUES ('alice@example.com')",
        &["DROP TABLE _shoal_sentinel"],
    )
    .await;
}

/// Several UNIQUE keys added over the writer's columns, under the writer (which swaps unique
/// values between rows and moves keys): every transient collision is accepted, the result is
/// exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_unique_keys_under_a_busy_writer_complete_exactly() {
    let (database, ledger) = seeded("uq_many", 20_000).await;
    let writer = start_writer(&database, ledger, 59).await;
    let mut run = shoal_run(
        &database,
        "ALTER TABLE orders ADD UNIQUE KEY uk_uk (u, k), ADD UNIQUE KEY uk_ku (k, u), \
         ADD UNIQUE KEY uk_uc (u, c), ADD UNIQUE KEY uk_cu (c, u)",
        &["--chunk-rows", "1000", "--target-chunk-time", "0"],
        "",
    );
    expect_success(&mut run).await;
    let (expected, _) = finish_writer(writer, 200).await;
    let mut connection = database.connect().await.unwrap();
    let actual = writer::read_table(&mut connection, "orders").await.unwrap();
    let differences = writer::differences(&expected, &actual);
    assert!(
        differences.is_empty(),
        "{:?}",
        &differences[..differences.len().min(5)]
    );
    let create = show_create(&database, "orders").await;
    for index in ["uk_uk", "uk_ku", "uk_uc", "uk_cu"] {
        assert!(create.contains(index), "{index} missing:\n{}", create);
    }
}
