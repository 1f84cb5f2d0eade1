//! What a migration's checkpoint holds (design "Checkpoints, status, resume") and the pure rules
//! that decide whether a saved checkpoint may be resumed.
//!
//! The named columns of `_<t>_chkpnt` (watermarks, binlog position, statement, owner epoch) are
//! what operators query; [`Detail`] is the rest, stored as JSON: the plan with its drained set
//! (INV-W1), the spec without secrets, operator intents, the source server's identity, the
//! cut-over marker and the owner's connections (killed by a taking-over owner).
//!
//! # Invariants
//! - No secret is ever part of a checkpoint: the spec names a target, never a DSN.
//! - A checkpoint is resumed only by the same statement on the same server.

use serde::{Deserialize, Serialize};

use crate::chunk::PlanSnapshot;
use crate::lifecycle::State;
use crate::task::CopyMode;

/// The default target chunk time (design "Row copy" §4), also for checkpoints written before
/// chunk sizing was adaptive.
pub fn default_target_chunk_ms() -> u64 {
    500
}

/// The migration's spec as a checkpoint keeps it (no DSN, no password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecRecord {
    /// Target name (resolved to a DSN by each process's own environment).
    pub target: String,
    /// Concurrent copy tasks asked for at submission.
    pub threads: u32,
    /// Key span of the first copy chunks.
    pub chunk_rows: u64,
    /// Server-side time each copy chunk aims at (ms; 0 keeps `chunk_rows` fixed).
    #[serde(default = "default_target_chunk_ms")]
    pub target_chunk_ms: u64,
    /// How rows are copied.
    pub copy_mode: CopyMode,
    /// Keep `_<t>_old` after the cut-over.
    pub keep_old_table: bool,
    /// Wait on the sentinel table before the cut-over.
    pub defer_cutover: bool,
    /// Targets whose replication lag holds the copy (fleet migrations).
    #[serde(default)]
    pub replica_targets: Vec<String>,
    /// Throttle limits.
    #[serde(default)]
    pub limits: crate::throttle::Limits,
    /// Copy with the shadow table's secondary indexes in place.
    #[serde(default)]
    pub keep_secondary_indexes: bool,
    /// Fail rather than start afresh when resuming is impossible.
    #[serde(default)]
    pub strict: bool,
    /// Bound on shoal's lock waits, in milliseconds.
    #[serde(default = "default_lock_wait_timeout_ms")]
    pub lock_wait_timeout_ms: u64,
}

/// The lock-wait bound of a checkpoint written before the spec recorded it.
pub fn default_lock_wait_timeout_ms() -> u64 {
    5_000
}

/// What the operator asked of the running migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentsRecord {
    /// The copy is paused.
    pub paused: bool,
    /// Current thread budget.
    pub threads: u32,
    /// The deferred cut-over was released.
    pub released: bool,
}

/// Which server a checkpoint was taken on. Binlog coordinates mean nothing on another server
/// (a promoted replica numbers its own files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceIdentity {
    /// `@@server_id`.
    pub server_id: u32,
    /// `@@hostname`.
    pub hostname: String,
}

/// How far the cut-over got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CutoverMarker {
    /// Not begun: the original table is in place.
    #[default]
    NotStarted,
    /// The rename may have run: a new owner must read the catalogue first.
    Started,
    /// The new table is in place.
    Done,
}

/// The JSON part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    /// The migration's id (a resumed migration keeps it).
    pub migration_id: String,
    /// The state to resume at.
    pub state: State,
    /// The spec, without secrets.
    pub spec: SpecRecord,
    /// Operator intents.
    pub intents: IntentsRecord,
    /// The server the binlog position belongs to.
    pub source: SourceIdentity,
    /// The plan and its drained set; `None` until the copy planned its first chunk.
    pub plan: Option<PlanSnapshot>,
    /// Cut-over progress.
    pub cutover: CutoverMarker,
    /// Who wrote it (a coordinator id, or `run@<host>:<pid>`).
    pub owner: String,
    /// The fleet (live-store namespace) that runs it; `None` for `shoal run`. A fleet rebuilding
    /// from MySQL adopts only its own migrations, never a `shoal run` or another fleet's.
    #[serde(default)]
    pub fleet: Option<String>,
    /// The owner's MySQL connection ids: a taking-over owner kills them.
    pub owner_connections: Vec<u64>,
    /// Rows copied so far (for status after a resume).
    pub rows_copied: u64,
    /// Definitions of the shadow table's secondary indexes the copy runs without, added back
    /// in `RestoreSecondaryIndexes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deferred_indexes: Vec<String>,
}

/// A checkpoint as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The ALTER statement.
    pub statement: String,
    /// Binlog file of P.
    pub binlog_file: String,
    /// Offset of P.
    pub binlog_pos: u64,
    /// The epoch of the owner that wrote it.
    pub owner_epoch: u64,
    /// Everything else.
    pub detail: Detail,
}

/// Why a saved checkpoint cannot be resumed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeRefusal {
    /// Another ALTER is checkpointed for this table.
    #[error(
        "a checkpoint of a different ALTER exists for this table ({saved}); run that ALTER again \
         to resume it, or drop shoal's tables for this table to start over"
    )]
    DifferentStatement {
        /// The saved statement.
        saved: String,
    },
    /// The checkpoint was taken on another server.
    #[error(
        "the checkpoint was taken on server_id {saved_id} ({saved_host}), this is server_id \
         {current_id} ({current_host}): its binlog position means nothing here (a promoted \
         replica?); drop shoal's tables for this table to start over"
    )]
    DifferentServer {
        /// Saved server id.
        saved_id: u32,
        /// Saved hostname.
        saved_host: String,
        /// This server's id.
        current_id: u32,
        /// This server's hostname.
        current_host: String,
    },
}

/// The statement with runs of whitespace collapsed and a trailing `;` removed: two texts of one
/// ALTER that differ only in layout are the same statement.
pub fn normalize_statement(statement: &str) -> String {
    statement
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `saved` may be resumed by `statement` on `source`.
pub fn check_resume(
    saved: &Saved,
    statement: &str,
    source: &SourceIdentity,
) -> Result<(), ResumeRefusal> {
    if normalize_statement(&saved.statement) != normalize_statement(statement) {
        return Err(ResumeRefusal::DifferentStatement {
            saved: saved.statement.clone(),
        });
    }
    if saved.detail.source != *source {
        return Err(ResumeRefusal::DifferentServer {
            saved_id: saved.detail.source.server_id,
            saved_host: saved.detail.source.hostname.clone(),
            current_id: source.server_id,
            current_host: source.hostname.clone(),
        });
    }
    Ok(())
}

/// The owner epoch a new owner takes (INV-O1): above every epoch handed out by the live store and
/// above the one stored in MySQL, so an owner that lost the live store still fences its
/// predecessor.
pub fn next_owner_epoch(live_store: u64, stored: Option<u64>) -> u64 {
    live_store
        .max(stored.map_or(0, |stored| stored.saturating_add(1)))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(statement: &str) -> Saved {
        Saved {
            statement: statement.to_owned(),
            binlog_file: "bin.000001".to_owned(),
            binlog_pos: 4,
            owner_epoch: 1,
            detail: Detail {
                migration_id: "m".to_owned(),
                state: State::CopyRows,
                spec: SpecRecord {
                    target: "local".to_owned(),
                    threads: 4,
                    chunk_rows: 1000,
                    target_chunk_ms: 500,
                    copy_mode: CopyMode::Server,
                    keep_old_table: false,
                    defer_cutover: false,
                    replica_targets: Vec::new(),
                    limits: crate::throttle::Limits::default(),
                    keep_secondary_indexes: false,
                    strict: false,
                    lock_wait_timeout_ms: 5_000,
                },
                intents: IntentsRecord {
                    paused: false,
                    threads: 4,
                    released: false,
                },
                source: SourceIdentity {
                    server_id: 1,
                    hostname: "db1".to_owned(),
                },
                plan: None,
                cutover: CutoverMarker::NotStarted,
                owner: "run@h:1".to_owned(),
                fleet: None,
                deferred_indexes: Vec::new(),
                owner_connections: vec![7],
                rows_copied: 0,
            },
        }
    }

    #[test]
    fn the_same_statement_on_the_same_server_resumes() {
        let saved = saved("ALTER TABLE t ADD COLUMN x INT");
        let here = saved.detail.source.clone();
        assert_eq!(
            check_resume(&saved, "  ALTER TABLE t\n  ADD COLUMN x INT; ", &here),
            Ok(())
        );
    }

    #[test]
    fn another_statement_is_refused_naming_the_saved_one() {
        let saved = saved("ALTER TABLE t ADD COLUMN x INT");
        let here = saved.detail.source.clone();
        let refusal = check_resume(&saved, "ALTER TABLE t ADD COLUMN y INT", &here).unwrap_err();
        assert!(matches!(refusal, ResumeRefusal::DifferentStatement { .. }));
        assert!(refusal.to_string().contains("ADD COLUMN x INT"));
    }

    #[test]
    fn another_server_is_refused() {
        let saved = saved("ALTER TABLE t ADD COLUMN x INT");
        let promoted = SourceIdentity {
            server_id: 2,
            hostname: "db2".to_owned(),
        };
        let refusal =
            check_resume(&saved, "ALTER TABLE t ADD COLUMN x INT", &promoted).unwrap_err();
        assert!(matches!(refusal, ResumeRefusal::DifferentServer { .. }));
    }

    #[test]
    fn a_new_owner_epoch_is_above_both_sources() {
        assert_eq!(next_owner_epoch(0, None), 1);
        assert_eq!(next_owner_epoch(5, Some(2)), 5);
        assert_eq!(
            next_owner_epoch(1, Some(7)),
            8,
            "the live store was flushed"
        );
        assert_eq!(next_owner_epoch(9, Some(8)), 9);
    }

    #[test]
    fn a_detail_round_trips_through_json() {
        let detail = saved("ALTER TABLE t ADD COLUMN x INT").detail;
        let text = serde_json::to_string(&detail).unwrap();
        assert!(!text.contains("mysql://"), "no DSN in a checkpoint");
        assert_eq!(serde_json::from_str::<Detail>(&text).unwrap(), detail);
    }
}
