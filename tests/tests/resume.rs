//! Checkpoints and resume with `shoal run`: a crash early in the copy, a crash after periodic
//! checkpoints (only undrained chunks are copied again), a purged binlog, and checkpoint write
//! failures. Each runs under the writer and ends with an exact comparison.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use mysql_async::prelude::Queryable;
use nix::sys::signal::Signal;
use shoal_tests::mariadb::MariaDb;
use shoal_tests::processes::ShoalProcess;
use shoal_tests::scenario::{
    ALTER, assert_migrated_exactly, checkpoint, columns, expect_success, finish_writer, keys,
    seeded, shoal_run, start_writer, tables, wait_for_checkpoint, wait_for_log,
    wait_for_shadow_rows,
};
use shoal_tests::servers::{TestDatabase, unique_name};
use shoal_tests::wait;
use shoal_tests::writer;

/// Buffered copy with each chunk's read followed by a pause, so that a crash lands mid-copy
/// (with fixed 1,000-key chunks: `--target-chunk-time 0`, which the tests using it pass).
const SLOW_COPY: &str = "copy.after_read=sleep(100)";

/// Buffered copy in fixed chunks, checkpointing every second.
const CHECKPOINT_EVERY_SECOND: &[&str] = &[
    "--copy-mode",
    "buffered",
    "--target-chunk-time",
    "0",
    "--checkpoint-interval",
    "1s",
];

async fn kill(process: &mut ShoalProcess) {
    process.signal(Signal::SIGKILL).unwrap();
    process.wait_exit(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_early_in_the_copy_resumes_from_the_checkpoint_written_by_initial() {
    let (database, ledger) = seeded("resume_early", 60_000).await;
    let writer = start_writer(&database, ledger, 31).await;
    let flags = ["--copy-mode", "buffered", "--target-chunk-time", "0"];
    let mut first = shoal_run(&database, ALTER, &flags, SLOW_COPY);
    wait_for_shadow_rows(&database, 4_000).await;
    kill(&mut first).await;
    let saved = checkpoint(&database).await.expect("a checkpoint exists");
    assert!(
        saved.plan.is_none(),
        "only the checkpoint of Initial was written (default interval 50 s)"
    );

    // Another ALTER for the same table is refused, and nothing changes.
    let mut other = shoal_run(
        &database,
        "ALTER TABLE orders ADD COLUMN other INT",
        &flags,
        "",
    );
    let status = other.wait_exit(Duration::from_secs(60)).await.unwrap();
    assert!(!status.success(), "{}", other.logs());
    assert!(
        other.logs().contains("a checkpoint of a different ALTER"),
        "{}",
        other.logs()
    );
    let mut connection = database.connect().await.unwrap();
    assert_eq!(
        columns(&mut connection, &database.name, "orders").await,
        vec!["id", "k", "c", "u"]
    );
    let names = tables(&mut connection, &database.name).await;
    assert!(names.contains(&"_orders_chkpnt".to_owned()), "{names:?}");

    let mut second = shoal_run(&database, ALTER, &flags, "");
    let logs = expect_success(&mut second).await;
    assert!(logs.contains("resuming from the checkpoint"), "{logs}");
    assert!(
        logs.contains("resumed from its checkpoint at CopyRows"),
        "{logs}"
    );
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
}

/// The copy runs without the shadow table's plain secondary indexes, which the checkpoint names.
/// A crash during the copy leaves them to the next run; a crash right after they were built
/// leaves nothing to build again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_indexes_survive_a_crash_in_the_copy_and_one_after_their_build() {
    let (database, ledger) = seeded("resume_indexes", 60_000).await;
    let writer = start_writer(&database, ledger, 38).await;
    let flags = ["--copy-mode", "buffered", "--target-chunk-time", "0"];
    let mut first = shoal_run(&database, ALTER, &flags, SLOW_COPY);
    wait_for_shadow_rows(&database, 4_000).await;
    let mut connection = database.connect().await.unwrap();
    assert_eq!(
        keys(&mut connection, "_orders_new").await,
        ["PRIMARY KEY (`id`)", "UNIQUE KEY `uk` (`u`)"],
        "the copy runs with the unique key only"
    );
    kill(&mut first).await;
    let saved = checkpoint(&database).await.expect("a checkpoint exists");
    assert_eq!(
        saved.deferred_indexes,
        ["KEY `kk` (`k`)", "KEY `idx_c` (`c`)"],
        "the checkpoint names the indexes to build"
    );

    let mut second = shoal_run(&database, ALTER, &flags, "indexes.restored=sleep(600000)");
    wait_for_log(&second, "failpoint hit", Duration::from_secs(300)).await;
    assert!(second.logs().contains("added=2"), "{}", second.logs());
    assert_eq!(
        keys(&mut connection, "_orders_new").await,
        [
            "PRIMARY KEY (`id`)",
            "UNIQUE KEY `uk` (`u`)",
            "KEY `kk` (`k`)",
            "KEY `idx_c` (`c`)"
        ]
    );
    kill(&mut second).await;

    let mut third = shoal_run(&database, ALTER, &flags, "");
    let logs = expect_success(&mut third).await;
    assert!(logs.contains("resuming from the checkpoint"), "{logs}");
    assert!(logs.contains("added=0"), "nothing is built twice:\n{logs}");
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_after_periodic_checkpoints_copies_only_the_undrained_chunks() {
    let (database, ledger) = seeded("resume_periodic", 60_000).await;
    let writer = start_writer(&database, ledger, 32).await;
    // Fixed-size chunks, so that the chunks left to plan can be counted from the checkpoint.
    let flags = [
        "--copy-mode",
        "buffered",
        "--checkpoint-interval",
        "1s",
        "--target-chunk-time",
        "0",
    ];
    let mut first = shoal_run(&database, ALTER, &flags, SLOW_COPY);
    let saved = wait_for_checkpoint(&database, "a periodic checkpoint past chunk 10", |detail| {
        detail
            .plan
            .as_ref()
            .is_some_and(|plan| plan.watermark.0 >= 10)
    })
    .await;
    kill(&mut first).await;
    // The last checkpoint may be newer than the one seen: read it again after the kill.
    let saved = checkpoint(&database).await.unwrap_or(saved);
    let plan = saved.plan.expect("the plan is checkpointed");
    let drained = plan.watermark.0 + plan.chunks.iter().filter(|chunk| chunk.2).count() as u64;
    let undrained = plan.chunks.iter().filter(|chunk| !chunk.2).count() as u64;
    let mut rest = plan.planner.clone();
    let mut unplanned = 0;
    // An integer key: the planner never asks for a probe.
    while let shoal_common::chunk::Step::Chunk(..) = rest.next(saved.spec.chunk_rows) {
        unplanned += 1;
    }

    let mut second = shoal_run(&database, ALTER, &flags, "");
    let logs = expect_success(&mut second).await;
    let expected_line = format!(
        "resumed from its checkpoint at CopyRows: {undrained} chunk(s) recopied, {} chunk(s) copied by this run",
        undrained + unplanned
    );
    assert!(
        logs.contains(&expected_line),
        "the {drained} drained chunks are not copied again; wanted {expected_line:?} in:\n{logs}"
    );
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_binlog_fails_with_strict_and_starts_afresh_without() {
    // A private server: purging binary logs must not disturb other tests' streams.
    let dir = tempfile::tempdir().unwrap();
    let server = MariaDb::start(dir.path()).unwrap();
    let name = unique_name("purged");
    server
        .info
        .root_sql(&format!("CREATE DATABASE `{name}`"))
        .unwrap();
    let database = TestDatabase {
        dsn: server.info.dsn(&name),
        name,
    };
    let mut connection = database.connect().await.unwrap();
    writer::seed(&mut connection, "orders", 20_000)
        .await
        .unwrap();
    let ledger = writer::read_table(&mut connection, "orders").await.unwrap();
    let writer = start_writer(&database, ledger, 33).await;
    let flags = ["--copy-mode", "buffered", "--target-chunk-time", "0"];
    let mut first = shoal_run(&database, ALTER, &flags, SLOW_COPY);
    wait_for_shadow_rows(&database, 2_000).await;
    kill(&mut first).await;
    let saved_file: String = connection
        .query_first("SELECT binlog_name FROM _orders_chkpnt WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    connection.query_drop("FLUSH BINARY LOGS").await.unwrap();
    let current: mysql_async::Row = connection
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .unwrap();
    let current: String = current.get(0).unwrap();
    // The killed run's dump thread keeps its file in use until the server notices the closed
    // socket; PURGE skips a file in use, so repeat it until the file is gone.
    wait::until(
        "the checkpoint's binlog file to be purged",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let mut connection = database.connect().await.ok()?;
            connection
                .query_drop(format!("PURGE BINARY LOGS TO '{current}'"))
                .await
                .ok()?;
            let logs: Vec<mysql_async::Row> = connection.query("SHOW BINARY LOGS").await.ok()?;
            let files: Vec<String> = logs.iter().filter_map(|row| row.get(0)).collect();
            (!files.contains(&saved_file)).then_some(())
        },
    )
    .await
    .unwrap();

    let mut strict = shoal_run(
        &database,
        ALTER,
        &["--copy-mode", "buffered", "--strict"],
        "",
    );
    let status = strict.wait_exit(Duration::from_secs(60)).await.unwrap();
    assert!(!status.success(), "{}", strict.logs());
    assert!(
        strict
            .logs()
            .contains(&format!("binlog file {saved_file} was purged")),
        "{}",
        strict.logs()
    );
    assert_eq!(
        columns(&mut connection, &database.name, "orders").await,
        vec!["id", "k", "c", "u"],
        "the table is untouched"
    );

    let mut fresh = shoal_run(&database, ALTER, &flags, "");
    let logs = expect_success(&mut fresh).await;
    assert!(logs.contains("starting afresh"), "{logs}");
    assert!(!logs.contains("resumed from its checkpoint"), "{logs}");
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_checkpoint_table_stops_the_migration_and_leaves_the_table_intact() {
    let (database, ledger) = seeded("chkpnt_dropped", 60_000).await;
    let writer = start_writer(&database, ledger, 34).await;
    let mut run = shoal_run(&database, ALTER, CHECKPOINT_EVERY_SECOND, SLOW_COPY);
    wait_for_checkpoint(&database, "a periodic checkpoint", |detail| {
        detail.plan.is_some()
    })
    .await;
    let mut connection = database.connect().await.unwrap();
    connection
        .query_drop("DROP TABLE _orders_chkpnt")
        .await
        .unwrap();
    let status = run.wait_exit(Duration::from_secs(120)).await.unwrap();
    assert!(!status.success(), "{}", run.logs());
    assert!(
        run.logs().contains("_orders_chkpnt` is gone"),
        "the error names the checkpoint table:\n{}",
        run.logs()
    );
    let expected = writer.stop().await.unwrap();
    assert_eq!(
        columns(&mut connection, &database.name, "orders").await,
        vec!["id", "k", "c", "u"]
    );
    let left: Vec<String> = tables(&mut connection, &database.name)
        .await
        .into_iter()
        .filter(|name| name.starts_with("_orders"))
        .collect();
    assert!(left.is_empty(), "shoal's tables are removed: {left:?}");
    let actual = writer::read_table(&mut connection, "orders").await.unwrap();
    let differences = writer::differences(&expected, &actual);
    assert!(differences.is_empty(), "{differences:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_checkpoint_connection_is_retried_and_the_migration_completes() {
    let (database, ledger) = seeded("chkpnt_killed", 60_000).await;
    let writer = start_writer(&database, ledger, 35).await;
    let mut run = shoal_run(&database, ALTER, CHECKPOINT_EVERY_SECOND, SLOW_COPY);
    let saved = wait_for_checkpoint(&database, "a periodic checkpoint", |detail| {
        detail.plan.is_some()
    })
    .await;
    // The owner's connections: the advisory lock's, then the checkpoint writer's.
    let checkpoint_connection = *saved.owner_connections.last().unwrap();
    let mut connection = database.connect().await.unwrap();
    connection
        .query_drop(format!("KILL {checkpoint_connection}"))
        .await
        .unwrap();
    let logs = expect_success(&mut run).await;
    assert!(logs.contains("checkpoint write failed; retrying"), "{logs}");
    assert!(logs.contains("checkpoint written again"), "{logs}");
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
}

/// Found by the fault campaign: a killed connection of the owner's change flush failed the
/// migration. The flush now applies the same changes again on a fresh connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_connection_killed_inside_its_transaction_is_replaced() {
    let (database, ledger) = seeded("flush_killed", 60_000).await;
    let writer = start_writer(&database, ledger, 35).await;
    // The first flush pauses 3 s inside its fenced transaction.
    let mut run = shoal_run(&database, ALTER, &[], "flush.locked=1*sleep(3000)");
    wait_for_log(&run, "failpoint=\"flush.locked\"", Duration::from_secs(60)).await;
    // The flusher is the one connection idle inside a transaction for a second or more
    // (server-side copies commit at once).
    let mut connection = database.connect().await.unwrap();
    let (flushers, _) = wait::until(
        "the flush transaction to be idle for a second",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let mut connection = database.connect().await.ok()?;
            let idle: Vec<u64> = connection
                .exec(
                    format!(
                        "SELECT p.ID FROM {} p \
                         JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID \
                         WHERE p.DB = ? AND p.COMMAND = 'Sleep' AND p.TIME >= 1",
                        shoal_tests::scenario::processlist()
                    ),
                    (&database.name,),
                )
                .await
                .ok()?;
            (!idle.is_empty()).then_some(idle)
        },
    )
    .await
    .unwrap();
    assert_eq!(flushers.len(), 1, "one flush transaction: {flushers:?}");
    connection
        .query_drop(format!("KILL {}", flushers[0]))
        .await
        .unwrap();
    let logs = expect_success(&mut run).await;
    assert!(
        logs.contains("flush connection lost; reconnecting"),
        "{logs}"
    );
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_lagging_behind_the_copy_still_migrates_exactly_without_repairs() {
    // The first 300 row events of the table reach the owner 20 ms late each, so chunks complete
    // while the stream is seconds behind their copy; a chunk drains only once the stream has
    // caught up with its completion, and the checksum then finds nothing to repair.
    let (database, ledger) = seeded("lagging_stream", 60_000).await;
    let writer = start_writer(&database, ledger, 36).await;
    let mut run = shoal_run(
        &database,
        ALTER,
        &["--copy-mode", "buffered"],
        "binlog.rows=300*sleep(20)",
    );
    let logs = expect_success(&mut run).await;
    // Nothing for the checksum to repair: the drained chunks were right from the start.
    assert!(logs.contains(" 0 range(s) repaired"), "{logs}");
    let (expected, stats) = finish_writer(writer, 200).await;
    assert!(
        stats
            .unique_swaps
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    assert_migrated_exactly(&database, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_checkpoints_and_the_same_command_resumes() {
    let (database, ledger) = seeded("resume_sigterm", 60_000).await;
    let writer = start_writer(&database, ledger, 37).await;
    let flags = ["--copy-mode", "buffered", "--target-chunk-time", "0"];
    let mut first = shoal_run(&database, ALTER, &flags, SLOW_COPY);
    wait_for_shadow_rows(&database, 6_000).await;
    first.signal(Signal::SIGTERM).unwrap();
    let status = first.wait_exit(Duration::from_secs(60)).await.unwrap();
    assert!(!status.success(), "{}", first.logs());
    let logs = first.logs();
    assert!(logs.contains("checkpoint written on stop"), "{logs}");
    assert!(logs.contains("run the same command again"), "{logs}");
    let saved = checkpoint(&database).await.expect("the checkpoint stays");
    let plan = saved.plan.expect("the stop checkpoint holds the plan");
    assert!(plan.watermark.0 > 0, "drained chunks are recorded");

    let mut second = shoal_run(&database, ALTER, &flags, "");
    let logs = expect_success(&mut second).await;
    assert!(
        logs.contains("resumed from its checkpoint at CopyRows"),
        "{logs}"
    );
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
}

/// Found by the fault campaign (`make chaos`): a killed binlog stream failed the migration.
/// Now the owner restarts the stream at the last transaction boundary it delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_binlog_stream_is_restarted_and_the_migration_completes() {
    let (database, ledger) = seeded("stream_killed", 60_000).await;
    let writer = start_writer(&database, ledger, 35).await;
    let flags = ["--copy-mode", "buffered", "--target-chunk-time", "0"];
    let mut run = shoal_run(&database, ALTER, &flags, SLOW_COPY);
    wait_for_shadow_rows(&database, 4_000).await;
    let mut connection = database.connect().await.unwrap();
    let streams: Vec<u64> = connection
        .exec(
            format!(
                "SELECT ID FROM {} WHERE DB = ? AND COMMAND = 'Binlog Dump'",
                shoal_tests::scenario::processlist()
            ),
            (&database.name,),
        )
        .await
        .unwrap();
    assert_eq!(streams.len(), 1, "this migration's stream: {streams:?}");
    connection
        .query_drop(format!("KILL {}", streams[0]))
        .await
        .unwrap();
    let logs = expect_success(&mut run).await;
    assert!(logs.contains("change stream lost; restarting it"), "{logs}");
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
}
