//! The worker registry: which workers are alive, as seen by every coordinator replica.
//!
//! # Invariants
//! INV-R1 (see `shoal_common::registry`): `list` returns only registrations refreshed within the
//! TTL; an expired worker never reappears unless it registers again.

use std::time::Duration;

use async_trait::async_trait;
use shoal_common::ids::WorkerId;
use shoal_common::registry::WorkerRecord;

use super::Error;

/// Live registrations of workers.
#[async_trait]
pub trait WorkerRegistry: Send + Sync + std::fmt::Debug + 'static {
    /// Adds or replaces a registration; it lives for `ttl` unless refreshed.
    async fn register(&self, record: WorkerRecord, ttl: Duration) -> Result<(), Error>;

    /// Refreshes a registration for another `ttl` and records the worker's load.
    /// Returns `false` when the registration is gone (expired, removed, or the store lost it).
    async fn heartbeat(
        &self,
        worker_id: &WorkerId,
        busy_slots: u32,
        now_unix_ms: u64,
        ttl: Duration,
    ) -> Result<bool, Error>;

    /// Removes a registration at once. Removing an unknown worker is not an error.
    async fn deregister(&self, worker_id: &WorkerId) -> Result<(), Error>;

    /// Every live registration, ordered by worker id.
    async fn list(&self) -> Result<Vec<WorkerRecord>, Error>;
}
