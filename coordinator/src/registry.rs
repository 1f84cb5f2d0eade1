//! The migrations this coordinator owns, their live progress and their outcome.
//!
//! # What is stored where
//! The owner keeps live progress here; [`crate::owners`] publishes it to the live store so that
//! every coordinator can answer for every migration.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use shoal_common::ids::MigrationId;
use shoal_proto::v1;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::migration::{ChangePath, Intents, Progress, State};

/// How a migration ended, or that it has not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still running.
    Running,
    /// Done: the table has its new schema.
    Completed(ChangePath),
    /// Stopped by an error; the message names it.
    Failed(String),
    /// Stopped by an operator.
    Cancelled,
}

/// One migration as the registry holds it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// What was submitted.
    pub spec: v1::MigrationSpec,
    /// Live progress.
    pub progress: watch::Receiver<Progress>,
    /// Outcome, updated once at the end.
    pub outcome: watch::Receiver<Outcome>,
    /// Cancels the migration.
    pub cancel: CancellationToken,
    /// Operator intents (pause, volume).
    pub intents: Arc<watch::Sender<Intents>>,
}

/// Migrations by id.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    entries: Arc<Mutex<BTreeMap<MigrationId, Entry>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<MigrationId, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a migration.
    pub fn insert(&self, id: MigrationId, entry: Entry) {
        self.lock().insert(id, entry);
    }

    /// Forgets a migration (its owner moved on to another coordinator).
    pub fn remove(&self, id: &MigrationId) {
        self.lock().remove(id);
    }

    /// A migration by id.
    pub fn get(&self, id: &MigrationId) -> Option<Entry> {
        self.lock().get(id).cloned()
    }

    /// Every migration, by id.
    pub fn all(&self) -> Vec<(MigrationId, Entry)> {
        self.lock()
            .iter()
            .map(|(id, entry)| (id.clone(), entry.clone()))
            .collect()
    }
}

/// The wire state of a lifecycle state.
pub fn proto_state(state: State) -> v1::State {
    match state {
        State::Initial => v1::State::Initial,
        State::CopyRows => v1::State::CopyRows,
        State::ApplyChangeset => v1::State::ApplyChangeset,
        State::RestoreSecondaryIndexes => v1::State::RestoreSecondaryIndexes,
        State::AnalyzeTable => v1::State::AnalyzeTable,
        State::Checksum => v1::State::Checksum,
        State::PostChecksum => v1::State::PostChecksum,
        State::WaitingOnSentinelTable => v1::State::WaitingOnSentinelTable,
        State::CutOver => v1::State::CutOver,
        State::Close => v1::State::Close,
        State::ErrCleanup => v1::State::ErrCleanup,
    }
}

/// The wire status of a migration.
pub fn status(id: &MigrationId, entry: &Entry) -> v1::MigrationStatus {
    let progress = entry.progress.borrow().clone();
    let outcome = entry.outcome.borrow().clone();
    let (proto_outcome, message, healthy) = match &outcome {
        Outcome::Running => (v1::Outcome::Running, progress.state.to_string(), true),
        Outcome::Completed(ChangePath::Instant) => (
            v1::Outcome::Completed,
            "completed with ALGORITHM=INSTANT".to_owned(),
            true,
        ),
        Outcome::Completed(ChangePath::Copy) => {
            (v1::Outcome::Completed, "completed by copy".to_owned(), true)
        }
        Outcome::Failed(error) => (v1::Outcome::Failed, error.clone(), false),
        Outcome::Cancelled => (v1::Outcome::Cancelled, "cancelled".to_owned(), true),
    };
    let state = match (&outcome, progress.state) {
        (Outcome::Completed(_), _) => v1::State::Close,
        (_, state) => proto_state(state),
    };
    // Rows per second of this owner's copy, and the time left while it copies.
    let (rows_per_second, eta) = match progress.copy_window {
        Some(window) => {
            let elapsed_ms = window
                .ended_ms
                .unwrap_or_else(crate::api::unix_millis_now)
                .saturating_sub(window.started_ms);
            let copied = progress.rows_copied.saturating_sub(window.rows_before);
            let rate = if elapsed_ms > 0 {
                copied as f64 * 1000.0 / elapsed_ms as f64
            } else {
                0.0
            };
            let left = progress.rows_estimated.saturating_sub(progress.rows_copied);
            let eta = (window.ended_ms.is_none() && rate > 0.0).then(|| {
                crate::api::proto_duration(std::time::Duration::from_secs_f64(left as f64 / rate))
            });
            (rate, eta)
        }
        None => (0.0, None),
    };
    let percent = if progress.rows_estimated > 0 {
        (100.0 * progress.rows_copied as f64 / progress.rows_estimated as f64).min(100.0)
    } else {
        0.0
    };
    let mut metadata = std::collections::HashMap::new();
    metadata.insert(
        "checksum_passes".to_owned(),
        progress.checksum_passes.to_string(),
    );
    metadata.insert(
        "ranges_repaired".to_owned(),
        progress.ranges_repaired.to_string(),
    );
    metadata.insert(
        "chunks_returned".to_owned(),
        progress.chunks_returned.to_string(),
    );
    metadata.insert(
        "changes_deferred".to_owned(),
        progress.changes_deferred.to_string(),
    );
    metadata.insert(
        "unique_conflicts".to_owned(),
        progress.unique_conflicts.to_string(),
    );
    metadata.insert(
        "cutover_blocked_ms".to_owned(),
        progress.cutover_blocked.as_millis().to_string(),
    );
    metadata.insert("owner_epoch".to_owned(), progress.owner_epoch.to_string());
    metadata.insert("chunk_size".to_owned(), progress.chunk_size.to_string());
    metadata.insert("checkpoints".to_owned(), progress.checkpoints.to_string());
    metadata.insert(
        "checkpoint_failures".to_owned(),
        progress.checkpoint_failures.to_string(),
    );
    if let Some(state) = progress.resumed_at {
        metadata.insert("resumed_at".to_owned(), state.to_string());
        metadata.insert(
            "chunks_recopied".to_owned(),
            progress.chunks_recopied.to_string(),
        );
    }
    v1::MigrationStatus {
        migration_id: id.to_string(),
        spec: Some(entry.spec.clone()),
        state: state as i32,
        outcome: proto_outcome as i32,
        paused: progress.paused,
        throttled: progress.throttled.clone().unwrap_or_default(),
        healthy,
        message,
        state_entered_at: progress
            .history
            .state_entered_ms()
            .map(crate::api::timestamp_from_millis),
        last_updated_at: Some(prost_types::Timestamp::from(SystemTime::now())),
        metadata,
        last_transitions: progress
            .history
            .transitions()
            .map(|transition| v1::Transition {
                from: proto_state(transition.from) as i32,
                to: proto_state(transition.to) as i32,
                at: Some(crate::api::timestamp_from_millis(transition.at_ms)),
                message: transition.message.clone(),
            })
            .collect(),
        progress: Some(v1::Progress {
            summary: format!(
                "{}: {} of ~{} rows copied, {} changes applied{}",
                progress.state,
                progress.rows_copied,
                progress.rows_estimated,
                progress.changes_applied,
                progress
                    .throttled
                    .as_deref()
                    .map(|reason| format!("; throttled: {reason}"))
                    .unwrap_or_default()
            ),
            rows_copied: progress.rows_copied,
            rows_estimated: progress.rows_estimated,
            percent,
            rows_per_second,
            eta,
            applier_lag_events: progress.changes_buffered,
            applier_lag: Some(prost_types::Duration {
                seconds: progress.applier_lag_seconds(crate::api::unix_millis_now() / 1000) as i64,
                nanos: 0,
            }),
            workers: if progress.state == State::CopyRows {
                progress.workers
            } else {
                0
            },
            chunks_done: progress.chunks_done,
            chunks_leased: progress.chunks_in_flight,
            binlog_file: progress
                .binlog_position
                .as_ref()
                .map(|(file, _)| file.clone())
                .unwrap_or_default(),
            binlog_position: progress
                .binlog_position
                .as_ref()
                .map_or(0, |(_, position)| *position),
        }),
        change_path: match progress.path {
            Some(ChangePath::Instant) => v1::ChangePath::Instant as i32,
            Some(ChangePath::Copy) => v1::ChangePath::Copy as i32,
            None => v1::ChangePath::Unspecified as i32,
        },
    }
}
