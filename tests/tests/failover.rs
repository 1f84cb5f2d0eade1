//! Coordinator fail-over: an owner killed mid-copy, a deposed owner that wakes up, and Redis
//! losing everything. Two coordinators share a private Redis; the workers talk to the standby.
//! Every scenario runs under the writer and ends with an exact comparison.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use nix::sys::signal::Signal;
use shoal_proto::v1;
use shoal_tests::processes::{CoordinatorOptions, CoordinatorProcess, ShoalProcess, start_worker};
use shoal_tests::redis_server::RedisServer;
use shoal_tests::scenario::{
    assert_migrated_exactly, checkpoint, finish_writer, seeded, shadow_rows, shoal_cli,
    start_writer, submit, wait_for_checkpoint, wait_for_log, wait_for_shadow_rows,
    watch_to_completion,
};
use shoal_tests::servers::{self, TestDatabase};
use shoal_tests::wait;
use shoal_tests::writer::{Ledger, Writer};

/// Buffered copy in fixed 1,000-key chunks: with the workers' `copy.after_read` pause, the
/// scenarios below act while much of the table is still to copy (the adaptive sizer's slow
/// start would otherwise finish 60,000 rows in a few large chunks).
const MID_COPY: &[&str] = &["--copy-mode", "buffered", "--target-chunk-time", "0"];

/// Owner lease of the test coordinators; they renew it every third.
const OWNER_TTL: Duration = Duration::from_secs(3);

struct Fleet {
    database: TestDatabase,
    /// The fleet's Redis namespace.
    namespace: String,
    owner: CoordinatorProcess,
    standby: CoordinatorProcess,
    workers: Vec<ShoalProcess>,
}

/// Two coordinators on `redis_url` (the owner with `owner_failpoints`), two workers on the
/// standby with `worker_failpoints`, and the writer running.
async fn fleet(
    label: &str,
    rows: u64,
    redis_url: &str,
    owner_failpoints: &str,
    worker_failpoints: &str,
) -> (Fleet, Writer) {
    fleet_with(
        label,
        rows,
        redis_url,
        [owner_failpoints, "", worker_failpoints],
    )
    .await
}

/// [`fleet`] with failpoints for the owner, the standby and the workers.
async fn fleet_with(
    label: &str,
    rows: u64,
    redis_url: &str,
    [owner_failpoints, standby_failpoints, worker_failpoints]: [&str; 3],
) -> (Fleet, Writer) {
    let (database, ledger): (TestDatabase, Ledger) = seeded(label, rows).await;
    let namespace = servers::shared().redis_namespace(label);
    let env = vec![("SHOAL_TARGET_LOCAL", database.dsn.clone())];
    let options = |failpoints: &str| {
        let mut env = env.clone();
        env.push(("SHOAL_FAILPOINTS", failpoints.to_owned()));
        CoordinatorOptions {
            redis_url: Some(redis_url.to_owned()),
            namespace: namespace.clone(),
            worker_ttl: Duration::from_secs(3),
            env,
            args: [
                "--owner-ttl",
                "3s",
                "--checkpoint-interval",
                "1s",
                "--lease-ttl",
                "3s",
            ]
            .iter()
            .map(|arg| (*arg).to_owned())
            .collect(),
        }
    };
    let owner = CoordinatorProcess::start("coordinator-a", &options(owner_failpoints))
        .await
        .unwrap();
    let standby = CoordinatorProcess::start("coordinator-b", &options(standby_failpoints))
        .await
        .unwrap();
    let mut worker_env = env.clone();
    worker_env.push(("SHOAL_FAILPOINTS", worker_failpoints.to_owned()));
    let workers = vec![
        start_worker("worker-1", &standby.url, 2, &worker_env).unwrap(),
        start_worker("worker-2", &standby.url, 2, &worker_env).unwrap(),
    ];
    let writer = start_writer(&database, ledger, 41).await;
    (
        Fleet {
            namespace: namespace.clone(),
            database,
            owner,
            standby,
            workers,
        },
        writer,
    )
}

/// SIGKILLs the owner coordinator and waits for it to be gone.
async fn kill_owner(fleet: &mut Fleet) {
    fleet.owner.process.signal(Signal::SIGKILL).unwrap();
    fleet
        .owner
        .process
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap();
}

async fn try_status(coordinator: &CoordinatorProcess, id: &str) -> Option<v1::MigrationStatus> {
    coordinator.status(id).await.ok()
}

async fn status(coordinator: &CoordinatorProcess, id: &str) -> v1::MigrationStatus {
    try_status(coordinator, id).await.unwrap()
}

/// Follows `id` on the standby to its end, checks that it completed, stops the writer and
/// compares the table with the writer's ledger; returns the final status.
async fn completes_exactly(fleet: &Fleet, id: &str, writer: Writer) -> v1::MigrationStatus {
    watch_to_completion(&fleet.standby, id).await;
    let done = status(&fleet.standby, id).await;
    assert_eq!(done.outcome, v1::Outcome::Completed as i32, "{done:?}");
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&fleet.database, &expected).await;
    done
}

/// Waits until the standby answers for `id` again (after Redis lost everything), then follows
/// it to the end.
async fn watch_on(coordinator: &CoordinatorProcess, id: &str) {
    wait::until(
        "the migration's status to be published again",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { try_status(coordinator, id).await },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}; log:\n{}", coordinator.process.logs()));
    watch_to_completion(coordinator, id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_a_killed_owner_without_recopying_drained_chunks() {
    let redis = servers::shared().redis.url();
    let (mut fleet, writer) = fleet(
        "failover_kill",
        60_000,
        &redis,
        "",
        "copy.after_read=sleep(50)",
    )
    .await;
    // Fixed-size chunks, so that the chunks left to plan can be counted from the checkpoint.
    let id = submit(
        &fleet.owner.url,
        &[
            "--copy-mode",
            "buffered",
            "--threads",
            "4",
            "--target-chunk-time",
            "0",
        ],
    )
    .await;
    wait_for_checkpoint(
        &fleet.database,
        "a periodic checkpoint past chunk 10",
        |detail| {
            detail
                .plan
                .as_ref()
                .is_some_and(|plan| plan.watermark.0 >= 10)
        },
    )
    .await;
    fleet.owner.process.signal(Signal::SIGKILL).unwrap();
    let killed_at = Instant::now();
    fleet
        .owner
        .process
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap();
    let saved = checkpoint(&fleet.database).await.unwrap();
    let plan = saved.plan.clone().unwrap();
    let undrained = plan.chunks.iter().filter(|chunk| !chunk.2).count() as u64;
    let mut rest = plan.planner.clone();
    let mut unplanned = 0;
    // An integer key: the planner never asks for a probe.
    while let shoal_common::chunk::Step::Chunk(..) = rest.next(saved.spec.chunk_rows) {
        unplanned += 1;
    }

    wait_for_log(
        &fleet.standby.process,
        "resuming from the checkpoint",
        Duration::from_secs(30),
    )
    .await;
    let took_over = killed_at.elapsed();
    // The lease expires at most one TTL after the last renewal; the standby looks every third
    // of it. One second more for the resume's own steps on a loaded machine.
    let bound = OWNER_TTL + OWNER_TTL / 3 + Duration::from_secs(1);
    assert!(
        took_over <= bound,
        "the standby resumed {took_over:?} after the kill (bound {bound:?})"
    );
    eprintln!("takeover after {took_over:?}");

    let done = completes_exactly(&fleet, &id, writer).await;
    assert_eq!(done.metadata["resumed_at"], "CopyRows");
    assert_eq!(done.metadata["chunks_recopied"], undrained.to_string());
    assert_eq!(
        done.progress.as_ref().unwrap().chunks_done,
        undrained + unplanned,
        "only the chunks not drained at the checkpoint were copied again"
    );
}

/// Seen once in CI (the ignored Redis-restart test): a takeover prepared inside the standby's
/// ownership round, which renews no lease meanwhile; on a loaded machine its preflight outlasted
/// the lease it had just won. Here the standby's takeover stops for longer than the owner TTL
/// (failpoint `owners.take_over`) after it won the lease: the rounds beside it keep renewing
/// that lease, so the migration is taken over once and never deposed. Before the fix the
/// standby lost the lease to its own stall and took the migration over a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_slower_than_the_owner_ttl_keeps_its_lease() {
    let redis = servers::shared().redis.url();
    let stall = OWNER_TTL * 2;
    let (mut fleet, writer) = fleet_with(
        "slow_takeover",
        30_000,
        &redis,
        [
            "",
            &format!("owners.take_over=1*sleep({})", stall.as_millis()),
            "copy.after_read=sleep(50)",
        ],
    )
    .await;
    let id = submit(&fleet.owner.url, MID_COPY).await;
    wait_for_checkpoint(&fleet.database, "a checkpoint with a plan", |detail| {
        detail.plan.is_some()
    })
    .await;
    kill_owner(&mut fleet).await;
    wait_for_log(
        &fleet.standby.process,
        "failpoint hit",
        Duration::from_secs(30),
    )
    .await;
    completes_exactly(&fleet, &id, writer).await;
    let log = fleet.standby.process.logs();
    assert_eq!(
        log.matches("taking the migration over").count(),
        1,
        "one takeover:\n{log}"
    );
    assert!(
        !log.contains("the owner lease was lost"),
        "the lease was kept while the takeover stalled:\n{log}"
    );
}

/// The owner stops at `failpoint`, is SIGSTOPped past its lease, the standby takes over, and the
/// owner is woken: its next durable write must be refused, and it logs each of `expected`.
/// The owner stops (SIGSTOP) inside `failpoint`, whose sleep is shorter than a takeover: when
/// it is woken after the standby raised the epoch, its write runs at once, while the standby
/// is still migrating. (With a sleep longer than the takeover, a fast standby could finish
/// and drop the tables before the stale write was even tried.)
async fn deposed_owner_is_fenced(label: &str, failpoint: &str, expected: &[&str]) {
    let redis = servers::shared().redis.url();
    let (fleet, writer) = fleet(
        label,
        30_000,
        &redis,
        failpoint,
        "copy.after_read=sleep(20)",
    )
    .await;
    let id = submit(&fleet.owner.url, MID_COPY).await;
    wait_for_log(
        &fleet.owner.process,
        "failpoint hit",
        Duration::from_secs(120),
    )
    .await;
    fleet.owner.process.signal(Signal::SIGSTOP).unwrap();
    wait_for_log(
        &fleet.standby.process,
        "owner epoch raised",
        Duration::from_secs(30),
    )
    .await;
    fleet.owner.process.signal(Signal::SIGCONT).unwrap();
    wait_for_log(
        &fleet.owner.process,
        "deposed; stopping without cleanup",
        Duration::from_secs(30),
    )
    .await;
    let logs = fleet.owner.process.logs();
    for line in expected {
        assert!(
            logs.contains(line),
            "the stale write was refused by the MySQL fence ({line:?}):\n{logs}"
        );
    }
    watch_to_completion(&fleet.standby, &id).await;
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&fleet.database, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_owner_cannot_flush_changes() {
    deposed_owner_is_fenced(
        "deposed_flush",
        "flush.before=1*sleep(1500)",
        &["flush refused: the checkpoint's owner epoch is 2, this owner holds 1"],
    )
    .await;
}

/// Found by the fault campaign (`make chaos`): an owner stopped inside its fenced flush has that
/// transaction killed by the standby raising the epoch; woken, it saw a MySQL error, took it for
/// a failure and cleaned up, dropping the tables the new owner was working on. Now the killed
/// flush is tried again on a fresh connection, where the fence refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_owner_killed_inside_its_flush_cleans_nothing_up() {
    deposed_owner_is_fenced(
        "deposed_in_flush",
        "flush.locked=1*sleep(1500)",
        &[
            "flush connection lost; reconnecting",
            "flush refused: the checkpoint's owner epoch is 2, this owner holds 1",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_owner_cannot_write_a_checkpoint() {
    deposed_owner_is_fenced(
        "deposed_checkpoint",
        "checkpoint.before_write=1*sleep(1500)",
        &["checkpoint write refused: the checkpoint's owner epoch is Some(2), this owner holds 1"],
    )
    .await;
}

async fn flushall(redis: &RedisServer) {
    let client = redis::Client::open(redis.info.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("FLUSHALL")
        .query_async(&mut connection)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushall_while_paused_stays_paused_and_mid_copy_completes() {
    // A private Redis: FLUSHALL must not touch other tests' keys.
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path()).unwrap();
    let (fleet, writer) = fleet(
        "flushall",
        60_000,
        &redis.info.url(),
        "",
        "copy.after_read=sleep(50)",
    )
    .await;
    let id = submit(&fleet.owner.url, MID_COPY).await;
    wait_for_shadow_rows(&fleet.database, 3_000).await;
    shoal_cli(&fleet.standby.url, &["pause", &id]).await;
    wait_for_checkpoint(
        &fleet.database,
        "the pause to reach the checkpoint",
        |detail| detail.intents.paused,
    )
    .await;

    flushall(&redis).await;
    wait::until(
        "the migration to be rebuilt from its checkpoint",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let logs = format!(
                "{}{}",
                fleet.owner.process.logs(),
                fleet.standby.process.logs()
            );
            logs.contains("re-registered from its checkpoint")
                .then_some(())
                .filter(|()| logs.matches("resuming from the checkpoint").count() >= 1)
        },
    )
    .await
    .unwrap();
    let resumed = wait::until(
        "the resumed migration to report paused",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let current = try_status(&fleet.standby, &id).await?;
            (current.paused && current.metadata.contains_key("resumed_at")).then_some(current)
        },
    )
    .await
    .unwrap();
    assert_eq!(resumed.0.outcome, v1::Outcome::Running as i32);
    // Paused: no chunk is handed out, not even those the resumed owner must copy again. The
    // published status lags its owner by at most one round (1 s).
    let chunks_done = |status: &v1::MigrationStatus| status.progress.as_ref().unwrap().chunks_done;
    let first = chunks_done(&status(&fleet.standby, &id).await);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let second = status(&fleet.standby, &id).await;
    assert!(second.paused, "{second:?}");
    assert_eq!(chunks_done(&second), first, "no chunk copied while paused");
    let before = shadow_rows(&fleet.database).await;

    shoal_cli(&fleet.standby.url, &["resume", &id]).await;
    // Mid-copy, unpaused: Redis loses everything again.
    wait::until(
        "the copy to move on",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || async { (shadow_rows(&fleet.database).await >= before + 3_000).then_some(()) },
    )
    .await
    .unwrap();
    flushall(&redis).await;
    // Until the owner notices the loss and publishes again, no coordinator knows the id.
    wait::until(
        "the migration to be known again after FLUSHALL",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || try_status(&fleet.standby, &id),
    )
    .await
    .unwrap();
    watch_on(&fleet.standby, &id).await;
    let done = status(&fleet.standby, &id).await;
    assert_eq!(done.outcome, v1::Outcome::Completed as i32, "{done:?}");
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&fleet.database, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushall_with_the_owner_killed_completes_on_the_standby() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path()).unwrap();
    let (mut fleet, writer) = fleet(
        "flushall_kill",
        60_000,
        &redis.info.url(),
        "",
        "copy.after_read=sleep(50)",
    )
    .await;
    let id = submit(&fleet.owner.url, MID_COPY).await;
    wait_for_checkpoint(
        &fleet.database,
        "a periodic checkpoint with a plan",
        |detail| detail.plan.is_some(),
    )
    .await;
    fleet.owner.process.signal(Signal::SIGKILL).unwrap();
    flushall(&redis).await;
    fleet
        .owner
        .process
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap();
    watch_on(&fleet.standby, &id).await;
    let done = status(&fleet.standby, &id).await;
    assert_eq!(done.outcome, v1::Outcome::Completed as i32, "{done:?}");
    assert!(
        fleet
            .standby
            .process
            .logs()
            .contains("re-registered from its checkpoint"),
        "{}",
        fleet.standby.process.logs()
    );
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&fleet.database, &expected).await;
}

/// Kills the owner while it is held at cut-over step `step` and expects the standby to take
/// over, say `found` in its log (the catalogue's verdict) and complete exactly.
async fn owner_killed_at(label: &str, step: &str, found: &str) {
    let redis = servers::shared().redis.url();
    let (mut fleet, writer) = fleet(
        label,
        20_000,
        &redis,
        &format!("{step}=1*sleep(120000)"),
        "",
    )
    .await;
    let id = submit(&fleet.owner.url, &[]).await;
    wait_for_log(
        &fleet.owner.process,
        "failpoint hit",
        Duration::from_secs(120),
    )
    .await;
    kill_owner(&mut fleet).await;
    wait_for_log(&fleet.standby.process, found, Duration::from_secs(30)).await;
    completes_exactly(&fleet, &id, writer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_killed_holding_the_cut_over_lock_is_resumed_by_the_standby() {
    owner_killed_at(
        "failover_locked",
        "cutover.locked",
        "the cut-over had begun but not renamed: resuming",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_killed_with_the_swap_queued_is_closed_by_the_standby_two_connections() {
    owner_killed_at(
        "failover_queued",
        "cutover.queued",
        "the binlog shows no write to the original after the final flush",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_killed_right_after_the_rename_is_closed_by_the_standby() {
    owner_killed_at(
        "failover_cutover",
        "cutover.after_rename",
        "the binlog shows no write to the original after the final flush",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_killed_while_closing_is_closed_by_the_standby() {
    owner_killed_at(
        "failover_closing",
        "close.dropped",
        "the cut-over had renamed: closing",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_migration_to_the_standby_before_the_owner_ttl() {
    let redis = servers::shared().redis.url();
    let (mut fleet, writer) = fleet(
        "failover_sigterm",
        60_000,
        &redis,
        "",
        "copy.after_read=sleep(50)",
    )
    .await;
    let id = submit(&fleet.owner.url, MID_COPY).await;
    wait_for_shadow_rows(&fleet.database, 5_000).await;
    fleet.owner.process.signal(Signal::SIGTERM).unwrap();
    let stopped_at = Instant::now();
    let exit = fleet
        .owner
        .process
        .wait_exit(Duration::from_secs(30))
        .await
        .unwrap();
    assert!(exit.success(), "{}", fleet.owner.process.logs());
    assert!(
        fleet
            .owner
            .process
            .logs()
            .contains("checkpoint written on stop"),
        "{}",
        fleet.owner.process.logs()
    );
    wait_for_log(
        &fleet.standby.process,
        "resuming from the checkpoint",
        Duration::from_secs(30),
    )
    .await;
    let handed_over = stopped_at.elapsed();
    eprintln!("handed over after {handed_over:?}");
    // The lease was given back: the standby's next round (every TTL/3) takes it, well before
    // the TTL a killed owner would leave behind.
    assert!(
        handed_over < OWNER_TTL,
        "the standby resumed {handed_over:?} after SIGTERM (owner TTL {OWNER_TTL:?})"
    );
    completes_exactly(&fleet, &id, writer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_given_sigterm_mid_chunk_kills_its_query_and_releases_the_lease() {
    let redis = servers::shared().redis.url();
    // Each worker's first chunk stalls inside its fenced transaction (`DO SLEEP(8)`).
    let (mut fleet, writer) = fleet(
        "worker_drain",
        30_000,
        &redis,
        "",
        "copy.server_sleep=1*sleep(8000)",
    )
    .await;
    let id = submit(&fleet.owner.url, &[]).await;
    let worker = &fleet.workers[0];
    wait_for_log(worker, "failpoint hit", Duration::from_secs(60)).await;
    let logs = worker.logs();
    let chunk = logs
        .lines()
        .find(|line| line.contains("failpoint hit"))
        .and_then(|line| line.split("chunk=").nth(1))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap()
        .to_owned();
    // The stall is running on the server.
    wait::until(
        "the stalled copy statement on the server",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            let mut connection = fleet.database.connect().await.ok()?;
            let running: Option<u64> = connection
                .exec_first(
                    format!(
                        "SELECT COUNT(*) FROM {} WHERE DB = ? AND INFO LIKE 'SELECT SLEEP(%'",
                        shoal_tests::scenario::processlist()
                    ),
                    (&fleet.database.name,),
                )
                .await
                .ok()?;
            (running > Some(0)).then_some(())
        },
    )
    .await
    .unwrap();
    worker.signal(Signal::SIGTERM).unwrap();
    let stopped_at = Instant::now();
    wait_for_log(worker, "stopping: task released", Duration::from_secs(10)).await;
    let released = stopped_at.elapsed();
    assert!(
        worker.logs().contains("stopping: killed the chunk's query"),
        "{}",
        worker.logs()
    );
    let relet = format!("task_id={id}-c{chunk}-e2");
    wait_for_log(&fleet.standby.process, &relet, Duration::from_secs(10)).await;
    let relet_after = stopped_at.elapsed();
    eprintln!("released after {released:?}, re-leased after {relet_after:?}");
    assert!(
        released < Duration::from_secs(1),
        "released after {released:?}"
    );
    assert!(
        relet_after < Duration::from_secs(3),
        "chunk {chunk} re-leased after {relet_after:?}, lease TTL 3 s"
    );
    let exit = fleet.workers[0]
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap();
    assert!(exit.success(), "{}", fleet.workers[0].logs());
    watch_to_completion(&fleet.standby, &id).await;
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&fleet.database, &expected).await;
}

/// Found by the fault campaign (`make chaos`): a Redis restart mid-copy (connections broken,
/// data gone) failed the migration with "redis unavailable". The owner now retries the live
/// store, and the fleet rebuilds the migration from its checkpoint.
///
/// It failed once in a clean-clone CI run under load (ignored since): the standby took the
/// migration over, and 0.5 s later one of its MySQL connections was closed ("Input/output
/// error: connection closed") and the migration failed (ErrCleanup; the table intact and
/// exact). The likeliest cause, found by reading the ownership loop: a takeover prepared inside
/// the round outlasted its fresh lease on the loaded machine, so the other coordinator took the
/// migration over beside it and killed its connections (see
/// `a_takeover_slower_than_the_owner_ttl_keeps_its_lease` and docs/reliability.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_copy_is_survived() {
    // A private Redis: the test restarts it.
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(dir.path()).unwrap();
    let (fleet, writer) = fleet(
        "redis_restart",
        60_000,
        &redis.info.url(),
        "",
        "copy.after_read=sleep(50)",
    )
    .await;
    let id = submit(&fleet.owner.url, MID_COPY).await;
    wait_for_shadow_rows(&fleet.database, 3_000).await;
    redis.restart().unwrap();
    wait::until(
        "the migration's status to be published again",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { try_status(&fleet.standby, &id).await },
    )
    .await
    .unwrap_or_else(|error| {
        panic!(
            "{error}; owner log:\n{}\nstandby log:\n{}",
            fleet.owner.process.logs(),
            fleet.standby.process.logs()
        )
    });
    if let Some(status) = try_status(&fleet.standby, &id).await
        && status.outcome == v1::Outcome::Failed as i32
    {
        panic!(
            "{status:?}\nowner log:\n{}\nstandby log:\n{}",
            fleet.owner.process.logs(),
            fleet.standby.process.logs()
        );
    }
    completes_exactly(&fleet, &id, writer).await;
    let logs = fleet.owner.process.logs() + &fleet.standby.process.logs();
    assert!(
        logs.contains("rebuilding the migrations from their MySQL checkpoints"),
        "the loss was noticed and the migration rebuilt:\n{logs}"
    );
}

/// Found by `make chaos` (seed 11, run 0, stuck): a deposed owner resumed after SIGSTOP drained
/// the outbox once before it noticed it had lost the migration, and the completions it took
/// never reached the new owner, which waited for those two chunks forever. The owner now
/// compares its chunks in flight with the store's live tasks every 5 s and offers a chunk whose
/// task vanished without a report again, under a new fence. Here a leased task is deleted from
/// Redis by hand: its worker's report is refused as unknown, and nothing else would bring the
/// chunk back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_task_lost_by_the_store_is_offered_again() {
    let redis_url = servers::shared().redis.url();
    let (fleet, writer) = fleet(
        "lost_task",
        30_000,
        &redis_url,
        "",
        "copy.server_sleep=sleep(300)",
    )
    .await;
    let id = submit(&fleet.owner.url, &["--target-chunk-time", "0"]).await;
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let set = format!("{}:m:{id}:tasks", fleet.namespace);
    let (task, _) = wait::until(
        "a leased chunk task",
        Duration::from_secs(60),
        Duration::from_millis(20),
        || {
            let mut connection = connection.clone();
            let set = set.clone();
            let namespace = fleet.namespace.clone();
            async move {
                let ids: Vec<String> = redis::cmd("SMEMBERS")
                    .arg(&set)
                    .query_async(&mut connection)
                    .await
                    .ok()?;
                for task in ids {
                    let state: Option<String> = redis::cmd("HGET")
                        .arg(format!("{namespace}:task:{task}"))
                        .arg("state")
                        .query_async(&mut connection)
                        .await
                        .ok()?;
                    if state.as_deref() == Some("leased") {
                        return Some(task);
                    }
                }
                None
            }
        },
    )
    .await
    .unwrap();
    // Lost as a store that lost data (or, before the drain was owner-fenced, a deposed owner's
    // drain) loses it: gone from the store with its report.
    let _: () = redis::pipe()
        .del(format!("{}:task:{task}", fleet.namespace))
        .srem(&set, &task)
        .query_async(&mut connection)
        .await
        .unwrap();
    completes_exactly(&fleet, &id, writer).await;
    let logs = fleet.owner.process.logs() + &fleet.standby.process.logs();
    assert!(
        logs.contains("chunk task lost by the live store without a report"),
        "the lost task {task} was noticed:\n{logs}"
    );
}
