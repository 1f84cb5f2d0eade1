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
