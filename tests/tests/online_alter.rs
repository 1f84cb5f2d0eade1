//! Online ALTER end to end, with an application writing the whole time, ending with an exact
//! comparison against the writer's independent ledger.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::sync::atomic::Ordering;
use std::time::Duration;

use shoal_proto::v1;
use shoal_tests::processes::{CoordinatorProcess, ShoalProcess, http_get, start_worker};
use shoal_tests::scenario::{
    ALTER, assert_migrated_exactly, expect_success, finish_writer, keys, seeded, shoal_cli,
    shoal_run, start_fleet_coordinator, start_writer, submit, wait_for_shadow_rows,
    watch_to_completion,
};
use shoal_tests::servers::{self, TestDatabase};
use shoal_tests::wait;
use shoal_tests::writer::{self, Writer};

/// Runs `shoal run` against `database` while a writer runs from before until after it.
async fn migrate_under_writes(
    database: &TestDatabase,
    ledger: writer::Ledger,
    extra_args: &[&str],
) -> writer::Ledger {
    let writer = Writer::start(
        &database.dsn,
        "orders",
        ledger,
        7,
        Duration::from_micros(500),
    )
    .await
    .unwrap();
    wait::until(
        "the writer to commit",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { (writer.stats.committed() >= 200).then_some(()) },
    )
    .await
    .unwrap();
    let mut args = vec![
        "run".to_owned(),
        "--alter".to_owned(),
        ALTER.to_owned(),
        "--no-instant".to_owned(),
    ];
    args.extend(extra_args.iter().map(|arg| (*arg).to_owned()));
    let mut shoal = ShoalProcess::spawn(
        "shoal-run",
        "shoal",
        &args,
        &[("SHOAL_DSN", database.dsn.clone())],
    )
    .unwrap();
    let status = shoal.wait_exit(Duration::from_secs(600)).await.unwrap();
    assert!(
        status.success(),
        "shoal run failed ({status}):\n{}",
        shoal.logs()
    );
    let (expected, stats) = finish_writer(writer, 200).await;
    assert!(
        stats.key_moves.load(Ordering::Relaxed) > 0
            && stats.unique_swaps.load(Ordering::Relaxed) > 0
    );
    assert!(
        shoal.logs().contains("completed by copy"),
        "{}",
        shoal.logs()
    );
    shoal.assert_no_error_logs();
    eprintln!("writer: {stats:?}");
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_mode_buffered_copy_is_exact_under_writes() {
    let (database, ledger) = seeded("run_buffered", 200_000).await;
    let expected = migrate_under_writes(
        &database,
        ledger,
        &["--threads", "2", "--copy-mode", "buffered"],
    )
    .await;
    assert_migrated_exactly(&database, &expected).await;
}

/// `--keep-secondary-indexes`: the copy writes into every index of the new table (by default
/// the plain ones are built after it; `assert_migrated_exactly` checks them either way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_secondary_indexes_copies_into_every_index() {
    let (database, ledger) = seeded("keep_indexes", 30_000).await;
    let writer = start_writer(&database, ledger, 39).await;
    let mut shoal = shoal_run(
        &database,
        ALTER,
        // Fixed 1,000-key chunks: still copying when the shadow table's keys are read.
        &[
            "--copy-mode",
            "buffered",
            "--target-chunk-time",
            "0",
            "--keep-secondary-indexes",
        ],
        "copy.after_read=sleep(100)",
    );
    wait_for_shadow_rows(&database, 2_000).await;
    let mut connection = database.connect().await.unwrap();
    assert_eq!(
        keys(&mut connection, "_orders_new").await,
        [
            "PRIMARY KEY (`id`)",
            "UNIQUE KEY `uk` (`u`)",
            "KEY `kk` (`k`)",
            "KEY `idx_c` (`c`)"
        ]
    );
    let logs = expect_success(&mut shoal).await;
    assert!(!logs.contains("secondary indexes added back"), "{logs}");
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_mode_server_copy_is_exact_under_writes() {
    let (database, ledger) = seeded("run_server", 50_000).await;
    let expected = migrate_under_writes(
        &database,
        ledger,
        &["--threads", "2", "--copy-mode", "server"],
    )
    .await;
    assert_migrated_exactly(&database, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_mode_with_two_worker_processes_is_exact_under_writes() {
    let (database, ledger) = seeded("fleet_exact", 200_000).await;
    let env = vec![("SHOAL_TARGET_LOCAL", database.dsn.clone())];
    let coordinator = start_fleet_coordinator("fleet_exact", env.clone()).await;
    let workers = [
        start_worker("worker-1", &coordinator.url, 2, &env).unwrap(),
        start_worker("worker-2", &coordinator.url, 2, &env).unwrap(),
    ];
    let client = coordinator.migration_client().await.unwrap();
    wait::until(
        "both workers registered",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let mut client = client.clone();
            async move {
                let listed = client
                    .list_workers(v1::ListWorkersRequest {})
                    .await
                    .ok()?
                    .into_inner()
                    .workers;
                (listed.len() == 2).then_some(())
            }
        },
    )
    .await
    .unwrap();

    let writer = Writer::start(
        &database.dsn,
        "orders",
        ledger,
        11,
        Duration::from_micros(500),
    )
    .await
    .unwrap();
    wait::until(
        "the writer to commit",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { (writer.stats.committed() >= 200).then_some(()) },
    )
    .await
    .unwrap();
    let id = submit(&coordinator.url, &["--threads", "4"]).await;
    let watched = watch_to_completion(&coordinator, &id).await;
    assert!(watched.contains("OUTCOME_COMPLETED"), "{watched}");
    let status = coordinator.status(&id).await.unwrap();
    assert_eq!(status.change_path, v1::ChangePath::Copy as i32);
    let visited: Vec<i32> = status
        .last_transitions
        .iter()
        .map(|transition| transition.to)
        .collect();
    let expected_states = [
        v1::State::CopyRows,
        v1::State::ApplyChangeset,
        v1::State::RestoreSecondaryIndexes,
        v1::State::AnalyzeTable,
        v1::State::Checksum,
        v1::State::PostChecksum,
        v1::State::CutOver,
        v1::State::Close,
    ];
    assert_eq!(
        visited,
        expected_states
            .iter()
            .map(|state| *state as i32)
            .collect::<Vec<_>>(),
        "the status history shows the lifecycle in order"
    );
    assert!(status.state_entered_at.is_some());

    // The JSON status API says the same as gRPC.
    let (code, body) = http_get(
        &coordinator.http_address,
        &format!("/api/v1/migrations/{id}/status"),
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["migrationId"], id.as_str());
    assert_eq!(json["state"], "CLOSE");
    assert_eq!(json["outcome"], "COMPLETED");
    assert_eq!(
        json["progress"]["rowsCopied"].as_u64(),
        status
            .progress
            .as_ref()
            .map(|progress| progress.rows_copied)
    );
    assert_eq!(
        json["lastTransitions"].as_array().map(Vec::len),
        Some(status.last_transitions.len())
    );
    // The copy rate is frozen when the copy ends, so both answers carry the same figure.
    let rate = status.progress.as_ref().unwrap().rows_per_second;
    assert!(rate > 0.0, "{status:?}");
    // Equal up to JSON's float parsing (serde_json may differ in the last bit).
    let json_rate = json["progress"]["rowsPerSecond"].as_f64().unwrap();
    assert!(
        (json_rate - rate).abs() <= rate * 1e-12,
        "{json_rate} vs {rate}"
    );
    assert_eq!(json["progress"]["etaSeconds"], serde_json::Value::Null);
    let (code, body) = http_get(&coordinator.http_address, "/api/v1/migrations/statuses")
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["total"], 1);
    assert_eq!(json["countsByState"]["CLOSE"], 1);
    let (code, _) = http_get(&coordinator.http_address, "/api/v1/migrations/nope/status")
        .await
        .unwrap();
    assert_eq!(code, 404);

    let (expected, _stats) = finish_writer(writer, 200).await;
    // Both processes share the copy: each did a tenth of the chunks at least (how the rest is
    // split depends on scheduling: "more than 10" failed once on a loaded machine with 10).
    let copied: Vec<usize> = workers
        .iter()
        .map(|worker| worker.logs().matches("chunk copied").count())
        .collect();
    let total: usize = copied.iter().sum();
    for (worker, copied) in workers.iter().zip(&copied) {
        assert!(
            *copied > 0 && *copied * 10 >= total,
            "{} copied {copied} of {total} chunks: both worker processes share the copy",
            worker.name
        );
        worker.assert_no_error_logs();
    }
    coordinator.process.assert_no_error_logs();
    assert_migrated_exactly(&database, &expected).await;
}

/// (paused, chunks done, chunks leased, state) of a migration.
async fn snapshot(
    mut client: v1::migration_service_client::MigrationServiceClient<tonic::transport::Channel>,
    id: String,
) -> (bool, u64, u64, i32, u64) {
    let status = client
        .get_migration(v1::GetMigrationRequest { migration_id: id })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let progress = status.progress.unwrap_or_default();
    (
        status.paused,
        progress.chunks_done,
        progress.chunks_leased,
        status.state,
        progress.rows_copied,
    )
}

/// A fleet (Redis, one coordinator, one worker with `slots`) on a seeded `orders`, a writer running,
/// and a migration submitted with one thread that has copied at least `chunks` chunks.
async fn fleet_migration_under_writes(
    label: &str,
    slots: u32,
    seed: u64,
    chunks: u64,
) -> (
    TestDatabase,
    CoordinatorProcess,
    ShoalProcess,
    Writer,
    String,
) {
    let (database, ledger) = seeded(label, 200_000).await;
    let env = vec![("SHOAL_TARGET_LOCAL", database.dsn.clone())];
    let coordinator = start_fleet_coordinator(label, env.clone()).await;
    let worker = start_worker("worker", &coordinator.url, slots, &env).unwrap();
    let writer = Writer::start(
        &database.dsn,
        "orders",
        ledger,
        seed,
        Duration::from_micros(500),
    )
    .await
    .unwrap();
    let id = submit(&coordinator.url, &["--threads", "1"]).await;
    let client = coordinator.migration_client().await.unwrap();
    wait::until(
        "some chunks copied",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || {
            let fetch = snapshot(client.clone(), id.clone());
            async move { (fetch.await.1 >= chunks).then_some(()) }
        },
    )
    .await
    .unwrap();
    (database, coordinator, worker, writer, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_volume_and_resume_during_the_copy_finish_exactly() {
    let (database, coordinator, _worker, writer, id) =
        fleet_migration_under_writes("pause_resume", 4, 21, 5).await;
    let client = coordinator.migration_client().await.unwrap();
    // `--output json` on a one-shot command: one object naming the migration and the action.
    let printed = shoal_cli(&coordinator.url, &["--output", "json", "pause", &id]).await;
    assert_eq!(
        json_line(&printed),
        serde_json::json!({ "migration_id": id, "action": "paused" }),
        "{printed}"
    );
    // Paused: in-flight chunks drain, then nothing new is handed out.
    let (copied_when_idle, _) = wait::until(
        "the copy to go idle",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            let fetch = snapshot(client.clone(), id.clone());
            async move {
                // Rows count when a copy completes (chunks when they drain, later).
                let (paused, _, leased, _, copied) = fetch.await;
                (paused && leased == 0).then_some(copied)
            }
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (paused, _, _, state, copied_later) = snapshot(client.clone(), id.clone()).await;
    assert!(paused);
    assert_eq!(
        copied_later, copied_when_idle,
        "no chunk is copied while paused"
    );
    assert_eq!(
        state,
        v1::State::CopyRows as i32,
        "a paused migration stays in CopyRows"
    );

    shoal_cli(&coordinator.url, &["volume", &id, "--threads", "3"]).await;
    let printed = shoal_cli(&coordinator.url, &["--output", "json", "resume", &id]).await;
    assert_eq!(
        json_line(&printed),
        serde_json::json!({ "migration_id": id, "action": "resumed" }),
        "{printed}"
    );
    watch_to_completion(&coordinator, &id).await;
    let (expected, _stats) = finish_writer(writer, 200).await;
    assert!(
        coordinator.process.logs().contains("volume changed"),
        "{}",
        coordinator.process.logs()
    );
    assert_migrated_exactly(&database, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_migrations_on_three_tables_are_counted_and_exact() {
    let servers = servers::shared();
    let database = servers.database("three_tables").await.unwrap();
    let mut connection = database.connect().await.unwrap();
    let tables = ["alpha", "beta", "gamma"];
    let mut expected = Vec::new();
    for table in tables {
        writer::seed(&mut connection, table, 20_000).await.unwrap();
        expected.push(writer::read_table(&mut connection, table).await.unwrap());
    }
    let env = vec![("SHOAL_TARGET_LOCAL", database.dsn.clone())];
    let coordinator = start_fleet_coordinator("three_tables", env.clone()).await;
    let _workers = [
        start_worker("worker-1", &coordinator.url, 2, &env).unwrap(),
        start_worker("worker-2", &coordinator.url, 2, &env).unwrap(),
    ];
    let mut ids = Vec::new();
    for table in tables {
        let alter = format!("ALTER TABLE {table} ADD COLUMN note INT NULL, ADD INDEX idx_c (c)");
        let submitted = shoal_cli(
            &coordinator.url,
            &[
                "submit",
                "--target",
                "local",
                "--alter",
                &alter,
                "--no-instant",
            ],
        )
        .await;
        ids.push(submitted.lines().last().unwrap().trim().to_owned());
    }
    for id in &ids {
        watch_to_completion(&coordinator, id).await;
    }
    let mut client = coordinator.migration_client().await.unwrap();
    let listed = client
        .list_migrations(v1::ListMigrationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total, 3);
    assert_eq!(listed.counts_by_state.get("CLOSE"), Some(&3));
    let (code, body) = http_get(&coordinator.http_address, "/api/v1/migrations/statuses")
        .await
        .unwrap();
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["total"], 3);
    assert_eq!(json["countsByState"]["CLOSE"], 3);
    for (table, ledger) in tables.iter().zip(&expected) {
        let actual = writer::read_table(&mut connection, table).await.unwrap();
        assert!(writer::differences(ledger, &actual).is_empty(), "{table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_the_copy_leaves_the_original_table_and_removes_shoals_tables() {
    let (database, coordinator, _worker, writer, id) =
        fleet_migration_under_writes("cancel_copy", 1, 33, 3).await;
    let client = coordinator.migration_client().await.unwrap();
    shoal_cli(&coordinator.url, &["cancel", &id]).await;
    wait::until(
        "the migration to end cancelled",
        Duration::from_secs(60),
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
                (status.outcome == v1::Outcome::Cancelled as i32).then_some(())
            }
        },
    )
    .await
    .unwrap();
    let (expected, _stats) = finish_writer(writer, 200).await;
    let mut connection = database.connect().await.unwrap();
    assert_eq!(
        shoal_tests::scenario::columns(&mut connection, &database.name, "orders").await,
        vec!["id", "k", "c", "u"],
        "the original table keeps its schema"
    );
    let tables = shoal_tests::scenario::tables(&mut connection, &database.name).await;
    assert_eq!(tables, vec!["orders"], "shoal's tables are removed");
    let actual = writer::read_table(&mut connection, "orders").await.unwrap();
    let differences = writer::differences(&expected, &actual);
    assert!(
        differences.is_empty(),
        "{:?}",
        &differences[..differences.len().min(5)]
    );
}

/// The one line of `printed` that is a JSON object.
fn json_line(printed: &str) -> serde_json::Value {
    let objects: Vec<serde_json::Value> = printed
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(serde_json::Value::is_object)
        .collect();
    assert_eq!(objects.len(), 1, "{printed}");
    objects[0].clone()
}
