//! The task store: ready queues and leases of chunk tasks, shared by the owner and the workers.
//!
//! # Invariants
//! - INV-L1 (see `shoal_common::lease`): reports are applied only at the current lease epoch
//!   from the holder; the store judges them atomically with the state change.
//! - A task is in exactly one place: ready, leased, or handed back to the owner (completed or
//!   returned). A reaped lease is returned to the owner, never straight to the ready queue: the
//!   owner must bump the chunk's fence first (INV-F1) and then publish it again.

use std::time::Duration;

use async_trait::async_trait;
use shoal_common::ids::{LeaseEpoch, MigrationId, TaskId, WorkerId};
use shoal_common::lease::Verdict;
use shoal_common::task::{Completion, CopyOutcome, LeasedTask, Returned, TaskSpec};

use super::Error;

/// What the owner collects in one call.
#[derive(Debug, Default)]
pub struct Collected {
    /// Completions accepted at their current epoch, in arrival order.
    pub completions: Vec<Completion>,
    /// Tasks whose lease expired, or that workers failed or released.
    pub returned: Vec<Returned>,
}

/// Ready queues and leases.
#[async_trait]
pub trait TaskStore: Send + Sync + std::fmt::Debug + 'static {
    /// Owner: offers a task to the fleet (appended to the ready queue).
    async fn publish(&self, spec: TaskSpec) -> Result<(), Error>;

    /// Owner: offers a task ahead of every ready one: a chunk that came back (lease expired,
    /// released, failed) or must be recopied holds the low watermark and its deferred changes.
    async fn publish_first(&self, spec: TaskSpec) -> Result<(), Error>;

    /// Worker: takes the oldest ready task under a fresh lease of `ttl`, if any.
    async fn acquire(&self, worker: &WorkerId, ttl: Duration) -> Result<Option<LeasedTask>, Error>;

    /// Worker: extends a lease for another `ttl`. False when the lease is gone or stale.
    async fn extend(
        &self,
        worker: &WorkerId,
        task_id: &TaskId,
        epoch: LeaseEpoch,
        ttl: Duration,
    ) -> Result<bool, Error>;

    /// Worker: reports a task done. Only a `Current` report is recorded.
    async fn complete(
        &self,
        worker: &WorkerId,
        task_id: &TaskId,
        epoch: LeaseEpoch,
        outcome: CopyOutcome,
    ) -> Result<Verdict, Error>;

    /// Worker: reports a task failed. Only a `Current` report returns the task to the owner.
    async fn fail(
        &self,
        worker: &WorkerId,
        task_id: &TaskId,
        epoch: LeaseEpoch,
        error: String,
        retryable: bool,
    ) -> Result<Verdict, Error>;

    /// Worker: gives a task back unfinished.
    async fn release(
        &self,
        worker: &WorkerId,
        task_id: &TaskId,
        epoch: LeaseEpoch,
    ) -> Result<Verdict, Error>;

    /// Owner: reaps expired leases of `migration`, then takes its completions and returned tasks.
    /// Refused with [`Error::NotOwner`], taking nothing, when the live store's owner lease names
    /// another owner than `owner` (a deposed owner must not take reports its successor waits
    /// for); a store without owner leases ignores `owner`.
    async fn collect(&self, migration: &MigrationId, owner: &str) -> Result<Collected, Error>;

    /// Owner: the ids of `migration`'s tasks the store still holds (ready or leased; not yet
    /// reported or reaped). Read before [`Self::collect`], a task in flight that is in neither
    /// answer was lost without a report.
    async fn live_tasks(
        &self,
        migration: &MigrationId,
    ) -> Result<std::collections::HashSet<TaskId>, Error>;

    /// Owner: forgets every task of `migration` (after cut-over or on cancel).
    async fn clear(&self, migration: &MigrationId) -> Result<(), Error>;

    /// Waits until a task may be ready, or `timeout`. Spurious wake-ups are allowed.
    async fn wait_for_work(&self, timeout: Duration);

    /// Owner: the next owner epoch the live store hands out for `migration` (INV-O1; the owner
    /// takes the larger of this and the epoch stored in MySQL plus one). A store without a
    /// shared counter answers 0.
    async fn owner_epoch(&self, _migration: &MigrationId) -> Result<u64, Error> {
        Ok(0)
    }
}
