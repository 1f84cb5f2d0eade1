//! The cut-over's outcome once the swap is sent, read from the catalogue rather than assumed
//! from an error; and the last step of a swap, `_t_old`, with the proof that no write reached
//! the original after the final flush.
//!
//! # Invariants
//! - After the swap is sent, an error never decides the outcome: the renaming connection (C2)
//!   is killed before the lock is released (a rename still waiting must not run afterwards), its
//!   server thread is waited out, and the catalogue says what happened. Swapped: the cut-over
//!   finishes and is reported done. Original in place: the shadow gets its name back and the
//!   attempt is retried. Anything shoal cannot establish stops the migration with nothing
//!   cleaned up ([`Error::CutoverAmbiguous`]), for a human.
//! - A swap is reported done only if the change stream shows no row change of `t` between the
//!   final flush and the rename: such a write went to the original (its lock was lost early),
//!   and is not in the new table.
//!
//! # Design decisions
//! The task running the rename owns C2 and hands it back with the outcome, so C2's id is never
//! back in the pool (where a `KILL` of that id would hit another session) while shoal may kill
//! it. The bug that taught this: an error from the process-list probe returned through `?`, the
//! lock was released, the queued rename ran, and shoal reported failure beside a swapped table.

use std::time::{Duration, Instant};

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use shoal_common::names;
use tracing::{info, warn};

use super::Error;
use super::owner::Migration;
use shoal_common::checkpoint::CutoverMarker;

/// The task running the swap's `RENAME TABLE` on C2; it returns C2 with the outcome.
pub(super) type RenameTask = tokio::task::JoinHandle<(Conn, Result<(), mysql_async::Error>)>;

/// How long C2's server thread may take to end after it is killed.
const RENAMER_GONE_DEADLINE: Duration = Duration::from_secs(10);
/// How long the stream may take to deliver the swap's own rename.
const SWAP_IN_STREAM_DEADLINE: Duration = Duration::from_secs(30);

/// What is left of a swap that was sent when something failed.
pub(super) struct Sent {
    /// C2's connection id.
    pub renamer_id: u32,
    /// The rename still running, if it has not returned.
    pub in_flight: Option<RenameTask>,
    /// C2, when the rename returned (kept so its id stays ours until it is gone).
    pub finished: Option<Conn>,
    /// C1, if it is still held.
    pub holder: Option<Conn>,
}

/// What the catalogue shows after a failed cut-over.
enum Outcome {
    /// `t` is the former shadow, the original is `t_shoal_old`.
    Swapped,
    /// The original is `t`, the shadow is still named for the swap.
    Original,
}

impl Migration {
    /// Settles `error`, raised after the swap was sent: see the module's invariants.
    pub(super) async fn settle_after_error(
        &mut self,
        error: Error,
        sent: Sent,
        locked_at: Instant,
    ) -> Result<Duration, Error> {
        warn!(migration_id = %self.options.id, %error, "the cut-over failed after the swap was sent; reading the catalogue");
        self.cutting_over = false;
        let schema = self.schema.clone();
        let ambiguous = |what: String| {
            Error::CutoverAmbiguous(format!(
                "after a failed cut-over ({error}) {what}; stop and inspect `{schema}` by hand"
            ))
        };
        let outcome = match self.read_outcome(sent).await {
            Ok(outcome) => outcome,
            Err(settling) => {
                return Err(ambiguous(format!(
                    "the outcome could not be read ({settling})"
                )));
            }
        };
        let blocked = locked_at.elapsed();
        match outcome {
            Some(Outcome::Swapped) => {
                info!(migration_id = %self.options.id, "the catalogue shows the tables swapped: finishing the cut-over");
                self.cutting_over = true;
                self.finish_swap().await?;
                Ok(blocked)
            }
            Some(Outcome::Original) => {
                info!(migration_id = %self.options.id, "the catalogue shows the original in place: the attempt is retried");
                if let Err(restoring) = self.restore_shadow_name().await {
                    return Err(ambiguous(format!(
                        "the shadow table could not get its name back ({restoring})"
                    )));
                }
                Err(error)
            }
            None => Err(ambiguous(format!(
                "the catalogue shows neither the swapped tables nor the original with `{}`",
                names::swap(&self.table)
            ))),
        }
    }

    /// Kills C2, waits for its rename to end, releases C1's lock, then reads the catalogue.
    async fn read_outcome(&mut self, sent: Sent) -> Result<Option<Outcome>, Error> {
        let Sent {
            renamer_id,
            in_flight,
            finished,
            holder,
        } = sent;
        shoal_worker::failpoint::hit("cutover.settling", self.options.id.as_str()).await;
        let mut connection = self.connect().await?;
        // Before the lock is released: a rename still waiting must never run after it.
        match connection
            .query_drop(shoal_mysql::flavour::kill(renamer_id.into(), false))
            .await
        {
            // 1094: unknown thread (C2 already ended).
            Ok(()) => {}
            Err(mysql_async::Error::Server(server)) if server.code == 1094 => {}
            Err(error) => return Err(error.into()),
        }
        if let Some(task) = in_flight {
            // C2's outcome is what the catalogue shows, whatever the task says.
            let _ = task.await;
        }
        drop(finished);
        let started = Instant::now();
        loop {
            let alive: Option<i64> = connection
                .exec_first(
                    format!(
                        "SELECT COUNT(*) FROM {} WHERE ID = ?",
                        shoal_mysql::flavour::processlist(self.server.mariadb)
                    ),
                    (renamer_id,),
                )
                .await?;
            if alive == Some(0) {
                break;
            }
            if started.elapsed() > RENAMER_GONE_DEADLINE {
                return Err(Error::Cutover(format!(
                    "the renaming connection {renamer_id} was still running \
                     {RENAMER_GONE_DEADLINE:?} after it was killed"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(mut holder) = holder {
            let _ = holder.query_drop("UNLOCK TABLES").await;
        }
        // The shadow waits under its swap name (two connections) or its own (one session).
        let swap =
            super::catalog::table_exists(&mut connection, &self.schema, &names::swap(&self.table))
                .await?
                || super::catalog::table_exists(
                    &mut connection,
                    &self.schema,
                    &names::shadow(&self.table),
                )
                .await?;
        let swapped_out = super::catalog::table_exists(
            &mut connection,
            &self.schema,
            &names::swapped_out(&self.table),
        )
        .await?;
        Ok(match (swap, swapped_out) {
            (false, true) => Some(Outcome::Swapped),
            (true, false) => Some(Outcome::Original),
            _ => None,
        })
    }

    /// Step 7, after the swap: no write reached the original after the final flush, then
    /// `t_shoal_old` becomes `_t_old` and the catalogue is checked. The new table is live: any
    /// failure here stops with nothing cleaned up.
    pub(super) async fn finish_swap(&mut self) -> Result<(), Error> {
        shoal_worker::failpoint::hit("cutover.after_rename", self.options.id.as_str()).await;
        let finished = async {
            let late = self.changes_before_swap().await?;
            if late > 0 {
                return Err(Error::CutoverAmbiguous(format!(
                    "{late} row change(s) reached the original table between the final flush and \
                     the swap (its lock was lost): they are in {} and not in the new {}; apply \
                     them by hand",
                    self.qualified(&names::swapped_out(&self.table)),
                    self.qualified(&self.table)
                )));
            }
            let mut connection = self.connect().await?;
            self.name_the_original_old(&mut connection).await?;
            self.verify_swap().await
        }
        .await;
        if finished.is_ok() {
            match self.mark_cutover(CutoverMarker::Done).await {
                Ok(()) => {}
                // Another owner holds it now: it closes (after proving the swap again).
                Err(deposed @ Error::Deposed(_)) => return Err(deposed),
                // `Started` with the swapped catalogue still tells a new owner to close; it then
                // proves the swap again from the binlog. Close keeps `_t_old` for it.
                Err(error) => {
                    warn!(migration_id = %self.options.id, %error, "writing the cut-over marker Done failed");
                }
            }
        }
        finished.map_err(|error| match error {
            ambiguous @ Error::CutoverAmbiguous(_) => ambiguous,
            other => Error::CutoverAmbiguous(format!(
                "the tables were swapped, then finishing failed ({other}); the new table is live: \
                 rename {} to {} by hand if it is still there",
                self.qualified(&names::swapped_out(&self.table)),
                self.qualified(&names::old(&self.table))
            )),
        })
    }

    /// A new owner found the tables swapped and the cut-over marker `Started`: its predecessor
    /// died between the swap and its proof (and its lock died with it, so the swap may have run
    /// after writes reached the original). Reads the binlog from the checkpoint's position up to
    /// the swap, as the original's columns were, and counts the row changes of the original
    /// after the shadow took the swap name (which follows the final flush): the proof
    /// `finish_swap` gives, made afresh.
    pub(super) async fn prove_swap_of_predecessor(
        &mut self,
        from: super::binlog::BinlogPos,
        original: &str,
    ) -> Result<(), Error> {
        let mut connection = self.connect().await?;
        let columns = super::catalog::read_table(&mut connection, &self.schema, original)
            .await?
            .map(|table| table.columns)
            .ok_or_else(|| Error::Cutover(format!("`{original}` vanished")))?;
        drop(connection);
        self.swap_audit = Some(0);
        self.cutting_over = true;
        self.changes_before_swap = None;
        let late = match self.start_stream_of(from, columns).await {
            Ok(()) => self.changes_before_swap().await,
            Err(error) => Err(error),
        };
        self.stop_stream().await;
        self.swap_audit = None;
        self.cutting_over = false;
        let late = late.map_err(|error| {
            Error::CutoverAmbiguous(format!(
                "the tables were swapped by an owner that then stopped, and the binlog could not \
                 prove that no write reached the original after its final flush ({error}); the \
                 new table is live: compare it with {} by hand",
                self.qualified(original)
            ))
        })?;
        if late > 0 {
            return Err(Error::CutoverAmbiguous(format!(
                "{late} row change(s) reached the original table between the final flush and the \
                 swap (the previous owner stopped, and its lock with it): they are in {} and not \
                 in the new {}; apply them by hand",
                self.qualified(original),
                self.qualified(&self.table)
            )));
        }
        info!(migration_id = %self.options.id, "the binlog shows no write to the original after the final flush");
        Ok(())
    }

    /// `t_shoal_old` (the original, swapped out) becomes `_t_old`.
    pub(super) async fn name_the_original_old(&self, connection: &mut Conn) -> Result<(), Error> {
        connection
            .query_drop(format!(
                "RENAME TABLE {} TO {}",
                self.qualified(&names::swapped_out(&self.table)),
                self.qualified(&names::old(&self.table))
            ))
            .await?;
        Ok(())
    }

    /// Reads the stream up to the swap's own rename and returns how many row changes of `t` it
    /// delivered after the final flush and before the rename.
    async fn changes_before_swap(&mut self) -> Result<usize, Error> {
        let started = tokio::time::Instant::now();
        while self.changes_before_swap.is_none() {
            let remaining = SWAP_IN_STREAM_DEADLINE.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                return Err(Error::Cutover(format!(
                    "the change stream did not deliver the swap within {SWAP_IN_STREAM_DEADLINE:?}"
                )));
            }
            let Some(stream) = self.stream.as_mut() else {
                return Err(Error::Binlog("the change stream is not running".to_owned()));
            };
            match tokio::time::timeout(remaining, stream.receiver.recv()).await {
                Ok(Some(message)) => self.on_stream_message(message)?,
                Ok(None) => {
                    return Err(Error::Binlog(
                        "the change stream ended before the swap".to_owned(),
                    ));
                }
                Err(_) => {}
            }
        }
        Ok(self.changes_before_swap.unwrap_or(0))
    }
}
