//! In-memory stores for `shoal run` (one process) and for unit tests.
//!
//! Time comes from tokio's clock, so tests drive expiry with `tokio::time::pause()`/`advance()`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use shoal_common::ids::WorkerId;
use shoal_common::registry::{WorkerRecord, is_expired};
use tokio::time::Instant;

use super::Error;
use super::worker_registry::WorkerRegistry;

/// One registration and when it was last refreshed.
#[derive(Debug)]
struct Registration {
    record: WorkerRecord,
    /// tokio instant of the last register or heartbeat.
    refreshed_at: Instant,
    /// Lifetime granted at the last refresh.
    ttl: Duration,
}

/// Worker registry held in this process.
#[derive(Debug)]
pub struct MemoryWorkerRegistry {
    /// Registrations by worker id; expired ones are removed lazily.
    registrations: Mutex<BTreeMap<WorkerId, Registration>>,
    /// Origin for turning instants into durations for the pure expiry rule.
    epoch: Instant,
}

impl Default for MemoryWorkerRegistry {
    fn default() -> Self {
        Self {
            registrations: Mutex::new(BTreeMap::new()),
            epoch: Instant::now(),
        }
    }
}

impl MemoryWorkerRegistry {
    fn expired(&self, registration: &Registration, now: Instant) -> bool {
        is_expired(
            registration.refreshed_at - self.epoch,
            registration.ttl,
            now - self.epoch,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<WorkerId, Registration>> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.registrations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl WorkerRegistry for MemoryWorkerRegistry {
    async fn register(&self, record: WorkerRecord, ttl: Duration) -> Result<(), Error> {
        let registration = Registration {
            record,
            refreshed_at: Instant::now(),
            ttl,
        };
        self.lock()
            .insert(registration.record.worker_id.clone(), registration);
        Ok(())
    }

    async fn heartbeat(
        &self,
        worker_id: &WorkerId,
        busy_slots: u32,
        now_unix_ms: u64,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let now = Instant::now();
        let mut registrations = self.lock();
        let Some(registration) = registrations.get_mut(worker_id) else {
            return Ok(false);
        };
        if self.expired(registration, now) {
            registrations.remove(worker_id);
            return Ok(false);
        }
        registration.record.busy_slots = busy_slots;
        registration.record.last_heartbeat_at_ms = now_unix_ms;
        registration.refreshed_at = now;
        registration.ttl = ttl;
        Ok(true)
    }

    async fn deregister(&self, worker_id: &WorkerId) -> Result<(), Error> {
        self.lock().remove(worker_id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<WorkerRecord>, Error> {
        let now = Instant::now();
        let mut registrations = self.lock();
        registrations.retain(|_, registration| !self.expired(registration, now));
        Ok(registrations
            .values()
            .map(|registration| registration.record.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    #[tokio::test(start_paused = true)]
    async fn conforms() {
        conformance::worker_registry(&MemoryWorkerRegistry::default(), |wait| {
            tokio::time::advance(wait)
        })
        .await;
    }
}
