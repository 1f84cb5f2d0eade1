//! Redis-backed migration store shared by coordinator replicas.
//!
//! # Keys (under the namespace `ns`)
//! - `ns:migrations`: hash id → record JSON of the active migrations.
//! - `ns:m:<id>:owner`: the owner lease: the holder's id, with `PEXPIRE` = the owner TTL.
//! - `ns:m:<id>:intents`: the operators' intents (JSON).
//! - `ns:statuses`: hash id → encoded `shoal.v1.MigrationStatus`, as last published.
//! - `ns:incarnation`: a random id set once (`SET NX`); a different value means Redis lost its
//!   data (`FLUSHALL`, restart without persistence).

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use shoal_common::ids::MigrationId;

use super::Error;
use super::migrations::{MigrationRecord, MigrationStore, OperatorIntents};

/// Extends KEYS[1] by ARGV[2] ms if it holds ARGV[1]. Returns 1 if extended.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Deletes KEYS[1] if it holds ARGV[1].
const DISOWN: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The migration store of a fleet.
#[derive(Clone)]
pub struct RedisMigrationStore {
    connection: ConnectionManager,
    namespace: String,
    renew: redis::Script,
    disown: redis::Script,
}

impl std::fmt::Debug for RedisMigrationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisMigrationStore")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl RedisMigrationStore {
    /// A store under `namespace`.
    pub fn new(connection: ConnectionManager, namespace: impl Into<String>) -> Self {
        Self {
            connection,
            namespace: namespace.into(),
            renew: redis::Script::new(RENEW),
            disown: redis::Script::new(DISOWN),
        }
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.namespace)
    }

    fn owner_key(&self, id: &MigrationId) -> String {
        format!("{}:m:{id}:owner", self.namespace)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[async_trait]
impl MigrationStore for RedisMigrationStore {
    async fn register(&self, record: &MigrationRecord) -> Result<(), Error> {
        let text =
            serde_json::to_string(record).map_err(|error| Error::Backend(error.to_string()))?;
        let mut connection = self.connection.clone();
        let () = connection
            .hset(self.key("migrations"), &record.id, text)
            .await?;
        Ok(())
    }

    async fn active(&self) -> Result<Vec<MigrationRecord>, Error> {
        let mut connection = self.connection.clone();
        let key = self.key("migrations");
        let values: Vec<String> = connection.hvals(&key).await?;
        values
            .iter()
            .map(|text| {
                serde_json::from_str(text).map_err(|error| Error::Corrupt {
                    key: key.clone(),
                    reason: error.to_string(),
                })
            })
            .collect()
    }

    async fn finish(&self, id: &MigrationId) -> Result<(), Error> {
        let mut connection = self.connection.clone();
        let () = connection.hdel(self.key("migrations"), id.as_str()).await?;
        Ok(())
    }

    async fn try_own(&self, id: &MigrationId, owner: &str, ttl: Duration) -> Result<bool, Error> {
        let mut connection = self.connection.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.owner_key(id))
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut connection)
            .await?;
        Ok(set.is_some())
    }

    async fn renew(&self, id: &MigrationId, owner: &str, ttl: Duration) -> Result<bool, Error> {
        let mut connection = self.connection.clone();
        let renewed: i64 = self
            .renew
            .key(self.owner_key(id))
            .arg(owner)
            .arg(millis(ttl))
            .invoke_async(&mut connection)
            .await?;
        Ok(renewed == 1)
    }

    async fn disown(&self, id: &MigrationId, owner: &str) -> Result<(), Error> {
        let mut connection = self.connection.clone();
        let _: i64 = self
            .disown
            .key(self.owner_key(id))
            .arg(owner)
            .invoke_async(&mut connection)
            .await?;
        Ok(())
    }

    async fn intents(&self, id: &MigrationId) -> Result<Option<OperatorIntents>, Error> {
        let mut connection = self.connection.clone();
        let key = format!("{}:m:{id}:intents", self.namespace);
        let text: Option<String> = connection.get(&key).await?;
        text.map(|text| {
            serde_json::from_str(&text).map_err(|error| Error::Corrupt {
                key,
                reason: error.to_string(),
            })
        })
        .transpose()
    }

    async fn set_intents(&self, id: &MigrationId, intents: &OperatorIntents) -> Result<(), Error> {
        let text =
            serde_json::to_string(intents).map_err(|error| Error::Backend(error.to_string()))?;
        let mut connection = self.connection.clone();
        let () = connection
            .set(format!("{}:m:{id}:intents", self.namespace), text)
            .await?;
        Ok(())
    }

    async fn put_status(&self, id: &MigrationId, status: Vec<u8>) -> Result<(), Error> {
        let mut connection = self.connection.clone();
        let () = connection
            .hset(self.key("statuses"), id.as_str(), status)
            .await?;
        Ok(())
    }

    async fn status(&self, id: &MigrationId) -> Result<Option<Vec<u8>>, Error> {
        let mut connection = self.connection.clone();
        Ok(connection.hget(self.key("statuses"), id.as_str()).await?)
    }

    async fn statuses(&self) -> Result<Vec<Vec<u8>>, Error> {
        let mut connection = self.connection.clone();
        Ok(connection.hvals(self.key("statuses")).await?)
    }

    async fn incarnation(&self) -> Result<String, Error> {
        let mut connection = self.connection.clone();
        let key = self.key("incarnation");
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(uuid::Uuid::new_v4().to_string())
            .arg("NX")
            .query_async(&mut connection)
            .await?;
        let value: Option<String> = connection.get(&key).await?;
        value.ok_or_else(|| Error::Backend("the incarnation key vanished".to_owned()))
    }
}
