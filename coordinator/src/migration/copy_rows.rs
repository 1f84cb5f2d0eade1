//! `CopyRows` and `ApplyChangeset`.
//!
//! The owner plans chunks lazily (a window of `2 × threads` ahead of the fleet), registers each
//! chunk's fence row, publishes it as a task, and folds completions: the chunk's deferred
//! changes are applied, then it is marked drained (INV-W1). A task that comes back (expired
//! lease, failure, release) has its fence bumped (INV-F1) before it is published again.
//!
//! Transitions: CopyRows → ApplyChangeset once every chunk is drained; ApplyChangeset →
//! Checksum once the stream has caught up with the server's position.

use std::collections::HashMap;
use std::time::Duration;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use shoal_common::chunk::{ChunkId, ChunkPlanner, ChunkRange};
use shoal_common::ids::{FenceEpoch, TaskId};
use shoal_common::key::Key;
use shoal_common::names;
use shoal_common::task::{CopyContext, ReturnReason, TaskKind, TaskSpec};
use shoal_common::throttle::Verdict;
use tracing::{Instrument, info, warn};

use super::Error;
use super::binlog;
use super::owner::Migration;

/// A chunk can come back this many times before the migration fails.
const MAX_ATTEMPTS: u32 = 10;
/// Attempts to apply one batch of changes that keeps losing lock conflicts.
const MAX_APPLY_ATTEMPTS: u32 = 10;

/// Evaluates `$statement` (a future over the connection `$connection`); when the connection was
/// lost (killed by an operator or a fault, dropped by a restarting server), replaces it from
/// `$pool` and evaluates it again, up to [`MAX_APPLY_ATTEMPTS`] times. Only for statements that
/// are safe to run twice. (A macro: an async closure borrowing the migration is not `Send`.)
macro_rules! retry_if_lost {
    ($pool:expr, $connection:ident, $what:expr, $statement:expr) => {{
        let mut attempt = 0;
        loop {
            match $statement {
                Err(error) if error.connection_lost() && attempt < MAX_APPLY_ATTEMPTS => {
                    attempt += 1;
                    warn!(%error, attempt, what = $what, "connection lost; running it again on a fresh one");
                    $connection = super::owner::connect($pool).await?;
                }
                result => break result,
            }
        }
    }};
}

/// Inserts `chunk`'s row in the fence table `fence` at epoch 1, or raises the row a previous
/// owner left (fencing that owner's workers, INV-F1); returns the chunk's epoch.
pub(super) async fn insert_fence_row(
    connection: &mut Conn,
    fence: &str,
    chunk: ChunkId,
) -> Result<FenceEpoch, Error> {
    connection
        .exec_drop(
            format!(
                "INSERT INTO {fence} (chunk, epoch) VALUES (?, 1) \
                 ON DUPLICATE KEY UPDATE epoch = LAST_INSERT_ID(epoch + 1)"
            ),
            (chunk.0,),
        )
        .await?;
    Ok(if connection.affected_rows() == 1 {
        FenceEpoch(1)
    } else {
        FenceEpoch(connection.last_insert_id().unwrap_or(1))
    })
}

/// How often the chunks in flight are checked against the live store's tasks.
const RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// A worker counts in the status's `workers` while its last completion is this recent.
const RECENT_WORKER: Duration = Duration::from_secs(30);
/// How often the owner looks for completions when nothing else happens.
const IDLE_TICK: Duration = Duration::from_millis(20);
/// How often it looks while nothing is in flight and nothing may be handed out (held by the
/// throttle, paused, or resting for the nice ratio: then until the rest ends, if sooner).
const QUIET_TICK: Duration = Duration::from_millis(100);

/// A published chunk not yet drained.
#[derive(Debug, Clone)]
struct InFlight {
    range: ChunkRange,
    epoch: FenceEpoch,
    attempts: u32,
    /// Keys the chunk was planned to hold (bounded chunks only): the sizer's feedback.
    planned: Option<u64>,
    /// A chunk that came back is offered again no earlier than this (back-off: a copy that
    /// lost a deadlock right after a resume's burst of re-copies would lose it again at once).
    not_before: Option<std::time::Instant>,
}

/// Back-off before offering a chunk that came back `attempts` times: 50 ms doubling to 2 s,
/// so that [`MAX_ATTEMPTS`] returns span several seconds of a lock storm, not a few hundred
/// milliseconds.
fn return_backoff(attempts: u32) -> Duration {
    shoal_common::backoff::delay(
        attempts.saturating_sub(1),
        Duration::from_millis(50),
        Duration::from_secs(2),
        shoal_common::backoff::clock_jitter(),
    )
}

/// A buffered change as the owner holds it.
type Buffered = (Key, shoal_common::changes::Change<Vec<mysql_async::Value>>);

impl Migration {
    pub(super) fn copy_context(&self) -> CopyContext {
        CopyContext {
            target: self.options.target.clone(),
            schema: self.schema.clone(),
            source_table: self.table.clone(),
            shadow_table: names::shadow(&self.table),
            fence_table: names::fence(&self.table),
            source_columns: self.source_columns.clone(),
            shadow_columns: self.shadow_columns.clone(),
            key_columns: self.key.columns.clone(),
            copy_mode: self.options.copy_mode,
            batch_rows: 1_000,
        }
    }

    fn task_id(&self, chunk: ChunkId, epoch: FenceEpoch) -> Result<TaskId, Error> {
        TaskId::parse(format!("{}-c{}-e{}", self.options.id, chunk.0, epoch.0))
            .map_err(|error| Error::Copy(error.to_string()))
    }

    fn task_spec(
        &self,
        chunk: ChunkId,
        range: ChunkRange,
        epoch: FenceEpoch,
    ) -> Result<TaskSpec, Error> {
        let task_id = self.task_id(chunk, epoch)?;
        Ok(TaskSpec {
            task_id,
            migration_id: self.options.id.clone(),
            kind: TaskKind::Copy,
            chunk,
            range,
            fence_epoch: epoch,
            context: self.copy_context(),
            trace_context: shoal_common::telemetry::trace_context(&self.phase()),
        })
    }

    /// Bumps a chunk's fence epoch (waits for any in-flight holder of the shared lock) and
    /// returns the new epoch (INV-F1). A connection lost on the way (killed just as it was taken
    /// from the pool, say) is replaced: raising the epoch twice is harmless, a fence only has to
    /// move forward.
    pub(super) async fn bump_fence(&self, chunk: ChunkId) -> Result<FenceEpoch, Error> {
        let mut attempt = 0;
        loop {
            match self.bump_fence_once(chunk).await {
                Err(error) if error.connection_lost() && attempt < MAX_APPLY_ATTEMPTS => {
                    attempt += 1;
                    warn!(chunk = %chunk, %error, attempt, "fence bump lost its connection; retrying");
                }
                result => return result,
            }
        }
    }

    async fn bump_fence_once(&self, chunk: ChunkId) -> Result<FenceEpoch, Error> {
        let fence = self.qualified(&names::fence(&self.table));
        let mut connection = self.connect().await?;
        shoal_worker::failpoint::hit("fence.bump", &format!("connection={}", connection.id()))
            .await;
        connection
            .exec_drop(
                format!("UPDATE {fence} SET epoch = epoch + 1 WHERE chunk = ?"),
                (chunk.0,),
            )
            .await?;
        let epoch: Option<u64> = connection
            .exec_first(
                format!("SELECT epoch FROM {fence} WHERE chunk = ?"),
                (chunk.0,),
            )
            .await?;
        epoch
            .map(FenceEpoch)
            .ok_or_else(|| Error::Copy(format!("fence row of chunk {chunk} is missing")))
    }

    /// Applies every buffered change whose chunk is drained, on `connection`, in a transaction
    /// fenced by the owner epoch.
    pub(super) async fn flush_ready(&mut self, connection: &mut Conn) -> Result<(), Error> {
        let ready = self.take_ready();
        self.apply_changes(connection, ready).await
    }

    /// Like [`Self::flush_ready`], on a connection whose `LOCK TABLES` covers the shadow and
    /// checkpoint tables (the table lock keeps the owner epoch stable; no transaction may be
    /// opened under it).
    pub(super) async fn flush_ready_locked(&mut self, connection: &mut Conn) -> Result<(), Error> {
        let ready = self.take_ready();
        if ready.is_empty() {
            return Ok(());
        }
        let result = match self.check_owner(connection, false).await {
            Ok(()) => self.apply_unfenced(connection, &ready).await,
            Err(error) => Err(error),
        };
        if result.is_err() {
            // Not written (or not known to be): kept for the next attempt, which a lost
            // connection under the checksum barrier makes.
            self.buffer.restore(ready);
        }
        result
    }

    /// The buffered changes that may be applied now. Keys shoal cannot order itself (INV-K1)
    /// wait until the whole copy is drained and no range is being repaired.
    fn take_ready(&mut self) -> Vec<Buffered> {
        let ledger = &self.ledger;
        let repairing = &self.repairing;
        if self.key.is_ordered() {
            self.buffer.take_ready(|key| {
                ledger.is_drained(key) && !repairing.iter().any(|range| range.contains(key))
            })
        } else if ledger.all_drained() && repairing.is_empty() {
            self.buffer.take_ready(|_| true)
        } else {
            Vec::new()
        }
    }

    /// Applies `changes` in a transaction that first checks the owner epoch (INV-O1).
    pub(super) async fn apply_changes(
        &mut self,
        connection: &mut Conn,
        changes: Vec<Buffered>,
    ) -> Result<(), Error> {
        if changes.is_empty() {
            return Ok(());
        }
        let span =
            tracing::info_span!(parent: &*self.phase(), "binlog.flush", changes = changes.len());
        self.apply_changes_traced(connection, changes)
            .instrument(span)
            .await
    }

    async fn apply_changes_traced(
        &mut self,
        connection: &mut Conn,
        changes: Vec<Buffered>,
    ) -> Result<(), Error> {
        shoal_worker::failpoint::hit("flush.before", self.options.id.as_str()).await;
        let mut attempt = 0;
        loop {
            let result = async {
                let mut transaction = self.fenced_transaction(connection).await?;
                shoal_worker::failpoint::hit("flush.locked", self.options.id.as_str()).await;
                let applied = self.apply_batch(&mut transaction, &changes).await?;
                transaction.commit().await?;
                Ok::<_, Error>(applied)
            }
            .await;
            match result {
                Ok(applied) => {
                    // Outside the transaction: the source as it is now. Under the cut-over lock
                    // the source cannot be read here; `verify_removals` checks there.
                    if !self.under_cutover_lock {
                        self.check_removals(connection, &applied.removed).await?;
                    }
                    self.count_applied(applied);
                    return Ok(());
                }
                Err(error) if error.is_transient() && attempt < MAX_APPLY_ATTEMPTS => {
                    // Changes are last images and the transaction is fenced, so applying them
                    // again (on a fresh connection if this one is gone) is safe; a new owner's
                    // raised epoch still refuses the retry.
                    attempt += 1;
                    if error.connection_lost() {
                        warn!(%error, attempt, "flush connection lost; reconnecting");
                        *connection = self.connect().await?;
                    } else {
                        warn!(%error, attempt, "applying changes lost a lock conflict; retrying");
                    }
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// A live-store call, retried while Redis is unreachable (a restart, a network blip). A
    /// Redis that came back empty is the `owners` loop's to notice: it deposes this owner, and
    /// `check_cancelled` ends the wait.
    pub(super) async fn with_store<T, F, Fut>(&self, mut call: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, crate::store::Error>>,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(error) if error.is_retryable() => {
                    self.check_cancelled()?;
                    warn!(migration_id = %self.options.id, %error, attempt, "live store unavailable; retrying");
                    let delay = shoal_common::backoff::delay(
                        attempt,
                        Duration::from_millis(100),
                        Duration::from_secs(2),
                        0.5,
                    );
                    attempt = attempt.saturating_add(1);
                    tokio::time::sleep(delay).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    fn count_applied(&mut self, applied: super::apply::Applied) {
        // Kept for the check under the cut-over lock, which needs only the keys.
        self.unique_removals.extend(
            applied
                .removed
                .into_iter()
                .map(|row| super::apply::Removed {
                    rivals: None,
                    ..row
                }),
        );
        let buffered = self.buffer.len() as u64;
        let last_event_at = self.last_event_at;
        self.progress.send_modify(|progress| {
            progress.changes_applied += (applied.upserts + applied.deletes) as u64;
            progress.changes_buffered = buffered;
            progress.last_event_at = last_event_at;
        });
    }

    /// One attempt at applying `changes` on `connection` (the caller fences).
    async fn apply_batch(
        &self,
        connection: &mut impl Queryable,
        changes: &[Buffered],
    ) -> Result<super::apply::Applied, Error> {
        let applier = self
            .applier
            .as_ref()
            .ok_or_else(|| Error::Apply("no applier before Initial".to_owned()))?;
        applier.apply(connection, changes).await
    }

    /// Applies `changes` with lock-conflict retries, without opening a transaction (the caller
    /// holds a table lock and has checked the owner epoch under it).
    async fn apply_unfenced(
        &mut self,
        connection: &mut impl Queryable,
        changes: &[Buffered],
    ) -> Result<(), Error> {
        // Changes are idempotent (last images), so a statement that lost a deadlock or a lock
        // wait against a worker's copy is simply applied again.
        let mut attempt = 0;
        let applied = loop {
            match self.apply_batch(connection, changes).await {
                Ok(applied) => break applied,
                Err(Error::Mysql(mysql_async::Error::Server(error)))
                    if matches!(error.code, 1205 | 1213) && attempt < MAX_APPLY_ATTEMPTS =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                }
                Err(error) => return Err(error),
            }
        };
        // The caller's lock covers the source (the checksum barrier's `READ`).
        self.check_removals(connection, &applied.removed).await?;
        self.count_applied(applied);
        Ok(())
    }

    /// `CopyRows`. A resumed owner starts from the checkpointed plan: chunks planned but not
    /// drained are fenced again and recopied (each copy clears its range first), the rest of the
    /// key space is planned from where the planner stood.
    pub(super) async fn copy_rows(&mut self) -> Result<(), Error> {
        let mut connection = self.connect().await?;
        let source = self.qualified(&self.table);
        let estimate =
            super::catalog::estimated_rows(&mut connection, &self.schema, &self.table).await?;
        if self.planner.is_none() {
            self.planner = Some(
                super::planning::new_planner(&mut connection, &source, estimate, &self.key).await?,
            );
        }
        let now_ms = crate::api::unix_millis_now();
        self.progress.send_modify(|progress| {
            progress.rows_estimated = estimate;
            progress.copy_window = Some(super::CopyWindow {
                started_ms: now_ms,
                ended_ms: None,
                rows_before: progress.rows_copied,
            });
        });
        let fence = self.qualified(&names::fence(&self.table));
        let mut in_flight: HashMap<ChunkId, InFlight> = HashMap::new();
        let mut last_reconcile = std::time::Instant::now();
        // Copied chunks waiting for the stream to reach the position read at their completion.
        let mut awaiting: Vec<(binlog::BinlogPos, ChunkId, ChunkRange)> = Vec::new();
        // Chunks whose fence bump hit a lock wait (and chunks a resumed owner recopies): fenced
        // and published on the next round.
        let mut to_republish: Vec<(ChunkId, InFlight)> = std::mem::take(&mut self.recopy)
            .into_iter()
            .map(|(chunk, range)| {
                (
                    chunk,
                    InFlight {
                        range,
                        epoch: FenceEpoch(0),
                        attempts: 0,
                        planned: None,
                        not_before: None,
                    },
                )
            })
            .collect();
        let throttle = self.start_throttle();
        let mut hold_log = super::throttle::HoldLog::default();
        // `--nice-ratio`: no chunk is handed out before this (set by each completion).
        let mut rest_until = std::time::Instant::now();
        let nice = self.options.limits.nice_percent;
        loop {
            self.check_cancelled()?;
            let intents = *self.intents.borrow();
            if intents.paused && !self.progress.borrow().paused {
                self.duties.force();
            }
            self.publish_paused(intents.paused);
            let verdict = throttle
                .as_ref()
                .map_or(Verdict::Go, |monitor| monitor.verdict.borrow().clone());
            if let Verdict::Abort(reason) = &verdict {
                return Err(Error::Throttle(reason.clone()));
            }
            self.publish_throttled(verdict.held(), &mut hold_log);
            // A chunk queued per slot keeps the workers busy; under a latency limit or a nice
            // ratio, none is queued, so that a hold or a rest stops the copy within one chunk.
            let window = if intents.paused
                || verdict.held().is_some()
                || std::time::Instant::now() < rest_until
            {
                0
            } else if self.options.limits.max_latency_percent > 0 || nice > 0 {
                intents.threads.max(1) as usize
            } else {
                (intents.threads.max(1) as usize) * 2
            };
            while in_flight.len() + to_republish.len() < window {
                let Some(planner) = self.planner.as_mut() else {
                    break;
                };
                let size = self.sizer.size();
                shoal_worker::failpoint::hit(
                    "copy.plan",
                    &format!("connection={}", connection.id()),
                )
                .await;
                // A failed probe leaves the planner where it was: asking again is safe.
                let next = retry_if_lost!(
                    &self.pool,
                    connection,
                    "plan a chunk",
                    super::planning::next_chunk(&mut connection, &source, &self.key, planner, size)
                        .await
                )?;
                let Some((chunk, range)) = next else {
                    break;
                };
                let planned = (range.lower.is_some() && range.upper.is_some()).then_some(size);
                // A previous owner may have planned this chunk after its last checkpoint: its
                // fence row then exists and is bumped, fencing that owner's workers (INV-F1).
                // Run twice, it raises the epoch twice: harmless, a fence only moves forward.
                let epoch = retry_if_lost!(
                    &self.pool,
                    connection,
                    "fence a chunk",
                    insert_fence_row(&mut connection, &fence, chunk).await
                )?;
                self.ledger.plan(chunk, range.clone());
                let spec = self.task_spec(chunk, range.clone(), epoch)?;
                self.with_store(|| self.store.publish(spec.clone())).await?;
                in_flight.insert(
                    chunk,
                    InFlight {
                        range,
                        epoch,
                        attempts: 0,
                        planned,
                        not_before: None,
                    },
                );
            }

            // A task in flight that the store no longer holds and that no report returned (an
            // outbox drained by a deposed owner before it noticed, a store that lost data) would
            // be waited for forever: every few seconds the live set is read before collecting,
            // and such a chunk is offered again under a new fence.
            let live = if last_reconcile.elapsed() >= RECONCILE_EVERY {
                last_reconcile = std::time::Instant::now();
                Some(
                    self.with_store(|| self.store.live_tasks(&self.options.id))
                        .await?,
                )
            } else {
                None
            };
            let collected = self
                .with_store(|| self.store.collect(&self.options.id, &self.options.owner))
                .await?;
            // One position read serves every completion of this round.
            let mut completed_at: Option<binlog::BinlogPos> = None;
            for completion in collected.completions {
                // Only the task of the chunk's current fence epoch counts: a report of an
                // earlier epoch (a previous owner's task) is ignored.
                let current = in_flight.get(&completion.chunk).is_some_and(|entry| {
                    self.task_id(completion.chunk, entry.epoch)
                        .is_ok_and(|task_id| task_id == completion.task_id)
                });
                let Some(entry) = current
                    .then(|| in_flight.remove(&completion.chunk))
                    .flatten()
                else {
                    warn!(chunk = %completion.chunk, task = %completion.task_id, "completion of a task not in flight; ignored");
                    continue;
                };
                // The copy read the source at some point before now: the chunk drains only
                // once the stream has delivered everything up to now, so that its deferred
                // images are at least as new as what the copy read. (Applied earlier, an older
                // image would overwrite the copy and, through REPLACE on a unique key, could
                // delete another row that has no later event to restore it.)
                let target = match &completed_at {
                    Some(target) => target.clone(),
                    None => {
                        let target = retry_if_lost!(
                            &self.pool,
                            connection,
                            "read the binlog position",
                            binlog::current_position(&mut connection, &self.server).await
                        )?;
                        completed_at = Some(target.clone());
                        target
                    }
                };
                let rows = completion.outcome.rows;
                let conflicts = completion.outcome.unique_conflicts;
                let in_flight_now = in_flight.len() as u64;
                crate::metrics::chunk_done(&self.options.id, completion.outcome.statement_time);
                if let Some(planned) = entry.planned
                    && let Some(size) = self
                        .sizer
                        .observe(planned, completion.outcome.statement_time)
                {
                    tracing::debug!(migration_id = %self.options.id, size, "chunk size changed");
                }
                let now = std::time::Instant::now();
                rest_until = rest_until.max(
                    now + shoal_common::throttle::rest_after(
                        completion.outcome.statement_time,
                        nice,
                    ),
                );
                self.recent_workers.insert(completion.worker.clone(), now);
                self.recent_workers
                    .retain(|_, seen| now.duration_since(*seen) < RECENT_WORKER);
                let workers = self.recent_workers.len() as u32;
                let chunk_size = self.sizer.size();
                self.progress.send_modify(|progress| {
                    progress.rows_copied += rows;
                    progress.unique_conflicts += conflicts;
                    progress.chunks_in_flight = in_flight_now;
                    progress.workers = workers;
                    progress.chunk_size = chunk_size;
                });
                awaiting.push((target, completion.chunk, entry.range));
            }
            for returned in collected.returned {
                let chunk = returned.spec.chunk;
                let current = in_flight
                    .get(&chunk)
                    .is_some_and(|entry| entry.epoch == returned.spec.fence_epoch);
                let Some(mut entry) = current.then(|| in_flight.remove(&chunk)).flatten() else {
                    continue;
                };
                entry.attempts += 1;
                crate::metrics::chunk_returned(&self.options.id, &returned.reason);
                match &returned.reason {
                    ReturnReason::Failed {
                        error,
                        retryable: false,
                    } => {
                        return Err(Error::Copy(format!(
                            "chunk {chunk} {}: {error}",
                            entry.range
                        )));
                    }
                    reason if entry.attempts >= MAX_ATTEMPTS => {
                        // Copies into a new UNIQUE index over duplicated values keep deadlocking
                        // on its locks: name a duplicate rather than the symptom.
                        self.refuse_duplicates().await?;
                        return Err(Error::Copy(format!(
                            "chunk {chunk} {} came back {MAX_ATTEMPTS} times (last: {reason:?})",
                            entry.range
                        )));
                    }
                    reason => {
                        let backoff = return_backoff(entry.attempts);
                        info!(chunk = %chunk, ?reason, ?backoff, "chunk returned; fencing and offering it again");
                        entry.not_before = Some(std::time::Instant::now() + backoff);
                        self.progress
                            .send_modify(|progress| progress.chunks_returned += 1);
                    }
                }
                to_republish.push((chunk, entry));
            }
            if let Some(live) = live {
                let lost: Vec<ChunkId> = in_flight
                    .iter()
                    .filter(|(chunk, entry)| {
                        self.task_id(**chunk, entry.epoch)
                            .is_ok_and(|task_id| !live.contains(&task_id))
                    })
                    .map(|(chunk, _)| *chunk)
                    .collect();
                for chunk in lost {
                    if let Some(entry) = in_flight.remove(&chunk) {
                        warn!(chunk = %chunk, "chunk task lost by the live store without a report; fencing and offering it again");
                        self.progress
                            .send_modify(|progress| progress.chunks_returned += 1);
                        to_republish.push((chunk, entry));
                    }
                }
            }
            // Paused: nothing is handed out, not even a chunk that came back.
            let republish = if intents.paused {
                Vec::new()
            } else {
                let now = std::time::Instant::now();
                let (due, waiting) = std::mem::take(&mut to_republish)
                    .into_iter()
                    .partition(|(_, entry)| entry.not_before.is_none_or(|at| at <= now));
                to_republish = waiting;
                due
            };
            for (chunk, mut entry) in republish {
                match self.bump_fence(chunk).await {
                    Ok(epoch) => {
                        entry.epoch = epoch;
                        // Ahead of the new chunks: it holds the low watermark.
                        let spec = self.task_spec(chunk, entry.range.clone(), epoch)?;
                        self.with_store(|| self.store.publish_first(spec.clone()))
                            .await?;
                        in_flight.insert(chunk, entry);
                    }
                    Err(Error::Mysql(mysql_async::Error::Server(error)))
                        if matches!(error.code, 1205 | 1213) =>
                    {
                        warn!(chunk = %chunk, "fence bump waits for a lock holder; retrying");
                        to_republish.push((chunk, entry));
                    }
                    Err(error) => return Err(error),
                }
            }

            // Chunks handed out this round count at once: a status read between two
            // completions (a pause draining, say) must not miss them.
            let in_flight_now = in_flight.len() as u64;
            self.progress.send_if_modified(|progress| {
                let changed = progress.chunks_in_flight != in_flight_now;
                progress.chunks_in_flight = in_flight_now;
                changed
            });
            self.pump_stream().await?;
            self.drain_caught_up(&mut connection, &mut awaiting).await?;
            self.flush_ready(&mut connection).await?;
            let planned_all = self.planner.as_ref().is_none_or(ChunkPlanner::is_done);
            if planned_all && in_flight.is_empty() && to_republish.is_empty() && awaiting.is_empty()
            {
                break;
            }
            self.duties().await?;
            // Sleep until the next message from the stream or the tick.
            let quiet = window == 0
                && in_flight.is_empty()
                && to_republish.is_empty()
                && awaiting.is_empty();
            let tick = if quiet {
                let rest_left = rest_until.saturating_duration_since(std::time::Instant::now());
                if rest_left.is_zero() {
                    QUIET_TICK
                } else {
                    rest_left.clamp(IDLE_TICK, QUIET_TICK)
                }
            } else {
                IDLE_TICK
            };
            // While quiet, changes are taken in as they come but the next round waits for the
            // tick: a round reads the live store, and under write load one came per row event.
            let deadline = tokio::time::Instant::now() + tick;
            loop {
                let Some(stream) = self.stream.as_mut() else {
                    return Err(Error::Binlog("the change stream is not running".to_owned()));
                };
                match tokio::time::timeout_at(deadline, stream.receiver.recv()).await {
                    Ok(Some(message)) => {
                        self.on_stream_message(message)?;
                        if !quiet {
                            break;
                        }
                    }
                    Ok(None) => {
                        let failure = self.stream_failure().await;
                        self.restart_stream(failure).await?;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        debug_assert!(self.ledger.all_drained(), "INV-W1: every chunk drained");
        let now_ms = crate::api::unix_millis_now();
        self.progress.send_modify(|progress| {
            if let Some(window) = &mut progress.copy_window {
                window.ended_ms = Some(now_ms);
            }
        });
        self.publish_throttled(None, &mut hold_log);
        info!(migration_id = %self.options.id, "all chunks copied");
        Ok(())
    }

    /// Drains every copied chunk the stream has caught up with: applies its deferred changes,
    /// then marks it drained (INV-W1).
    async fn drain_caught_up(
        &mut self,
        connection: &mut Conn,
        awaiting: &mut Vec<(binlog::BinlogPos, ChunkId, ChunkRange)>,
    ) -> Result<(), Error> {
        let position = self.stream_position.clone();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(awaiting)
            .into_iter()
            .partition(|(target, _, _)| position.as_ref().is_some_and(|at| at >= target));
        *awaiting = waiting;
        for (_, chunk, range) in ready {
            // Keys shoal cannot order wait for the whole copy (`take_ready`).
            if self.key.is_ordered() {
                let deferred = self.buffer.take_range(&range);
                let count = deferred.len() as u64;
                self.apply_changes(connection, deferred).await?;
                self.progress
                    .send_modify(|progress| progress.changes_deferred += count);
            }
            self.ledger.mark_drained(chunk);
            self.progress
                .send_modify(|progress| progress.chunks_done += 1);
        }
        Ok(())
    }

    fn publish_paused(&self, paused: bool) {
        if self.progress.borrow().paused != paused {
            info!(migration_id = %self.options.id, paused, "copy paused or resumed by the operator");
            self.progress
                .send_modify(|progress| progress.paused = paused);
        }
    }

    /// Holds a paused migration after the copy, applying changes meanwhile.
    pub(super) async fn wait_while_paused(&mut self) -> Result<(), Error> {
        let mut connection = self.connect().await?;
        while self.intents.borrow().paused {
            if !self.progress.borrow().paused {
                self.duties.force();
            }
            self.publish_paused(true);
            self.check_cancelled()?;
            self.pump_stream().await?;
            self.flush_ready(&mut connection).await?;
            self.duties().await?;
            tokio::time::sleep(IDLE_TICK * 5).await;
        }
        self.publish_paused(false);
        Ok(())
    }

    /// `ApplyChangeset`: catch up with the server's current position and apply everything.
    pub(super) async fn apply_changeset(&mut self) -> Result<(), Error> {
        shoal_worker::failpoint::hit("apply.before", self.options.id.as_str()).await;
        let mut connection = self.connect().await?;
        let target = binlog::current_position(&mut connection, &self.server).await?;
        self.catch_up(&target, Duration::from_secs(300)).await?;
        self.flush_ready(&mut connection).await?;
        Ok(())
    }
}
