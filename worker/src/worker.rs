//! The worker process: register, heartbeat, poll for tasks in `concurrency` slots, drain.
//!
//! # Design decisions
//! The channel connects lazily and reconnects by itself, so a coordinator restart or a
//! fail-over to another replica behind the same address costs only retried calls. A heartbeat
//! answered with `registered = false` (the registration expired, or Redis lost it) makes the
//! worker register again instead of exiting: the registry is live state that can be rebuilt.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use shoal_common::task::{CopyOutcome, LeasedTask};

use anyhow::Context;
use shoal_common::backoff;
use shoal_common::ids::WorkerId;
use shoal_proto::auth::{BearerToken, Token};
use shoal_proto::v1;
use shoal_proto::v1::work_service_client::WorkServiceClient;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// The coordinator's WorkService, every call carrying the bearer token if there is one.
type Client = WorkServiceClient<InterceptedService<Channel, BearerToken>>;
use tracing::{info, warn};

use crate::config::Config;
use crate::executor::{SlotConfig, SourceError, TaskSource, run_slot};
use crate::session::Targets;
use crate::wire::{duration_to_proto, task_from_proto};

/// Deadline of a short call to the coordinator (register, heartbeat, reports); a long poll for
/// a task gets its wait on top.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
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
    client: Client,
}

/// What registration granted.
#[derive(Debug, Clone, Copy)]
struct Registration {
    heartbeat_interval: Duration,
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
            .with_context(|| format!("--coordinator {:?} is not a URL", config.coordinator))?;
        let endpoint = shoal_proto::connection::client(endpoint);
        let endpoint = match config.tls.config(&config.coordinator).context("TLS")? {
            Some(tls) => endpoint.tls_config(tls).context("TLS")?,
            None => endpoint,
        };
        let token = config
            .auth_token_file
            .as_deref()
            .map(Token::from_file)
            .transpose()
            .context("--auth-token-file")?;
        let client =
            WorkServiceClient::with_interceptor(endpoint.connect_lazy(), BearerToken::new(token));
        Ok(Self { config, id, client })
    }

    /// This worker's identity.
    pub fn id(&self) -> &WorkerId {
        &self.id
    }

    /// Runs until `shutdown` is cancelled, then drains and deregisters.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if let Some(address) = self.config.http {
            crate::metrics::serve(address, shutdown.clone()).await?;
        }
        let Some(registration) = self.register_until_done(&shutdown).await else {
            info!(worker_id = %self.id, "shutdown before registration");
            return Ok(());
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(
            self.clone_parts()
                .heartbeat_loop(registration, shutdown.clone()),
        );
        let source: Arc<dyn TaskSource> = Arc::new(GrpcSource {
            client: self.client.clone(),
            worker_id: self.id.clone(),
        });
        let targets = Targets::new(
            HashMap::new(),
            self.config.lock_wait_timeout,
            usize::try_from(self.config.concurrency).unwrap_or(1) + 1,
        );
        for slot in 0..self.config.concurrency {
            let config = SlotConfig {
                worker_id: self.id.clone(),
                slot,
                poll_wait: self.config.poll_wait,
            };
            tasks.spawn(run_slot(
                Arc::clone(&source),
                targets.clone(),
                config,
                shutdown.clone(),
            ));
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
        let response = client
            .register_worker(deadline(request, CALL_TIMEOUT))
            .await?
            .into_inner();
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
            let delay = backoff::delay(attempt, RETRY_BASE, RETRY_CAP, backoff::clock_jitter());
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
            match client.heartbeat(deadline(request, CALL_TIMEOUT)).await {
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

/// `message` as a request that gives up after `timeout` (the coordinator sees the deadline too).
fn deadline<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Tasks over gRPC from a coordinator.
#[derive(Debug)]
struct GrpcSource {
    client: Client,
    worker_id: WorkerId,
}

/// Whether a report was applied (`true`) or refused because the task moved on (`false`: stale
/// epoch or unknown task, INV-L1); other failures are errors.
fn reported<T>(result: Result<T, tonic::Status>, context: &str) -> Result<bool, SourceError> {
    match result {
        Ok(_) => Ok(true),
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::FailedPrecondition | tonic::Code::NotFound
            ) =>
        {
            Ok(false)
        }
        Err(status) => Err(source_error(context, &status)),
    }
}

fn source_error(context: &str, status: &tonic::Status) -> SourceError {
    SourceError {
        message: format!("{context}: {:?} {}", status.code(), status.message()),
    }
}

#[async_trait]
impl TaskSource for GrpcSource {
    async fn acquire(&self, wait: Duration) -> Result<Option<LeasedTask>, SourceError> {
        let mut client = self.client.clone();
        let request = v1::AcquireTaskRequest {
            worker_id: self.worker_id.to_string(),
            wait: Some(duration_to_proto(wait)),
        };
        let response = client
            .acquire_task(deadline(request, wait + CALL_TIMEOUT))
            .await
            .map_err(|status| source_error("acquire task", &status))?;
        let Some(task) = response.into_inner().task else {
            return Ok(None);
        };
        let task_id = task.task_id.clone();
        let lease_epoch = task.lease_epoch;
        match task_from_proto(task) {
            Ok(task) => Ok(Some(task)),
            Err(error) => {
                // This worker cannot run it: hand it back so the coordinator can fail it visibly.
                let message = format!("worker {} cannot run task: {error}", self.worker_id);
                warn!(%task_id, %error, "undecodable task");
                let request = v1::FailTaskRequest {
                    worker_id: self.worker_id.to_string(),
                    task_id,
                    lease_epoch,
                    error: message,
                    retryable: false,
                };
                let _ = client.fail_task(deadline(request, CALL_TIMEOUT)).await;
                Ok(None)
            }
        }
    }

    async fn extend(&self, task: &LeasedTask) -> Result<bool, SourceError> {
        let mut client = self.client.clone();
        let request = v1::HeartbeatRequest {
            worker_id: self.worker_id.to_string(),
            tasks: vec![v1::TaskProgress {
                task_id: task.spec.task_id.to_string(),
                lease_epoch: task.lease_epoch.0,
                rows_done: 0,
            }],
        };
        let response = client
            .heartbeat(deadline(request, CALL_TIMEOUT))
            .await
            .map_err(|status| source_error("heartbeat", &status))?
            .into_inner();
        Ok(response.leases.iter().any(|verdict| verdict.extended))
    }

    async fn complete(&self, task: &LeasedTask, outcome: CopyOutcome) -> Result<bool, SourceError> {
        let mut client = self.client.clone();
        let request = v1::CompleteTaskRequest {
            worker_id: self.worker_id.to_string(),
            task_id: task.spec.task_id.to_string(),
            lease_epoch: task.lease_epoch.0,
            rows: outcome.rows,
            statement_time: Some(duration_to_proto(outcome.statement_time)),
            checksum: None,
            unique_conflicts: outcome.unique_conflicts,
        };
        reported(
            client.complete_task(deadline(request, CALL_TIMEOUT)).await,
            "complete task",
        )
    }

    async fn fail(
        &self,
        task: &LeasedTask,
        error: String,
        retryable: bool,
    ) -> Result<(), SourceError> {
        let mut client = self.client.clone();
        let request = v1::FailTaskRequest {
            worker_id: self.worker_id.to_string(),
            task_id: task.spec.task_id.to_string(),
            lease_epoch: task.lease_epoch.0,
            error,
            retryable,
        };
        reported(
            client.fail_task(deadline(request, CALL_TIMEOUT)).await,
            "fail task",
        )
        .map(|_| ())
    }

    async fn release(&self, task: &LeasedTask) -> Result<(), SourceError> {
        let mut client = self.client.clone();
        let request = v1::ReleaseTaskRequest {
            worker_id: self.worker_id.to_string(),
            task_id: task.spec.task_id.to_string(),
            lease_epoch: task.lease_epoch.0,
            reason: "worker shutting down".to_owned(),
        };
        reported(
            client.release_task(deadline(request, CALL_TIMEOUT)).await,
            "release task",
        )
        .map(|_| ())
    }
}
