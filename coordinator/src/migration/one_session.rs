//! The cut-over on MySQL 8.0.13+, which renames tables under its own `LOCK TABLES`: one session
//! C1 does it all.
//! 1. C1: `LOCK TABLES t WRITE, _t_new WRITE, _t_chkpnt WRITE` (application writes queue);
//! 2. C1 checks ownership, the stream catches up to the server's position, and C1 applies the
//!    rest with autocommit statements (`START TRANSACTION` would release the locks);
//! 3. C1 checks the definition and the keys a new UNIQUE index pushed out, carries the
//!    `AUTO_INCREMENT` counter (read with `information_schema_stats_expiry = 0`), and writes the
//!    cut-over marker with P = the position it caught up to under the lock (every change of `t`
//!    before P is applied by then);
//! 4. C1: `RENAME TABLE t TO t_shoal_old, _t_new TO t`, then `UNLOCK TABLES`;
//! 5. as on MariaDB: the stream shows no change of `t` before the rename, `t_shoal_old` becomes
//!    `_t_old`, the marker says `Done`.
//!
//! # Invariants
//! - Nothing but C1 writes `t` from the lock to the rename: no write can reach the original
//!   after the final flush, and the marker's P is the lock point, so a new owner that finds the
//!   tables swapped proves it from P (no change of `t` after P).
//! - A failure before the rename is sent unlocks and leaves the original in place (the attempt is
//!   retried); a rename refused by the server moved nothing (it is atomic); a session lost
//!   while renaming is killed and waited out, and the catalogue says what happened.
//!
//! # Design decisions
//! MariaDB keeps its two-connection sequence (`cutover.rs`): it refuses the rename under the
//! lock. The marker is written by C1 because C1's lock keeps every other session from the
//! checkpoint table until it unlocks.

use std::time::{Duration, Instant};

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use shoal_common::names;

use super::Error;
use super::binlog;
use super::owner::Migration;

impl Migration {
    /// Steps 1 to 4; returns how long application writes were blocked.
    pub(super) async fn swap_in_one_session(&mut self) -> Result<Duration, Error> {
        let source = self.qualified(&self.table);
        let shadow = self.qualified(&names::shadow(&self.table));
        let swapped_out = self.qualified(&names::swapped_out(&self.table));
        let lock_wait = self.options.lock_wait_timeout.as_secs().max(1);
        let mut holder = self.connect().await?;
        holder
            .query_drop(format!("SET SESSION lock_wait_timeout = {lock_wait}"))
            .await?;
        holder
            .query_drop(shoal_mysql::flavour::FRESH_TABLE_STATISTICS)
            .await?;
        shoal_worker::failpoint::hit("cutover.locking", self.options.id.as_str()).await;
        holder
            .query_drop(format!(
                "LOCK TABLES {source} WRITE, {shadow} WRITE, {} WRITE",
                self.checkpoint_table()
            ))
            .await?;
        let locked_at = Instant::now();
        if let Err(error) = self.prepare_locked_swap(&mut holder).await {
            // A lost connection took its lock with it.
            let _ = holder.query_drop("UNLOCK TABLES").await;
            return Err(error);
        }
        let holder_id = holder.id();
        shoal_worker::failpoint::hit("cutover.renaming", &format!("holder={holder_id}")).await;
        self.cutting_over = true;
        match holder
            .query_drop(format!(
                "RENAME TABLE {source} TO {swapped_out}, {shadow} TO {source}"
            ))
            .await
        {
            Ok(()) => {
                // The rename is done: an error here is the lock going with its session.
                let _ = holder.query_drop("UNLOCK TABLES").await;
            }
            Err(mysql_async::Error::Server(error)) => {
                self.cutting_over = false;
                let _ = holder.query_drop("UNLOCK TABLES").await;
                return Err(Error::Cutover(format!(
                    "the server refused the swap ({}): {}; nothing was renamed",
                    error.code, error.message
                )));
            }
            Err(error) => {
                // C1 is kept (not back in the pool) until its server thread is gone.
                let sent = super::settle::Sent {
                    renamer_id: holder_id,
                    in_flight: None,
                    finished: Some(holder),
                    holder: None,
                };
                return self.settle_after_error(error.into(), sent, locked_at).await;
            }
        }
        drop(holder);
        let blocked = locked_at.elapsed();
        self.finish_swap().await?;
        Ok(blocked)
    }

    /// Steps 2 and 3, under C1's lock.
    async fn prepare_locked_swap(&mut self, holder: &mut Conn) -> Result<(), Error> {
        self.check_owner(holder, false).await?;
        shoal_worker::failpoint::hit("cutover.locked", &format!("holder={}", holder.id())).await;
        let target = binlog::current_position(holder, &self.server).await?;
        self.catch_up(&target, Duration::from_secs(10)).await?;
        self.flush_ready_locked(holder).await?;
        if !self.buffer.is_empty() {
            return Err(Error::Cutover(format!(
                "{} changes are still deferred under the lock",
                self.buffer.len()
            )));
        }
        self.verify_removals(holder, None, &names::shadow(&self.table))
            .await?;
        self.check_definition_unchanged(holder).await?;
        self.carry_auto_increment(holder).await?;
        self.changes_before_swap = None;
        self.checkpoint_row(target)?.write(holder).await
    }
}
