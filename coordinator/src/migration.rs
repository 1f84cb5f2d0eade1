//! One online schema change, driven by its owner: the phases from `Initial` to `Close`.
//!
//! # Layout (one file per phase, in the order a migration visits them)
//! - [`alter`]: the statement, vetted (read as the server reads it); [`catalog`]: what the
//!   server says about tables; [`columns`]: the old → new column mapping, names folded by the
//!   server.
//! - [`owner`]: preflight, the native INSTANT attempt, `Initial` (advisory lock, shadow,
//!   checkpoint and fence tables, binlog position, change stream) and `ErrCleanup`.
//! - [`copy_rows`]: `CopyRows` and `ApplyChangeset`: plans chunks lazily, publishes them as
//!   tasks, folds completions into the ledger, applies changes as chunks drain.
//! - [`planning`]: the bounds and key-order probes the chunk planner asks for.
//! - [`checksum`]: `Checksum`: the snapshot barrier, range digests, repair.
//! - [`cutover`]: `CutOver` and `Close`: the two-connection rename (MariaDB), cleanup.
//! - [`binlog`]: the change stream reader; `stream`: the owner's side of it (filing events into
//!   the buffer, catching up); [`apply`]: writing changes into the shadow table; `removals`:
//!   rows a write pushed out under a new unique key, checked against the source.
//!
//! # Invariants
//! INV-C1 (nothing lost), INV-F1 (worker fence), INV-W1 (drained set and watermark), INV-L1
//! (lease epochs): see `docs/architecture.md`. Each phase's doc says which it relies on.

pub mod alter;
pub mod apply;
pub mod binlog;
pub mod capacity;
pub mod catalog;
pub mod checkpoint;
pub mod checksum;
pub mod columns;
pub mod copy_rows;
pub mod cutover;
pub mod indexes;
mod one_session;
pub mod owner;
pub mod plan;
pub mod planning;
mod removals;
pub mod sentinel;
mod settle;
mod stream;
pub mod throttle;
pub mod unique;

use std::time::Duration;

use shoal_common::ids::MigrationId;
use shoal_common::task::CopyMode;

/// Why a migration stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Refused before anything was changed; the message names the problem and the fix.
    #[error("{0}")]
    Preflight(String),
    /// The ALTER statement is refused.
    #[error(transparent)]
    Alter(#[from] alter::Error),
    /// A server or connection error.
    #[error("mysql: {0}")]
    Mysql(#[from] mysql_async::Error),
    /// The change stream failed.
    #[error("binlog: {0}")]
    Binlog(String),
    /// Applying changes to the shadow table failed.
    #[error("apply changes: {0}")]
    Apply(String),
    /// A chunk could not be copied.
    #[error("copy: {0}")]
    Copy(String),
    /// The checksum found differences it could not repair.
    #[error("checksum: {0}")]
    Checksum(String),
    /// The cut-over failed; the original table is in place.
    #[error("cut-over: {0}")]
    Cutover(String),
    /// A row of the new table would be lost under a secondary unique key: the source holds rows
    /// that collide under a UNIQUE index the ALTER adds. Not retried.
    #[error("unique key: {0}")]
    UniqueConflict(String),
    /// The cut-over failed and the catalogue shows neither the original nor the swapped tables
    /// as shoal left them: nothing is cleaned up, a human must look.
    #[error("cut-over: {0}")]
    CutoverAmbiguous(String),
    /// The live store failed.
    #[error("store: {0}")]
    Store(crate::store::Error),
    /// A target could not be resolved.
    #[error(transparent)]
    Target(#[from] shoal_worker::session::Error),
    /// Cancelled by the operator or by shutdown.
    #[error("cancelled")]
    Cancelled,
    /// Another owner took the migration over (INV-O1): stop at once, clean nothing up.
    #[error("deposed: {0}")]
    Deposed(String),
    /// A throttle check gave up (a replica's lag unknown for too long); the table is untouched.
    #[error("throttle: {0}")]
    Throttle(String),
    /// Checkpoints cannot be written; the migration stops rather than run on unsaved.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A lifecycle transition was refused (a bug: the owner drives phases in order).
    #[error("lifecycle: {0}")]
    Lifecycle(#[from] shoal_common::lifecycle::TransitionError),
}

impl From<crate::store::Error> for Error {
    /// A live store naming another owner means this one was deposed (INV-O1), wherever the
    /// refusal comes from; other store errors stay store errors.
    fn from(error: crate::store::Error) -> Self {
        match error {
            crate::store::Error::NotOwner(holder) => Error::Deposed(format!(
                "the live store names {holder:?} as the migration's owner"
            )),
            error => Error::Store(error),
        }
    }
}

/// How long the owner waits for a server that refuses new connections before failing.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(60);

/// Server errors meaning the connection is gone (killed, lost, server shutting down).
const CONNECTION_LOST_CODES: [u16; 4] = [2006, 2013, 1927, 1053];

impl Error {
    /// Whether the statement failed because its connection is gone: the same work on a fresh
    /// connection may succeed.
    pub fn connection_lost(&self) -> bool {
        match self {
            Error::Mysql(mysql_async::Error::Server(server)) => {
                CONNECTION_LOST_CODES.contains(&server.code)
            }
            Error::Mysql(mysql_async::Error::Io(_) | mysql_async::Error::Driver(_)) => true,
            _ => false,
        }
    }

    /// Whether a retry may cure it: a lost connection, a lock wait timeout, a deadlock or a
    /// killed query.
    pub fn is_transient(&self) -> bool {
        self.connection_lost()
            || matches!(self, Error::Mysql(mysql_async::Error::Server(server))
                if matches!(server.code, 1205 | 1213 | 1317))
    }
}

/// Which path made the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangePath {
    /// `ALGORITHM=INSTANT`: metadata only.
    Instant,
    /// Shadow table, copy, change capture, checksum, cut-over.
    Copy,
}

pub use shoal_common::lifecycle::State;

/// What a migration is asked to do. Contains the resolved DSN: never log or send it.
#[derive(Clone)]
pub struct MigrationOptions {
    /// Its id.
    pub id: MigrationId,
    /// Target name (what workers resolve).
    pub target: String,
    /// Resolved DSN of the target; it selects the schema unless `schema` does.
    pub dsn: String,
    /// The schema, when it comes from elsewhere than the DSN (a fleet's request): selected
    /// through the driver's typed option, never spliced into the DSN.
    pub schema: Option<String>,
    /// The user's ALTER TABLE.
    pub alter: String,
    /// Concurrent copy tasks.
    pub threads: u32,
    /// Key span of the first copy chunks.
    pub chunk_rows: u64,
    /// Server-side time each copy chunk aims at; zero keeps `chunk_rows` fixed.
    pub target_chunk_time: Duration,
    /// How rows are copied.
    pub copy_mode: CopyMode,
    /// Keep `_<t>_old` after cut-over.
    pub keep_old_table: bool,
    /// Skip the INSTANT attempt.
    pub no_instant: bool,
    /// Copy with the shadow table's secondary indexes in place (by default plain ones are
    /// dropped for the copy and built afterwards, unless the copy is throttled or paced).
    pub keep_secondary_indexes: bool,
    /// Bound on shoal's lock waits (DDL, fence bumps, cut-over).
    pub lock_wait_timeout: Duration,
    /// Lease of one task.
    pub lease_ttl: Duration,
    /// How often the owner writes a checkpoint while copying.
    pub checkpoint_interval: Duration,
    /// How often the owner logs a status line until the cut-over.
    pub status_interval: Duration,
    /// Fail (instead of starting afresh) when a checkpoint's binlog file was purged.
    pub strict: bool,
    /// Wait on the sentinel table before the cut-over.
    pub defer_cutover: bool,
    /// Who owns the migration (coordinator id, or `run@<host>:<pid>`), for the checkpoint.
    pub owner: String,
    /// The fleet (live-store namespace) running it; `None` for `shoal run`.
    pub fleet: Option<String>,
    /// A coordinator taking the migration over (it holds the owner lease): the previous
    /// owner's connections recorded in the checkpoint are killed, and the advisory lock is
    /// waited for.
    pub take_over: bool,
    /// Replicas whose lag holds the copy.
    pub replicas: Vec<throttle::Replica>,
    /// Throttle limits (replica lag, `Threads_running`, history list length).
    pub limits: shoal_common::throttle::Limits,
    /// Most shoal migrations copying on one server at once (advisory-lock slots); 0: no cap.
    pub max_concurrent_migrations: u32,
}

impl std::fmt::Debug for MigrationOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrationOptions")
            .field("id", &self.id)
            .field("target", &self.target)
            .field("dsn", &shoal_worker::session::redact_dsn(&self.dsn))
            .field("alter", &self.alter)
            .field("threads", &self.threads)
            .field("chunk_rows", &self.chunk_rows)
            .field("target_chunk_time", &self.target_chunk_time)
            .field("copy_mode", &self.copy_mode)
            .field("owner", &self.owner)
            .field("replicas", &self.replicas)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// What the operator wants of a running migration; changes take effect without a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intents {
    /// No new chunk is handed out; chunks in flight finish; changes keep being applied; the
    /// migration does not move past the copy while paused.
    pub paused: bool,
    /// Concurrent chunk tasks (the lease budget of the fleet).
    pub threads: u32,
    /// The deferred cut-over may proceed.
    pub released: bool,
}

/// When this owner copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyWindow {
    /// Unix ms when the copy began.
    pub started_ms: u64,
    /// Unix ms when every chunk was drained.
    pub ended_ms: Option<u64>,
    /// Rows copied before (by a previous owner).
    pub rows_before: u64,
}

/// Live progress, published on a watch channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Where the migration is.
    pub state: State,
    /// Rows written by copy tasks.
    pub rows_copied: u64,
    /// Rows the table held when the copy began (estimate).
    pub rows_estimated: u64,
    /// Chunks drained.
    pub chunks_done: u64,
    /// Chunks leased or waiting.
    pub chunks_in_flight: u64,
    /// Change events applied to the shadow table.
    pub changes_applied: u64,
    /// Changes buffered (deferred or waiting for a flush).
    pub changes_buffered: u64,
    /// Changes held back for a chunk being copied and applied once it drained (INV-C2), by
    /// this owner.
    pub changes_deferred: u64,
    /// When the server wrote the last row event the change stream delivered (Unix seconds; 0
    /// before the first): the applier lag in seconds is its age while changes wait.
    pub last_event_at: u32,
    /// Workers that completed a chunk of this migration in the last 30 seconds.
    pub workers: u32,
    /// Key span of the copy chunks being planned now (adaptive).
    pub chunk_size: u64,
    /// Checksum passes run.
    pub checksum_passes: u32,
    /// Ranges repaired after a checksum mismatch.
    pub ranges_repaired: u32,
    /// Rows skipped on a duplicate of a non-primary unique key while copying.
    pub unique_conflicts: u64,
    /// How long application writes were blocked at cut-over.
    pub cutover_blocked: Duration,
    /// Which path ran, once known.
    pub path: Option<ChangePath>,
    /// The checkpoint's id, when the migration resumed one (it keeps that id).
    pub resumed_id: Option<String>,
    /// Whether the copy is paused by the operator.
    pub paused: bool,
    /// Why the copy is held by the throttle, while it is.
    pub throttled: Option<String>,
    /// The last transitions and when the current state was entered.
    pub history: shoal_common::lifecycle::History,
    /// Checkpoints written, and write attempts that failed (and were retried).
    pub checkpoints: u64,
    /// Checkpoint writes that failed (transient ones are retried).
    pub checkpoint_failures: u64,
    /// Set when the migration resumed from a checkpoint: the state it resumed at.
    pub resumed_at: Option<State>,
    /// Chunks recopied after a resume (planned but not drained in the checkpoint).
    pub chunks_recopied: u64,
    /// Chunk tasks that came back to this owner (lease expired, copy failed, worker drained)
    /// and were offered again.
    pub chunks_returned: u64,
    /// The owner epoch this owner holds (INV-O1).
    pub owner_epoch: u64,
    /// Where the change stream is (what a checkpoint would record as P).
    pub binlog_position: Option<(String, u64)>,
    /// This owner's copy: when it began and ended (Unix ms) and the rows copied when it began;
    /// the copy rate and the ETA come from it.
    pub copy_window: Option<CopyWindow>,
}

impl Progress {
    /// Seconds the change applier is behind: the age of the last row event the stream
    /// delivered while changes still wait to be applied; 0 when nothing waits.
    pub fn applier_lag_seconds(&self, now_unix: u64) -> u64 {
        if self.changes_buffered == 0 || self.last_event_at == 0 {
            return 0;
        }
        now_unix.saturating_sub(u64::from(self.last_event_at))
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            state: State::Initial,
            rows_copied: 0,
            rows_estimated: 0,
            chunks_done: 0,
            chunks_in_flight: 0,
            changes_applied: 0,
            changes_buffered: 0,
            changes_deferred: 0,
            last_event_at: 0,
            workers: 0,
            chunk_size: 0,
            checksum_passes: 0,
            ranges_repaired: 0,
            unique_conflicts: 0,
            cutover_blocked: Duration::ZERO,
            path: None,
            resumed_id: None,
            paused: false,
            throttled: None,
            history: shoal_common::lifecycle::History::default(),
            checkpoints: 0,
            checkpoint_failures: 0,
            resumed_at: None,
            chunks_recopied: 0,
            chunks_returned: 0,
            owner_epoch: 0,
            binlog_position: None,
            copy_window: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;

    #[test]
    fn applier_lag_is_the_age_of_the_last_event_while_changes_wait() {
        let mut progress = Progress {
            last_event_at: 1_000,
            ..Progress::default()
        };
        assert_eq!(progress.applier_lag_seconds(1_030), 0, "nothing waits");
        progress.changes_buffered = 5;
        assert_eq!(progress.applier_lag_seconds(1_030), 30);
        assert_eq!(
            progress.applier_lag_seconds(900),
            0,
            "clock skew is not lag"
        );
        progress.last_event_at = 0;
        assert_eq!(progress.applier_lag_seconds(1_030), 0, "no event read yet");
    }
}
