//! `Checksum`: prove the shadow table equals the source, under one consistent snapshot.
//!
//! The barrier: with a short lock wait, the owner takes `LOCK TABLES t READ, _t_new WRITE`
//! (readers keep running), catches the change stream up to the server's position and applies
//! everything, opens the checksum sessions' REPEATABLE READ consistent snapshots, and unlocks.
//! Both tables are then compared range by range inside those snapshots. A mismatching range is
//! repaired (its changes deferred again, its shadow rows deleted and copied anew under a fresh
//! fence, then its deferred changes applied) and the pass repeats. Cut-over needs one full pass
//! with zero mismatches; after three failing passes the migration fails, naming the range.
//! Under a latency limit (`--max-latency-factor`) ranges span a few copy chunks and each round
//! of them first waits, at most a second, while the latency gate holds. With `--nice-ratio` the
//! ranges are as small, and each round is followed by a rest in proportion to its time.
//!
//! Transitions: Checksum → CutOver on a clean pass; → ErrCleanup after three failing passes.
//!
//! Today the owner runs the range digests itself on `threads` snapshot sessions; handing them
//! to workers through `JoinSnapshotBarrier` is the next step.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use shoal_common::chunk::{ChunkId, ChunkRange};
use shoal_common::names;
use shoal_common::task::{CopyMode, TaskKind, TaskSpec};
use shoal_worker::checksum::{Digest, RowHash, checksum_range};
use tracing::{Instrument, info, warn};

use super::Error;
use super::binlog;
use super::owner::Migration;
use super::planning;

/// Passes with mismatches tolerated before the migration fails.
const MAX_PASSES: u32 = 3;
/// Passes run again after losing a connection before the migration fails (as many as a chunk
/// or a flush may be retried: an operator's idle-connection killer, such as `pt-kill
/// --idle-time`, can cost a pass on each sweep).
const MAX_LOST_CONNECTIONS: u32 = 10;
use shoal_common::sizing::checksum_span;
/// Repair chunks get fence ids above every planned chunk.
const REPAIR_CHUNK_BASE: u64 = 1 << 48;
/// Under a latency limit, a checksum range spans this many copy chunks' keys at most.
const PACED_RANGE_CHUNKS: u64 = 4;
/// Under a latency limit, the longest the checksum waits for the gate before each round of
/// ranges (its snapshot is open: pacing, not stopping).
const PACED_HOLD_AT_MOST: Duration = Duration::from_secs(1);

impl Migration {
    /// Opens `count` sessions sharing one consistent snapshot, under the barrier.
    async fn barrier(&mut self, count: usize) -> Result<(Vec<Conn>, Duration), Error> {
        let mut sessions = Vec::with_capacity(count);
        for _ in 0..count {
            sessions.push(self.connect().await?);
        }
        let mut lock = self.connect().await?;
        lock.query_drop("SET SESSION lock_wait_timeout = 5").await?;
        let source = self.qualified(&self.table);
        let shadow = self.qualified(&names::shadow(&self.table));
        let locked_at = Instant::now();
        let checkpoint = self.checkpoint_table();
        lock.query_drop(format!(
            "LOCK TABLES {source} READ, {shadow} WRITE, {checkpoint} READ"
        ))
        .await?;
        let result = async {
            let target = binlog::current_position(&mut lock, &self.server).await?;
            self.catch_up(&target, Duration::from_secs(30)).await?;
            self.flush_ready_locked(&mut lock).await?;
            // The checksum about to run covers every row as of now, removals included.
            self.unique_removals.clear();
            tracing::debug!(
                %target,
                reached = ?self.stream_position,
                buffered = self.buffer.len(),
                "barrier: caught up and flushed"
            );
            for session in &mut sessions {
                session
                    .query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    .await?;
                session
                    .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                    .await?;
            }
            Ok::<(), Error>(())
        }
        .await;
        let unlock = lock.query_drop("UNLOCK TABLES").await;
        let held = locked_at.elapsed();
        result?;
        unlock?;
        Ok((sessions, held))
    }

    /// One pass: returns the ranges whose digests differ.
    async fn checksum_pass(&mut self) -> Result<Vec<ChunkRange>, Error> {
        let threads = self.options.threads.max(1) as usize;
        // Under a latency limit the ranges are paced by the gate (its baseline is measured
        // while the barrier and the planning run).
        let gate = self.start_latency_gate();
        let mut hold_log = super::throttle::HoldLog::default();
        let (mut sessions, held) = self.barrier(threads).await?;
        info!(migration_id = %self.options.id, lock_held = ?held, "checksum barrier");
        shoal_worker::failpoint::hit(
            "checksum.snapshot",
            &format!("session={}", sessions[0].id()),
        )
        .await;
        // Ranges are planned inside the snapshot, so probes see what the digests will.
        let source = self.qualified(&self.table);
        let rows =
            super::catalog::estimated_rows(&mut sessions[0], &self.schema, &self.table).await?;
        let mut planner = planning::new_planner(&mut sessions[0], &source, rows, &self.key).await?;
        let keys = planner.key_span().unwrap_or(rows);
        let mut span = checksum_span(keys, threads);
        let nice = self.options.limits.nice_percent;
        if gate.is_some() || nice > 0 {
            // Small ranges, so that the gate or the nice ratio can pace them: a few copy
            // chunks' worth.
            span = span.min(self.sizer.size().saturating_mul(PACED_RANGE_CHUNKS));
        }
        let mut ranges = Vec::new();
        while let Some((_, range)) =
            planning::next_chunk(&mut sessions[0], &source, &self.key, &mut planner, span).await?
        {
            ranges.push(range);
        }
        let hash = RowHash::detect(&mut sessions[0], &self.server.version).await?;
        info!(migration_id = %self.options.id, ranges = ranges.len(), row_hash = ?hash, "checksum pass");
        let shadow = names::shadow(&self.table);
        let mut mismatched = Vec::new();
        let mut work = ranges.into_iter();
        loop {
            let mut batch = Vec::new();
            for session in sessions.iter_mut() {
                let Some(range) = work.next() else { break };
                batch.push((session, range));
            }
            if batch.is_empty() {
                break;
            }
            if let Some(monitor) = &gate {
                self.wait_for_gate(monitor, &mut hold_log).await?;
            }
            let phase = self.phase().clone();
            let started = Instant::now();
            let digests = join_all(batch.into_iter().map(|(session, range)| {
                let span = tracing::info_span!(
                    parent: &phase,
                    "chunk.checksum",
                    range = %range,
                    rows = tracing::field::Empty,
                );
                let schema = self.schema.clone();
                let table = self.table.clone();
                let shadow = shadow.clone();
                let source_columns = self.source_hashed.clone();
                let shadow_columns = self.shadow_hashed.clone();
                let key_columns = self.key.columns.clone();
                async move {
                    let source: Digest = checksum_range(
                        session,
                        hash,
                        (&schema, &table),
                        &source_columns,
                        &key_columns,
                        &range,
                    )
                    .await?;
                    let copied: Digest = checksum_range(
                        session,
                        hash,
                        (&schema, &shadow),
                        &shadow_columns,
                        &key_columns,
                        &range,
                    )
                    .await?;
                    tracing::Span::current().record("rows", source.rows);
                    Ok::<_, mysql_async::Error>((range, source, copied))
                }
                .instrument(span)
            }))
            .await;
            for digest in digests {
                let (range, source, copied) = digest?;
                if source != copied {
                    warn!(
                        migration_id = %self.options.id, %range, source_rows = source.rows,
                        shadow_rows = copied.rows, "checksum mismatch"
                    );
                    crate::metrics::checksum_mismatch(&self.options.id);
                    mismatched.push(range);
                }
            }
            self.check_cancelled()?;
            // `--nice-ratio`: rest in proportion to the round's time (the snapshots stay open).
            if nice > 0 {
                tokio::time::sleep(shoal_common::throttle::rest_after(started.elapsed(), nice))
                    .await;
            }
        }
        for mut session in sessions {
            // Every digest is in: a session lost now (an idle one killed) only ends its
            // read-only snapshot early, and the pass stands.
            if let Err(error) = session.query_drop("COMMIT").await.map_err(Error::from) {
                if !error.connection_lost() {
                    return Err(error);
                }
                warn!(migration_id = %self.options.id, %error, "a checksum session was lost after its last digest; the pass stands");
            }
        }
        self.publish_throttled(None, &mut hold_log);
        Ok(mismatched)
    }

    /// Waits while the latency gate holds, at most [`PACED_HOLD_AT_MOST`]: the checksum's
    /// snapshot stays open meanwhile, so it is paced, never stopped.
    async fn wait_for_gate(
        &self,
        monitor: &super::throttle::Monitor,
        hold_log: &mut super::throttle::HoldLog,
    ) -> Result<(), Error> {
        let until = Instant::now() + PACED_HOLD_AT_MOST;
        loop {
            let held = monitor.verdict.borrow().held().map(str::to_owned);
            self.publish_throttled(held.as_deref(), hold_log);
            if held.is_none() || Instant::now() >= until {
                return Ok(());
            }
            self.check_cancelled()?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Re-copies `range` into the shadow table: changes to it are deferred, its shadow rows
    /// deleted and copied anew inside one fenced transaction, then its deferred changes applied.
    async fn repair(&mut self, range: ChunkRange, sequence: u64) -> Result<(), Error> {
        self.repairing.push(range.clone());
        let chunk = ChunkId(REPAIR_CHUNK_BASE + sequence);
        let fence = self.qualified(&names::fence(&self.table));
        let mut connection = self.connect().await?;
        // A previous owner may have repaired under this id: bump its epoch then (INV-F1).
        let epoch = super::copy_rows::insert_fence_row(&mut connection, &fence, chunk).await?;
        let mut context = self.copy_context();
        context.copy_mode = CopyMode::Server;
        let spec = TaskSpec {
            task_id: shoal_common::ids::TaskId::parse(format!(
                "{}-repair{sequence}",
                self.options.id
            ))
            .map_err(|error| Error::Checksum(error.to_string()))?,
            migration_id: self.options.id.clone(),
            kind: TaskKind::Copy,
            chunk,
            range: range.clone(),
            fence_epoch: epoch,
            context,
            trace_context: Vec::new(),
        };
        let (predicate, params) = shoal_worker::keys::range_predicate(&self.key.columns, &range);
        let shadow = self.qualified(&names::shadow(&self.table));
        connection
            .exec_drop(format!("DELETE FROM {shadow} WHERE {predicate}"), params)
            .await?;
        let outcome = shoal_worker::copy::copy_chunk(
            &self.pool,
            &spec,
            &std::sync::atomic::AtomicU32::new(0),
        )
        .await
        .map_err(|error| Error::Checksum(format!("repair of {range}: {error}")))?;
        self.progress
            .send_modify(|progress| progress.unique_conflicts += outcome.unique_conflicts);
        // As for a copied chunk: the deferred images must be at least as new as the copy.
        let target = binlog::current_position(&mut connection, &self.server).await?;
        self.catch_up(&target, Duration::from_secs(60)).await?;
        self.repairing.retain(|repairing| repairing != &range);
        self.flush_ready(&mut connection).await?;
        self.progress
            .send_modify(|progress| progress.ranges_repaired += 1);
        Ok(())
    }

    /// After the copy skipped rows on unique-key conflicts: fails, naming a duplicated value,
    /// if the source holds duplicates under a UNIQUE index the ALTER adds.
    pub(super) async fn refuse_duplicates(&self) -> Result<(), Error> {
        if self.progress.borrow().unique_conflicts == 0 {
            return Ok(());
        }
        let mut connection = self.connect().await?;
        let duplicate = super::unique::find_duplicate(
            &mut connection,
            &self.schema,
            &self.table,
            &names::shadow(&self.table),
            &self.shadow_columns,
        )
        .await?;
        match duplicate {
            Some(duplicate) => Err(Error::Preflight(format!(
                "{duplicate} in {}; remove the duplicates or drop UNIQUE from the ALTER (the \
                 original table is untouched)",
                self.qualified(&self.table)
            ))),
            None => Ok(()),
        }
    }

    /// `Checksum`.
    pub(super) async fn checksum(&mut self) -> Result<(), Error> {
        self.refuse_duplicates().await?;
        let mut repairs = 0;
        let mut lost = 0;
        let mut pass = 0;
        while pass < MAX_PASSES {
            let mismatched = match self.checksum_pass().await {
                // The pass only reads (its repairs come after it, fenced): a connection lost
                // under it (an operator's or pt-kill's KILL of idle connections, a network
                // blip) runs it again, unless another owner took the migration over.
                Err(error) if error.connection_lost() && lost < MAX_LOST_CONNECTIONS => {
                    if let Some(deposed) = self.deposed_meanwhile().await {
                        return Err(deposed);
                    }
                    lost += 1;
                    warn!(migration_id = %self.options.id, %error, lost, "a checksum connection was lost; running the pass again");
                    continue;
                }
                result => result?,
            };
            pass += 1;
            self.progress
                .send_modify(|progress| progress.checksum_passes = pass);
            if mismatched.is_empty() {
                info!(migration_id = %self.options.id, pass, "checksum clean");
                return Ok(());
            }
            if pass == MAX_PASSES {
                // What the owner knew when it gave up, so that the cause can be read from the log.
                warn!(
                    migration_id = %self.options.id,
                    all_drained = self.ledger.all_drained(),
                    buffered = self.buffer.len(),
                    stream_position = ?self.stream_position,
                    safe_position = ?self.safe_position,
                    "checksum gave up"
                );
                let ranges: Vec<String> = mismatched.iter().map(ToString::to_string).collect();
                let conflicts = self.progress.borrow().unique_conflicts;
                let hint = if conflicts > 0 {
                    format!(
                        "; {conflicts} row(s) were skipped on unique-key conflicts: if the ALTER adds a \
                         UNIQUE index, the data violates it (the log names the duplicate values)"
                    )
                } else {
                    String::new()
                };
                return Err(Error::Checksum(format!(
                    "{} range(s) still differ after {MAX_PASSES} passes: {}{hint}; the original table is untouched",
                    mismatched.len(),
                    ranges.join(", ")
                )));
            }
            for range in mismatched {
                repairs += 1;
                self.repair(range, repairs).await?;
            }
        }
        Ok(())
    }
}
