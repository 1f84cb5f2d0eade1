//! `CutOver` and `Close`.
//!
//! MariaDB refuses `RENAME TABLE` under `LOCK TABLES`, so the swap takes two connections:
//! 1. C1: `LOCK TABLES t WRITE` (application writes to `t` now queue);
//! 2. the change stream catches up to the server's position, and the rest is applied to
//!    `_t_new` on a third connection C3 (nobody locks `_t_new`);
//! 3. C3: `RENAME TABLE _t_new TO t_shoal_swap`;
//! 4. C2: `RENAME TABLE t TO t_shoal_old, t_shoal_swap TO t`: the server takes a rename's
//!    metadata locks one by one in name order, and `t` sorts before both other names, so the
//!    rename's first (and only possible) wait is on `t`, queued ahead of the application's writes
//!    (an exclusive request has priority over pending DML);
//! 5. the process list shows C2 waiting for the metadata lock;
//! 6. C1: `UNLOCK TABLES`: the rename runs first; the queued writes then open the new `t`;
//! 7. `RENAME TABLE t_shoal_old TO _t_old`; the catalogue is checked.
//!
//! # Design decisions
//! The design brief (like gh-ost) renames `t TO _t_old, _t_new TO t` while C1 also holds
//! `_t_new` and a sentry `_t_old`. On MariaDB 10.11 that loses writes: `_t_…` sorts before `t`, so
//! the rename waited on `_t_new` (held by C1; with C1 holding only `t` it still happened once
//! under load, presumably a background thread briefly holding `_t_new`, not verified) and was not
//! yet queued on `t` when C1 unlocked; queued
//! application writes then ran on the old table. The writer test caught it (one or two lost
//! writes in a run, more often under load). Renaming the shadow to a name that sorts after `t`
//! first makes `t` the rename's first lock, whatever else holds the other names. The sentry is
//! unnecessary because the rename is sent only after the final flush.
//!
//! If anything fails before step 6, the shadow gets its name back and C1 unlocks: the original
//! table is in place and the attempt is retried (at most three, with back-off). MySQL 8.0.13+
//! renames under its own lock, in one session instead (`one_session.rs`).
//!
//! Transitions: CutOver → Close; a failed attempt stays in CutOver; three → ErrCleanup.

use std::time::{Duration, Instant};

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use shoal_common::names;
use tracing::{Instrument, info, warn};

use super::Error;
use shoal_common::checkpoint::CutoverMarker;

use super::binlog;
use super::owner::Migration;

const ATTEMPTS: u32 = 3;

/// The connection sending the swap (C2) and the task running it. The task hands the connection
/// back with the outcome, so its id cannot be reused by the pool (and hit by a `KILL`) while
/// shoal may still kill it.
struct Renamer {
    /// Its connection id, to find it in the process list or kill it.
    id: u32,
    /// The `RENAME TABLE` in flight.
    handle: super::settle::RenameTask,
}
/// How long C2 may wait in the process list before the attempt is abandoned.
const RENAME_QUEUE_DEADLINE: Duration = Duration::from_secs(5);

impl Migration {
    /// `CutOver`: swaps the tables; records how long application writes were blocked.
    pub(super) async fn cutover(&mut self) -> Result<(), Error> {
        shoal_worker::failpoint::hit("cutover.before", self.options.id.as_str()).await;
        let span = tracing::info_span!(
            parent: &*self.phase(),
            "cutover",
            blocked_ms = tracing::field::Empty,
        );
        let result = self.cutover_attempts().instrument(span.clone()).await;
        span.record(
            "blocked_ms",
            self.progress.borrow().cutover_blocked.as_millis() as u64,
        );
        result
    }

    /// Carries the source's `AUTO_INCREMENT` counter to the shadow table, unless the ALTER sets
    /// one: rows written with explicit keys raise the shadow's counter only to the largest key
    /// plus one, so a counter above that (deleted rows at the end, an earlier
    /// `AUTO_INCREMENT=`) would otherwise go back and reuse values.
    pub(super) async fn carry_auto_increment(&self, connection: &mut Conn) -> Result<(), Error> {
        if self.statement.sets_auto_increment {
            return Ok(());
        }
        let counter: Option<Option<u64>> = connection
            .exec_first(
                "SELECT AUTO_INCREMENT FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&self.schema, &self.table),
            )
            .await?;
        if let Some(counter) = counter.flatten() {
            // Never below what the shadow has: InnoDB keeps the larger of the two anyway.
            connection
                .query_drop(format!(
                    "ALTER TABLE {} AUTO_INCREMENT = {counter}",
                    self.qualified(&names::shadow(&self.table))
                ))
                .await?;
        }
        Ok(())
    }

    async fn cutover_attempts(&mut self) -> Result<(), Error> {
        let one_session = shoal_mysql::flavour::renames_under_lock_tables(
            self.server.mariadb,
            &self.server.version,
        );
        if !one_session {
            // Before the lock (one session carries it under its lock).
            let mut connection = self.connect().await?;
            self.carry_auto_increment(&mut connection).await?;
        }
        for attempt in 1..=ATTEMPTS {
            self.check_cancelled()?;
            // Keep the locked window short: apply what has accumulated first.
            let mut connection = self.connect().await?;
            let target = binlog::current_position(&mut connection, &self.server).await?;
            self.catch_up(&target, Duration::from_secs(60)).await?;
            self.flush_ready(&mut connection).await?;
            drop(connection);
            // Before the first rename: a new owner then reads the catalogue before anything else.
            self.mark_cutover(CutoverMarker::Started).await?;
            let swapped = if one_session {
                self.swap_in_one_session().await
            } else {
                self.swap().await
            };
            match swapped {
                Ok(blocked) => {
                    let sessions = if one_session { 1 } else { 2 };
                    info!(migration_id = %self.options.id, ?blocked, attempt, sessions, "cut-over done");
                    self.progress
                        .send_modify(|progress| progress.cutover_blocked = blocked);
                    self.stop_stream().await;
                    return Ok(());
                }
                // A changed definition or an ambiguous catalogue is not cured by trying again.
                Err(error)
                    if attempt < ATTEMPTS
                        && !matches!(
                            error,
                            Error::Preflight(_)
                                | Error::CutoverAmbiguous(_)
                                | Error::UniqueConflict(_)
                        ) =>
                {
                    warn!(migration_id = %self.options.id, attempt, %error, "cut-over attempt failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                }
                Err(error) => return Err(error),
            }
        }
        Err(Error::Cutover("no attempt left".to_owned()))
    }

    async fn swap(&mut self) -> Result<Duration, Error> {
        let source = self.qualified(&self.table);
        let lock_wait = self.options.lock_wait_timeout.as_secs().max(1);
        let mut holder = self.connect().await?;
        holder
            .query_drop(format!("SET SESSION lock_wait_timeout = {lock_wait}"))
            .await?;
        let checkpoint = self.checkpoint_table();
        shoal_worker::failpoint::hit("cutover.locking", self.options.id.as_str()).await;
        holder
            .query_drop(format!("LOCK TABLES {source} WRITE, {checkpoint} READ"))
            .await?;
        let locked_at = Instant::now();
        // Re-check ownership under the lock; the lock on the checkpoint table keeps a new owner
        // from raising the epoch until the rename is queued (INV-O1).
        if let Err(error) = self.check_owner(&mut holder, false).await {
            // A lost connection took its lock with it.
            let _ = holder.query_drop("UNLOCK TABLES").await;
            return Err(error);
        }
        shoal_worker::failpoint::hit("cutover.locked", &format!("holder={}", holder.id())).await;
        let renamer = match self.queue_rename(&mut holder, lock_wait).await {
            Ok(renamer) => renamer,
            Err(error) => {
                // Nothing was sent to rename `t`: the original is in place.
                self.cutting_over = false;
                let _ = holder.query_drop("UNLOCK TABLES").await;
                self.restore_shadow_name().await?;
                return Err(error);
            }
        };
        // From here the swap is sent: an error no longer says whether it ran; the catalogue does.
        if let Err(error) = self.wait_until_queued(&mut holder, &renamer).await {
            let sent = super::settle::Sent {
                renamer_id: renamer.id,
                in_flight: Some(renamer.handle),
                finished: None,
                holder: Some(holder),
            };
            return self.settle_after_error(error, sent, locked_at).await;
        }
        if let Err(error) = holder.query_drop("UNLOCK TABLES").await {
            // C1 is gone (killed, lost) and its lock with it: the queued rename ran or runs
            // now. Its own outcome decides, not this error.
            warn!(migration_id = %self.options.id, %error, "the lock connection was lost after the rename was queued; its lock went with it");
        }
        let (finished, renamed) = match renamer.handle.await {
            Ok((connection, renamed)) => (Some(connection), renamed.map_err(Error::from)),
            Err(join) => (
                None,
                Err(Error::Cutover(format!("rename task failed: {join}"))),
            ),
        };
        if let Err(error) = renamed {
            let sent = super::settle::Sent {
                renamer_id: renamer.id,
                in_flight: None,
                finished,
                holder: None,
            };
            return self.settle_after_error(error, sent, locked_at).await;
        }
        drop(finished);
        let blocked = locked_at.elapsed();
        self.finish_swap().await?;
        Ok(blocked)
    }

    /// Gives the shadow table back its `_t_new` name after a failed attempt (if it was renamed).
    pub(super) async fn restore_shadow_name(&mut self) -> Result<(), Error> {
        let mut connection = self.connect().await?;
        let swap = names::swap(&self.table);
        if super::catalog::table_exists(&mut connection, &self.schema, &swap).await? {
            connection
                .query_drop(format!(
                    "RENAME TABLE {} TO {}",
                    self.qualified(&swap),
                    self.qualified(&names::shadow(&self.table))
                ))
                .await?;
        }
        Ok(())
    }

    /// Steps 2 to 4: under C1's lock, catch up, flush, rename the shadow on C3, check that
    /// nobody else changed the table's definition, and send the swap on C2.
    async fn queue_rename(&mut self, holder: &mut Conn, lock_wait: u64) -> Result<Renamer, Error> {
        let target = binlog::current_position(holder, &self.server).await?;
        self.catch_up(&target, Duration::from_secs(10)).await?;
        let mut flusher = self.connect().await?;
        flusher
            .query_drop(format!("SET SESSION lock_wait_timeout = {lock_wait}"))
            .await?;
        self.under_cutover_lock = true;
        let flushed = self.flush_ready(&mut flusher).await;
        self.under_cutover_lock = false;
        flushed?;
        if !self.buffer.is_empty() {
            return Err(Error::Cutover(format!(
                "{} changes are still deferred under the lock",
                self.buffer.len()
            )));
        }
        self.changes_before_swap = None;
        let source = self.qualified(&self.table);
        let swap = self.qualified(&names::swap(&self.table));
        let swapped_out = self.qualified(&names::swapped_out(&self.table));
        // Right after the final flush: a new owner proving this swap from the binlog counts the
        // changes of `t` after this rename (were C1's lock lost now, they went to the original).
        flusher
            .query_drop(format!(
                "RENAME TABLE {} TO {swap}",
                self.qualified(&names::shadow(&self.table))
            ))
            .await?;
        self.verify_removals(holder, Some(&mut flusher), &names::swap(&self.table))
            .await?;
        self.check_definition_unchanged(holder).await?;
        drop(flusher);
        self.cutting_over = true;
        let mut renamer = self.connect().await?;
        renamer
            .query_drop(format!("SET SESSION lock_wait_timeout = {}", lock_wait + 5))
            .await?;
        let id = renamer.id();
        let rename = format!("RENAME TABLE {source} TO {swapped_out}, {swap} TO {source}");
        let failpoint_context = format!("renamer={id}");
        let handle = tokio::spawn(async move {
            shoal_worker::failpoint::hit("cutover.renaming", &failpoint_context).await;
            let renamed = renamer.query_drop(rename).await;
            (renamer, renamed)
        });
        shoal_worker::failpoint::hit(
            "cutover.rename_sent",
            &format!("holder={} renamer={id}", holder.id()),
        )
        .await;
        Ok(Renamer { id, handle })
    }

    /// Step 5: waits until the server shows C2 waiting for the metadata lock.
    async fn wait_until_queued(
        &mut self,
        holder: &mut Conn,
        renamer: &Renamer,
    ) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            let state: Option<Option<String>> = holder
                .exec_first(
                    format!(
                        "SELECT STATE FROM {} WHERE ID = ?",
                        shoal_mysql::flavour::processlist(self.server.mariadb)
                    ),
                    (renamer.id,),
                )
                .await?;
            if let Some(Some(state)) = &state
                && state.to_ascii_lowercase().contains("metadata lock")
            {
                shoal_worker::failpoint::hit(
                    "cutover.queued",
                    &format!("holder={} renamer={}", holder.id(), renamer.id),
                )
                .await;
                return Ok(());
            }
            if renamer.handle.is_finished() {
                return Err(Error::Cutover(
                    "the rename ended before it was seen waiting".to_owned(),
                ));
            }
            if started.elapsed() > RENAME_QUEUE_DEADLINE {
                return Err(Error::Cutover(format!(
                    "the rename was not seen waiting within {RENAME_QUEUE_DEADLINE:?} (state {state:?})"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Under the cut-over lock: the original's definition (without its `AUTO_INCREMENT=`
    /// counter) is the one read at the start, and it has no triggers. Another session's DDL
    /// would otherwise be undone by the swap.
    pub(super) async fn check_definition_unchanged(&self, holder: &mut Conn) -> Result<(), Error> {
        let now = super::catalog::definition(holder, &self.schema, &self.table).await?;
        if now != self.source_definition {
            return Err(Error::Preflight(format!(
                "the definition of {} changed during the migration (another session's DDL); the \
                 swap would undo it: run the migration again on the new definition",
                self.qualified(&self.table)
            )));
        }
        let trigger: Option<String> = holder
            .exec_first(
                "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS \
                 WHERE EVENT_OBJECT_SCHEMA = ? AND EVENT_OBJECT_TABLE = ? LIMIT 1",
                (&self.schema, &self.table),
            )
            .await?;
        if let Some(trigger) = trigger {
            return Err(Error::Preflight(format!(
                "trigger `{trigger}` was created on {} during the migration; shoal cannot carry \
                 triggers across the cut-over",
                self.qualified(&self.table)
            )));
        }
        Ok(())
    }

    /// Step 7: `t` is the former shadow table and `_t_old` the former original.
    pub(super) async fn verify_swap(&mut self) -> Result<(), Error> {
        let mut connection = self.connect().await?;
        let old_exists =
            super::catalog::table_exists(&mut connection, &self.schema, &names::old(&self.table))
                .await?;
        let shadow_exists = super::catalog::table_exists(
            &mut connection,
            &self.schema,
            &names::shadow(&self.table),
        )
        .await?;
        if !old_exists || shadow_exists {
            return Err(Error::Cutover(format!(
                "after the rename the catalogue is ambiguous (_old exists: {old_exists}, _new exists: \
                 {shadow_exists}); stop and inspect `{}` by hand",
                self.schema
            )));
        }
        Ok(())
    }

    /// `Close`: drops shoal's tables (and `_t_old` unless kept) and releases the lock. The
    /// checkpoint goes last: until then a new owner finds it and closes again.
    pub(super) async fn close(&mut self) -> Result<(), Error> {
        let mut connection = self.connect().await?;
        let mut drop_list = vec![names::fence(&self.table), names::heartbeat(&self.table)];
        if self.cutover_marker != CutoverMarker::Done {
            // Without `Done` a new owner needs `_t_old` to know the tables were swapped.
            warn!(
                migration_id = %self.options.id,
                table = %self.qualified(&names::old(&self.table)),
                "the cut-over marker Done was not written: the original is kept; drop it by hand"
            );
        } else if !self.options.keep_old_table {
            drop_list.push(names::old(&self.table));
        }
        for table in drop_list {
            connection
                .query_drop(format!("DROP TABLE IF EXISTS {}", self.qualified(&table)))
                .await?;
        }
        shoal_worker::failpoint::hit("close.dropped", self.options.id.as_str()).await;
        self.with_store(|| self.store.clear(&self.options.id))
            .await?;
        self.leave_sentinel().await;
        connection
            .query_drop(format!(
                "DROP TABLE IF EXISTS {}",
                self.qualified(&names::checkpoint(&self.table))
            ))
            .await?;
        self.created_tables = false;
        self.release_lock().await;
        Ok(())
    }
}
