//! Throttling (design "Throttling"): the copy holds while a real replica's SQL thread is
//! stopped (lag measured from shoal's heartbeat row) and while a long transaction keeps the
//! InnoDB history list long, and while the primary's commits are slow (its latency probe waits on
//! a row lock), and resumes when the cause goes away; the table ends exact under the writer. The
//! lag and history tests run their own private servers: both conditions are server-wide.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use mysql_async::prelude::Queryable;
use shoal_tests::mariadb::MariaDb;
use shoal_tests::processes::ShoalProcess;
use shoal_tests::scenario::{
    ALTER, assert_migrated_exactly, expect_success, finish_writer, seeded_on, shoal_run,
    start_writer, wait_for_log, wait_for_shadow_rows,
};
use shoal_tests::servers::TestDatabase;
use shoal_tests::{wait, writer};

/// One `shoal run` progress line: rows copied, chunks in flight, and the throttle's reason.
#[derive(Debug, Clone, PartialEq)]
struct ProgressLine {
    rows_copied: u64,
    in_flight: u64,
    throttled: Option<String>,
}

/// Every progress line `shoal run` printed so far, in order.
fn progress_lines(run: &ShoalProcess) -> Vec<ProgressLine> {
    run.logs()
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("shoal: CopyRows rows ")?;
            let rows_copied = rest.split('/').next()?.parse().ok()?;
            let in_flight = rest
                .split(" done ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()?;
            let throttled = rest
                .split_once(", throttled: ")
                .map(|(_, reason)| reason.to_owned());
            Some(ProgressLine {
                rows_copied,
                in_flight,
                throttled,
            })
        })
        .collect()
}

/// Waits until the copy is held for a reason containing `cause` with no chunk in flight, then
/// watches three more progress lines (six seconds): the copy must not advance while held.
/// Returns the rows copied while held.
async fn assert_held(run: &ShoalProcess, cause: &str) -> u64 {
    assert_held_after(run, cause, 0).await
}

/// [`assert_held`], looking only at the progress lines after the first `skip` (a hold before the
/// cause was set up, e.g. the latency gate reacting to a busy shared server, does not count).
async fn assert_held_after(run: &ShoalProcess, cause: &str, skip: usize) -> u64 {
    let held = |line: &ProgressLine| {
        line.in_flight == 0
            && line
                .throttled
                .as_deref()
                .is_some_and(|reason| reason.contains(cause))
    };
    let (first, _) = wait::until(
        "a progress line showing the copy held with no chunk in flight",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let lines = progress_lines(run);
            lines
                .iter()
                .skip(skip)
                .position(held)
                .map(|index| (skip + index, lines[skip + index].rows_copied))
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}; log:\n{}", run.logs()));
    let (index, rows) = first;
    wait::until(
        "three more progress lines",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { (progress_lines(run).len() > index + 3).then_some(()) },
    )
    .await
    .unwrap();
    let lines = progress_lines(run);
    for line in &lines[index..index + 4] {
        assert!(
            held(line),
            "the copy stayed held: {line:?}; log:\n{}",
            run.logs()
        );
        assert_eq!(
            line.rows_copied,
            rows,
            "the copy did not advance while held; log:\n{}",
            run.logs()
        );
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_holds_while_a_replica_stops_applying_and_resumes_when_it_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let primary = MariaDb::start(&dir.path().join("primary")).unwrap();
    let replica = MariaDb::start_replica_of(&dir.path().join("replica"), &primary.info).unwrap();
    let (database, ledger) = seeded_on(&primary, "lagged", 40_000).await;
    let writer = start_writer(&database, ledger, 71).await;
    let replica_dsn = replica.info.dsn("lagged");
    // 200 chunks of 200 keys, each 100 ms on the server: the copy lasts about ten seconds.
    let mut run = shoal_run(
        &database,
        ALTER,
        &[
            "--replica-dsn",
            &replica_dsn,
            "--max-replica-lag",
            "2s",
            "--chunk-rows",
            "200",
            "--target-chunk-time",
            "0",
        ],
        "copy.server_sleep=sleep(100)",
    );
    wait_for_shadow_rows(&database, 1_000).await;
    replica.info.root_sql("STOP SLAVE SQL_THREAD").unwrap();
    let held_at = assert_held(&run, "lags").await;
    assert!(held_at < 40_000, "the copy was held before it ended");
    assert!(
        !run.logs().contains("Seconds_Behind_Master"),
        "lag comes from the heartbeat"
    );
    replica.info.root_sql("START SLAVE SQL_THREAD").unwrap();
    let log = expect_success(&mut run).await;
    assert!(log.contains("copy no longer throttled"), "log:\n{log}");
    assert!(
        !log.contains(shoal_tests::mariadb::TEST_PASSWORD),
        "the replica's password is never logged"
    );
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
    // The replica applied the whole migration, cut-over included.
    let replica_database = TestDatabase {
        name: "lagged".to_owned(),
        dsn: replica_dsn,
    };
    let converged = wait::until(
        "the replica to converge",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let mut connection = replica_database.connect().await.ok()?;
            let actual = writer::read_table(&mut connection, "orders").await.ok()?;
            writer::differences(&expected, &actual)
                .is_empty()
                .then_some(())
        },
    )
    .await;
    assert!(converged.is_ok(), "{converged:?}");
}

/// The primary's InnoDB history list length, as shoal reads it.
async fn history_list_length(connection: &mut mysql_async::Conn) -> u64 {
    connection
        .query_first(
            "SELECT `COUNT` FROM information_schema.INNODB_METRICS \
             WHERE NAME = 'trx_rseg_history_len'",
        )
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_holds_while_a_read_view_keeps_the_history_list_long() {
    let dir = tempfile::tempdir().unwrap();
    let server = MariaDb::start(&dir.path().join("server")).unwrap();
    let (database, ledger) = seeded_on(&server, "history", 20_000).await;
    let mut connection = database.connect().await.unwrap();
    connection
        .query_drop("CREATE TABLE churn (id INT PRIMARY KEY, v INT NOT NULL); INSERT INTO churn VALUES (1, 0)")
        .await
        .unwrap();
    // A long transaction holding a read view: purge cannot remove anything committed after it.
    let mut long = database.connect().await.unwrap();
    long.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .unwrap();
    let _: Option<u64> = long.query_first("SELECT v FROM churn").await.unwrap();
    for _ in 0..3_000 {
        connection
            .query_drop("UPDATE churn SET v = v + 1 WHERE id = 1")
            .await
            .unwrap();
    }
    let length = history_list_length(&mut connection).await;
    assert!(length >= 3_000, "history list length {length}");
    let writer = start_writer(&database, ledger, 72).await;
    let mut run = shoal_run(&database, ALTER, &["--max-history-list-length", "1500"], "");
    wait_for_log(
        &run,
        "InnoDB history list length is",
        Duration::from_secs(60),
    )
    .await;
    let held_at = assert_held(&run, "history list length").await;
    assert_eq!(
        held_at, 0,
        "nothing was copied while the read view was open"
    );
    long.query_drop("COMMIT").await.unwrap();
    let log = expect_success(&mut run).await;
    assert!(log.contains("copy no longer throttled"), "log:\n{log}");
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_lag_stays_unknown_holds_the_copy_then_fails_it_cleanly() {
    let (database, ledger) = shoal_tests::scenario::seeded("unknown_lag", 5_000).await;
    let writer = start_writer(&database, ledger, 73).await;
    // Nothing listens there: the replica's lag cannot be read.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = format!("mysql://shoal:secret-replica-password@127.0.0.1:{port}/x");
    let mut run = shoal_run(
        &database,
        ALTER,
        &[
            "--replica-dsn",
            &unreachable,
            "--unknown-lag-abort-after",
            "3s",
        ],
        "",
    );
    let status = run.wait_exit(Duration::from_secs(120)).await.unwrap();
    let log = run.logs();
    assert!(!status.success(), "log:\n{log}");
    assert!(
        log.contains(&format!(
            "the lag of replica 127.0.0.1:{port} has been unknown for "
        )),
        "log:\n{log}"
    );
    assert!(
        !log.contains("secret-replica-password"),
        "the replica's password is never logged:\n{log}"
    );
    let held = progress_lines(&run);
    assert!(
        held.iter().all(|line| line.rows_copied == 0),
        "nothing was copied: {held:?}"
    );
    let (expected, _) = finish_writer(writer, 200).await;
    let mut connection = database.connect().await.unwrap();
    let actual = writer::read_table(&mut connection, "orders").await.unwrap();
    assert!(writer::differences(&expected, &actual).is_empty());
    assert_eq!(
        shoal_tests::scenario::tables(&mut connection, &database.name).await,
        ["orders"],
        "shoal's tables are removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_migration_shows_why_it_is_held_and_fails_when_lag_stays_unknown() {
    let (database, ledger) = shoal_tests::scenario::seeded("fleet_unknown_lag", 2_000).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = vec![
        ("SHOAL_TARGET_LOCAL", database.dsn.clone()),
        (
            "SHOAL_TARGET_GHOST",
            format!("mysql://shoal:secret-replica-password@127.0.0.1:{port}/x"),
        ),
    ];
    let coordinator =
        shoal_tests::scenario::start_fleet_coordinator("fleet_unknown_lag", env).await;
    let id = shoal_tests::scenario::submit(
        &coordinator.url,
        &[
            "--replica-target",
            "ghost",
            "--unknown-lag-abort-after",
            "4s",
        ],
    )
    .await;
    let (held, _) = wait::until(
        "the status to say why the copy is held",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            let status = coordinator.status(&id).await.ok()?;
            status.throttled.contains("lag unknown").then_some(status)
        },
    )
    .await
    .unwrap();
    assert!(
        held.throttled
            .contains(&format!("replica 127.0.0.1:{port}: lag unknown")),
        "{held:?}"
    );
    let (failed, _) = wait::until(
        "the migration to fail",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let status = coordinator.status(&id).await.ok()?;
            (status.outcome == shoal_proto::v1::Outcome::Failed as i32).then_some(status)
        },
    )
    .await
    .unwrap();
    assert!(
        failed.message.contains("has been unknown for"),
        "{failed:?}"
    );
    assert!(!format!("{failed:?}").contains("secret-replica-password"));
    assert!(
        !coordinator
            .process
            .logs()
            .contains("secret-replica-password"),
        "the replica's password is never logged"
    );
    let mut connection = database.connect().await.unwrap();
    let actual = writer::read_table(&mut connection, "orders").await.unwrap();
    assert!(writer::differences(&ledger, &actual).is_empty());
    assert_eq!(
        shoal_tests::scenario::tables(&mut connection, &database.name).await,
        ["orders"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_holds_while_probe_commits_are_slow_and_resumes_when_they_recover() {
    let (database, ledger) = shoal_tests::scenario::seeded("latency", 20_000).await;
    let mut connection = database.connect().await.unwrap();
    for bad in ["1", "0.5", "-2", "fast"] {
        let flag = format!("--max-latency-factor={bad}");
        let mut refused = shoal_run(&database, ALTER, &[&flag], "");
        let status = refused.wait_exit(Duration::from_secs(60)).await.unwrap();
        let log = refused.logs();
        assert!(!status.success(), "log:\n{log}");
        assert!(
            log.contains("must be 0 (off) or above 1") || log.contains("is not a number"),
            "{bad}: log:\n{log}"
        );
    }
    assert_eq!(
        shoal_tests::scenario::tables(&mut connection, &database.name).await,
        ["orders"],
        "a refused factor touched nothing"
    );
    let writer = start_writer(&database, ledger, 74).await;
    // 100 chunks of 200 keys, each 100 ms on the server: the copy lasts about ten seconds.
    let mut run = shoal_run(
        &database,
        ALTER,
        &[
            "--max-latency-factor",
            "3",
            "--chunk-rows",
            "200",
            "--target-chunk-time",
            "0",
        ],
        "copy.server_sleep=sleep(100)",
    );
    // Rows copied: the baseline was measured (the copy holds until it is).
    wait_for_shadow_rows(&database, 1_000).await;
    assert!(
        run.logs()
            .contains("measuring the primary's commit latency before copying"),
        "the copy waited for the baseline; log:\n{}",
        run.logs()
    );
    // The probe's row locked, as an application transaction could: each probe waits for it.
    // (On the shared server the gate may already hold now and then on other tests' load.)
    let before_lock = progress_lines(&run).len();
    let mut locker = database.connect().await.unwrap();
    locker.query_drop("START TRANSACTION").await.unwrap();
    let locked: Option<u64> = locker
        .query_first("SELECT sent_ms FROM `_orders_hb` WHERE id = 2 FOR UPDATE")
        .await
        .unwrap();
    assert!(locked.is_some(), "the probe wrote its row");
    let held_at = assert_held_after(&run, "probe commits take over", before_lock).await;
    assert!(held_at < 20_000, "the copy was held before it ended");
    locker.query_drop("COMMIT").await.unwrap();
    let log = expect_success(&mut run).await;
    assert!(log.contains("copy no longer throttled"), "log:\n{log}");
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
    assert_eq!(
        shoal_tests::scenario::tables(&mut connection, &database.name).await,
        ["orders"],
        "the probe's table is removed with shoal's others"
    );
}

/// `--nice-ratio R`: after each chunk no new one is handed out for R × its statement time. With
/// one slot the copy phase (from the status history) lasts at least R × the statement time of
/// every chunk but the last (the coordinator's own histogram sum); at R = 100 that is several
/// times what the copy takes without resting (whose round trips cost about 20 × the statements
/// here). The table ends exact under the writer, and a
/// ratio out of range is refused with the table untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nice_ratio_rests_after_each_chunk_in_proportion_to_its_time() {
    use shoal_proto::v1;
    let (database, ledger) = shoal_tests::scenario::seeded("nice_ratio", 10_000).await;
    let mut refused = shoal_run(&database, ALTER, &["--nice-ratio", "101"], "");
    let status = refused.wait_exit(Duration::from_secs(60)).await.unwrap();
    assert!(!status.success());
    assert!(
        refused
            .logs()
            .contains("the nice ratio must be from 0 (off) to 100"),
        "{}",
        refused.logs()
    );
    let writer = start_writer(&database, ledger, 41).await;
    let env = vec![("SHOAL_TARGET_LOCAL", database.dsn.clone())];
    let coordinator =
        shoal_tests::scenario::start_fleet_coordinator("nice_ratio", env.clone()).await;
    let _worker =
        shoal_tests::processes::start_worker("worker", &coordinator.url, 1, &env).unwrap();
    let id = shoal_tests::scenario::submit(
        &coordinator.url,
        &[
            "--threads",
            "1",
            "--target-chunk-time",
            "0",
            "--nice-ratio",
            "100",
        ],
    )
    .await;
    shoal_tests::scenario::watch_to_completion(&coordinator, &id).await;
    let status = coordinator.status(&id).await.unwrap();
    let entered = |state: v1::State| {
        status
            .last_transitions
            .iter()
            .find(|transition| transition.to == state as i32)
            .and_then(|transition| transition.at)
            .map(|at| at.seconds as f64 + f64::from(at.nanos) / 1e9)
            .unwrap_or_else(|| panic!("no transition to {state:?}: {status:?}"))
    };
    let copy_phase = entered(v1::State::ApplyChangeset) - entered(v1::State::CopyRows);
    let (_, metrics) = shoal_tests::processes::http_get(&coordinator.http_address, "/metrics")
        .await
        .unwrap();
    let sample = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|line| line.starts_with(name) && line.contains(&id))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {name} for {id}:\n{metrics}"))
    };
    let (sum, count) = (
        sample("shoal_chunk_duration_seconds_sum"),
        sample("shoal_chunk_duration_seconds_count"),
    );
    assert!(count >= 10.0, "{count} chunks");
    eprintln!("copy phase {copy_phase:.2} s; {count} chunks' statements {sum:.3} s");
    // The last chunk's rest delays nothing: 0.8 leaves room for it (chunks are all 1,000 keys).
    let rested_at_least = 100.0 * sum * 0.8;
    assert!(
        copy_phase >= rested_at_least,
        "the copy phase took {copy_phase:.2} s; {count} chunks' statements took {sum:.3} s"
    );
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
}
