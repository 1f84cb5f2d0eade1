//! The coordinator's Prometheus metrics: per migration it owns, labelled `migration`.
//!
//! Gauges are set from the migration's progress each ownership round and at every scrape;
//! chunk outcomes, chunk durations and checksum mismatches are recorded as they happen. Only
//! the owner exports a migration, so summing over coordinators never counts one twice.
//! `docs/observability.md` lists every metric with example alert rules.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use shoal_common::ids::MigrationId;
use shoal_common::task::ReturnReason;

use crate::migration::{Progress, State};
use crate::registry::Outcome;

/// Every metric the coordinator exports, with its help text (also the documented list).
pub const METRICS: [(&str, &str); 19] = [
    (
        "shoal_migration_state",
        "1 for the migration's current lifecycle state (label state), 0 for the others",
    ),
    (
        "shoal_migration_state_seconds",
        "Seconds since the migration entered its current state",
    ),
    (
        "shoal_migration_running",
        "1 while the migration runs, 0 once it completed, failed or was cancelled",
    ),
    (
        "shoal_migration_paused",
        "1 while the copy is paused by an operator",
    ),
    (
        "shoal_migration_throttled",
        "1 while the copy is held by the throttle (replica lag, Threads_running, history list)",
    ),
    ("shoal_rows_copied", "Rows copied into the shadow table"),
    (
        "shoal_rows_estimated",
        "Rows the table held when the copy began (estimate)",
    ),
    (
        "shoal_chunks_total",
        "Chunk tasks that ended, by outcome: done, expired (lease), failed, released (drain)",
    ),
    (
        "shoal_chunks_leased",
        "Chunk tasks published or leased, not yet done",
    ),
    (
        "shoal_chunk_duration_seconds",
        "Server-side statement time of copied chunks, as workers report it",
    ),
    (
        "shoal_changes_applied_total",
        "Binlog row changes applied to the shadow table",
    ),
    (
        "shoal_applier_lag_events",
        "Changes read from the binlog and not yet applied (deferred or waiting for a flush)",
    ),
    (
        "shoal_applier_lag_seconds",
        "Age of the last binlog event read while changes wait; 0 when nothing waits",
    ),
    (
        "shoal_binlog_position",
        "Byte offset the change stream has reached in its binlog file",
    ),
    (
        "shoal_binlog_file_number",
        "Sequence number of the binlog file the change stream reads (its name's extension)",
    ),
    (
        "shoal_checksum_mismatches_total",
        "Checksum ranges whose digests differed (each is repaired and checked again)",
    ),
    ("shoal_checksum_passes", "Checksum passes run"),
    (
        "shoal_cutover_lock_seconds",
        "How long application writes were blocked at the cut-over",
    ),
    (
        "shoal_migration_workers",
        "Workers that completed a chunk of the migration in the last 30 seconds",
    ),
];

/// Registers the help texts (once per process; repeated calls are harmless).
pub fn describe() {
    for (name, help) in METRICS {
        match name {
            "shoal_chunk_duration_seconds" => describe_histogram!(name, help),
            name if name.ends_with("_total") => describe_counter!(name, help),
            _ => describe_gauge!(name, help),
        }
    }
}

/// A copied chunk's completion was folded.
pub fn chunk_done(id: &MigrationId, statement_time: Duration) {
    let migration = id.to_string();
    counter!("shoal_chunks_total", "migration" => migration.clone(), "outcome" => "done")
        .increment(1);
    histogram!("shoal_chunk_duration_seconds", "migration" => migration)
        .record(statement_time.as_secs_f64());
}

/// A chunk task came back without completing.
pub fn chunk_returned(id: &MigrationId, reason: &ReturnReason) {
    let outcome = match reason {
        ReturnReason::Expired => "expired",
        ReturnReason::Failed { .. } => "failed",
        ReturnReason::Released => "released",
    };
    counter!("shoal_chunks_total", "migration" => id.to_string(), "outcome" => outcome)
        .increment(1);
}

/// A checksum range differed.
pub fn checksum_mismatch(id: &MigrationId) {
    counter!("shoal_checksum_mismatches_total", "migration" => id.to_string()).increment(1);
}

/// The number in a binlog file name's extension (`mariadb-bin.000042` → 42).
fn file_number(file: &str) -> Option<f64> {
    file.rsplit_once('.')
        .and_then(|(_, number)| number.parse::<u64>().ok())
        .map(|number| number as f64)
}

/// Sets the gauges of one migration from its progress.
pub fn observe(id: &MigrationId, progress: &Progress, outcome: &Outcome, now_ms: u64) {
    let migration = id.to_string();
    let label = || migration.clone();
    for state in State::ALL {
        let current = if state == progress.state { 1.0 } else { 0.0 };
        gauge!("shoal_migration_state", "migration" => label(), "state" => state.snake_name())
            .set(current);
    }
    let entered = progress.history.state_entered_ms().unwrap_or(now_ms);
    gauge!("shoal_migration_state_seconds", "migration" => label())
        .set(now_ms.saturating_sub(entered) as f64 / 1000.0);
    let running = matches!(outcome, Outcome::Running);
    gauge!("shoal_migration_running", "migration" => label()).set(f64::from(u8::from(running)));
    gauge!("shoal_migration_paused", "migration" => label())
        .set(f64::from(u8::from(progress.paused)));
    gauge!("shoal_migration_throttled", "migration" => label())
        .set(f64::from(u8::from(progress.throttled.is_some())));
    gauge!("shoal_rows_copied", "migration" => label()).set(progress.rows_copied as f64);
    gauge!("shoal_rows_estimated", "migration" => label()).set(progress.rows_estimated as f64);
    gauge!("shoal_chunks_leased", "migration" => label()).set(progress.chunks_in_flight as f64);
    counter!("shoal_changes_applied_total", "migration" => label())
        .absolute(progress.changes_applied);
    gauge!("shoal_applier_lag_events", "migration" => label())
        .set(progress.changes_buffered as f64);
    gauge!("shoal_applier_lag_seconds", "migration" => label())
        .set(progress.applier_lag_seconds(now_ms / 1000) as f64);
    if let Some((file, position)) = &progress.binlog_position {
        gauge!("shoal_binlog_position", "migration" => label()).set(*position as f64);
        if let Some(number) = file_number(file) {
            gauge!("shoal_binlog_file_number", "migration" => label()).set(number);
        }
    }
    gauge!("shoal_checksum_passes", "migration" => label())
        .set(f64::from(progress.checksum_passes));
    gauge!("shoal_cutover_lock_seconds", "migration" => label())
        .set(progress.cutover_blocked.as_secs_f64());
    let workers = if progress.state == State::CopyRows && running {
        progress.workers
    } else {
        0
    };
    gauge!("shoal_migration_workers", "migration" => label()).set(f64::from(workers));
    // Present from the first observation, so that a rate() over it starts at zero.
    counter!("shoal_checksum_mismatches_total", "migration" => label()).increment(0);
    for outcome in ["done", "expired", "failed", "released"] {
        counter!("shoal_chunks_total", "migration" => label(), "outcome" => outcome).increment(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binlog_file_numbers() {
        assert_eq!(file_number("mariadb-bin.000042"), Some(42.0));
        assert_eq!(file_number("binlog.1"), Some(1.0));
        assert_eq!(file_number("no-extension"), None);
    }

    #[test]
    fn every_metric_is_named_once_with_the_prefix() {
        let mut names: Vec<&str> = METRICS.iter().map(|(name, _)| *name).collect();
        assert!(names.iter().all(|name| name.starts_with("shoal_")));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), METRICS.len());
    }
}
