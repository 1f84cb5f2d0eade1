//! The sentinel (`--defer-cutover`): a migration waits before its cut-over with its row `ready`,
//! and goes on after `shoal release`, after a drop of a hand-made sentinel, and after a drop that
//! races the `ready` update. Each runs under the writer and ends with an exact comparison.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use mysql_async::prelude::Queryable;
use shoal_proto::v1;
use shoal_tests::processes::{CoordinatorOptions, CoordinatorProcess, ShoalProcess, start_worker};
use shoal_tests::scenario::{
    ALTER, assert_migrated_exactly, columns, expect_success, finish_writer, seeded, shoal_cli,
    start_writer, submit, wait_for_log, watch_to_completion,
};
use shoal_tests::servers::{self, TestDatabase};
use shoal_tests::wait;

/// `shoal run --defer-cutover` of [`ALTER`] with `failpoints`.
fn shoal_run(database: &TestDatabase, failpoints: &str) -> ShoalProcess {
    shoal_tests::scenario::shoal_run(database, ALTER, &["--defer-cutover"], failpoints)
}

/// While waiting, the original table still has its old schema.
async fn assert_not_cut_over(database: &TestDatabase) {
    let mut connection = database.connect().await.unwrap();
    assert_eq!(
        columns(&mut connection, &database.name, "orders").await,
        vec!["id", "k", "c", "u"],
        "no cut-over while the sentinel holds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_cutover_waits_ready_and_completes_after_shoal_release() {
    let servers = servers::shared();
    let (database, ledger) = seeded("sentinel_release", 20_000).await;
    let env = vec![("SHOAL_TARGET_LOCAL", database.dsn.clone())];
    let coordinator = CoordinatorProcess::start(
        "coordinator",
        &CoordinatorOptions {
            redis_url: Some(servers.redis.url()),
            namespace: servers.redis_namespace("sentinel_release"),
            worker_ttl: Duration::from_secs(3),
            env: env.clone(),
            args: Vec::new(),
        },
    )
    .await
    .unwrap();
    let _worker = start_worker("worker-1", &coordinator.url, 2, &env).unwrap();
    let writer = start_writer(&database, ledger, 51).await;
    let id = submit(&coordinator.url, &["--defer-cutover"]).await;
    let client = coordinator.migration_client().await.unwrap();
    wait::until(
        "the migration to wait on the sentinel",
        Duration::from_secs(120),
        Duration::from_millis(50),
        || {
            let mut client = client.clone();
            let id = id.clone();
            async move {
                let status = client
                    .get_migration(v1::GetMigrationRequest { migration_id: id })
                    .await
                    .ok()?
                    .into_inner()
                    .status?;
                (status.state == v1::State::WaitingOnSentinelTable as i32).then_some(())
            }
        },
    )
    .await
    .unwrap();
    let mut connection = database.connect().await.unwrap();
    let row: Option<(String, String)> = connection
        .exec_first(
            "SELECT table_name, status FROM _shoal_sentinel WHERE migration_id = ?",
            (&id,),
        )
        .await
        .unwrap();
    assert_eq!(row, Some(("orders".to_owned(), "ready".to_owned())));
    // The writer keeps going while the migration waits; the table is still the old one.
    let committed = writer.stats.committed();
    wait::until(
        "writes during the wait",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { (writer.stats.committed() >= committed + 200).then_some(()) },
    )
    .await
    .unwrap();
    assert_not_cut_over(&database).await;
    let status = coordinator.status(&id).await.unwrap();
    assert_eq!(status.state, v1::State::WaitingOnSentinelTable as i32);

    shoal_cli(&coordinator.url, &["release", &id]).await;
    watch_to_completion(&coordinator, &id).await;
    let left: Option<u64> = connection
        .query_first("SELECT COUNT(*) FROM _shoal_sentinel")
        .await
        .unwrap();
    assert_eq!(left, Some(0), "the released migration's row is gone");
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_made_sentinel_without_a_status_column_is_honoured_until_dropped() {
    let (database, ledger) = seeded("sentinel_by_hand", 20_000).await;
    let mut connection = database.connect().await.unwrap();
    connection
        .query_drop("CREATE TABLE _shoal_sentinel (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let writer = start_writer(&database, ledger, 52).await;
    let mut run = shoal_run(&database, "");
    wait_for_log(&run, "waiting on the sentinel", Duration::from_secs(120)).await;
    let committed = writer.stats.committed();
    wait::until(
        "writes during the wait",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { (writer.stats.committed() >= committed + 200).then_some(()) },
    )
    .await
    .unwrap();
    assert_not_cut_over(&database).await;
    assert!(run.try_exit_status().unwrap().is_none(), "still waiting");
    connection
        .query_drop("DROP TABLE _shoal_sentinel")
        .await
        .unwrap();
    let _ = expect_success(&mut run).await;
    assert!(run.logs().contains("the sentinel was dropped: released"));
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_racing_the_ready_update_is_a_release() {
    let (database, ledger) = seeded("sentinel_race", 20_000).await;
    let writer = start_writer(&database, ledger, 53).await;
    let mut run = shoal_run(&database, "sentinel.before_ready=1*sleep(3000)");
    wait_for_log(&run, "failpoint hit", Duration::from_secs(120)).await;
    let mut connection = database.connect().await.unwrap();
    let status: Option<String> = connection
        .query_first("SELECT status FROM _shoal_sentinel")
        .await
        .unwrap();
    assert_eq!(status.as_deref(), Some("copying"));
    connection
        .query_drop("DROP TABLE _shoal_sentinel")
        .await
        .unwrap();
    let _ = expect_success(&mut run).await;
    assert!(run.logs().contains("the sentinel was dropped: released"));
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
}
