//! Tasks: what the owner of a migration hands to workers, and what comes back.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::chunk::{ChunkId, ChunkRange};
use crate::ids::{FenceEpoch, LeaseEpoch, MigrationId, TaskId, WorkerId};

/// What a task asks of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskKind {
    /// Copy the range from the source into the shadow table.
    Copy,
}

/// How rows are copied. The default is the faster one in `make bench` on this kind of machine
/// (see `docs/benchmarks.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CopyMode {
    /// The worker reads at READ COMMITTED and writes `INSERT IGNORE … VALUES` batches: the rows
    /// pass through the worker (the path that can later copy between servers).
    Buffered,
    /// `INSERT IGNORE … SELECT` run by the server inside the fenced transaction (at READ
    /// COMMITTED the source is read without locks); fastest when source and shadow share a server.
    #[default]
    Server,
}

impl std::str::FromStr for CopyMode {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "buffered" => Ok(Self::Buffered),
            "server" => Ok(Self::Server),
            other => Err(format!(
                "unknown copy mode {other:?}; use buffered or server"
            )),
        }
    }
}

/// Everything a worker needs to run a migration's tasks; no secrets (the target is a name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyContext {
    /// Name the worker resolves to a DSN from its own configuration.
    pub target: String,
    /// Database of the tables.
    pub schema: String,
    /// The table being altered.
    pub source_table: String,
    /// `_<t>_new`.
    pub shadow_table: String,
    /// `_<t>_fence`.
    pub fence_table: String,
    /// Columns copied, as named in the source, in order.
    pub source_columns: Vec<String>,
    /// The same columns as named in the shadow table.
    pub shadow_columns: Vec<String>,
    /// Primary-key columns, in key order.
    pub key_columns: Vec<String>,
    /// How rows move.
    pub copy_mode: CopyMode,
    /// Rows per `INSERT` batch in buffered mode.
    pub batch_rows: u32,
}

/// A task as published by the owner, before anyone leases it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Unique per publication: a chunk offered again gets a new id.
    pub task_id: TaskId,
    /// The migration it belongs to.
    pub migration_id: MigrationId,
    /// What to do.
    pub kind: TaskKind,
    /// The chunk (key of its fence row).
    pub chunk: ChunkId,
    /// Its key range.
    pub range: ChunkRange,
    /// The fence epoch the copy transaction must find (INV-F1).
    pub fence_epoch: FenceEpoch,
    /// How to reach and copy the tables.
    pub context: CopyContext,
    /// W3C trace context joining the worker's span to the migration's trace.
    pub trace_context: Vec<(String, String)>,
}

/// A task leased to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedTask {
    /// The task.
    pub spec: TaskSpec,
    /// Every report must carry it (INV-L1).
    pub lease_epoch: LeaseEpoch,
    /// When the lease ends unless extended.
    pub lease_ttl: Duration,
}

/// What a worker reports for a finished copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyOutcome {
    /// Rows written to the shadow table (duplicates ignored are not counted).
    pub rows: u64,
    /// Server-side statement time, the feedback for chunk sizing.
    pub statement_time: Duration,
    /// Rows skipped on a duplicate of a non-primary unique key (settled by deferred changes or
    /// the checksum).
    pub unique_conflicts: u64,
}

/// A completion accepted at the current lease epoch, waiting for the owner to fold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// The task.
    pub task_id: TaskId,
    /// Its chunk.
    pub chunk: ChunkId,
    /// Who did it.
    pub worker: WorkerId,
    /// What it did.
    pub outcome: CopyOutcome,
}

/// A task that went back to the owner without completing: its lease expired, or the worker
/// failed or released it. The owner bumps the fence and publishes the chunk again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Returned {
    /// The task as it was published.
    pub spec: TaskSpec,
    /// Why it came back, for logs and metrics.
    pub reason: ReturnReason,
}

/// Why a task came back to the owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReturnReason {
    /// Its lease expired (worker dead, stalled or partitioned).
    Expired,
    /// The worker reported a failure.
    Failed {
        /// The worker's message.
        error: String,
        /// Whether the worker thinks a retry can succeed.
        retryable: bool,
    },
    /// The worker gave it back unfinished (drain).
    Released,
}
