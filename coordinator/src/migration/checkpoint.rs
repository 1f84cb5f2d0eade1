//! The checkpoint table `_<t>_chkpnt`, the owner's periodic duties, and the owner fence.
//!
//! The table holds one row (id 1): the columns operators query (watermarks, P, statement, owner
//! epoch) and the rest as [`Detail`] JSON. The owner writes it at the end of `Initial`, every
//! `checkpoint_interval` while copying, and when the copy is paused.
//!
//! # Invariants
//! - INV-W1: P is the last transaction boundary the stream delivered, recorded right after every
//!   change whose chunk is drained was flushed; S is the ledger's drained chunks. So every event
//!   before P for a chunk in S is applied, and a resumed owner recopies every chunk not in S.
//! - INV-O1: a checkpoint write is `UPDATE … WHERE owner_epoch = ?`, and every flush of changes
//!   runs in a transaction that first reads the owner epoch `LOCK IN SHARE MODE` (or under a
//!   table lock that covers the checkpoint table). A taking-over owner raises the epoch with an
//!   `UPDATE`, which waits for any flush in flight; a deposed owner can then neither flush nor
//!   checkpoint.
//! - Transient write errors are retried for up to one interval; a permanent one (or a whole
//!   interval of failures) stops the migration: better to fail early than to discover after days
//!   that progress was never saved.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, TxOpts};
use shoal_common::checkpoint::{CutoverMarker, Detail, IntentsRecord, Saved, SpecRecord};
use shoal_common::chunk::PlanSnapshot;
use shoal_common::names;
use shoal_common::sql::quote_qualified;
use tracing::{info, warn};

use super::binlog::BinlogPos;
use super::owner::Migration;
use super::{Error, State};

/// Delay before retrying a failed checkpoint write.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// `ER_NO_SUCH_TABLE`.
const NO_SUCH_TABLE: u16 = 1146;

fn table_missing(error: &mysql_async::Error) -> bool {
    matches!(error, mysql_async::Error::Server(server) if server.code == NO_SUCH_TABLE)
}

/// When the owner last did its duties and how checkpoint writes are going.
#[derive(Debug)]
pub(super) struct Duties {
    last_checkpoint: Instant,
    last_status: Instant,
    /// When checkpoint writes started failing (cleared by a success).
    failing_since: Option<Instant>,
    /// A checkpoint is wanted now (pause).
    forced: bool,
}

impl Default for Duties {
    fn default() -> Self {
        Self {
            last_checkpoint: Instant::now(),
            last_status: Instant::now(),
            failing_since: None,
            forced: false,
        }
    }
}

impl Duties {
    /// Asks for a checkpoint at the next duty round.
    pub(super) fn force(&mut self) {
        self.forced = true;
    }
}

/// Reads the checkpoint of `table`, if its table and row exist.
pub async fn read(
    connection: &mut impl Queryable,
    schema: &str,
    table: &str,
) -> Result<Option<Saved>, Error> {
    let sql = format!(
        "SELECT statement, binlog_name, binlog_pos, owner_epoch, detail FROM {} WHERE id = 1",
        quote_qualified(schema, &names::checkpoint(table))
    );
    let row: Option<(String, String, u64, u64, String)> = match connection.query_first(sql).await {
        Ok(row) => row,
        Err(error) if table_missing(&error) => return Ok(None),
        Err(mysql_async::Error::Server(server)) if server.code == 1054 => {
            return Err(Error::Preflight(format!(
                "`{schema}`.`{}` was written by another version of shoal (no detail column); \
                 drop shoal's tables for `{table}` to start over",
                names::checkpoint(table)
            )));
        }
        Err(error) => return Err(error.into()),
    };
    let Some((statement, binlog_file, binlog_pos, owner_epoch, detail)) = row else {
        return Ok(None);
    };
    let detail: Detail = serde_json::from_str(&detail).map_err(|error| {
        Error::Preflight(format!(
            "the checkpoint in `{schema}`.`{}` cannot be read ({error}); drop shoal's tables \
             for `{table}` to start over",
            names::checkpoint(table)
        ))
    })?;
    Ok(Some(Saved {
        statement,
        binlog_file,
        binlog_pos,
        owner_epoch,
        detail,
    }))
}

impl Migration {
    pub(super) fn checkpoint_table(&self) -> String {
        self.qualified(&names::checkpoint(&self.table))
    }

    /// Creates `_<t>_chkpnt` and writes the first checkpoint (end of `Initial`): P is the
    /// stream's start, nothing is planned yet.
    pub(super) async fn create_checkpoint(&mut self, start: &BinlogPos) -> Result<(), Error> {
        if self.checkpoint_connection.is_none() {
            self.checkpoint_connection = Some(self.connect().await?);
        }
        let detail = self.detail()?;
        let table = self.checkpoint_table();
        let Some(connection) = self.checkpoint_connection.as_mut() else {
            return Err(Error::Checkpoint("no checkpoint connection".to_owned()));
        };
        connection
            .query_drop(format!(
                "CREATE TABLE {table} (id INT NOT NULL PRIMARY KEY, \
                 copier_watermark BIGINT UNSIGNED NOT NULL, \
                 checksum_watermark BIGINT UNSIGNED NOT NULL, \
                 binlog_name VARCHAR(255) NOT NULL, binlog_pos BIGINT UNSIGNED NOT NULL, \
                 statement TEXT NOT NULL, owner_epoch BIGINT UNSIGNED NOT NULL, \
                 detail LONGTEXT NOT NULL, \
                 updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) \
                 ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
            ))
            .await?;
        connection
            .exec_drop(
                format!(
                    "INSERT INTO {table} (id, copier_watermark, checksum_watermark, binlog_name, \
                     binlog_pos, statement, owner_epoch, detail) VALUES (1, 0, 0, ?, ?, ?, ?, ?)"
                ),
                (
                    &start.file,
                    start.pos,
                    &self.options.alter,
                    self.owner_epoch,
                    detail,
                ),
            )
            .await?;
        self.progress
            .send_modify(|progress| progress.checkpoints += 1);
        info!(migration_id = %self.options.id, position = %start, "first checkpoint written");
        Ok(())
    }

    /// The JSON part of the checkpoint, as of now.
    fn detail(&self) -> Result<String, Error> {
        let intents = *self.intents.borrow();
        let progress = self.progress.borrow();
        let mut owner_connections: Vec<u64> = Vec::new();
        if let Some(connection) = &self.lock_connection {
            owner_connections.push(u64::from(connection.id()));
        }
        if let Some(connection) = &self.checkpoint_connection {
            owner_connections.push(u64::from(connection.id()));
        }
        let detail = Detail {
            migration_id: self.options.id.to_string(),
            state: progress.state,
            spec: SpecRecord {
                target: self.options.target.clone(),
                threads: self.options.threads,
                chunk_rows: self.options.chunk_rows,
                target_chunk_ms: u64::try_from(self.options.target_chunk_time.as_millis())
                    .unwrap_or(u64::MAX),
                copy_mode: self.options.copy_mode,
                keep_old_table: self.options.keep_old_table,
                defer_cutover: self.options.defer_cutover,
                replica_targets: self
                    .options
                    .replicas
                    .iter()
                    .filter_map(|replica| replica.target.clone())
                    .collect(),
                limits: self.options.limits,
                keep_secondary_indexes: self.options.keep_secondary_indexes,
                strict: self.options.strict,
                lock_wait_timeout_ms: u64::try_from(self.options.lock_wait_timeout.as_millis())
                    .unwrap_or(u64::MAX),
            },
            intents: IntentsRecord {
                paused: intents.paused,
                threads: intents.threads,
                released: intents.released,
            },
            source: self.server.identity(),
            plan: self
                .planner
                .as_ref()
                .map(|planner| PlanSnapshot::capture(planner, &self.ledger)),
            cutover: self.cutover_marker,
            owner: self.options.owner.clone(),
            fleet: self.options.fleet.clone(),
            owner_connections,
            rows_copied: progress.rows_copied,
            deferred_indexes: self.deferred_indexes.clone(),
        };
        serde_json::to_string(&detail).map_err(|error| Error::Checkpoint(error.to_string()))
    }

    /// Flushes every change whose chunk is drained, then records (P, S) with the owner epoch.
    pub(super) async fn write_checkpoint(&mut self) -> Result<(), Error> {
        let mut flusher = self.connect().await?;
        self.flush_ready(&mut flusher).await?;
        drop(flusher);
        let position = self
            .safe_position
            .clone()
            .ok_or_else(|| Error::Checkpoint("no stream position yet".to_owned()))?;
        if self.checkpoint_connection.is_none() {
            self.checkpoint_connection = Some(self.connect().await?);
        }
        let row = self.checkpoint_row(position.clone())?;
        let Some(connection) = self.checkpoint_connection.as_mut() else {
            return Err(Error::Checkpoint("no checkpoint connection".to_owned()));
        };
        shoal_worker::failpoint::hit("checkpoint.before_write", self.options.id.as_str()).await;
        row.write(connection).await?;
        self.progress.send_modify(|progress| {
            progress.checkpoints += 1;
            progress.binlog_position = Some((position.file.clone(), position.pos));
        });
        Ok(())
    }

    /// The checkpoint row as of now, with P = `position`.
    pub(super) fn checkpoint_row(&self, position: BinlogPos) -> Result<CheckpointRow, Error> {
        Ok(CheckpointRow {
            table: self.checkpoint_table(),
            watermark: self.ledger.low_watermark().0,
            position,
            detail: self.detail()?,
            epoch: self.owner_epoch,
        })
    }

    /// The owner's periodic duties until the cut-over: a checkpoint every
    /// `checkpoint_interval` (or when forced), a status line every `status_interval`.
    pub(super) async fn duties(&mut self) -> Result<(), Error> {
        if self.duties.last_status.elapsed() >= self.options.status_interval {
            self.duties.last_status = Instant::now();
            let progress = self.progress.borrow().clone();
            info!(
                migration_id = %self.options.id,
                state = %progress.state,
                rows_copied = progress.rows_copied,
                rows_estimated = progress.rows_estimated,
                chunks_done = progress.chunks_done,
                chunks_in_flight = progress.chunks_in_flight,
                changes_applied = progress.changes_applied,
                changes_buffered = progress.changes_buffered,
                paused = progress.paused,
                "status"
            );
        }
        let due = self.duties.forced
            || self.duties.last_checkpoint.elapsed() >= self.options.checkpoint_interval;
        if !due {
            return Ok(());
        }
        self.check_lock().await?;
        match self.write_checkpoint().await {
            Ok(()) => {
                if let Some(since) = self.duties.failing_since.take() {
                    info!(migration_id = %self.options.id, failing_for = ?since.elapsed(), "checkpoint written again");
                }
                self.duties.forced = false;
                self.duties.last_checkpoint = Instant::now();
                Ok(())
            }
            Err(Error::Mysql(error))
                if table_missing(&error) && self.progress.borrow().state >= State::CutOver =>
            {
                // The cut-over dropped the table: nothing left to save.
                Ok(())
            }
            Err(error) if error.is_transient() => {
                self.checkpoint_connection = None;
                self.progress
                    .send_modify(|progress| progress.checkpoint_failures += 1);
                let since = *self.duties.failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.options.checkpoint_interval {
                    return Err(Error::Checkpoint(format!(
                        "no checkpoint could be written for {:?} (last error: {error}); stopping \
                         rather than running on without saved progress",
                        since.elapsed()
                    )));
                }
                warn!(migration_id = %self.options.id, %error, "checkpoint write failed; retrying");
                // Try again soon, within the interval.
                self.duties.last_checkpoint = Instant::now()
                    .checked_sub(self.options.checkpoint_interval)
                    .unwrap_or_else(Instant::now)
                    + RETRY_DELAY;
                Ok(())
            }
            Err(Error::Mysql(error)) if table_missing(&error) => Err(Error::Checkpoint(format!(
                "the checkpoint table {} is gone ({error}); stopping: progress can no longer be saved",
                self.checkpoint_table()
            ))),
            Err(Error::Deposed(reason)) => Err(Error::Deposed(reason)),
            Err(error) => Err(Error::Checkpoint(format!(
                "writing the checkpoint failed permanently: {error}"
            ))),
        }
    }

    /// Checks, inside the caller's transaction or table lock, that this owner still holds the
    /// migration (INV-O1). `shared_lock`: read the epoch `LOCK IN SHARE MODE` (in a transaction);
    /// otherwise the caller's table lock on the checkpoint table keeps it stable.
    pub(super) async fn check_owner(
        &self,
        connection: &mut impl Queryable,
        shared_lock: bool,
    ) -> Result<(), Error> {
        let sql = format!(
            "SELECT owner_epoch FROM {} WHERE id = 1{}",
            self.checkpoint_table(),
            if shared_lock {
                " LOCK IN SHARE MODE"
            } else {
                ""
            }
        );
        let found: Option<u64> = match connection.query_first(sql).await {
            Ok(found) => found,
            Err(error) if table_missing(&error) => {
                return Err(Error::Checkpoint(format!(
                    "the checkpoint table {} is gone ({error}); stopping: the owner fence is lost",
                    self.checkpoint_table()
                )));
            }
            Err(error) => return Err(error.into()),
        };
        // Only another owner's record deposes this one: a missing row (the first checkpoint's
        // insert failed) is a failure of this owner's, cleaned up like any other.
        match found {
            Some(epoch) if epoch == self.owner_epoch => Ok(()),
            Some(epoch) => Err(Error::Deposed(format!(
                "flush refused: the checkpoint's owner epoch is {epoch}, this owner holds {}",
                self.owner_epoch
            ))),
            None => Err(Error::Checkpoint(format!(
                "the checkpoint table {} holds no owner record",
                self.checkpoint_table()
            ))),
        }
    }

    /// Takes the migration over from the checkpoint's writer: raises the owner epoch in MySQL,
    /// which waits for any flush of the old owner in flight (INV-O1).
    pub(super) async fn claim(&mut self, saved: &Saved, live_epoch: u64) -> Result<(), Error> {
        let epoch = shoal_common::checkpoint::next_owner_epoch(live_epoch, Some(saved.owner_epoch));
        let mut updater = self.connect().await?;
        let updater_id = updater.id();
        let sql = format!(
            "UPDATE {} SET owner_epoch = ? WHERE id = 1 AND owner_epoch < ?",
            self.checkpoint_table()
        );
        let raise = tokio::spawn(async move {
            updater.exec_drop(sql, (epoch, epoch)).await?;
            Ok::<u64, mysql_async::Error>(updater.affected_rows())
        });
        // A previous owner stalled inside a fenced flush holds the checkpoint row's shared
        // lock, and the raise waits for it: kill whatever blocks the raise (only shoal's own
        // transactions lock that row).
        let mut watcher = self.connect().await?;
        while !raise.is_finished() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if self.deposed.is_cancelled() {
                // Given up meanwhile (lease lost, store lost, shutdown): kill nobody, and stop the
                // raise on the server (a dropped client does not end a statement waiting for a
                // lock). Had it committed already, an owner raising to the same epoch is refused
                // and the migration is taken over again once that owner's lease runs out.
                let _ = watcher
                    .query_drop(shoal_mysql::flavour::kill(updater_id.into(), true))
                    .await;
                let _ = raise.await;
                return Err(Error::Deposed(
                    "deposed while raising the owner epoch".to_owned(),
                ));
            }
            let blockers: Vec<u64> = watcher
                .exec(
                    shoal_mysql::flavour::lock_blockers_query(self.server.mariadb),
                    (updater_id,),
                )
                .await?;
            for blocker in blockers {
                match watcher
                    .query_drop(shoal_mysql::flavour::kill(blocker, false))
                    .await
                {
                    Ok(()) => info!(
                        connection = blocker,
                        "killed a transaction of the previous owner blocking the takeover"
                    ),
                    Err(mysql_async::Error::Server(server)) if server.code == 1094 => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
        let affected = raise
            .await
            .map_err(|join| Error::Checkpoint(format!("raising the owner epoch: {join}")))??;
        if affected == 0 {
            return Err(Error::Deposed(format!(
                "another owner holds an epoch at or above {epoch}"
            )));
        }
        self.owner_epoch = epoch;
        self.progress
            .send_modify(|progress| progress.owner_epoch = epoch);
        info!(migration_id = %self.options.id, owner_epoch = epoch, "owner epoch raised");
        Ok(())
    }

    /// Starts a flush transaction fenced by the owner epoch.
    pub(super) async fn fenced_transaction<'a>(
        &self,
        connection: &'a mut Conn,
    ) -> Result<mysql_async::Transaction<'a>, Error> {
        let mut transaction = connection.start_transaction(TxOpts::default()).await?;
        self.check_owner(&mut transaction, true).await?;
        Ok(transaction)
    }

    /// Records the cut-over marker in the checkpoint (before the first rename, after the
    /// last); a new owner reads the catalogue when it finds `Started`.
    pub(super) async fn mark_cutover(&mut self, marker: CutoverMarker) -> Result<(), Error> {
        self.cutover_marker = marker;
        let mut attempt = 0;
        loop {
            match self.write_checkpoint().await {
                Ok(()) => return Ok(()),
                Err(error) if error.is_transient() && attempt < 3 => {
                    attempt += 1;
                    self.checkpoint_connection = None;
                    warn!(%error, attempt, "writing the cut-over marker failed; retrying");
                    tokio::time::sleep(RETRY_DELAY).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// One checkpoint row to write.
pub(super) struct CheckpointRow {
    table: String,
    watermark: u64,
    position: BinlogPos,
    detail: String,
    epoch: u64,
}

impl CheckpointRow {
    /// Writes it on `connection`, fenced by the owner epoch (INV-O1).
    pub(super) async fn write(&self, connection: &mut Conn) -> Result<(), Error> {
        let CheckpointRow {
            table,
            watermark,
            position,
            detail,
            epoch,
        } = self;
        connection
            .exec_drop(
                format!(
                    "UPDATE {table} SET copier_watermark = ?, binlog_name = ?, binlog_pos = ?, \
                     detail = ?, updated_at = CURRENT_TIMESTAMP(6) WHERE id = 1 AND owner_epoch = ?"
                ),
                (watermark, &position.file, position.pos, detail, epoch),
            )
            .await?;
        if connection.affected_rows() == 0 {
            let found: Option<u64> = connection
                .query_first(format!("SELECT owner_epoch FROM {table} WHERE id = 1"))
                .await?;
            return Err(Error::Deposed(format!(
                "checkpoint write refused: the checkpoint's owner epoch is {found:?}, this owner \
                 holds {epoch}"
            )));
        }
        Ok(())
    }
}
