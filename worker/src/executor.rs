//! The slot loop: take a task, keep its lease alive, run it, report the result.
//!
//! # Invariants
//! - INV-L1: every report carries the task's lease epoch; a refused report means the task moved
//!   on, so the worker drops it.
//! - A task whose lease could not be extended is abandoned at once (its transaction rolls back
//!   when the connection is dropped); the fence (INV-F1) protects against the write racing on.
//!
//! # Design decisions
//! Where tasks come from is a trait: gRPC to a coordinator in the fleet, the task store itself
//! under `shoal run`. The loop, the lease keeping and the reporting are the same code.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use shoal_common::ids::WorkerId;
use shoal_common::task::{CopyOutcome, LeasedTask, TaskSpec};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::copy;
use crate::session::Targets;

/// Why a call to the task source failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    /// What happened.
    pub message: String,
}

/// Where a worker's tasks come from and where its reports go.
#[async_trait]
pub trait TaskSource: Send + Sync + 'static {
    /// Waits up to `wait` for a task.
    async fn acquire(&self, wait: Duration) -> Result<Option<LeasedTask>, SourceError>;
    /// Extends the task's lease; false if it is gone or stale.
    async fn extend(&self, task: &LeasedTask) -> Result<bool, SourceError>;
    /// Reports the task done; false if refused (stale or unknown).
    async fn complete(&self, task: &LeasedTask, outcome: CopyOutcome) -> Result<bool, SourceError>;
    /// Reports the task failed.
    async fn fail(
        &self,
        task: &LeasedTask,
        error: String,
        retryable: bool,
    ) -> Result<(), SourceError>;
    /// Gives the task back unfinished.
    async fn release(&self, task: &LeasedTask) -> Result<(), SourceError>;
}

/// How a slot runs.
#[derive(Debug, Clone)]
pub struct SlotConfig {
    /// Name for logs.
    pub worker_id: WorkerId,
    /// Slot number for logs.
    pub slot: u32,
    /// Long-poll length.
    pub poll_wait: Duration,
}

/// How one task ended.
pub(crate) enum Ending {
    Done(Result<CopyOutcome, copy::Error>),
    LeaseLost,
    Shutdown,
}

/// Runs tasks from `source` until `shutdown`.
pub async fn run_slot(
    source: Arc<dyn TaskSource>,
    targets: Targets,
    config: SlotConfig,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    loop {
        let acquired = tokio::select! {
            acquired = source.acquire(config.poll_wait) => acquired,
            () = shutdown.cancelled() => return,
        };
        match acquired {
            Ok(Some(task)) => {
                failures = 0;
                let span = tracing::info_span!(
                    "chunk.copy",
                    migration.id = %task.spec.migration_id,
                    task.id = %task.spec.task_id,
                    chunk = task.spec.chunk.0,
                    range = %task.spec.range,
                    worker.id = %config.worker_id,
                    rows = tracing::field::Empty,
                    outcome = tracing::field::Empty,
                );
                shoal_common::telemetry::set_remote_parent(&span, &task.spec.trace_context);
                execute(source.as_ref(), &targets, &config, task, &shutdown)
                    .instrument(span)
                    .await;
            }
            Ok(None) => debug!(worker_id = %config.worker_id, slot = config.slot, "no task"),
            Err(error) => {
                warn!(worker_id = %config.worker_id, slot = config.slot, %error, "acquire task; retrying");
                let delay = shoal_common::backoff::delay(
                    failures,
                    Duration::from_millis(100),
                    Duration::from_secs(5),
                    0.5,
                );
                failures = failures.saturating_add(1);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// How long a worker told to stop waits for its killed copy to roll back.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// `KILL QUERY` on the connection copying `spec`, from another connection of the pool.
async fn stop_copy(pool: &mysql_async::Pool, connection_id: &AtomicU32, spec: &TaskSpec) {
    let id = connection_id.load(Ordering::SeqCst);
    if id == 0 {
        return;
    }
    let killed = async {
        let mut killer = pool.get_conn().await?;
        killer
            .query_drop(shoal_mysql::flavour::kill(id.into(), true))
            .await
    }
    .await;
    match killed {
        Ok(()) => {
            info!(task_id = %spec.task_id, connection = id, "stopping: killed the chunk's query")
        }
        Err(error) => warn!(task_id = %spec.task_id, %error, "stopping: kill the chunk's query"),
    }
}

/// Extends the lease every third of its TTL; returns when it cannot (the lease is lost).
async fn keep_lease(source: &dyn TaskSource, task: &LeasedTask) {
    let interval = task.lease_ttl / 3;
    let mut misses = 0;
    loop {
        tokio::time::sleep(interval).await;
        crate::failpoint::hit("lease.extend", task.spec.task_id.as_str()).await;
        match source.extend(task).await {
            Ok(true) => misses = 0,
            Ok(false) => return,
            // A transient error: keep trying while the lease can still be alive.
            Err(error) => {
                misses += 1;
                warn!(task_id = %task.spec.task_id, %error, "extend lease");
                if misses >= 2 {
                    return;
                }
            }
        }
    }
}

async fn execute(
    source: &dyn TaskSource,
    targets: &Targets,
    config: &SlotConfig,
    task: LeasedTask,
    shutdown: &CancellationToken,
) {
    let spec = &task.spec;
    let pool = match targets.pool(&spec.context.target) {
        Ok(pool) => pool,
        Err(error) => {
            warn!(task_id = %spec.task_id, %error, "resolve target");
            if let Err(report) = source.fail(&task, error.to_string(), false).await {
                warn!(task_id = %spec.task_id, error = %report, "report failure");
            }
            return;
        }
    };
    let connection_id = AtomicU32::new(0);
    let started = std::time::Instant::now();
    let _busy = crate::metrics::BusySlot::new();
    let copy = copy::copy_chunk(&pool, spec, &connection_id);
    tokio::pin!(copy);
    let ending = tokio::select! {
        result = &mut copy => Ending::Done(result),
        () = keep_lease(source, &task) => Ending::LeaseLost,
        () = shutdown.cancelled() => {
            // Stop now: kill our own statement (the fence makes that safe), let the copy see
            // the error and roll back, then give the task back.
            stop_copy(&pool, &connection_id, spec).await;
            if tokio::time::timeout(STOP_WAIT, &mut copy).await.is_err() {
                warn!(task_id = %spec.task_id, "the killed copy did not end; releasing anyway");
            }
            Ending::Shutdown
        }
    };
    let task_id = &spec.task_id;
    let span = tracing::Span::current();
    span.record("outcome", crate::metrics::outcome_name(&ending));
    if let Ending::Done(Ok(outcome)) = &ending {
        span.record("rows", outcome.rows);
        crate::metrics::chunk_copied(outcome.rows, started.elapsed());
    }
    crate::metrics::chunk_ended(crate::metrics::outcome_name(&ending));
    match ending {
        Ending::Done(Ok(outcome)) => match source.complete(&task, outcome).await {
            Ok(true) => debug!(
                worker_id = %config.worker_id, %task_id, chunk = %spec.chunk, rows = outcome.rows,
                "chunk copied"
            ),
            Ok(false) => info!(%task_id, "completion refused: the task moved on (stale lease)"),
            Err(error) => warn!(%task_id, %error, "report completion; the lease will expire"),
        },
        Ending::Done(Err(copy::Error::Fenced { chunk, found, held })) => {
            info!(%task_id, chunk, ?found, held, "chunk fenced: dropping the task (INV-F1)");
        }
        Ending::Done(Err(error)) => {
            let retryable = error.is_retryable();
            warn!(%task_id, %error, retryable, "chunk copy failed");
            if let Err(report) = source.fail(&task, error.to_string(), retryable).await {
                warn!(%task_id, error = %report, "report failure; the lease will expire");
            }
        }
        Ending::LeaseLost => info!(%task_id, "lease lost: abandoning the task"),
        Ending::Shutdown => match source.release(&task).await {
            Ok(()) => info!(%task_id, "stopping: task released"),
            Err(error) => warn!(%task_id, %error, "release task; the lease will expire"),
        },
    }
}
