//! Kills of either cut-over connection at each step, driven deterministically by failpoints:
//! C1 (holding `LOCK TABLES t WRITE`) right after it locked and after the swap is queued, and C2
//! (the queued `RENAME`) while it waits. Each migration completes exactly under the writer, with
//! nothing of shoal's left behind.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use mysql_async::prelude::Queryable;
use shoal_tests::scenario::{
    ALTER, assert_migrated_exactly, expect_success, finish_writer, seeded, shoal_run, start_writer,
    wait_for_log,
};

/// The connection id `victim=<id>` in the log line of failpoint `step`.
fn connection_id(logs: &str, step: &str, victim: &str) -> u64 {
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

/// Runs the scenario's ALTER under the writer, kills `victim`'s connection while the owner
/// sleeps at failpoint `step`, and expects an exact completion whose log says `expected`.
async fn survives_a_kill(label: &str, step: &str, victim: &str, expected: &str) {
    let (database, ledger) = seeded(label, 20_000).await;
    let writer = start_writer(&database, ledger, 97).await;
    let mut run = shoal_run(&database, ALTER, &[], &format!("{step}=1*sleep(3000)"));
    wait_for_log(&run, "failpoint hit", Duration::from_secs(120)).await;
    let id = connection_id(&run.logs(), step, victim);
    let mut connection = database.connect().await.unwrap();
    connection.exec_drop("KILL ?", (id,)).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_connection_killed_after_the_swap_is_queued_lets_the_swap_run() {
    survives_a_kill(
        "cut_c1_queued",
        "cutover.queued",
        "holder",
        "the lock connection was lost after the rename was queued",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queued_rename_killed_restores_the_shadow_and_retries() {
    survives_a_kill(
        "cut_c2_queued",
        "cutover.queued",
        "renamer",
        "cut-over attempt failed; retrying",
    )
    .await;
}
