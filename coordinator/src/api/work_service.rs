//! `shoal.v1.WorkService`: worker registration, heartbeats, the task long poll and reports.
//!
//! Any coordinator replica serves it: tasks and leases live in the task store (Redis in the
//! fleet), which the migration's owner fills and drains.
//!
//! # Invariants
//! - INV-L1: a report about a task is applied only at the task's current lease epoch from its
//!   holder (the store judges it atomically). A stale report is answered `FAILED_PRECONDITION`,
//!   an unknown task `NOT_FOUND`: both mean "roll back and drop the task", never "retry".

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use shoal_common::ids::{CoordinatorId, LeaseEpoch, TaskId, WorkerId};
use shoal_common::lease::Verdict;
use shoal_common::registry::{RegistrationTiming, WorkerRecord};
use shoal_common::task::CopyOutcome;
use shoal_proto::v1;
use shoal_proto::v1::work_service_server::WorkService;
use shoal_worker::wire::task_to_proto;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info};

use super::{id_status, proto_duration, std_duration, store_status, unix_millis_now};
use crate::store::tasks::TaskStore;
use crate::store::worker_registry::WorkerRegistry;

/// Serves workers.
#[derive(Debug, Clone)]
pub struct WorkApi {
    /// Identity of this replica, returned to workers for their logs.
    coordinator_id: CoordinatorId,
    /// Where registrations live (Redis in the fleet).
    registry: Arc<dyn WorkerRegistry>,
    /// Where tasks and leases live.
    tasks: Arc<dyn TaskStore>,
    /// Lease granted per task.
    lease_ttl: Duration,
    /// Registration TTL and heartbeat cadence.
    timing: RegistrationTiming,
    /// Upper bound on one long poll, whatever the worker asks.
    max_poll_wait: Duration,
    /// Ends open long polls when the coordinator shuts down.
    shutdown: CancellationToken,
}

impl WorkApi {
    /// A service answering for `coordinator_id`.
    pub fn new(
        coordinator_id: CoordinatorId,
        registry: Arc<dyn WorkerRegistry>,
        tasks: Arc<dyn TaskStore>,
        lease_ttl: Duration,
        timing: RegistrationTiming,
        max_poll_wait: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            coordinator_id,
            registry,
            tasks,
            lease_ttl,
            timing,
            max_poll_wait,
            shutdown,
        }
    }
}

fn worker_id(raw: &str) -> Result<WorkerId, Status> {
    WorkerId::parse(raw).map_err(|error| id_status("worker_id", &error))
}

fn task_id(raw: &str) -> Result<TaskId, Status> {
    TaskId::parse(raw).map_err(|error| id_status("task_id", &error))
}

/// Answers a judged report (INV-L1).
fn verdict_status(verdict: Verdict, task_id: &TaskId) -> Result<(), Status> {
    match verdict {
        Verdict::Current => Ok(()),
        Verdict::Stale => Err(Status::failed_precondition(format!(
            "task {task_id} is leased at another epoch or to another worker; drop it without writing"
        ))),
        Verdict::Unknown => Err(Status::not_found(format!(
            "task {task_id} holds no lease; drop it without writing"
        ))),
    }
}

type BarrierStream =
    Pin<Box<dyn Stream<Item = Result<v1::JoinSnapshotBarrierResponse, Status>> + Send>>;

#[tonic::async_trait]
impl WorkService for WorkApi {
    async fn register_worker(
        &self,
        request: Request<v1::RegisterWorkerRequest>,
    ) -> Result<Response<v1::RegisterWorkerResponse>, Status> {
        let request = request.into_inner();
        let worker_id = worker_id(&request.worker_id)?;
        if request.slots == 0 {
            return Err(Status::invalid_argument("slots must be at least 1"));
        }
        let now = unix_millis_now();
        let record = WorkerRecord {
            worker_id: worker_id.clone(),
            hostname: request.hostname,
            pid: request.pid,
            slots: request.slots,
            busy_slots: 0,
            version: request.version,
            registered_at_ms: now,
            last_heartbeat_at_ms: now,
        };
        self.registry
            .register(record, self.timing.ttl)
            .await
            .map_err(|error| store_status(&error))?;
        info!(%worker_id, slots = request.slots, "worker registered");
        Ok(Response::new(v1::RegisterWorkerResponse {
            heartbeat_interval: Some(proto_duration(self.timing.heartbeat_interval)),
            registration_ttl: Some(proto_duration(self.timing.ttl)),
            coordinator_id: self.coordinator_id.to_string(),
        }))
    }

    async fn deregister_worker(
        &self,
        request: Request<v1::DeregisterWorkerRequest>,
    ) -> Result<Response<v1::DeregisterWorkerResponse>, Status> {
        let worker_id = worker_id(&request.into_inner().worker_id)?;
        self.registry
            .deregister(&worker_id)
            .await
            .map_err(|error| store_status(&error))?;
        info!(%worker_id, "worker deregistered");
        Ok(Response::new(v1::DeregisterWorkerResponse {}))
    }

    async fn acquire_task(
        &self,
        request: Request<v1::AcquireTaskRequest>,
    ) -> Result<Response<v1::AcquireTaskResponse>, Status> {
        let request = request.into_inner();
        let worker_id = worker_id(&request.worker_id)?;
        let wait = std_duration(request.wait.as_ref())
            .unwrap_or(self.max_poll_wait)
            .min(self.max_poll_wait);
        debug!(%worker_id, ?wait, "long poll for a task");
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(task) = self
                .tasks
                .acquire(&worker_id, self.lease_ttl)
                .await
                .map_err(|error| store_status(&error))?
            {
                debug!(%worker_id, task_id = %task.spec.task_id, epoch = %task.lease_epoch, "task leased");
                return Ok(Response::new(v1::AcquireTaskResponse {
                    task: Some(task_to_proto(&task)),
                }));
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() || self.shutdown.is_cancelled() {
                return Ok(Response::new(v1::AcquireTaskResponse { task: None }));
            }
            tokio::select! {
                () = self.tasks.wait_for_work(remaining) => {}
                () = self.shutdown.cancelled() => {}
            }
        }
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let request = request.into_inner();
        let worker_id = worker_id(&request.worker_id)?;
        let busy_slots = u32::try_from(request.tasks.len()).unwrap_or(u32::MAX);
        let registered = self
            .registry
            .heartbeat(&worker_id, busy_slots, unix_millis_now(), self.timing.ttl)
            .await
            .map_err(|error| store_status(&error))?;
        let mut leases = Vec::with_capacity(request.tasks.len());
        for task in request.tasks {
            let extended = match TaskId::parse(task.task_id.clone()) {
                Ok(id) => self
                    .tasks
                    .extend(
                        &worker_id,
                        &id,
                        LeaseEpoch(task.lease_epoch),
                        self.lease_ttl,
                    )
                    .await
                    .map_err(|error| store_status(&error))?,
                Err(_) => false,
            };
            leases.push(v1::LeaseVerdict {
                task_id: task.task_id,
                extended,
                lease_expires_at: None,
            });
        }
        Ok(Response::new(v1::HeartbeatResponse { registered, leases }))
    }

    async fn complete_task(
        &self,
        request: Request<v1::CompleteTaskRequest>,
    ) -> Result<Response<v1::CompleteTaskResponse>, Status> {
        let request = request.into_inner();
        let worker_id = worker_id(&request.worker_id)?;
        let task_id = task_id(&request.task_id)?;
        let outcome = CopyOutcome {
            rows: request.rows,
            statement_time: std_duration(request.statement_time.as_ref()).unwrap_or_default(),
            unique_conflicts: request.unique_conflicts,
        };
        let verdict = self
            .tasks
            .complete(
                &worker_id,
                &task_id,
                LeaseEpoch(request.lease_epoch),
                outcome,
            )
            .await
            .map_err(|error| store_status(&error))?;
        verdict_status(verdict, &task_id)?;
        Ok(Response::new(v1::CompleteTaskResponse {}))
    }

    async fn fail_task(
        &self,
        request: Request<v1::FailTaskRequest>,
    ) -> Result<Response<v1::FailTaskResponse>, Status> {
        let request = request.into_inner();
        let worker_id = worker_id(&request.worker_id)?;
        let task_id = task_id(&request.task_id)?;
        let verdict = self
            .tasks
            .fail(
                &worker_id,
                &task_id,
                LeaseEpoch(request.lease_epoch),
                request.error,
                request.retryable,
            )
            .await
            .map_err(|error| store_status(&error))?;
        verdict_status(verdict, &task_id)?;
        Ok(Response::new(v1::FailTaskResponse {}))
    }

    async fn release_task(
        &self,
        request: Request<v1::ReleaseTaskRequest>,
    ) -> Result<Response<v1::ReleaseTaskResponse>, Status> {
        let request = request.into_inner();
        let worker_id = worker_id(&request.worker_id)?;
        let task_id = task_id(&request.task_id)?;
        let verdict = self
            .tasks
            .release(&worker_id, &task_id, LeaseEpoch(request.lease_epoch))
            .await
            .map_err(|error| store_status(&error))?;
        verdict_status(verdict, &task_id)?;
        Ok(Response::new(v1::ReleaseTaskResponse {}))
    }

    type JoinSnapshotBarrierStream = BarrierStream;

    async fn join_snapshot_barrier(
        &self,
        _request: Request<Streaming<v1::JoinSnapshotBarrierRequest>>,
    ) -> Result<Response<Self::JoinSnapshotBarrierStream>, Status> {
        Err(Status::failed_precondition(
            "no checksum barrier is open on this coordinator",
        ))
    }
}
