//! `shoal run` killed with SIGKILL at each step of the cut-over (held there by a failpoint),
//! under the writer, then the same command run again: the second run reports what the catalogue
//! shows (resumed before the swap, closed after it), never copies into a swapped table, and the
//! table ends exact with nothing of shoal's left. Both passes of `make test` run these, so each
//! runs on MariaDB and on MySQL, but for the steps only MariaDB's two-connection cut-over has
//! (tests named `…_two_connections`: the swap sent on a second connection, queued there).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use mysql_async::prelude::Queryable;
use nix::sys::signal::Signal;
use shoal_tests::scenario::{
    ALTER, assert_migrated_exactly, connection_id, expect_success, finish_writer, seeded,
    shoal_run, show_create, start_writer, tables, wait_for_log,
};
use shoal_tests::wait;

/// What the second run must say about the first one's cut-over.
#[derive(Debug, Clone, Copy)]
enum Found {
    /// The first run stopped before it marked the cut-over begun.
    NotBegun,
    /// It marked the cut-over begun; the swap had not run.
    NotSwapped,
    /// The swap had run.
    Swapped,
    /// The swap may or may not have run (the rename was being sent): either, truthfully.
    Either,
}

const NOT_SWAPPED: &str = "the cut-over had begun but not renamed: resuming";
const SWAPPED: &str = "the cut-over had renamed: closing";

/// The migration id in a run's log.
fn migration_id(logs: &str) -> String {
    let (_, rest) = logs
        .split_once("migration_id=")
        .unwrap_or_else(|| panic!("no migration id in:\n{logs}"));
    rest.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

async fn killed_at(label: &str, step: &str, found: Found) {
    let (database, ledger) = seeded(label, 20_000).await;
    let writer = start_writer(&database, ledger, 41).await;
    let mut first = shoal_run(&database, ALTER, &[], &format!("{step}=1*sleep(120000)"));
    wait_for_log(&first, "failpoint hit", Duration::from_secs(180)).await;
    assert!(
        first.logs().contains(step),
        "{label}: held at another step:\n{}",
        first.logs()
    );
    first.signal(Signal::SIGKILL).unwrap();
    first.wait_exit(Duration::from_secs(10)).await.unwrap();
    let id = migration_id(&first.logs());

    let mut second = shoal_run(&database, ALTER, &[], "");
    let log = expect_success(&mut second).await;
    assert!(
        log.contains(&format!("migration {id} completed")),
        "{label}: the second run reports the migration as {id}:\n{log}"
    );
    let (not_swapped, swapped) = (log.contains(NOT_SWAPPED), log.contains(SWAPPED));
    let truthful = match found {
        Found::NotBegun => !not_swapped && !swapped,
        Found::NotSwapped => not_swapped && !swapped,
        Found::Swapped => swapped && !not_swapped,
        Found::Either => not_swapped != swapped,
    };
    assert!(truthful, "{label}: expected {found:?}:\n{log}");
    if swapped {
        // Closed only: no copy into the table that is already the new one.
        assert!(
            !log.contains("all chunks copied") && !log.contains("checksum barrier"),
            "{label}: the second run copied after the swap:\n{log}"
        );
        // Until the marker `Done`, the swap is proved again from the binlog.
        assert_eq!(
            log.contains("no write to the original after the final flush"),
            step != "close.dropped",
            "{label}:\n{log}"
        );
    }
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
    let create = show_create(&database, "orders").await;
    assert_eq!(
        create.matches("`note`").count(),
        1,
        "{label}: the ALTER's column once: {create}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_the_cut_over_resumes_it() {
    killed_at("crash_before", "cutover.before", Found::NotBegun).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_locking_resumes_the_cut_over() {
    killed_at("crash_locking", "cutover.locking", Found::NotSwapped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_holding_the_lock_resumes_the_cut_over() {
    killed_at("crash_locked", "cutover.locked", Found::NotSwapped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_the_swap_is_sent_resumes_the_cut_over() {
    killed_at("crash_renaming", "cutover.renaming", Found::NotSwapped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_as_the_swap_is_sent_reports_what_the_catalogue_shows_two_connections() {
    killed_at("crash_sent", "cutover.rename_sent", Found::Either).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_with_the_swap_queued_closes_after_proving_it_two_connections() {
    killed_at("crash_queued", "cutover.queued", Found::Swapped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_right_after_the_swap_closes_after_proving_it() {
    killed_at("crash_after", "cutover.after_rename", Found::Swapped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_closing_closes() {
    killed_at("crash_closing", "close.dropped", Found::Swapped).await;
}

/// The lock lost before the swap reached the server (C1 killed), writes reaching the original,
/// the swap running, and then the process killed before it read the binlog: the second run finds
/// the tables swapped with the cut-over only begun, proves the swap from the binlog, finds
/// those writes, and stops naming them, cleaning nothing up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_lost_to_the_original_are_found_by_the_next_run_two_connections() {
    let (database, ledger) = seeded("crash_lost_lock", 20_000).await;
    let writer = start_writer(&database, ledger, 43).await;
    let mut first = shoal_run(
        &database,
        ALTER,
        &[],
        "cutover.rename_sent=1*sleep(200);cutover.renaming=1*sleep(2000);\
         cutover.settling=1*sleep(120000)",
    );
    wait_for_log(&first, "cutover.rename_sent", Duration::from_secs(180)).await;
    let holder = connection_id(&first.logs(), "cutover.rename_sent", "holder");
    let mut connection = database.connect().await.unwrap();
    connection
        .query_drop(format!("KILL {holder}"))
        .await
        .unwrap();
    wait_for_log(&first, "cutover.settling", Duration::from_secs(60)).await;
    // The held-back rename runs 2 s after it was sent, while settling waits.
    wait::until(
        "the swap to run",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let mut connection = database.connect().await.unwrap();
            tables(&mut connection, &database.name)
                .await
                .contains(&"orders_shoal_old".to_owned())
                .then_some(())
        },
    )
    .await
    .unwrap();
    first.signal(Signal::SIGKILL).unwrap();
    first.wait_exit(Duration::from_secs(10)).await.unwrap();

    let mut second = shoal_run(&database, ALTER, &[], "");
    let status = second.wait_exit(Duration::from_secs(300)).await.unwrap();
    let log = second.logs();
    assert!(!status.success(), "reported done with writes lost:\n{log}");
    assert!(
        log.contains(SWAPPED)
            && log.contains("reached the original table between the final flush and the swap"),
        "{log}"
    );
    // The writer may have failed meanwhile: its lost writes broke what it expects of the table.
    let _ = writer.stop().await;
    let names = tables(&mut connection, &database.name).await;
    assert!(
        names.contains(&"orders_shoal_old".to_owned())
            && names.contains(&"_orders_chkpnt".to_owned()),
        "{names:?}"
    );
}

/// The run that closes after a predecessor's swap is killed in its turn while closing (after it
/// dropped `_t_old`): it had recorded the cut-over done, so a third run closes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_run_killed_in_its_turn_is_closed_by_the_next() {
    let (database, ledger) = seeded("crash_twice", 20_000).await;
    let writer = start_writer(&database, ledger, 47).await;
    for step in ["cutover.after_rename", "close.dropped"] {
        let mut run = shoal_run(&database, ALTER, &[], &format!("{step}=1*sleep(120000)"));
        wait_for_log(&run, "failpoint hit", Duration::from_secs(180)).await;
        assert!(run.logs().contains(step), "{}", run.logs());
        run.signal(Signal::SIGKILL).unwrap();
        run.wait_exit(Duration::from_secs(10)).await.unwrap();
    }
    let mut last = shoal_run(&database, ALTER, &[], "");
    let log = expect_success(&mut last).await;
    assert!(log.contains(SWAPPED), "{log}");
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
}
