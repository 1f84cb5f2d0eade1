//! The worker process: register, heartbeat, poll for tasks in `concurrency` slots, drain.
//!
//! # Design decisions
//! The channel connects lazily and reconnects by itself, so a coordinator restart or a
//! fail-over to another replica behind the same address costs only retried calls. A heartbeat
//! answered with `registered = false` (the registration expired, or Redis lost it) makes the
//! worker register again instead of exiting: the registry is live state that can be rebuilt.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use shoal_common::backoff;
use shoal_common::ids::WorkerId;
use shoal_proto::v1;
use shoal_proto::v1::work_service_client::WorkServiceClient;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

use crate::config::Config;

/// Bound on connecting to the coordinator and on short calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on deregistering during shutdown.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(2);
/// Retry delays after failed calls.
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(5);

/// A configured worker, not yet registered.
#[derive(Debug)]
pub struct Worker {
    config: Config,
    /// Identity used in every call.
    id: WorkerId,
    /// gRPC client of the coordinator (cheap to clone; shares one connection).
    client: WorkServiceClient<Channel>,
}

/// What registration granted.
#[derive(Debug, Clone, Copy)]
struct Registration {
    heartbeat_interval: Duration,
}

fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1_000) / 1_000.0
}

/// Sleeps `delay` unless cancelled first; returns false if cancelled.
async fn pause(delay: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = cancel.cancelled() => false,
    }
}

impl Worker {
    /// Validates the configuration and prepares a lazily connecting client.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let id = match &config.id {
            Some(id) => WorkerId::parse(id.clone()).context("--id")?,
            None => WorkerId::generate(
                &gethostname::gethostname().to_string_lossy(),
                std::process::id(),
            ),
        };
        let endpoint = Endpoint::from_shared(config.coordinator.clone())
            .with_context(|| format!("--coordinator {:?} is not a URL", config.coordinator))?
            .connect_timeout(CALL_TIMEOUT)
            .tcp_nodelay(true);
        let client = WorkServiceClient::new(endpoint.connect_lazy());
        Ok(Self { config, id, client })
    }

    /// This worker's identity.
    pub fn id(&self) -> &WorkerId {
        &self.id
    }

    /// Runs until `shutdown` is cancelled, then drains and deregisters.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Some(registration) = self.register_until_done(&shutdown).await else {
            info!(worker_id = %self.id, "shutdown before registration");
            return Ok(());
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(
            self.clone_parts()
                .heartbeat_loop(registration, shutdown.clone()),
        );
        for slot in 0..self.config.concurrency {
            tasks.spawn(self.clone_parts().slot_loop(slot, shutdown.clone()));
        }
        shutdown.cancelled().await;
        info!(worker_id = %self.id, "draining");
        while let Some(joined) = tasks.join_next().await {
            if let Err(error) = joined {
                warn!(%error, "worker loop ended abnormally");
            }
        }
        self.deregister().await;
        Ok(())
    }

    fn clone_parts(&self) -> Self {
        Self {
            config: self.config.clone(),
            id: self.id.clone(),
            client: self.client.clone(),
        }
    }

    async fn register(&self) -> Result<Registration, tonic::Status> {
        let request = v1::RegisterWorkerRequest {
            worker_id: self.id.to_string(),
            hostname: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
            slots: self.config.concurrency,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let mut client = self.client.clone();
        let response = client.register_worker(request).await?.into_inner();
        let heartbeat_interval = response
            .heartbeat_interval
            .and_then(|interval| {
                let seconds = u64::try_from(interval.seconds).ok()?;
                let nanos = u32::try_from(interval.nanos).ok()?;
                Some(Duration::new(seconds, nanos))
            })
            .filter(|interval| !interval.is_zero())
            .ok_or_else(|| tonic::Status::internal("coordinator sent no heartbeat interval"))?;
        info!(
            worker_id = %self.id,
            coordinator_id = %response.coordinator_id,
            ?heartbeat_interval,
            "registered"
        );
        Ok(Registration { heartbeat_interval })
    }

    async fn register_until_done(&self, shutdown: &CancellationToken) -> Option<Registration> {
        let mut attempt = 0;
        loop {
            match self.register().await {
                Ok(registration) => return Some(registration),
                Err(status) => warn!(
                    worker_id = %self.id,
                    code = ?status.code(),
                    message = status.message(),
                    "register with coordinator; retrying"
                ),
            }
            let delay = backoff::delay(attempt, RETRY_BASE, RETRY_CAP, jitter());
            attempt += 1;
            if !pause(delay, shutdown).await {
                return None;
            }
        }
    }

    async fn heartbeat_loop(self, registration: Registration, shutdown: CancellationToken) {
        let mut interval = registration.heartbeat_interval;
        while pause(interval, &shutdown).await {
            let mut client = self.client.clone();
            let request = v1::HeartbeatRequest {
                worker_id: self.id.to_string(),
                tasks: Vec::new(),
            };
            match client.heartbeat(request).await {
                Ok(response) if response.get_ref().registered => {}
                Ok(_) => {
                    warn!(worker_id = %self.id, "registration lost; registering again");
                    match self.register_until_done(&shutdown).await {
                        Some(renewed) => interval = renewed.heartbeat_interval,
                        None => return,
                    }
                }
                Err(status) => warn!(
                    worker_id = %self.id,
                    code = ?status.code(),
                    message = status.message(),
                    "heartbeat failed; retrying at the next interval"
                ),
            }
        }
    }

    async fn slot_loop(self, slot: u32, shutdown: CancellationToken) {
        let mut failures = 0;
        loop {
            let mut client = self.client.clone();
            let request = v1::AcquireTaskRequest {
                worker_id: self.id.to_string(),
                wait: Some(prost_types::Duration {
                    seconds: i64::try_from(self.config.poll_wait.as_secs()).unwrap_or(i64::MAX),
                    nanos: i32::try_from(self.config.poll_wait.subsec_nanos()).unwrap_or(0),
                }),
            };
            let acquired = tokio::select! {
                result = client.acquire_task(request) => result,
                () = shutdown.cancelled() => return,
            };
            match acquired {
                Ok(response) => {
                    failures = 0;
                    match response.into_inner().task {
                        Some(task) => self.refuse_task(task).await,
                        None => {
                            debug!(worker_id = %self.id, slot, "long poll ended without a task")
                        }
                    }
                }
                Err(status) => {
                    warn!(
                        worker_id = %self.id,
                        slot,
                        code = ?status.code(),
                        message = status.message(),
                        "acquire task; retrying"
                    );
                    let delay = backoff::delay(failures, RETRY_BASE, RETRY_CAP, jitter());
                    failures += 1;
                    if !pause(delay, &shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    /// This worker version executes no task kind yet: hand the task back as failed so the
    /// coordinator can give it to a worker that can.
    async fn refuse_task(&self, task: v1::Task) {
        let kind = v1::TaskKind::try_from(task.kind)
            .map(|kind| kind.as_str_name().to_owned())
            .unwrap_or_else(|_| format!("unknown kind {}", task.kind));
        warn!(worker_id = %self.id, task_id = %task.task_id, %kind, "task kind not supported by this worker version");
        let mut client = self.client.clone();
        let request = v1::FailTaskRequest {
            worker_id: self.id.to_string(),
            task_id: task.task_id,
            lease_epoch: task.lease_epoch,
            error: format!(
                "worker {} (version {}) cannot run {kind} tasks",
                self.id,
                env!("CARGO_PKG_VERSION")
            ),
            retryable: true,
        };
        if let Err(status) = client.fail_task(request).await {
            warn!(code = ?status.code(), message = status.message(), "report unsupported task");
        }
    }

    async fn deregister(&self) {
        let mut client = self.client.clone();
        let request = v1::DeregisterWorkerRequest {
            worker_id: self.id.to_string(),
        };
        match tokio::time::timeout(DEREGISTER_TIMEOUT, client.deregister_worker(request)).await {
            Ok(Ok(_)) => info!(worker_id = %self.id, "deregistered"),
            Ok(Err(status)) => warn!(
                worker_id = %self.id,
                code = ?status.code(),
                message = status.message(),
                "deregister failed; the registration expires by TTL"
            ),
            Err(_) => {
                warn!(worker_id = %self.id, "deregister timed out; the registration expires by TTL")
            }
        }
    }
}
