//! Redis-backed task store for the fleet: ready queue, leases and the owner's outbox.
//!
//! # Keys (under the namespace `ns`)
//! - `ns:tasks:ready`: list of ready task ids, oldest first (all migrations), except that a
//!   chunk offered again is pushed to the head.
//! - `ns:task:<id>`: hash: `spec` (JSON), `migration`, `state` (ready|leased), `lease_epoch`,
//!   `worker`, `expires_at_ms`.
//! - `ns:m:<migration>:tasks`: set of the migration's live task ids (for reaping and clearing).
//! - `ns:m:<migration>:outbox`: list of completions and returned tasks for the owner.
//! - `ns:m:<migration>:owner_epoch`: counter of owner epochs handed out (INV-O1).
//!
//! # Design decisions
//! Every lease rule runs inside one Lua script, so a report is judged and applied atomically
//! (INV-L1), and lease deadlines use Redis's own clock (`TIME`), so coordinators with skewed
//! clocks agree. Scripts build key names from the namespace: fine for a single Redis, not for
//! Redis Cluster (documented). Long polls poll every 50 ms rather than subscribing.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use shoal_common::ids::{LeaseEpoch, MigrationId, TaskId, WorkerId};
use shoal_common::lease::Verdict;
use shoal_common::task::{Completion, CopyOutcome, LeasedTask, ReturnReason, Returned, TaskSpec};

use super::Error;
use super::tasks::{Collected, TaskStore};

/// ARGV: ns, worker, ttl_ms. Returns {id, spec, epoch} or false.
const ACQUIRE: &str = r"
local id = redis.call('LPOP', ARGV[1] .. ':tasks:ready')
while id do
  local key = ARGV[1] .. ':task:' .. id
  if redis.call('HGET', key, 'state') == 'ready' then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local epoch = redis.call('HINCRBY', key, 'lease_epoch', 1)
    redis.call('HSET', key, 'state', 'leased', 'worker', ARGV[2], 'expires_at_ms', now + tonumber(ARGV[3]))
    return {id, redis.call('HGET', key, 'spec'), epoch}
  end
  id = redis.call('LPOP', ARGV[1] .. ':tasks:ready')
end
return false
";

/// KEYS: task. ARGV: worker, epoch, ttl_ms. Returns 1 if extended.
const EXTEND: &str = r"
local h = redis.call('HMGET', KEYS[1], 'state', 'worker', 'lease_epoch', 'expires_at_ms')
if h[1] ~= 'leased' or h[2] ~= ARGV[1] or h[3] ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now >= tonumber(h[4]) then return 0 end
redis.call('HSET', KEYS[1], 'expires_at_ms', now + tonumber(ARGV[3]))
return 1
";

/// KEYS: task. ARGV: ns, id, worker, epoch, kind, payload. Returns current|stale|unknown.
const REPORT: &str = r"
local h = redis.call('HMGET', KEYS[1], 'state', 'worker', 'lease_epoch', 'migration', 'spec')
if not h[1] then return 'unknown' end
if h[1] ~= 'leased' or h[2] ~= ARGV[3] or h[3] ~= ARGV[4] then return 'stale' end
local entry = cjson.encode({kind = ARGV[5], spec = h[5], payload = ARGV[6], worker = ARGV[3]})
redis.call('RPUSH', ARGV[1] .. ':m:' .. h[4] .. ':outbox', entry)
redis.call('SREM', ARGV[1] .. ':m:' .. h[4] .. ':tasks', ARGV[2])
redis.call('DEL', KEYS[1])
return 'current'
";

/// ARGV: ns, migration. Reaps expired leases into the outbox, then drains the outbox.
const COLLECT: &str = r"
local holder = redis.call('GET', ARGV[1] .. ':m:' .. ARGV[2] .. ':owner')
if holder and holder ~= ARGV[3] then
  return redis.error_reply('NOTOWNER ' .. holder)
end
local set = ARGV[1] .. ':m:' .. ARGV[2] .. ':tasks'
local outbox = ARGV[1] .. ':m:' .. ARGV[2] .. ':outbox'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, id in ipairs(redis.call('SMEMBERS', set)) do
  local key = ARGV[1] .. ':task:' .. id
  local h = redis.call('HMGET', key, 'state', 'expires_at_ms', 'spec', 'worker')
  if not h[1] then
    redis.call('SREM', set, id)
  elseif h[1] == 'leased' and now >= tonumber(h[2]) then
    redis.call('RPUSH', outbox, cjson.encode({kind = 'expired', spec = h[3], payload = '', worker = h[4]}))
    redis.call('SREM', set, id)
    redis.call('DEL', key)
  end
end
local entries = redis.call('LRANGE', outbox, 0, -1)
redis.call('DEL', outbox)
return entries
";

/// ARGV: ns, migration. Deletes every task of the migration.
const CLEAR: &str = r"
local set = ARGV[1] .. ':m:' .. ARGV[2] .. ':tasks'
for _, id in ipairs(redis.call('SMEMBERS', set)) do
  redis.call('DEL', ARGV[1] .. ':task:' .. id)
end
redis.call('DEL', set, ARGV[1] .. ':m:' .. ARGV[2] .. ':outbox')
return 1
";

/// One outbox entry as the scripts encode it.
#[derive(Debug, Deserialize)]
struct OutboxEntry {
    kind: String,
    spec: String,
    payload: String,
    worker: String,
}

/// Payload of a failure report.
#[derive(Debug, Serialize, Deserialize)]
struct FailurePayload {
    error: String,
    retryable: bool,
}

/// Task store shared by every coordinator replica through Redis.
#[derive(Clone)]
pub struct RedisTaskStore {
    connection: ConnectionManager,
    namespace: String,
    acquire: redis::Script,
    extend: redis::Script,
    report: redis::Script,
    collect: redis::Script,
    clear: redis::Script,
}

impl std::fmt::Debug for RedisTaskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTaskStore")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn corrupt(key: &str, reason: impl ToString) -> Error {
    Error::Corrupt {
        key: key.to_owned(),
        reason: reason.to_string(),
    }
}

impl RedisTaskStore {
    /// A store under `namespace` on an established connection.
    pub fn new(connection: ConnectionManager, namespace: impl Into<String>) -> Self {
        Self {
            connection,
            namespace: namespace.into(),
            acquire: redis::Script::new(ACQUIRE),
            extend: redis::Script::new(EXTEND),
            report: redis::Script::new(REPORT),
            collect: redis::Script::new(COLLECT),
            clear: redis::Script::new(CLEAR),
        }
    }

    fn task_key(&self, task_id: &TaskId) -> String {
        format!("{}:task:{task_id}", self.namespace)
    }

    async fn report(
        &self,
        worker: &WorkerId,
        task_id: &TaskId,
        epoch: LeaseEpoch,
        kind: &str,
        payload: String,
    ) -> Result<Verdict, Error> {
        let mut connection = self.connection.clone();
        let verdict: String = self
            .report
            .key(self.task_key(task_id))
            .arg(&self.namespace)
            .arg(task_id.as_str())
            .arg(worker.as_str())
            .arg(epoch.0)
            .arg(kind)
            .arg(payload)
            .invoke_async(&mut connection)
            .await?;
        Ok(match verdict.as_str() {
            "current" => Verdict::Current,
            "stale" => Verdict::Stale,
            _ => Verdict::Unknown,
        })
    }
}

impl RedisTaskStore {
    /// Stores `spec` as ready and queues it last, or `first`.
    async fn insert(&self, spec: TaskSpec, first: bool) -> Result<(), Error> {
        let key = self.task_key(&spec.task_id);
        let json = serde_json::to_string(&spec).map_err(|error| corrupt(&key, error))?;
        let mut connection = self.connection.clone();
        let ready = format!("{}:tasks:ready", self.namespace);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(&key)
            .hset_multiple(
                &key,
                &[
                    ("spec", json.as_str()),
                    ("migration", spec.migration_id.as_str()),
                    ("state", "ready"),
                    ("lease_epoch", "0"),
                ],
            )
            .sadd(
                format!("{}:m:{}:tasks", self.namespace, spec.migration_id),
                spec.task_id.as_str(),
            );
        if first {
            pipe.lpush(&ready, spec.task_id.as_str());
        } else {
            pipe.rpush(&ready, spec.task_id.as_str());
        }
        pipe.query_async::<()>(&mut connection).await?;
        Ok(())
    }
}

#[async_trait]
impl TaskStore for RedisTaskStore {
    async fn publish(&self, spec: TaskSpec) -> Result<(), Error> {
        self.insert(spec, false).await
    }

    async fn publish_first(&self, spec: TaskSpec) -> Result<(), Error> {
        self.insert(spec, true).await
    }

    async fn acquire(&self, worker: &WorkerId, ttl: Duration) -> Result<Option<LeasedTask>, Error> {
        let mut connection = self.connection.clone();
        let acquired: Option<(String, String, u64)> = self
            .acquire
            .arg(&self.namespace)
            .arg(worker.as_str())
            .arg(millis(ttl))
            .invoke_async(&mut connection)
            .await?;
        let Some((id, spec, epoch)) = acquired else {
            return Ok(None);
        };
        let key = format!("{}:task:{id}", self.namespace);
        let spec: TaskSpec = serde_json::from_str(&spec).map_err(|error| corrupt(&key, error))?;
        Ok(Some(LeasedTask {
            spec,
            lease_epoch: LeaseEpoch(epoch),
            lease_ttl: ttl,
        }))
    }

    async fn extend(
        &self,
        worker: &WorkerId,
        task_id: &TaskId,
        epoch: LeaseEpoch,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let mut connection = self.connection.clone();
        let extended: i64 = self
            .extend
            .key(self.task_key(task_id))
            .arg(worker.as_str())
            .arg(epoch.0)
            .arg(millis(ttl))
            .invoke_async(&mut connection)
            .await?;
        Ok(extended == 1)
    }

    async fn complete(
        &self,
        worker: &WorkerId,
        task_id: &TaskId,
        epoch: LeaseEpoch,
        outcome: CopyOutcome,
    ) -> Result<Verdict, Error> {
        let payload = serde_json::to_string(&outcome).map_err(|error| corrupt("outcome", error))?;
        self.report(worker, task_id, epoch, "complete", payload)
            .await
    }

    async fn fail(
        &self,
        worker: &WorkerId,
        task_id: &TaskId,
        epoch: LeaseEpoch,
        error: String,
        retryable: bool,
    ) -> Result<Verdict, Error> {
        let payload = serde_json::to_string(&FailurePayload { error, retryable })
            .map_err(|error| corrupt("failure", error))?;
        self.report(worker, task_id, epoch, "failed", payload).await
    }

    async fn release(
        &self,
        worker: &WorkerId,
        task_id: &TaskId,
        epoch: LeaseEpoch,
    ) -> Result<Verdict, Error> {
        self.report(worker, task_id, epoch, "released", String::new())
            .await
    }

    async fn live_tasks(
        &self,
        migration: &MigrationId,
    ) -> Result<std::collections::HashSet<TaskId>, Error> {
        let mut connection = self.connection.clone();
        let set = format!("{}:m:{migration}:tasks", self.namespace);
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&set)
            .query_async(&mut connection)
            .await?;
        ids.into_iter()
            .map(|id| TaskId::parse(id).map_err(|error| corrupt(&set, error)))
            .collect()
    }

    async fn collect(&self, migration: &MigrationId, owner: &str) -> Result<Collected, Error> {
        let mut connection = self.connection.clone();
        let entries: Vec<String> = match self
            .collect
            .arg(&self.namespace)
            .arg(migration.as_str())
            .arg(owner)
            .invoke_async(&mut connection)
            .await
        {
            Ok(entries) => entries,
            Err(error) if error.code() == Some("NOTOWNER") => {
                let holder = error.detail().unwrap_or_default().to_owned();
                return Err(Error::NotOwner(holder));
            }
            Err(error) => return Err(error.into()),
        };
        let outbox = format!("{}:m:{migration}:outbox", self.namespace);
        let mut collected = Collected::default();
        for entry in entries {
            let entry: OutboxEntry =
                serde_json::from_str(&entry).map_err(|error| corrupt(&outbox, error))?;
            let spec: TaskSpec =
                serde_json::from_str(&entry.spec).map_err(|error| corrupt(&outbox, error))?;
            let reason = match entry.kind.as_str() {
                "complete" => {
                    let outcome: CopyOutcome = serde_json::from_str(&entry.payload)
                        .map_err(|error| corrupt(&outbox, error))?;
                    collected.completions.push(Completion {
                        task_id: spec.task_id,
                        chunk: spec.chunk,
                        worker: WorkerId::parse(entry.worker)
                            .map_err(|error| corrupt(&outbox, error))?,
                        outcome,
                    });
                    continue;
                }
                "failed" => {
                    let failure: FailurePayload = serde_json::from_str(&entry.payload)
                        .map_err(|error| corrupt(&outbox, error))?;
                    ReturnReason::Failed {
                        error: failure.error,
                        retryable: failure.retryable,
                    }
                }
                "released" => ReturnReason::Released,
                "expired" => ReturnReason::Expired,
                other => return Err(corrupt(&outbox, format!("unknown entry kind {other}"))),
            };
            collected.returned.push(Returned { spec, reason });
        }
        Ok(collected)
    }

    async fn clear(&self, migration: &MigrationId) -> Result<(), Error> {
        let mut connection = self.connection.clone();
        let _: i64 = self
            .clear
            .arg(&self.namespace)
            .arg(migration.as_str())
            .invoke_async(&mut connection)
            .await?;
        Ok(())
    }

    async fn wait_for_work(&self, timeout: Duration) {
        tokio::time::sleep(timeout.min(Duration::from_millis(50))).await;
    }

    async fn owner_epoch(&self, migration: &MigrationId) -> Result<u64, Error> {
        let mut connection = self.connection.clone();
        let epoch: u64 = redis::cmd("INCR")
            .arg(format!("{}:m:{migration}:owner_epoch", self.namespace))
            .query_async(&mut connection)
            .await?;
        Ok(epoch)
    }
}
