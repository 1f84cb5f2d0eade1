//! `shoal run`: one process, no Redis. The owner and in-process workers share an in-memory task
//! store through the same traits the fleet uses (the store is the seam; the logic is not forked).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use shoal_common::ids::{MigrationId, WorkerId};
use shoal_common::lease::Verdict;
use shoal_common::task::{CopyOutcome, LeasedTask};
use shoal_proto::v1;
use shoal_worker::executor::{SlotConfig, SourceError, TaskSource, run_slot};
use shoal_worker::session::Targets;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::migration::owner::Migration;
use crate::migration::{ChangePath, Error, MigrationOptions, Progress};
use crate::store::memory_tasks::MemoryTaskStore;
use crate::store::tasks::TaskStore;

/// The target name `shoal run` gives its DSN.
pub const LOCAL_TARGET: &str = "local";

/// Tasks straight from a task store (no gRPC): what in-process workers use.
#[derive(Debug)]
pub struct StoreSource {
    /// The shared store.
    pub store: Arc<dyn TaskStore>,
    /// Identity in leases.
    pub worker_id: WorkerId,
    /// Lease length.
    pub lease_ttl: Duration,
}

fn source_error(error: crate::store::Error) -> SourceError {
    SourceError {
        message: error.to_string(),
    }
}

#[async_trait]
impl TaskSource for StoreSource {
    async fn acquire(&self, wait: Duration) -> Result<Option<LeasedTask>, SourceError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(task) = self
                .store
                .acquire(&self.worker_id, self.lease_ttl)
                .await
                .map_err(source_error)?
            {
                return Ok(Some(task));
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Ok(None);
            }
            self.store
                .wait_for_work(remaining.min(Duration::from_millis(100)))
                .await;
        }
    }

    async fn extend(&self, task: &LeasedTask) -> Result<bool, SourceError> {
        self.store
            .extend(
                &self.worker_id,
                &task.spec.task_id,
                task.lease_epoch,
                self.lease_ttl,
            )
            .await
            .map_err(source_error)
    }

    async fn complete(&self, task: &LeasedTask, outcome: CopyOutcome) -> Result<bool, SourceError> {
        let verdict = self
            .store
            .complete(
                &self.worker_id,
                &task.spec.task_id,
                task.lease_epoch,
                outcome,
            )
            .await
            .map_err(source_error)?;
        Ok(verdict == Verdict::Current)
    }

    async fn fail(
        &self,
        task: &LeasedTask,
        error: String,
        retryable: bool,
    ) -> Result<(), SourceError> {
        self.store
            .fail(
                &self.worker_id,
                &task.spec.task_id,
                task.lease_epoch,
                error,
                retryable,
            )
            .await
            .map(|_| ())
            .map_err(source_error)
    }

    async fn release(&self, task: &LeasedTask) -> Result<(), SourceError> {
        self.store
            .release(&self.worker_id, &task.spec.task_id, task.lease_epoch)
            .await
            .map(|_| ())
            .map_err(source_error)
    }
}

/// Runs one migration in this process with `options.threads` in-process workers.
pub async fn run(
    options: MigrationOptions,
    progress: watch::Sender<Progress>,
    shutdown: CancellationToken,
) -> Result<ChangePath, Error> {
    let store: Arc<dyn TaskStore> = Arc::new(MemoryTaskStore::default());
    let targets = Targets::new(
        HashMap::from([(LOCAL_TARGET.to_owned(), options.dsn.clone())]),
        options.lock_wait_timeout,
        options.threads as usize + 1,
    );
    let workers = CancellationToken::new();
    let mut slots = JoinSet::new();
    for slot in 0..options.threads.max(1) {
        let worker_id = WorkerId::parse(format!("embedded-{slot}")).expect("a valid literal id");
        let source: Arc<dyn TaskSource> = Arc::new(StoreSource {
            store: Arc::clone(&store),
            worker_id: worker_id.clone(),
            lease_ttl: options.lease_ttl,
        });
        let config = SlotConfig {
            worker_id,
            slot,
            poll_wait: Duration::from_millis(500),
        };
        slots.spawn(run_slot(source, targets.clone(), config, workers.clone()));
    }
    // A signal stops the migration without cleanup: its checkpoint stays, and running the
    // same command again resumes it.
    let result = match Migration::prepare(
        options,
        Arc::clone(&store),
        progress,
        CancellationToken::new(),
    )
    .await
    {
        Ok(migration) => migration.with_deposed(shutdown).run().await,
        Err(error) => Err(error),
    };
    workers.cancel();
    while slots.join_next().await.is_some() {}
    result
}

/// The dry run of one migration (`shoal plan` without a coordinator): checks and plan,
/// changing nothing.
pub async fn plan(options: MigrationOptions) -> Result<v1::PlanMigrationResponse, Error> {
    let prepared = Migration::prepare(
        options,
        Arc::new(MemoryTaskStore::default()),
        watch::channel(Progress::default()).0,
        CancellationToken::new(),
    )
    .await;
    crate::migration::plan::plan_or_refusal(prepared).await
}

/// A migration id for `shoal run`: the table and a random suffix.
pub fn new_migration_id(table_hint: &str) -> MigrationId {
    let cleaned: String = table_hint
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    let random = uuid::Uuid::new_v4().simple().to_string();
    MigrationId::parse(format!("{cleaned}-{}", &random[..8]))
        .unwrap_or_else(|_| MigrationId::parse(random).expect("a uuid is a valid id"))
}
