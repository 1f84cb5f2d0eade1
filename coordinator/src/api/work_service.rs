//! `shoal.v1.WorkService`: worker registration, heartbeats and the task long poll.
//!
//! Tasks are created by a migration's owner (the online-ALTER issue); until then the long poll
//! ends empty at its deadline and every task report names an unknown task.
//!
//! # Invariants
//! - INV-L1: a report about a task is applied only at the task's current lease epoch. With no
//!   lease granted yet, every report is refused as `NOT_FOUND`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use shoal_common::ids::{CoordinatorId, WorkerId};
use shoal_common::registry::{RegistrationTiming, WorkerRecord};
use shoal_proto::v1;
use shoal_proto::v1::work_service_server::WorkService;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info};

use super::{id_status, proto_duration, std_duration, store_status, unix_millis_now};
use crate::store::worker_registry::WorkerRegistry;

/// Serves workers.
#[derive(Debug, Clone)]
pub struct WorkApi {
    /// Identity of this replica, returned to workers for their logs.
    coordinator_id: CoordinatorId,
    /// Where registrations live (Redis in the fleet).
    registry: Arc<dyn WorkerRegistry>,
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
        timing: RegistrationTiming,
        max_poll_wait: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            coordinator_id,
            registry,
            timing,
            max_poll_wait,
            shutdown,
        }
    }
}

fn worker_id(raw: &str) -> Result<WorkerId, Status> {
    WorkerId::parse(raw).map_err(|error| id_status("worker_id", &error))
}

fn unknown_task(task_id: &str) -> Status {
    Status::not_found(format!(
        "task {task_id:?} holds no lease on this fleet; drop it without writing"
    ))
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
        // No migration creates tasks yet: the poll ends empty at its deadline or at shutdown.
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = self.shutdown.cancelled() => {}
        }
        Ok(Response::new(v1::AcquireTaskResponse { task: None }))
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
        // INV-L1: no lease exists, so none is extended.
        let leases = request
            .tasks
            .into_iter()
            .map(|task| v1::LeaseVerdict {
                task_id: task.task_id,
                extended: false,
                lease_expires_at: None,
            })
            .collect();
        Ok(Response::new(v1::HeartbeatResponse { registered, leases }))
    }

    async fn complete_task(
        &self,
        request: Request<v1::CompleteTaskRequest>,
    ) -> Result<Response<v1::CompleteTaskResponse>, Status> {
        Err(unknown_task(&request.into_inner().task_id))
    }

    async fn fail_task(
        &self,
        request: Request<v1::FailTaskRequest>,
    ) -> Result<Response<v1::FailTaskResponse>, Status> {
        Err(unknown_task(&request.into_inner().task_id))
    }

    async fn release_task(
        &self,
        request: Request<v1::ReleaseTaskRequest>,
    ) -> Result<Response<v1::ReleaseTaskResponse>, Status> {
        Err(unknown_task(&request.into_inner().task_id))
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
