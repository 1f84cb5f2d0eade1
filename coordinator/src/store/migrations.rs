//! The migration store: which migrations are active, who owns each (the owner lease), the
//! operators' intents, the last published status, and the live store's incarnation.
//!
//! # Invariants
//! - INV-O1 (live side): at most one coordinator holds a migration's owner lease at a time; it
//!   is taken with `SET NX` semantics, renewed and released only by its holder, and expires
//!   after its TTL. Ownership also needs the MySQL advisory lock and a current owner epoch in
//!   the checkpoint table; the lease alone never authorises a durable write.
//! - Everything here can be lost (Redis `FLUSHALL`): the incarnation changes, and the
//!   coordinators rebuild the records from the MySQL checkpoints.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use shoal_common::ids::MigrationId;
use shoal_common::task::CopyMode;

use super::Error;

/// A migration's spec as the live store keeps it: no DSN, no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationRecord {
    /// Its id.
    pub id: String,
    /// Target name.
    pub target: String,
    /// Schema of the table.
    pub schema: String,
    /// The ALTER statement.
    pub alter: String,
    /// Concurrent copy tasks.
    pub threads: u32,
    /// Key span of the first chunks.
    pub chunk_rows: u64,
    /// Server-side time each chunk aims at (ms; 0 keeps `chunk_rows` fixed).
    #[serde(default = "shoal_common::checkpoint::default_target_chunk_ms")]
    pub target_chunk_ms: u64,
    /// How rows are copied.
    pub copy_mode: CopyMode,
    /// Keep `_<t>_old`.
    pub keep_old_table: bool,
    /// Skip the INSTANT attempt.
    pub no_instant: bool,
    /// Copy with the shadow table's secondary indexes in place.
    #[serde(default)]
    pub keep_secondary_indexes: bool,
    /// Fail rather than start afresh when resuming is impossible.
    pub strict: bool,
    /// Wait on the sentinel before the cut-over.
    pub defer_cutover: bool,
    /// Bound on lock waits, in milliseconds.
    pub lock_wait_timeout_ms: u64,
    /// Targets whose replication lag holds the copy.
    #[serde(default)]
    pub replica_targets: Vec<String>,
    /// Throttle limits.
    #[serde(default)]
    pub limits: shoal_common::throttle::Limits,
}

impl MigrationRecord {
    /// The record of a checkpointed migration of `schema`.`<table>` (after the live store lost
    /// everything): every option the checkpoint's spec keeps. The INSTANT attempt is skipped (a
    /// checkpoint means the copy began).
    pub fn from_checkpoint(schema: &str, saved: &shoal_common::checkpoint::Saved) -> Self {
        let spec = &saved.detail.spec;
        Self {
            id: saved.detail.migration_id.clone(),
            target: spec.target.clone(),
            schema: schema.to_owned(),
            alter: saved.statement.clone(),
            threads: spec.threads,
            chunk_rows: spec.chunk_rows,
            target_chunk_ms: spec.target_chunk_ms,
            copy_mode: spec.copy_mode,
            keep_old_table: spec.keep_old_table,
            no_instant: true,
            keep_secondary_indexes: spec.keep_secondary_indexes,
            strict: spec.strict,
            defer_cutover: spec.defer_cutover,
            lock_wait_timeout_ms: spec.lock_wait_timeout_ms,
            replica_targets: spec.replica_targets.clone(),
            limits: spec.limits,
        }
    }
}

/// What operators asked of a migration, through any coordinator; its owner applies it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorIntents {
    /// Copy paused.
    pub paused: bool,
    /// Thread budget (0: unchanged).
    pub threads: u32,
    /// Deferred cut-over released.
    pub released: bool,
    /// Cancel requested.
    pub cancelled: bool,
}

/// Active migrations, owner leases, intents and statuses.
#[async_trait]
pub trait MigrationStore: Send + Sync + std::fmt::Debug + 'static {
    /// Records a migration as active (idempotent).
    async fn register(&self, record: &MigrationRecord) -> Result<(), Error>;

    /// The active migrations' records.
    async fn active(&self) -> Result<Vec<MigrationRecord>, Error>;

    /// Ends a migration: no longer active (its last status stays readable).
    async fn finish(&self, id: &MigrationId) -> Result<(), Error>;

    /// Takes the owner lease for `ttl` if nobody holds it. True if taken.
    async fn try_own(&self, id: &MigrationId, owner: &str, ttl: Duration) -> Result<bool, Error>;

    /// Extends the lease if `owner` still holds it. False when lost.
    async fn renew(&self, id: &MigrationId, owner: &str, ttl: Duration) -> Result<bool, Error>;

    /// Gives the lease back if `owner` holds it (a standby takes over at once).
    async fn disown(&self, id: &MigrationId, owner: &str) -> Result<(), Error>;

    /// The operators' intents, if any were recorded.
    async fn intents(&self, id: &MigrationId) -> Result<Option<OperatorIntents>, Error>;

    /// Records the operators' intents.
    async fn set_intents(&self, id: &MigrationId, intents: &OperatorIntents) -> Result<(), Error>;

    /// Publishes a migration's status (an encoded `shoal.v1.MigrationStatus`).
    async fn put_status(&self, id: &MigrationId, status: Vec<u8>) -> Result<(), Error>;

    /// One migration's last published status.
    async fn status(&self, id: &MigrationId) -> Result<Option<Vec<u8>>, Error>;

    /// Every published status.
    async fn statuses(&self) -> Result<Vec<Vec<u8>>, Error>;

    /// The live store's incarnation: created if absent. A different answer than before means
    /// the store lost everything.
    async fn incarnation(&self) -> Result<String, Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(spec: &str) -> shoal_common::checkpoint::Saved {
        let detail = format!(
            r#"{{"migration_id":"m1","state":"CopyRows","spec":{spec},
            "intents":{{"paused":false,"threads":2,"released":false}},
            "source":{{"server_id":1,"hostname":"db"}},"plan":null,"cutover":"NotStarted",
            "owner":"c1","fleet":"f","owner_connections":[],"rows_copied":0}}"#
        );
        shoal_common::checkpoint::Saved {
            statement: "ALTER TABLE t ADD x INT".to_owned(),
            binlog_file: "bin.000001".to_owned(),
            binlog_pos: 4,
            owner_epoch: 1,
            detail: serde_json::from_str(&detail).unwrap(),
        }
    }

    #[test]
    fn a_record_rebuilt_from_a_checkpoint_keeps_every_option() {
        let record = MigrationRecord::from_checkpoint(
            "shop",
            &saved(
                r#"{"target":"shop","threads":3,"chunk_rows":500,"target_chunk_ms":250,
                "copy_mode":"Buffered","keep_old_table":true,"defer_cutover":true,
                "replica_targets":["r1"],"keep_secondary_indexes":true,"strict":true,
                "lock_wait_timeout_ms":7000}"#,
            ),
        );
        assert_eq!(record.schema, "shop");
        assert_eq!(record.alter, "ALTER TABLE t ADD x INT");
        assert_eq!(
            (record.threads, record.chunk_rows, record.target_chunk_ms),
            (3, 500, 250)
        );
        assert_eq!(record.copy_mode, CopyMode::Buffered);
        assert!(record.keep_old_table && record.defer_cutover);
        assert!(record.strict, "--strict survives the rebuild");
        assert!(record.keep_secondary_indexes);
        assert_eq!(record.lock_wait_timeout_ms, 7_000);
        assert_eq!(record.replica_targets, ["r1"]);
        assert!(
            record.no_instant,
            "a checkpointed migration never tries INSTANT"
        );
    }

    #[test]
    fn a_checkpoint_written_before_the_spec_kept_them_gets_the_defaults() {
        let record = MigrationRecord::from_checkpoint(
            "shop",
            &saved(
                r#"{"target":"shop","threads":3,"chunk_rows":500,"copy_mode":"Server",
                "keep_old_table":false,"defer_cutover":false}"#,
            ),
        );
        assert!(!record.strict);
        assert_eq!(record.lock_wait_timeout_ms, 5_000);
    }
}
