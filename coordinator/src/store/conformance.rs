//! One behaviour suite for every implementation of the store traits.
//!
//! Each function takes the store and a way to let time pass: `tokio::time::advance` for the
//! memory store (paused clock), a real sleep for Redis (whose TTLs run on its own clock).

use std::future::Future;
use std::time::Duration;

use shoal_common::ids::WorkerId;
use shoal_common::registry::WorkerRecord;

use super::worker_registry::WorkerRegistry;

fn record(id: &str, registered_at_ms: u64) -> WorkerRecord {
    WorkerRecord {
        worker_id: WorkerId::parse(id).expect("test ids are valid"),
        hostname: "host-a".to_owned(),
        pid: 4242,
        slots: 4,
        busy_slots: 0,
        version: "test".to_owned(),
        registered_at_ms,
        last_heartbeat_at_ms: registered_at_ms,
    }
}

async fn listed_ids(registry: &dyn WorkerRegistry) -> Vec<String> {
    registry
        .list()
        .await
        .expect("list workers")
        .into_iter()
        .map(|record| record.worker_id.to_string())
        .collect()
}

/// The worker-registry contract: register, heartbeat, expiry, deregister, re-register.
pub async fn worker_registry<F, Fut>(registry: &dyn WorkerRegistry, mut let_time_pass: F)
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = ()>,
{
    let ttl = Duration::from_millis(1_000);
    let first = record("w-1", 1_000);
    let second = record("w-2", 2_000);
    assert_eq!(listed_ids(registry).await, Vec::<String>::new());

    registry
        .register(second.clone(), ttl)
        .await
        .expect("register w-2");
    registry
        .register(first.clone(), ttl)
        .await
        .expect("register w-1");
    let listed = registry.list().await.expect("list");
    assert_eq!(
        listed,
        vec![first.clone(), second.clone()],
        "sorted by id, fields intact"
    );

    // A heartbeat keeps w-1 alive past the original TTL and records its load; w-2 is silent.
    let_time_pass(Duration::from_millis(600)).await;
    let alive = registry
        .heartbeat(&first.worker_id, 3, 9_000, ttl)
        .await
        .expect("heartbeat w-1");
    assert!(alive, "a registered worker's heartbeat is accepted");
    let_time_pass(Duration::from_millis(600)).await;
    let listed = registry.list().await.expect("list");
    assert_eq!(
        listed.len(),
        1,
        "w-2 expired after one TTL without heartbeat"
    );
    assert_eq!(listed[0].worker_id, first.worker_id);
    assert_eq!(listed[0].busy_slots, 3);
    assert_eq!(listed[0].last_heartbeat_at_ms, 9_000);
    assert_eq!(listed[0].registered_at_ms, 1_000);

    // An expired worker's heartbeat is refused: it must register again.
    let refused = registry
        .heartbeat(&second.worker_id, 0, 9_500, ttl)
        .await
        .expect("heartbeat w-2");
    assert!(!refused, "heartbeat of an expired worker is refused");
    assert_eq!(listed_ids(registry).await, vec!["w-1"]);

    // Deregistration is immediate and idempotent.
    registry
        .deregister(&first.worker_id)
        .await
        .expect("deregister");
    registry
        .deregister(&first.worker_id)
        .await
        .expect("deregister twice");
    assert_eq!(listed_ids(registry).await, Vec::<String>::new());
    let after_deregister = registry
        .heartbeat(&first.worker_id, 0, 10_000, ttl)
        .await
        .expect("heartbeat after deregister");
    assert!(
        !after_deregister,
        "a deregistered worker is not revived by a heartbeat"
    );

    // Registering again replaces any previous record entirely.
    registry
        .register(record("w-1", 11_000), ttl)
        .await
        .expect("register again");
    let listed = registry.list().await.expect("list");
    assert_eq!(listed, vec![record("w-1", 11_000)]);
    registry
        .deregister(&first.worker_id)
        .await
        .expect("clean up");
}

fn task(migration: &str, task: &str, chunk: u64) -> shoal_common::task::TaskSpec {
    use shoal_common::chunk::{ChunkId, ChunkRange};
    use shoal_common::ids::{FenceEpoch, MigrationId, TaskId};
    use shoal_common::task::{CopyContext, CopyMode, TaskKind, TaskSpec};
    let lower = i64::try_from(chunk).expect("small chunk ids") * 10;
    TaskSpec {
        task_id: TaskId::parse(task).expect("test ids are valid"),
        migration_id: MigrationId::parse(migration).expect("test ids are valid"),
        kind: TaskKind::Copy,
        chunk: ChunkId(chunk),
        range: ChunkRange {
            lower: Some(shoal_common::key::Key::int(lower)),
            upper: Some(shoal_common::key::Key::int(lower + 10)),
        },
        fence_epoch: FenceEpoch(1),
        context: CopyContext {
            target: "local".to_owned(),
            schema: "db".to_owned(),
            source_table: "t".to_owned(),
            shadow_table: "_t_new".to_owned(),
            fence_table: "_t_fence".to_owned(),
            source_columns: vec!["id".to_owned(), "v".to_owned()],
            shadow_columns: vec!["id".to_owned(), "v".to_owned()],
            key_columns: vec!["id".to_owned()],
            copy_mode: CopyMode::Buffered,
            batch_rows: 100,
        },
        trace_context: vec![("traceparent".to_owned(), "00-abc-def-01".to_owned())],
    }
}

/// The owner fence on `collect`, for a store with owner leases: once `set_owner` records owner
/// `b` for a migration, owner `a` takes nothing (its completion stays for `b`).
pub async fn task_store_owner_fence<F, Fut>(store: &dyn super::tasks::TaskStore, set_owner: F)
where
    F: FnOnce(shoal_common::ids::MigrationId, &'static str) -> Fut,
    Fut: Future<Output = ()>,
{
    use shoal_common::ids::MigrationId;
    use shoal_common::task::CopyOutcome;

    let migration = MigrationId::parse("m-fenced").expect("valid");
    let worker = WorkerId::parse("w-fenced").expect("valid");
    store
        .publish(task("m-fenced", "t-fenced", 1))
        .await
        .expect("publish");
    let leased = store
        .acquire(&worker, Duration::from_secs(10))
        .await
        .expect("acquire")
        .expect("a task");
    let outcome = CopyOutcome {
        rows: 1,
        statement_time: Duration::from_millis(1),
        unique_conflicts: 0,
    };
    store
        .complete(&worker, &leased.spec.task_id, leased.lease_epoch, outcome)
        .await
        .expect("complete");
    set_owner(migration.clone(), "b").await;
    match store.collect(&migration, "a").await {
        Err(super::Error::NotOwner(holder)) => assert_eq!(holder, "b"),
        other => panic!("a deposed owner collected: {other:?}"),
    }
    let collected = store.collect(&migration, "b").await.expect("collect");
    assert_eq!(
        collected.completions.len(),
        1,
        "the completion waited for b"
    );
    store.clear(&migration).await.expect("clear");
}

/// The task-store contract: FIFO leasing, epochs, reports judged by INV-L1, reaping, clearing.
pub async fn task_store<F, Fut>(store: &dyn super::tasks::TaskStore, mut let_time_pass: F)
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = ()>,
{
    use shoal_common::ids::{LeaseEpoch, MigrationId, TaskId};
    use shoal_common::lease::Verdict;
    use shoal_common::task::{CopyOutcome, ReturnReason};

    let ttl = Duration::from_millis(1_000);
    let w1 = WorkerId::parse("w1").expect("valid");
    let w2 = WorkerId::parse("w2").expect("valid");
    let m1 = MigrationId::parse("m1").expect("valid");
    let m2 = MigrationId::parse("m2").expect("valid");
    let outcome = CopyOutcome {
        rows: 10,
        statement_time: Duration::from_millis(12),
        unique_conflicts: 0,
    };

    for (index, name) in ["t-a", "t-b", "t-c", "t-d"].into_iter().enumerate() {
        let chunk = u64::try_from(index).expect("small");
        store
            .publish(task("m1", name, chunk))
            .await
            .expect("publish");
    }
    store
        .publish(task("m2", "t-x", 0))
        .await
        .expect("publish m2");

    let a = store
        .acquire(&w1, ttl)
        .await
        .expect("acquire")
        .expect("a task");
    assert_eq!(a.spec, task("m1", "t-a", 0), "oldest first, spec intact");
    assert_eq!(a.lease_epoch, LeaseEpoch(1));
    let b = store
        .acquire(&w2, ttl)
        .await
        .expect("acquire")
        .expect("a task");
    assert_eq!(b.spec.task_id.as_str(), "t-b");

    // Heartbeats: only the holder at the current epoch extends.
    assert!(
        store
            .extend(&w1, &a.spec.task_id, a.lease_epoch, ttl)
            .await
            .expect("extend")
    );
    assert!(
        !store
            .extend(&w2, &a.spec.task_id, a.lease_epoch, ttl)
            .await
            .expect("extend")
    );
    assert!(
        !store
            .extend(&w1, &a.spec.task_id, LeaseEpoch(7), ttl)
            .await
            .expect("extend")
    );

    // INV-L1: stale epoch and wrong worker are refused; the current report is recorded once.
    let stale = store
        .complete(&w1, &a.spec.task_id, LeaseEpoch(0), outcome)
        .await
        .expect("report");
    assert_eq!(stale, Verdict::Stale);
    let other = store
        .complete(&w2, &a.spec.task_id, a.lease_epoch, outcome)
        .await
        .expect("report");
    assert_eq!(other, Verdict::Stale);
    let done = store
        .complete(&w1, &a.spec.task_id, a.lease_epoch, outcome)
        .await
        .expect("report");
    assert_eq!(done, Verdict::Current);
    let again = store
        .complete(&w1, &a.spec.task_id, a.lease_epoch, outcome)
        .await
        .expect("report");
    assert_eq!(again, Verdict::Unknown, "a task is completed once");
    // The live set: ready and leased tasks, not the reported one; per migration.
    let live = |names: &[&str]| -> std::collections::HashSet<TaskId> {
        names
            .iter()
            .map(|name| TaskId::parse(*name).expect("valid"))
            .collect()
    };
    assert_eq!(
        store.live_tasks(&m1).await.expect("live"),
        live(&["t-b", "t-c", "t-d"]),
        "leased t-b and ready t-c, t-d are live; reported t-a is not"
    );
    assert_eq!(store.live_tasks(&m2).await.expect("live"), live(&["t-x"]));

    // Failure and release hand tasks back to the owner.
    let c = store
        .acquire(&w1, ttl)
        .await
        .expect("acquire")
        .expect("t-c");
    let failed = store
        .fail(
            &w1,
            &c.spec.task_id,
            c.lease_epoch,
            "lock wait timeout".to_owned(),
            true,
        )
        .await
        .expect("fail");
    assert_eq!(failed, Verdict::Current);
    let d = store
        .acquire(&w1, ttl)
        .await
        .expect("acquire")
        .expect("t-d");
    assert_eq!(
        store
            .release(&w1, &d.spec.task_id, d.lease_epoch)
            .await
            .expect("release"),
        Verdict::Current
    );

    // t-b's holder goes silent: after the TTL the owner reaps it.
    let_time_pass(Duration::from_millis(600)).await;
    assert!(
        store
            .extend(&w1, &a.spec.task_id, a.lease_epoch, ttl)
            .await
            .is_ok()
    );
    let_time_pass(Duration::from_millis(600)).await;
    let collected = store.collect(&m1, "owner").await.expect("collect");
    assert_eq!(collected.completions.len(), 1);
    assert_eq!(collected.completions[0].task_id.as_str(), "t-a");
    assert_eq!(collected.completions[0].worker, w1);
    assert_eq!(collected.completions[0].outcome, outcome);
    let mut returned: Vec<(String, ReturnReason)> = collected
        .returned
        .into_iter()
        .map(|returned| (returned.spec.task_id.to_string(), returned.reason))
        .collect();
    returned.sort_by(|left, right| left.0.cmp(&right.0));
    assert_eq!(
        returned,
        vec![
            ("t-b".to_owned(), ReturnReason::Expired),
            (
                "t-c".to_owned(),
                ReturnReason::Failed {
                    error: "lock wait timeout".to_owned(),
                    retryable: true
                }
            ),
            ("t-d".to_owned(), ReturnReason::Released),
        ]
    );
    // The reaped holder's late report is refused (its task is gone).
    let late = store
        .complete(&w2, &b.spec.task_id, b.lease_epoch, outcome)
        .await
        .expect("report");
    assert_eq!(late, Verdict::Unknown);
    assert!(
        !store
            .extend(&w2, &b.spec.task_id, b.lease_epoch, ttl)
            .await
            .expect("extend")
    );
    let nothing = store.collect(&m1, "owner").await.expect("collect");
    assert!(
        nothing.completions.is_empty() && nothing.returned.is_empty(),
        "collected once"
    );

    // Migrations are separate: m2's task is still ready; clearing m2 removes it.
    store.clear(&m2).await.expect("clear");
    assert!(store.acquire(&w1, ttl).await.expect("acquire").is_none());
    let empty = store.collect(&m2, "owner").await.expect("collect");
    assert!(empty.completions.is_empty() && empty.returned.is_empty());
    store.clear(&m1).await.expect("clear");

    // A chunk offered again goes ahead of every ready task.
    let m3 = MigrationId::parse("m3").expect("valid");
    for name in ["t-m3-a", "t-m3-b"] {
        store.publish(task("m3", name, 0)).await.expect("publish");
    }
    store
        .publish_first(task("m3", "t-m3-again", 1))
        .await
        .expect("publish first");
    let mut acquired = Vec::new();
    while let Some(leased) = store.acquire(&w1, ttl).await.expect("acquire") {
        acquired.push(leased.spec.task_id.to_string());
    }
    assert_eq!(acquired, ["t-m3-again", "t-m3-a", "t-m3-b"]);
    store.clear(&m3).await.expect("clear");
}

/// The migration-store contract: the owner lease is exclusive, renewed and released only by its
/// holder, and expires; records, intents, statuses and the incarnation round-trip.
pub async fn migration_store<F, Fut>(
    store: &dyn super::migrations::MigrationStore,
    mut let_time_pass: F,
) where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = ()>,
{
    use super::migrations::{MigrationRecord, OperatorIntents};
    use shoal_common::ids::MigrationId;

    let id = MigrationId::parse("orders-1").expect("valid id");
    let ttl = Duration::from_millis(600);
    let record = MigrationRecord {
        id: id.to_string(),
        target: "local".to_owned(),
        schema: "db".to_owned(),
        alter: "ALTER TABLE orders ADD COLUMN x INT".to_owned(),
        threads: 4,
        chunk_rows: 1000,
        target_chunk_ms: 500,
        copy_mode: shoal_common::task::CopyMode::Server,
        keep_old_table: false,
        no_instant: true,
        keep_secondary_indexes: false,
        strict: false,
        defer_cutover: false,
        lock_wait_timeout_ms: 5000,
        replica_targets: vec!["replica".to_owned()],
        limits: shoal_common::throttle::Limits::default(),
    };
    store.register(&record).await.expect("register");
    store.register(&record).await.expect("register twice");
    assert_eq!(store.active().await.expect("active"), vec![record.clone()]);

    assert!(store.try_own(&id, "c1", ttl).await.expect("own"));
    assert!(
        !store.try_own(&id, "c2", ttl).await.expect("own"),
        "exclusive"
    );
    assert!(
        !store.renew(&id, "c2", ttl).await.expect("renew"),
        "only the holder renews"
    );
    store.disown(&id, "c2").await.expect("disown");
    assert!(
        !store.try_own(&id, "c2", ttl).await.expect("own"),
        "only the holder releases"
    );
    assert!(store.renew(&id, "c1", ttl).await.expect("renew"));
    let_time_pass(ttl + Duration::from_millis(200)).await;
    assert!(
        !store.renew(&id, "c1", ttl).await.expect("renew"),
        "expired"
    );
    assert!(
        store.try_own(&id, "c2", ttl).await.expect("own"),
        "taken over after expiry"
    );
    store.disown(&id, "c2").await.expect("disown");
    assert!(
        store.try_own(&id, "c1", ttl).await.expect("own"),
        "free at once after release"
    );
    store.disown(&id, "c1").await.expect("disown");

    assert_eq!(store.intents(&id).await.expect("intents"), None);
    let intents = OperatorIntents {
        paused: true,
        threads: 2,
        released: false,
        cancelled: false,
    };
    store.set_intents(&id, &intents).await.expect("set intents");
    assert_eq!(store.intents(&id).await.expect("intents"), Some(intents));

    store
        .put_status(&id, vec![1, 2, 3])
        .await
        .expect("put status");
    assert_eq!(
        store.status(&id).await.expect("status"),
        Some(vec![1, 2, 3])
    );
    assert_eq!(
        store.statuses().await.expect("statuses"),
        vec![vec![1, 2, 3]]
    );

    let incarnation = store.incarnation().await.expect("incarnation");
    assert_eq!(
        store.incarnation().await.expect("incarnation"),
        incarnation,
        "stable"
    );

    store.finish(&id).await.expect("finish");
    assert!(store.active().await.expect("active").is_empty());
    assert_eq!(
        store.status(&id).await.expect("status"),
        Some(vec![1, 2, 3]),
        "status stays"
    );
}
