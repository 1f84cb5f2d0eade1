//! In-memory task store for `shoal run` and unit tests; time from tokio's clock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use shoal_common::ids::{LeaseEpoch, MigrationId, TaskId, WorkerId};
use shoal_common::lease::{self, Lease, Verdict};
use shoal_common::task::{Completion, CopyOutcome, LeasedTask, ReturnReason, Returned, TaskSpec};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Error;
use super::tasks::{Collected, TaskStore};

#[derive(Debug)]
struct Entry {
    spec: TaskSpec,
    /// Current lease, if leased.
    lease: Option<Lease>,
    /// Epoch of the last grant, so a re-grant advances it.
    last_epoch: Option<LeaseEpoch>,
}

#[derive(Debug, Default)]
struct State {
    /// Published tasks not yet handed back to the owner.
    tasks: HashMap<TaskId, Entry>,
    /// Ready task ids, oldest first.
    ready: VecDeque<TaskId>,
    /// Completions and returns per migration, for the owner.
    outbox: BTreeMap<MigrationId, Collected>,
}

/// Task store held in this process.
#[derive(Debug)]
pub struct MemoryTaskStore {
    state: Mutex<State>,
    /// Wakes long polls when a task is published.
    published: Notify,
    /// Origin of the millisecond clock.
    epoch: Instant,
}

impl Default for MemoryTaskStore {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::default()),
            published: Notify::new(),
            epoch: Instant::now(),
        }
    }
}

impl MemoryTaskStore {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn insert(&self, spec: TaskSpec, first: bool) {
        {
            let mut state = self.lock();
            if first {
                state.ready.push_front(spec.task_id.clone());
            } else {
                state.ready.push_back(spec.task_id.clone());
            }
            state.tasks.insert(
                spec.task_id.clone(),
                Entry {
                    spec,
                    lease: None,
                    last_epoch: None,
                },
            );
        }
        self.published.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Judges a report and, if current, removes the task and files `make(spec)` for the owner.
    fn hand_back(
        &self,
        worker: &WorkerId,
        task_id: &TaskId,
        epoch: LeaseEpoch,
        file: impl FnOnce(TaskSpec, &mut Collected),
    ) -> Verdict {
        let mut state = self.lock();
        let verdict = match state.tasks.get(task_id) {
            None => Verdict::Unknown,
            Some(entry) => lease::judge(entry.lease.as_ref(), worker, epoch),
        };
        if verdict != Verdict::Current {
            return verdict;
        }
        if let Some(entry) = state.tasks.remove(task_id) {
            let migration = entry.spec.migration_id.clone();
            file(entry.spec, state.outbox.entry(migration).or_default());
        }
        Verdict::Current
    }
}

#[async_trait]
impl TaskStore for MemoryTaskStore {
    async fn publish(&self, spec: TaskSpec) -> Result<(), Error> {
        self.insert(spec, false);
        Ok(())
    }

    async fn publish_first(&self, spec: TaskSpec) -> Result<(), Error> {
        self.insert(spec, true);
        Ok(())
    }

    async fn acquire(&self, worker: &WorkerId, ttl: Duration) -> Result<Option<LeasedTask>, Error> {
        let now = self.now_ms();
        let mut state = self.lock();
        while let Some(task_id) = state.ready.pop_front() {
            let Some(entry) = state.tasks.get_mut(&task_id) else {
                continue; // cleared while queued
            };
            let granted = lease::grant(entry.last_epoch, worker, now, ttl);
            entry.last_epoch = Some(granted.epoch);
            let leased = LeasedTask {
                spec: entry.spec.clone(),
                lease_epoch: granted.epoch,
                lease_ttl: ttl,
            };
            entry.lease = Some(granted);
            return Ok(Some(leased));
        }
        Ok(None)
    }

    async fn extend(
        &self,
        worker: &WorkerId,
        task_id: &TaskId,
        epoch: LeaseEpoch,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let now = self.now_ms();
        let mut state = self.lock();
        let Some(entry) = state.tasks.get_mut(task_id) else {
            return Ok(false);
        };
        let Some(current) = entry.lease.as_ref() else {
            return Ok(false);
        };
        match lease::extend(current, worker, epoch, now, ttl) {
            Some(extended) => {
                entry.lease = Some(extended);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn complete(
        &self,
        worker: &WorkerId,
        task_id: &TaskId,
        epoch: LeaseEpoch,
        outcome: CopyOutcome,
    ) -> Result<Verdict, Error> {
        let worker_id = worker.clone();
        Ok(self.hand_back(worker, task_id, epoch, |spec, outbox| {
            outbox.completions.push(Completion {
                task_id: spec.task_id,
                chunk: spec.chunk,
                worker: worker_id,
                outcome,
            });
        }))
    }

    async fn fail(
        &self,
        worker: &WorkerId,
        task_id: &TaskId,
        epoch: LeaseEpoch,
        error: String,
        retryable: bool,
    ) -> Result<Verdict, Error> {
        Ok(self.hand_back(worker, task_id, epoch, |spec, outbox| {
            outbox.returned.push(Returned {
                spec,
                reason: ReturnReason::Failed { error, retryable },
            });
        }))
    }

    async fn release(
        &self,
        worker: &WorkerId,
        task_id: &TaskId,
        epoch: LeaseEpoch,
    ) -> Result<Verdict, Error> {
        Ok(self.hand_back(worker, task_id, epoch, |spec, outbox| {
            outbox.returned.push(Returned {
                spec,
                reason: ReturnReason::Released,
            });
        }))
    }

    async fn collect(&self, migration: &MigrationId, _owner: &str) -> Result<Collected, Error> {
        let now = self.now_ms();
        let mut state = self.lock();
        let expired: Vec<TaskId> = state
            .tasks
            .iter()
            .filter(|(_, entry)| {
                &entry.spec.migration_id == migration
                    && entry
                        .lease
                        .as_ref()
                        .is_some_and(|held| lease::is_expired(held, now))
            })
            .map(|(task_id, _)| task_id.clone())
            .collect();
        let mut collected = state.outbox.remove(migration).unwrap_or_default();
        for task_id in expired {
            if let Some(entry) = state.tasks.remove(&task_id) {
                collected.returned.push(Returned {
                    spec: entry.spec,
                    reason: ReturnReason::Expired,
                });
            }
        }
        Ok(collected)
    }

    async fn live_tasks(
        &self,
        migration: &MigrationId,
    ) -> Result<std::collections::HashSet<TaskId>, Error> {
        Ok(self
            .lock()
            .tasks
            .iter()
            .filter(|(_, entry)| &entry.spec.migration_id == migration)
            .map(|(task_id, _)| task_id.clone())
            .collect())
    }

    async fn clear(&self, migration: &MigrationId) -> Result<(), Error> {
        let mut state = self.lock();
        state
            .tasks
            .retain(|_, entry| &entry.spec.migration_id != migration);
        state.outbox.remove(migration);
        Ok(())
    }

    async fn wait_for_work(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.published.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    #[tokio::test(start_paused = true)]
    async fn conforms() {
        conformance::task_store(&MemoryTaskStore::default(), |wait| {
            tokio::time::advance(wait)
        })
        .await;
    }
}
