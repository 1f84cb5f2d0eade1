//! In-memory migration store: one coordinator, no Redis. Lease expiry follows the tokio clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use shoal_common::ids::MigrationId;
use tokio::time::Instant;

use super::Error;
use super::migrations::{MigrationRecord, MigrationStore, OperatorIntents};

#[derive(Debug, Default)]
struct State {
    active: BTreeMap<String, MigrationRecord>,
    owners: HashMap<String, (String, Instant)>,
    intents: HashMap<String, OperatorIntents>,
    statuses: BTreeMap<String, Vec<u8>>,
    incarnation: Option<String>,
}

/// The migration store of a coordinator without Redis.
#[derive(Debug, Default)]
pub struct MemoryMigrationStore {
    state: Mutex<State>,
}

impl MemoryMigrationStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl MigrationStore for MemoryMigrationStore {
    async fn register(&self, record: &MigrationRecord) -> Result<(), Error> {
        self.lock().active.insert(record.id.clone(), record.clone());
        Ok(())
    }

    async fn active(&self) -> Result<Vec<MigrationRecord>, Error> {
        Ok(self.lock().active.values().cloned().collect())
    }

    async fn finish(&self, id: &MigrationId) -> Result<(), Error> {
        self.lock().active.remove(id.as_str());
        Ok(())
    }

    async fn try_own(&self, id: &MigrationId, owner: &str, ttl: Duration) -> Result<bool, Error> {
        let mut state = self.lock();
        let now = Instant::now();
        match state.owners.get(id.as_str()) {
            Some((_, expires)) if *expires > now => Ok(false),
            _ => {
                state
                    .owners
                    .insert(id.to_string(), (owner.to_owned(), now + ttl));
                Ok(true)
            }
        }
    }

    async fn renew(&self, id: &MigrationId, owner: &str, ttl: Duration) -> Result<bool, Error> {
        let mut state = self.lock();
        let now = Instant::now();
        match state.owners.get_mut(id.as_str()) {
            Some((holder, expires)) if holder == owner && *expires > now => {
                *expires = now + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn disown(&self, id: &MigrationId, owner: &str) -> Result<(), Error> {
        let mut state = self.lock();
        if state
            .owners
            .get(id.as_str())
            .is_some_and(|(holder, _)| holder == owner)
        {
            state.owners.remove(id.as_str());
        }
        Ok(())
    }

    async fn intents(&self, id: &MigrationId) -> Result<Option<OperatorIntents>, Error> {
        Ok(self.lock().intents.get(id.as_str()).copied())
    }

    async fn set_intents(&self, id: &MigrationId, intents: &OperatorIntents) -> Result<(), Error> {
        self.lock().intents.insert(id.to_string(), *intents);
        Ok(())
    }

    async fn put_status(&self, id: &MigrationId, status: Vec<u8>) -> Result<(), Error> {
        self.lock().statuses.insert(id.to_string(), status);
        Ok(())
    }

    async fn status(&self, id: &MigrationId) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.lock().statuses.get(id.as_str()).cloned())
    }

    async fn statuses(&self) -> Result<Vec<Vec<u8>>, Error> {
        Ok(self.lock().statuses.values().cloned().collect())
    }

    async fn incarnation(&self) -> Result<String, Error> {
        Ok(self
            .lock()
            .incarnation
            .get_or_insert_with(|| uuid::Uuid::new_v4().to_string())
            .clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    #[tokio::test(start_paused = true)]
    async fn memory_migration_store_conforms() {
        conformance::migration_store(&MemoryMigrationStore::default(), |wait| {
            tokio::time::advance(wait)
        })
        .await;
    }
}
