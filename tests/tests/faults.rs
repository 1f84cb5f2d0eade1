//! Faults on the online-ALTER path: a tampered shadow table, a worker killed mid-chunk, a
//! zombie worker, stale reports. Each ends with an exact comparison against an independent
//! expectation.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use mysql_async::prelude::Queryable;
use nix::sys::signal::Signal;
use shoal_proto::v1;
use shoal_tests::processes::{CoordinatorOptions, CoordinatorProcess, ShoalProcess, start_worker};
use shoal_tests::scenario::{
    self, ALTER, assert_migrated_exactly, expect_success, finish_writer, seeded, seeded_on,
    shoal_cli, start_writer, wait_for_log, wait_for_shadow_rows, watch_to_completion,
};
use shoal_tests::servers::{self, TestDatabase};
use shoal_tests::wait;

/// `shoal run` of [`ALTER`] with `failpoints` (server copy).
fn shoal_run(database: &TestDatabase, failpoints: &str) -> ShoalProcess {
    scenario::shoal_run(database, ALTER, &[], failpoints)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_finds_and_repairs_a_tampered_shadow_table() {
    let (database, expected) = seeded("tamper_repair", 30_000).await;
    let mut shoal = shoal_run(&database, "checksum.before=1*sleep(5000)");
    wait_for_log(&shoal, "failpoint hit", Duration::from_secs(120)).await;

    // Between the copy and the checksum: corrupt the shadow table in ways a weak hash misses.
    let mut connection = database.connect().await.unwrap();
    // Two rows of the same length swap their values: BIT_XOR(CRC32) would cancel this out.
    connection
        .query_drop(
            "UPDATE _orders_new SET c = CASE id WHEN 20 THEN 'row-20' WHEN 40 THEN 'row-10' END \
             WHERE id IN (20, 40)",
        )
        .await
        .unwrap();
    let swapped: Vec<(i64, String)> = connection
        .query("SELECT id, c FROM _orders_new WHERE id IN (20, 40) ORDER BY id")
        .await
        .unwrap();
    assert_eq!(
        swapped,
        vec![(20, "row-20".to_owned()), (40, "row-10".to_owned())]
    );
    connection
        .query_drop("UPDATE _orders_new SET k = k + 1 WHERE id = 30000")
        .await
        .unwrap();
    connection
        .query_drop("DELETE FROM _orders_new WHERE id = 50000")
        .await
        .unwrap();
    connection
        .query_drop("INSERT INTO _orders_new (id, k, c, u) VALUES (7, 1, 'ghost', NULL)")
        .await
        .unwrap();

    assert!(
        !shoal.logs().contains("checksum barrier"),
        "the tampering must happen before the checksum starts"
    );
    let status = shoal.wait_exit(Duration::from_secs(240)).await.unwrap();
    assert!(
        status.success(),
        "shoal run failed ({status}):\n{}",
        shoal.logs()
    );
    let logs = shoal.logs();
    assert!(logs.contains("checksum mismatch"), "{logs}");
    // MariaDB 10.11 evaluates the row string once per row (`RowHash::detect`); MySQL has SHA2.
    let hash = match servers::flavour() {
        servers::Flavour::MariaDb => "row_hash=CrcProductOnce",
        servers::Flavour::MySql => "row_hash=Sha2",
    };
    assert!(logs.contains(hash), "{logs}");
    assert!(
        !logs.contains("0 range(s) repaired"),
        "the mismatching ranges were repaired: {logs}"
    );
    assert_migrated_exactly(&database, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_mismatch_fails_before_cutover_and_leaves_the_table_untouched() {
    let (database, expected) = seeded("tamper_forever", 20_000).await;
    let mut shoal = shoal_run(&database, "checksum.before=1*sleep(3000)");
    wait_for_log(&shoal, "failpoint hit", Duration::from_secs(120)).await;
    // Keep corrupting one shadow row until shoal gives up.
    let mut connection = database.connect().await.unwrap();
    let mut tampered = 0;
    while shoal.try_exit_status().unwrap().is_none() {
        let outcome = connection
            .query_drop("UPDATE _orders_new SET k = k + 1 WHERE id = 1000")
            .await;
        if outcome.is_ok() {
            tampered += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = shoal.wait_exit(Duration::from_secs(5)).await.unwrap();
    assert!(!status.success(), "shoal must fail:\n{}", shoal.logs());
    assert!(tampered > 0);
    let logs = shoal.logs();
    assert!(logs.contains("still differ after 3 passes"), "{logs}");
    assert!(
        !logs.contains("RENAME") && !logs.contains("cut-over done"),
        "never cut over: {logs}"
    );

    // The original table is untouched: old schema, same content; shoal's tables are gone.
    let mut connection = database.connect().await.unwrap();
    let columns = scenario::columns(&mut connection, &database.name, "orders").await;
    assert_eq!(columns, vec!["id", "k", "c", "u"]);
    let tables = scenario::tables(&mut connection, &database.name).await;
    assert_eq!(tables, vec!["orders"], "shoal's tables are removed");
    let actual = shoal_tests::writer::read_table(&mut connection, "orders")
        .await
        .unwrap();
    assert!(shoal_tests::writer::differences(&expected, &actual).is_empty());
}

/// A coordinator (Redis, short leases) and its env, for fleet fault tests.
async fn fleet(
    label: &str,
    database: &TestDatabase,
    coordinator_failpoints: &str,
) -> (CoordinatorProcess, Vec<(&'static str, String)>) {
    let servers = servers::shared();
    let env = vec![("SHOAL_TARGET_LOCAL", database.dsn.clone())];
    let mut coordinator_env = env.clone();
    coordinator_env.push(("SHOAL_LEASE_TTL", "2s".to_owned()));
    coordinator_env.push(("SHOAL_FAILPOINTS", coordinator_failpoints.to_owned()));
    let options = CoordinatorOptions {
        redis_url: Some(servers.redis.url()),
        namespace: servers.redis_namespace(label),
        worker_ttl: Duration::from_secs(3),
        env: coordinator_env,
        args: Vec::new(),
    };
    (
        CoordinatorProcess::start("coordinator", &options)
            .await
            .unwrap(),
        env,
    )
}

fn with_failpoints(
    env: &[(&'static str, String)],
    failpoints: &str,
) -> Vec<(&'static str, String)> {
    let mut env = env.to_vec();
    env.push(("SHOAL_FAILPOINTS", failpoints.to_owned()));
    env
}

async fn submit(coordinator: &CoordinatorProcess, threads: &str) -> String {
    // The read-then-write path, where `copy.after_read` sits.
    scenario::submit(
        &coordinator.url,
        &["--threads", threads, "--copy-mode", "buffered"],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_chunk_is_replaced_and_the_result_is_exact() {
    let (database, expected) = seeded("sigkill_worker", 30_000).await;
    let (coordinator, env) = fleet("sigkill_worker", &database, "").await;
    // worker-1 stalls after reading its first chunk, long enough to be killed mid-chunk.
    let mut doomed = start_worker(
        "worker-1",
        &coordinator.url,
        1,
        &with_failpoints(&env, "copy.after_read=1*sleep(30000)"),
    )
    .unwrap();
    let id = submit(&coordinator, "2").await;
    wait_for_log(&doomed, "failpoint hit", Duration::from_secs(60)).await;
    doomed.signal(Signal::SIGKILL).unwrap();
    doomed.wait_exit(Duration::from_secs(5)).await.unwrap();
    let survivor = start_worker("worker-2", &coordinator.url, 2, &env).unwrap();
    let watched = watch_to_completion(&coordinator, &id).await;
    assert!(watched.contains("OUTCOME_COMPLETED"), "{watched}");
    let coordinator_logs = coordinator.process.logs();
    assert!(
        coordinator_logs.contains("chunk returned") && coordinator_logs.contains("Expired"),
        "the killed worker's lease expired and its chunk was offered again:\n{coordinator_logs}"
    );
    survivor.assert_no_error_logs();
    assert_migrated_exactly(&database, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_worker_cannot_write_after_its_chunk_moved_on() {
    let (database, mut expected) = seeded("zombie_worker", 30_000).await;
    let (coordinator, env) = fleet(
        "zombie_worker",
        &database,
        // Hold the migration before its checksum so the zombie wakes while fences still exist.
        "checksum.before=1*sleep(8000)",
    )
    .await;
    let zombie = start_worker(
        "zombie",
        &coordinator.url,
        1,
        // It stalls between read and write, and its lease keeping hangs (as behind a partition),
        // so it does not learn that its lease is gone.
        &with_failpoints(
            &env,
            "copy.after_read=1*sleep(4000);lease.extend=sleep(60000)",
        ),
    )
    .unwrap();
    let id = submit(&coordinator, "2").await;
    wait_for_log(
        &zombie,
        "failpoint=\"copy.after_read\"",
        Duration::from_secs(60),
    )
    .await;
    // Freeze it between its read and its write: its lease expires.
    zombie.signal(Signal::SIGSTOP).unwrap();
    let logs = zombie.logs();
    let hit = logs
        .lines()
        .find(|line| line.contains("copy.after_read"))
        .unwrap()
        .to_owned();
    let chunk: u64 = hit
        .split("chunk=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let range = hit.split("range=").nth(1).unwrap();
    let lower: i64 = range
        .trim_start_matches(['[', '('])
        .split(',')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap_or(i64::MIN);
    // Delete a row the zombie has already read.
    let victim = expected.range(lower..).next().map(|(id, _)| *id).unwrap();
    let mut connection = database.connect().await.unwrap();
    connection
        .exec_drop("DELETE FROM orders WHERE id = ?", (victim,))
        .await
        .unwrap();
    expected.remove(&victim);

    // Another worker redoes the chunk under a new fence epoch, and the delete is applied.
    let helper = start_worker("helper", &coordinator.url, 2, &env).unwrap();
    let redone = format!("chunk={chunk} rows=");
    let redo = wait::until(
        "the helper to redo the zombie's chunk",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || async {
            helper
                .logs()
                .lines()
                .any(|line| line.contains("chunk copied") && line.contains(&redone))
                .then_some(())
        },
    )
    .await;
    if let Err(error) = redo {
        panic!(
            "{error}\nzombie hit: {hit}\ncoordinator:\n{}\nhelper:\n{}",
            coordinator.process.logs(),
            helper.logs()
        );
    }
    // Wake the zombie: its write must be refused by the fence, not resurrect the deleted row.
    zombie.signal(Signal::SIGCONT).unwrap();
    wait_for_log(&zombie, "chunk fenced", Duration::from_secs(30)).await;

    let watched = watch_to_completion(&coordinator, &id).await;
    assert!(watched.contains("OUTCOME_COMPLETED"), "{watched}");
    let status = shoal_cli(&coordinator.url, &["status", &id, "--output", "json"]).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["metadata"]["ranges_repaired"], "0",
        "nothing needed repair: the fence, not the checksum, stopped the zombie: {status}"
    );
    assert_migrated_exactly(&database, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reports_are_refused_over_grpc() {
    let (database, expected) = seeded("stale_reports", 5_000).await;
    let (coordinator, env) = fleet("stale_reports", &database, "").await;
    let id = submit(&coordinator, "1").await;
    let mut work = coordinator.work_client().await.unwrap();
    let task = work
        .acquire_task(v1::AcquireTaskRequest {
            worker_id: "probe".to_owned(),
            wait: Some(prost_types::Duration {
                seconds: 10,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .expect("a task is offered");
    assert!(task.task_id.starts_with(&id));
    let complete = |worker: &str, epoch: u64| v1::CompleteTaskRequest {
        worker_id: worker.to_owned(),
        task_id: task.task_id.clone(),
        lease_epoch: epoch,
        rows: 1,
        ..Default::default()
    };
    let stale = work
        .complete_task(complete("probe", task.lease_epoch + 1))
        .await
        .unwrap_err();
    assert_eq!(
        stale.code(),
        tonic::Code::FailedPrecondition,
        "a stale epoch is refused"
    );
    let stranger = work
        .complete_task(complete("stranger", task.lease_epoch))
        .await
        .unwrap_err();
    assert_eq!(
        stranger.code(),
        tonic::Code::FailedPrecondition,
        "another worker's report is refused"
    );
    // The holder hands it back; a real worker finishes the migration.
    work.fail_task(v1::FailTaskRequest {
        worker_id: "probe".to_owned(),
        task_id: task.task_id.clone(),
        lease_epoch: task.lease_epoch,
        error: "probe".to_owned(),
        retryable: true,
    })
    .await
    .unwrap();
    let late = work
        .complete_task(complete("probe", task.lease_epoch))
        .await
        .unwrap_err();
    assert_eq!(
        late.code(),
        tonic::Code::NotFound,
        "a returned task takes no more reports"
    );
    let _worker = start_worker("worker", &coordinator.url, 2, &env).unwrap();
    let watched = watch_to_completion(&coordinator, &id).await;
    assert!(watched.contains("OUTCOME_COMPLETED"), "{watched}");
    assert_migrated_exactly(&database, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusing_connections_for_seconds_is_waited_out() {
    // A private server: the fault is server-wide.
    let dir = tempfile::tempdir().unwrap();
    let server = shoal_tests::mariadb::MariaDb::start(&dir.path().join("server")).unwrap();
    let (database, ledger) = seeded_on(&server, "refusing", 100_000).await;
    // shoal under an account with only the grants it needs: accounts with SUPER or CONNECTION
    // ADMIN are never refused for `max_connections`.
    server
        .info
        .root_sql(
            "CREATE USER 'limited'@'127.0.0.1' IDENTIFIED BY 'limited-pw'; \
             GRANT REPLICATION SLAVE, BINLOG MONITOR, PROCESS ON *.* TO 'limited'@'127.0.0.1'; \
             GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, LOCK TABLES \
             ON `refusing`.* TO 'limited'@'127.0.0.1'",
        )
        .unwrap();
    let limited = TestDatabase {
        name: database.name.clone(),
        dsn: format!(
            "mysql://limited:limited-pw@127.0.0.1:{}/refusing",
            server.info.port
        ),
    };
    let writer = start_writer(&database, ledger, 98).await;
    let mut run = scenario::shoal_run(
        &limited,
        ALTER,
        &["--chunk-rows", "500", "--target-chunk-time", "0"],
        "copy.server_sleep=sleep(20)",
    );
    wait_for_shadow_rows(&database, 5_000).await;
    let injected = shoal_tests::chaos::refuse_connections(&database, Duration::from_secs(3))
        .await
        .unwrap();
    let log = expect_success(&mut run).await;
    assert!(
        log.contains("the server refuses new connections; retrying"),
        "the fault hit shoal ({injected}):\n{log}"
    );
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
}

/// A fence bump whose connection is killed before its statement ran. Found by `make chaos`
/// (seed 10): the campaign listed the connections writing the shadow table and killed them one
/// by one; the owner's flush connection had gone back to the pool in between, the owner took it
/// for a fence bump (a worker's copy had just been killed, so its chunk came back), and the
/// `KILL` landed there: "connection closed" failed the migration. The bump is now retried on a
/// fresh connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_bump_whose_connection_is_killed_is_retried() {
    let (database, ledger) = seeded("fence_bump_killed", 30_000).await;
    let writer = start_writer(&database, ledger, 96).await;
    // The first fence bump holds its connection 1.5 s before its statement.
    let mut run = scenario::shoal_run(
        &database,
        ALTER,
        &["--chunk-rows", "500", "--target-chunk-time", "0"],
        "copy.server_sleep=sleep(200);fence.bump=1*sleep(1500)",
    );
    wait_for_shadow_rows(&database, 2_000).await;
    // Kill a copy (one sleeping in its transaction): its chunk comes back and the owner bumps
    // its fence.
    let mut admin = database.connect().await.unwrap();
    let (copy, _) = wait::until(
        "a copy sleeping in its transaction",
        Duration::from_secs(30),
        Duration::from_millis(10),
        || async {
            let mut connection = database.connect().await.ok()?;
            connection
                .exec_first::<u64, _, _>(
                    format!(
                        "SELECT ID FROM {} WHERE DB = ? AND INFO LIKE 'SELECT SLEEP(%'",
                        scenario::processlist()
                    ),
                    (&database.name,),
                )
                .await
                .ok()
                .flatten()
        },
    )
    .await
    .unwrap();
    admin.query_drop(format!("KILL {copy}")).await.unwrap();
    kill_connection_at(&run, &mut admin, "fence.bump").await;
    let log = expect_success(&mut run).await;
    assert!(
        log.contains("fence bump lost its connection; retrying"),
        "the bump's connection was lost and replaced:\n{log}"
    );
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
}

/// Waits until `failpoint` (which names its connection in its context, `connection=<id>`) is
/// hit, and kills that connection.
async fn kill_connection_at(run: &ShoalProcess, admin: &mut mysql_async::Conn, failpoint: &str) {
    wait_for_log(
        run,
        &format!("failpoint=\"{failpoint}\""),
        Duration::from_secs(30),
    )
    .await;
    let log = run.logs();
    let id: u64 = log
        .split(&format!("failpoint=\"{failpoint}\" context=\"connection="))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("{failpoint} names its connection:\n{log}"));
    admin.query_drop(format!("KILL {id}")).await.unwrap();
}

/// The owner's copy loop plans chunks, inserts their fence rows and reads binlog positions on one
/// long-lived connection. Killed between two of those statements (an operator, pt-kill, the
/// campaign's refused-connections fault), it failed the migration ("connection closed", seen in
/// `faults::a_server_refusing_connections_…`); the statement now runs again on a fresh
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_loops_connection_killed_between_statements_is_replaced() {
    let (database, ledger) = seeded("copy_loop_killed", 30_000).await;
    let writer = start_writer(&database, ledger, 95).await;
    // The owner holds its copy-loop connection 1.5 s before planning the first chunk (and
    // inserting its fence row, the first statement on it when the key space is planned by
    // arithmetic).
    let mut run = scenario::shoal_run(
        &database,
        ALTER,
        &["--chunk-rows", "500", "--target-chunk-time", "0"],
        "copy.server_sleep=sleep(100);copy.plan=1*sleep(1500)",
    );
    let mut admin = database.connect().await.unwrap();
    kill_connection_at(&run, &mut admin, "copy.plan").await;
    let log = expect_success(&mut run).await;
    assert!(
        log.contains("connection lost; running it again on a fresh one"),
        "the copy loop's connection was lost and replaced:\n{log}"
    );
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
}

/// The deferred indexes' build killed (an operator, pt-kill, a restarting server's proxy): the
/// server rolls the build back, and the owner builds again on a fresh connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_builds_connection_killed_is_replaced() {
    let (database, ledger) = seeded("index_build_killed", 30_000).await;
    let writer = start_writer(&database, ledger, 96).await;
    let mut run = scenario::shoal_run(&database, ALTER, &[], "indexes.build=1*sleep(1500)");
    let mut admin = database.connect().await.unwrap();
    kill_connection_at(&run, &mut admin, "indexes.build").await;
    let log = expect_success(&mut run).await;
    assert!(
        log.contains("the index build's connection was lost; building again"),
        "{log}"
    );
    assert!(log.contains("added=2"), "{log}");
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
}

/// The advisory lock's connection idles for the whole migration, so an operator's (or
/// pt-kill's) `KILL` of idle connections takes the lock with it, and another migration of the
/// table could then start. The owner checks the lock before each checkpoint and takes it again
/// on a fresh connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advisory_lock_lost_to_a_kill_is_taken_again() {
    let (database, ledger) = seeded("lock_killed", 30_000).await;
    let writer = start_writer(&database, ledger, 94).await;
    let mut run = scenario::shoal_run(
        &database,
        ALTER,
        &[
            "--chunk-rows",
            "500",
            "--target-chunk-time",
            "0",
            "--checkpoint-interval",
            "1s",
        ],
        "copy.server_sleep=sleep(100)",
    );
    let name = shoal_common::names::advisory_lock(&database.name, "orders");
    let holder = |database: TestDatabase, name: String| async move {
        let mut connection = database.connect().await.ok()?;
        connection
            .exec_first::<Option<u64>, _, _>("SELECT IS_USED_LOCK(?)", (name,))
            .await
            .ok()
            .flatten()
            .flatten()
    };
    let (first, _) = wait::until(
        "shoal to hold the advisory lock",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || holder(database.clone(), name.clone()),
    )
    .await
    .unwrap();
    wait_for_shadow_rows(&database, 2_000).await;
    let mut admin = database.connect().await.unwrap();
    admin.query_drop(format!("KILL {first}")).await.unwrap();
    let (again, _) = wait::until(
        "the advisory lock held again",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            let (database, name) = (database.clone(), name.clone());
            async move {
                holder(database, name)
                    .await
                    .filter(|connection| *connection != first)
            }
        },
    )
    .await
    .unwrap();
    assert_ne!(again, first);
    let log = expect_success(&mut run).await;
    assert!(
        log.contains("advisory lock taken again"),
        "the owner took the lock again:\n{log}"
    );
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
}

/// An operator (or pt-kill with an idle time) kills shoal's connections that have slept a
/// second or more, several times during the copy and while the owner waits before the
/// checksum, under the writer: the pool notices closed idle connections when they are taken and
/// opens others, the advisory lock goes with its connection (taken again before the next
/// checkpoint), and the migration completes exactly. (The wait before the checksum guarantees
/// idle connections to kill: a copy on a fast run once ended before any had slept a second.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_killed_by_an_operator_are_survived() {
    let (database, ledger) = seeded("idle_killed", 100_000).await;
    let writer = start_writer(&database, ledger, 97).await;
    let mut run = scenario::shoal_run(
        &database,
        ALTER,
        &["--chunk-rows", "500", "--target-chunk-time", "0"],
        "copy.server_sleep=sleep(20);checksum.before=1*sleep(4000)",
    );
    wait_for_shadow_rows(&database, 5_000).await;
    let mut killed = 0;
    let writer_connection = writer.connection_id;
    // Up to five rounds, each as soon as a connection has slept a second, while shoal runs.
    let last_seen = std::sync::Mutex::new(Vec::new());
    // One session probes and kills for the whole test, never itself (an earlier version killed
    // its own separate killing session when that one had idled a second, and then nothing).
    let probe = tokio::sync::Mutex::new(database.connect().await.unwrap());
    for _ in 0..5 {
        let (ids, _) = wait::until(
            "a connection idle for a second, or the run's end",
            Duration::from_secs(60),
            Duration::from_millis(50),
            || {
                let ended = run.try_exit_status().ok().flatten().is_some();
                let (database, last_seen, probe) = (&database, &last_seen, &probe);
                async move {
                    if ended {
                        return Some(Vec::new());
                    }
                    let mut connection = probe.lock().await;
                    let sessions: Vec<(u64, String, Option<u64>)> = connection
                        .exec(
                            format!(
                                "SELECT ID, COMMAND, TIME FROM {} WHERE DB = ? \
                                 AND ID NOT IN (CONNECTION_ID(), ?)",
                                scenario::processlist()
                            ),
                            (&database.name, writer_connection),
                        )
                        .await
                        .ok()?;
                    let ids: Vec<u64> = sessions
                        .iter()
                        .filter(|(_, command, time)| command == "Sleep" && time.unwrap_or(0) >= 1)
                        .map(|(id, _, _)| *id)
                        .collect();
                    *last_seen.lock().unwrap() = sessions;
                    (!ids.is_empty()).then_some(ids)
                }
            },
        )
        .await
        .unwrap();
        if ids.is_empty() {
            break;
        }
        let mut connection = probe.lock().await;
        for id in ids {
            if connection.query_drop(format!("KILL {id}")).await.is_ok() {
                killed += 1;
            }
        }
    }
    let log = expect_success(&mut run).await;
    assert!(
        killed > 0,
        "no idle connection was found to kill; the last session list: {:?}\n{log}",
        last_seen.lock().unwrap()
    );
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
}
