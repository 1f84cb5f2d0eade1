//! Redis-backed stores for the fleet.
//!
//! # Keys (all under the configured namespace `ns`)
//! - `ns:worker:<id>`: hash of one registration, with `PEXPIRE` = the TTL.
//! - `ns:workers`: set of registered ids, an index for listing; members whose hash expired are
//!   pruned by `list`.
//!
//! # Design decisions
//! A hash per worker (not a JSON string) lets a heartbeat update two fields and the expiry in
//! one atomic script without reading the record back. A `ConnectionManager` fails one command
//! after its connection dies and then reconnects (stack notes), so each call is retried once
//! when the error is retryable.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use shoal_common::ids::WorkerId;
use shoal_common::registry::WorkerRecord;

use super::Error;
use super::worker_registry::WorkerRegistry;

/// Bound on connecting to Redis and on every reply.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Refreshes a registration only if it still exists (KEYS[1] = hash;
/// ARGV = busy_slots, last_heartbeat_at_ms, ttl_ms). Returns 1 if refreshed.
const HEARTBEAT_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'busy_slots', ARGV[1], 'last_heartbeat_at_ms', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// Connects to Redis with bounded connect and response times.
pub async fn connect(url: &str) -> Result<ConnectionManager, Error> {
    let client = redis::Client::open(url).map_err(|error| Error::Backend(error.to_string()))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT))
        .set_number_of_retries(2);
    Ok(client.get_connection_manager_with_config(config).await?)
}

/// Worker registry shared by every coordinator replica through Redis.
#[derive(Clone)]
pub struct RedisWorkerRegistry {
    /// Multiplexed, self-reconnecting connection.
    connection: ConnectionManager,
    /// Prefix of every key, so several fleets (or tests) can share one Redis.
    namespace: String,
    /// The heartbeat script, loaded once.
    heartbeat_script: redis::Script,
}

impl std::fmt::Debug for RedisWorkerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisWorkerRegistry")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl RedisWorkerRegistry {
    /// A registry under `namespace` on an established connection.
    pub fn new(connection: ConnectionManager, namespace: impl Into<String>) -> Self {
        Self {
            connection,
            namespace: namespace.into(),
            heartbeat_script: redis::Script::new(HEARTBEAT_SCRIPT),
        }
    }

    fn worker_key(&self, worker_id: &WorkerId) -> String {
        format!("{}:worker:{worker_id}", self.namespace)
    }

    fn index_key(&self) -> String {
        format!("{}:workers", self.namespace)
    }
}

/// Runs `call` once more if it failed with a retryable error.
async fn retry_once<T, F, Fut>(mut call: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    match call().await {
        Err(error) if error.is_retryable() => call().await,
        other => other,
    }
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

fn record_fields(record: &WorkerRecord) -> Vec<(&'static str, String)> {
    vec![
        ("worker_id", record.worker_id.to_string()),
        ("hostname", record.hostname.clone()),
        ("pid", record.pid.to_string()),
        ("slots", record.slots.to_string()),
        ("busy_slots", record.busy_slots.to_string()),
        ("version", record.version.clone()),
        ("registered_at_ms", record.registered_at_ms.to_string()),
        (
            "last_heartbeat_at_ms",
            record.last_heartbeat_at_ms.to_string(),
        ),
    ]
}

fn parse_record(key: &str, fields: &HashMap<String, String>) -> Result<WorkerRecord, Error> {
    let corrupt = |reason: String| Error::Corrupt {
        key: key.to_owned(),
        reason,
    };
    let text = |name: &str| {
        fields
            .get(name)
            .cloned()
            .ok_or_else(|| corrupt(format!("missing field {name}")))
    };
    let number = |name: &str| -> Result<u64, Error> {
        text(name)?
            .parse::<u64>()
            .map_err(|error| corrupt(format!("field {name}: {error}")))
    };
    let small = |name: &str| -> Result<u32, Error> {
        u32::try_from(number(name)?).map_err(|error| corrupt(format!("field {name}: {error}")))
    };
    Ok(WorkerRecord {
        worker_id: WorkerId::parse(text("worker_id")?)
            .map_err(|error| corrupt(error.to_string()))?,
        hostname: text("hostname")?,
        pid: small("pid")?,
        slots: small("slots")?,
        busy_slots: small("busy_slots")?,
        version: text("version")?,
        registered_at_ms: number("registered_at_ms")?,
        last_heartbeat_at_ms: number("last_heartbeat_at_ms")?,
    })
}

#[async_trait]
impl WorkerRegistry for RedisWorkerRegistry {
    async fn register(&self, record: WorkerRecord, ttl: Duration) -> Result<(), Error> {
        let key = self.worker_key(&record.worker_id);
        let fields = record_fields(&record);
        retry_once(|| {
            let mut connection = self.connection.clone();
            let mut pipe = redis::pipe();
            pipe.atomic()
                .del(&key)
                .hset_multiple(&key, &fields)
                .pexpire(&key, ttl_ms(ttl))
                .sadd(self.index_key(), record.worker_id.as_str());
            async move { Ok(pipe.query_async::<()>(&mut connection).await?) }
        })
        .await
    }

    async fn heartbeat(
        &self,
        worker_id: &WorkerId,
        busy_slots: u32,
        now_unix_ms: u64,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let key = self.worker_key(worker_id);
        retry_once(|| {
            let mut connection = self.connection.clone();
            let mut invocation = self.heartbeat_script.prepare_invoke();
            invocation
                .key(&key)
                .arg(busy_slots)
                .arg(now_unix_ms)
                .arg(ttl_ms(ttl));
            async move {
                let refreshed: i64 = invocation.invoke_async(&mut connection).await?;
                Ok(refreshed == 1)
            }
        })
        .await
    }

    async fn deregister(&self, worker_id: &WorkerId) -> Result<(), Error> {
        let key = self.worker_key(worker_id);
        retry_once(|| {
            let mut connection = self.connection.clone();
            let mut pipe = redis::pipe();
            pipe.atomic()
                .del(&key)
                .srem(self.index_key(), worker_id.as_str());
            async move { Ok(pipe.query_async::<()>(&mut connection).await?) }
        })
        .await
    }

    async fn list(&self) -> Result<Vec<WorkerRecord>, Error> {
        let mut connection = self.connection.clone();
        let mut ids: Vec<String> = retry_once(|| {
            let mut connection = self.connection.clone();
            let index = self.index_key();
            async move { Ok(connection.smembers::<_, Vec<String>>(index).await?) }
        })
        .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        ids.sort();
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(format!("{}:worker:{id}", self.namespace));
        }
        let hashes: Vec<HashMap<String, String>> = pipe.query_async(&mut connection).await?;
        let mut records = Vec::with_capacity(ids.len());
        let mut stale = Vec::new();
        for (id, fields) in ids.iter().zip(hashes) {
            if fields.is_empty() {
                stale.push(id.as_str());
                continue;
            }
            let key = format!("{}:worker:{id}", self.namespace);
            records.push(parse_record(&key, &fields)?);
        }
        if !stale.is_empty() {
            // Best effort: a failed prune is retried by the next list.
            let pruned: Result<usize, _> = connection.srem(self.index_key(), &stale).await;
            if let Err(error) = pruned {
                tracing::warn!(%error, "prune expired workers from the index");
            }
        }
        Ok(records)
    }
}
