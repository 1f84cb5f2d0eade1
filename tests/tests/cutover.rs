//! Kills of either cut-over connection at each step, driven deterministically by failpoints:
//! C1 (holding `LOCK TABLES t WRITE`) right after it locked and just before the swap is sent,
//! and, on MariaDB's two-connection sequence (the tests named `…_two_connections`, which the
//! MySQL pass of `make test` leaves out: MySQL swaps in C1 itself), C1 after the swap is queued
//! and C2 (the queued `RENAME`) while it waits; and of a checksum session holding its snapshot
//! just before the cut-over. Each migration completes exactly under the writer, with nothing of
//! shoal's left behind.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use mysql_async::prelude::Queryable;
use shoal_tests::scenario::{
    ALTER, assert_migrated_exactly, connection_id, expect_success, finish_writer, seeded,
    shoal_run, show_create, start_writer, wait_for_log,
};

/// Runs the scenario's ALTER under the writer, kills `victim`'s connection while the owner
/// sleeps at failpoint `step`, and expects an exact completion whose log says `expected`.
async fn survives_a_kill(label: &str, step: &str, victim: &str, expected: &str) {
    let (database, ledger) = seeded(label, 20_000).await;
    let writer = start_writer(&database, ledger, 97).await;
    let mut run = shoal_run(&database, ALTER, &[], &format!("{step}=1*sleep(3000)"));
    wait_for_log(&run, "failpoint hit", Duration::from_secs(120)).await;
    let id = connection_id(&run.logs(), step, victim);
    let mut connection = database.connect().await.unwrap();
    connection.query_drop(format!("KILL {id}")).await.unwrap();
    let log = expect_success(&mut run).await;
    assert!(
        log.contains(expected),
        "{label}: no {expected:?} in:\n{log}"
    );
    let (expected_rows, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected_rows).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_connection_killed_right_after_locking_retries_the_cut_over() {
    survives_a_kill(
        "cut_c1_locked",
        "cutover.locked",
        "holder",
        "cut-over attempt failed; retrying",
    )
    .await;
}

/// The connection that would send the swap killed just before it does (MySQL: C1 itself, its
/// lock going with it; MariaDB: C2): nothing is renamed, the attempt is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_killed_before_it_sends_the_swap_retries_the_cut_over() {
    let victim = match shoal_tests::servers::flavour() {
        shoal_tests::servers::Flavour::MySql => "holder",
        shoal_tests::servers::Flavour::MariaDb => "renamer",
    };
    survives_a_kill(
        "cut_renaming",
        "cutover.renaming",
        victim,
        "cut-over attempt failed; retrying",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_connection_killed_after_the_swap_is_queued_lets_the_swap_run_two_connections() {
    survives_a_kill(
        "cut_c1_queued",
        "cutover.queued",
        "holder",
        "the lock connection was lost after the rename was queued",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queued_rename_killed_restores_the_shadow_and_retries_two_connections() {
    survives_a_kill(
        "cut_c2_queued",
        "cutover.queued",
        "renamer",
        "cut-over attempt failed; retrying",
    )
    .await;
}

/// The lock connection killed after the swap was sent and before it was seen queued: the probe
/// fails, the lock went with the connection, the swap ran. The catalogue, not the error, decides:
/// the migration finishes (it once reported failure and left `<t>_shoal_old` beside the swapped
/// table).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_after_the_swap_was_sent_is_settled_by_the_catalogue_two_connections() {
    survives_a_kill(
        "cut_c1_sent",
        "cutover.rename_sent",
        "holder",
        "the catalogue shows the tables swapped: finishing the cut-over",
    )
    .await;
}

/// The renaming connection killed before it was seen queued: nothing swapped, the attempt is
/// retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rename_killed_before_it_was_seen_queued_is_retried_two_connections() {
    survives_a_kill(
        "cut_c2_sent",
        "cutover.rename_sent",
        "renamer",
        "the catalogue shows the original in place: the attempt is retried",
    )
    .await;
}

/// Another session's DDL on the table during the migration (written with a leading comment, or
/// kept out of the binlog) is never undone by the swap: the migration fails and the original,
/// with the DBA's index, stays in place and exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_sessions_ddl_during_the_migration_is_never_undone() {
    for (label, statements, expected) in [
        (
            "ddl_comment",
            &["/* ticket 42 */ ALTER TABLE orders ADD INDEX dba_idx (c)"][..],
            "DDL on",
        ),
        (
            "ddl_unlogged",
            &[
                "SET SESSION sql_log_bin = 0",
                "# ticket 43\nALTER TABLE orders ADD INDEX dba_idx (c)",
            ][..],
            "changed during the migration",
        ),
    ] {
        let (database, ledger) = seeded(label, 20_000).await;
        let writer = start_writer(&database, ledger, 98).await;
        let mut run = shoal_run(&database, ALTER, &[], "cutover.before=1*sleep(3000)");
        wait_for_log(&run, "failpoint hit", Duration::from_secs(120)).await;
        let mut dba = database.connect().await.unwrap();
        for statement in statements {
            dba.query_drop(*statement).await.unwrap();
        }
        let status = run.wait_exit(Duration::from_secs(300)).await.unwrap();
        let logs = run.logs();
        assert!(!status.success(), "{label}: the swap went ahead:\n{logs}");
        assert!(
            logs.contains(expected),
            "{label}: no {expected:?} in:\n{logs}"
        );
        let (expected_rows, _) = finish_writer(writer, 200).await;
        let mut connection = database.connect().await.unwrap();
        let actual = shoal_tests::writer::read_table(&mut connection, "orders")
            .await
            .unwrap();
        assert!(
            shoal_tests::writer::differences(&expected_rows, &actual).is_empty(),
            "{label}: the original is not exact"
        );
        let create = show_create(&database, "orders").await;
        assert!(
            create.contains("dba_idx"),
            "{label}: the DBA's index is gone"
        );
        assert!(!create.contains("note"), "{label}: the table was swapped");
        assert_eq!(
            shoal_tests::scenario::tables(&mut connection, &database.name).await,
            ["orders"],
            "{label}: shoal's tables are left"
        );
    }
}

/// The lock lost before the swap reached the server: the application writes to the original,
/// then the swap runs. shoal must not report the cut-over done: the stream shows those writes
/// between the final flush and the rename, so it stops, names them and cleans nothing up.
/// (The rename is held back in its task, and the settling of the lost lock is delayed, so the
/// swap runs in between.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_reach_the_original_after_the_lock_is_lost_are_reported_two_connections() {
    let (database, ledger) = seeded("cut_lost_lock", 20_000).await;
    let writer = start_writer(&database, ledger, 99).await;
    let mut run = shoal_run(
        &database,
        ALTER,
        &[],
        "cutover.rename_sent=1*sleep(200);cutover.renaming=1*sleep(2000);\
         cutover.settling=1*sleep(4000)",
    );
    wait_for_log(&run, "cutover.rename_sent", Duration::from_secs(120)).await;
    let holder = connection_id(&run.logs(), "cutover.rename_sent", "holder");
    let mut connection = database.connect().await.unwrap();
    connection
        .query_drop(format!("KILL {holder}"))
        .await
        .unwrap();
    let status = run.wait_exit(Duration::from_secs(120)).await.unwrap();
    let logs = run.logs();
    assert!(!status.success(), "reported done with writes lost:\n{logs}");
    assert!(
        logs.contains("reached the original table between the final flush and the swap"),
        "{logs}"
    );
    // The application kept writing throughout (its writes are not compared here: some are in
    // the original only, which is what the report says).
    writer.stop().await.unwrap();
    // Nothing cleaned up: the swapped-out original is still there for a human.
    let names = shoal_tests::scenario::tables(&mut connection, &database.name).await;
    assert!(names.contains(&"orders_shoal_old".to_owned()), "{names:?}");
}

/// A checksum session killed while its snapshot is open (an operator's or pt-kill's KILL of
/// idle connections): the pass runs again on fresh sessions. Seen once in CI as a failed
/// migration ("connection closed") at the end of a failover test, cause not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_session_killed_mid_pass_runs_the_pass_again() {
    survives_a_kill(
        "checksum_kill",
        "checksum.snapshot",
        "session",
        "a checksum connection was lost; running the pass again",
    )
    .await;
}
