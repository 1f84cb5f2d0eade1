//! `shoal.v1.MigrationService`: what people and other services call.
//!
//! Submit runs the preflight synchronously (a refused migration is answered at once, with the
//! problem and the fix, and nothing is changed), then the migration runs in the background on
//! this coordinator, which owns it. Pause, resume and the volume (threads) take effect at run
//! time; the dry-run plan, the chunk-time volume and the sentinel release answer
//! `UNIMPLEMENTED` until their issues.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use shoal_common::ids::MigrationId;
use shoal_common::task::CopyMode;
use shoal_proto::v1;
use shoal_proto::v1::migration_service_server::MigrationService;
use shoal_worker::session::{Targets, with_database};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::{std_duration, store_status, worker_info};
use crate::embedded::new_migration_id;
use crate::migration::owner::Migration;
use crate::migration::{Error, Intents, MigrationOptions, Progress};
use crate::registry::{Entry, Outcome, Registry, status};
use crate::store::tasks::TaskStore;
use crate::store::worker_registry::WorkerRegistry;

/// Serves operators and client services.
#[derive(Debug, Clone)]
pub struct MigrationApi {
    /// Where registrations live (Redis in the fleet).
    workers: Arc<dyn WorkerRegistry>,
    /// Where tasks are published.
    tasks: Arc<dyn TaskStore>,
    /// Migrations this coordinator runs.
    registry: Registry,
    /// Target names resolved from this process's environment.
    targets: Targets,
    /// What this coordinator's owners use.
    settings: OwnerSettings,
    /// Cancels every migration when the coordinator stops.
    shutdown: CancellationToken,
}

impl MigrationApi {
    /// A service over the given stores.
    pub fn new(
        workers: Arc<dyn WorkerRegistry>,
        tasks: Arc<dyn TaskStore>,
        registry: Registry,
        targets: Targets,
        settings: OwnerSettings,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            workers,
            tasks,
            registry,
            targets,
            settings,
            shutdown,
        }
    }

    fn entry(&self, raw_id: &str) -> Result<(MigrationId, Entry), Status> {
        let id =
            MigrationId::parse(raw_id).map_err(|error| super::id_status("migration_id", &error))?;
        let entry = self
            .registry
            .get(&id)
            .ok_or_else(|| Status::not_found(format!("migration {raw_id:?} not found")))?;
        Ok((id, entry))
    }

    fn options(&self, spec: &v1::MigrationSpec) -> Result<MigrationOptions, Status> {
        let table = spec
            .table
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("spec.table is required"))?;
        if table.target.is_empty() {
            return Err(Status::invalid_argument(
                "spec.table.target names the server; it is required",
            ));
        }
        let statement = crate::migration::alter::parse(&spec.alter_statement)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        let mut dsn = self
            .targets
            .dsn(&table.target)
            .map_err(|error| Status::failed_precondition(error.to_string()))?;
        let schema = if table.schema.is_empty() {
            statement.schema.clone()
        } else {
            Some(table.schema.clone())
        };
        if let Some(schema) = schema {
            dsn = with_database(&dsn, &schema);
        }
        let options = spec.options.unwrap_or_default();
        Ok(MigrationOptions {
            id: new_migration_id(&statement.table),
            target: table.target.clone(),
            dsn,
            alter: spec.alter_statement.clone(),
            threads: if options.threads == 0 {
                4
            } else {
                options.threads.min(256)
            },
            chunk_rows: 1_000,
            copy_mode: match v1::CopyMode::try_from(options.copy_mode) {
                Ok(v1::CopyMode::Buffered) => CopyMode::Buffered,
                _ => CopyMode::default(),
            },
            keep_old_table: options.keep_old_table,
            no_instant: options.no_instant,
            lock_wait_timeout: std_duration(options.lock_wait_timeout.as_ref())
                .filter(|timeout| !timeout.is_zero())
                .unwrap_or(Duration::from_secs(5)),
            lease_ttl: self.settings.lease_ttl,
            checkpoint_interval: self.settings.checkpoint_interval,
            status_interval: self.settings.status_interval,
            strict: options.strict,
            defer_cutover: options.defer_cutover,
            owner: self.settings.owner.clone(),
        })
    }
}

/// What the owners on this coordinator use.
#[derive(Debug, Clone)]
pub struct OwnerSettings {
    /// Lease of one task.
    pub lease_ttl: Duration,
    /// Checkpoint cadence while copying.
    pub checkpoint_interval: Duration,
    /// Status line cadence.
    pub status_interval: Duration,
    /// This coordinator's id, recorded in checkpoints.
    pub owner: String,
}

fn preflight_status(error: &Error) -> Status {
    match error {
        Error::Preflight(_) | Error::Target(_) => Status::failed_precondition(error.to_string()),
        Error::Alter(_) => Status::invalid_argument(error.to_string()),
        Error::Mysql(_) => Status::unavailable(error.to_string()),
        _ => Status::internal(error.to_string()),
    }
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("{what} arrives with the lifecycle issue"))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::WatchMigrationResponse, Status>> + Send>>;

#[tonic::async_trait]
impl MigrationService for MigrationApi {
    async fn submit_migration(
        &self,
        request: Request<v1::SubmitMigrationRequest>,
    ) -> Result<Response<v1::SubmitMigrationResponse>, Status> {
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("spec is required"))?;
        let options = self.options(&spec)?;
        let threads = options.threads;
        let (progress_sender, progress) = watch::channel(Progress::default());
        let (outcome_sender, outcome) = watch::channel(Outcome::Running);
        let cancel = self.shutdown.child_token();
        let migration = Migration::prepare(
            options,
            Arc::clone(&self.tasks),
            progress_sender,
            cancel.clone(),
        )
        .await
        .map_err(|error| preflight_status(&error))?;
        // Submitting the ALTER of a checkpointed migration resumes it, under its own id.
        let id = migration.id().clone();
        let (intents, intents_receiver) =
            watch::channel(migration.resumed_intents().unwrap_or(Intents {
                paused: false,
                threads,
            }));
        let migration = migration.with_intents(intents_receiver);
        let entry = Entry {
            spec,
            progress,
            outcome,
            cancel,
            intents: Arc::new(intents),
        };
        self.registry.insert(id.clone(), entry.clone());
        info!(migration_id = %id, "migration submitted");
        let task_id = id.clone();
        tokio::spawn(async move {
            let result = migration.run().await;
            let outcome = match result {
                Ok(path) => Outcome::Completed(path),
                Err(Error::Cancelled) => Outcome::Cancelled,
                Err(error) => {
                    warn!(migration_id = %task_id, %error, "migration failed");
                    Outcome::Failed(error.to_string())
                }
            };
            let _ = outcome_sender.send(outcome);
        });
        Ok(Response::new(v1::SubmitMigrationResponse {
            migration_id: id.to_string(),
            status: Some(status(&id, &entry)),
        }))
    }

    async fn plan_migration(
        &self,
        _request: Request<v1::PlanMigrationRequest>,
    ) -> Result<Response<v1::PlanMigrationResponse>, Status> {
        Err(not_yet("the dry-run plan"))
    }

    async fn get_migration(
        &self,
        request: Request<v1::GetMigrationRequest>,
    ) -> Result<Response<v1::GetMigrationResponse>, Status> {
        let (id, entry) = self.entry(&request.into_inner().migration_id)?;
        Ok(Response::new(v1::GetMigrationResponse {
            status: Some(status(&id, &entry)),
        }))
    }

    async fn list_migrations(
        &self,
        _request: Request<v1::ListMigrationsRequest>,
    ) -> Result<Response<v1::ListMigrationsResponse>, Status> {
        let migrations: Vec<v1::MigrationStatus> = self
            .registry
            .all()
            .iter()
            .map(|(id, entry)| status(id, entry))
            .collect();
        let mut counts_by_state = std::collections::HashMap::new();
        for migration in &migrations {
            let name = v1::State::try_from(migration.state)
                .map(|state| state.as_str_name().trim_start_matches("STATE_").to_owned())
                .unwrap_or_default();
            *counts_by_state.entry(name).or_insert(0) += 1;
        }
        Ok(Response::new(v1::ListMigrationsResponse {
            total: u32::try_from(migrations.len()).unwrap_or(u32::MAX),
            migrations,
            counts_by_state,
            next_page_token: String::new(),
        }))
    }

    type WatchMigrationStream = WatchStream;

    async fn watch_migration(
        &self,
        request: Request<v1::WatchMigrationRequest>,
    ) -> Result<Response<Self::WatchMigrationStream>, Status> {
        let (id, entry) = self.entry(&request.into_inner().migration_id)?;
        let (sender, receiver) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut progress = entry.progress.clone();
            let mut outcome = entry.outcome.clone();
            loop {
                let response = v1::WatchMigrationResponse {
                    status: Some(status(&id, &entry)),
                };
                if sender.send(Ok(response)).await.is_err() {
                    return;
                }
                if *outcome.borrow() != Outcome::Running {
                    return;
                }
                tokio::select! {
                    _ = progress.changed() => {}
                    _ = outcome.changed() => {}
                    () = sender.closed() => return,
                }
                // Coalesce bursts of progress into at most a few updates a second.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn pause_migration(
        &self,
        request: Request<v1::PauseMigrationRequest>,
    ) -> Result<Response<v1::PauseMigrationResponse>, Status> {
        let (id, entry) = self.entry(&request.into_inner().migration_id)?;
        entry.intents.send_modify(|intents| intents.paused = true);
        Ok(Response::new(v1::PauseMigrationResponse {
            status: Some(status(&id, &entry)),
        }))
    }

    async fn resume_migration(
        &self,
        request: Request<v1::ResumeMigrationRequest>,
    ) -> Result<Response<v1::ResumeMigrationResponse>, Status> {
        let (id, entry) = self.entry(&request.into_inner().migration_id)?;
        entry.intents.send_modify(|intents| intents.paused = false);
        Ok(Response::new(v1::ResumeMigrationResponse {
            status: Some(status(&id, &entry)),
        }))
    }

    async fn cancel_migration(
        &self,
        request: Request<v1::CancelMigrationRequest>,
    ) -> Result<Response<v1::CancelMigrationResponse>, Status> {
        let (id, entry) = self.entry(&request.into_inner().migration_id)?;
        entry.cancel.cancel();
        Ok(Response::new(v1::CancelMigrationResponse {
            status: Some(status(&id, &entry)),
        }))
    }

    async fn set_volume(
        &self,
        request: Request<v1::SetVolumeRequest>,
    ) -> Result<Response<v1::SetVolumeResponse>, Status> {
        let request = request.into_inner();
        let (id, entry) = self.entry(&request.migration_id)?;
        if request.target_chunk_time.is_some() {
            return Err(Status::unimplemented(
                "target_chunk_time arrives with adaptive chunk sizing; set threads only",
            ));
        }
        if request.threads == 0 || request.threads > 256 {
            return Err(Status::invalid_argument(
                "threads must be between 1 and 256",
            ));
        }
        entry
            .intents
            .send_modify(|intents| intents.threads = request.threads);
        info!(migration_id = %id, threads = request.threads, "volume changed");
        Ok(Response::new(v1::SetVolumeResponse {
            status: Some(status(&id, &entry)),
        }))
    }

    async fn release_cutover(
        &self,
        _request: Request<v1::ReleaseCutoverRequest>,
    ) -> Result<Response<v1::ReleaseCutoverResponse>, Status> {
        Err(not_yet("the sentinel release"))
    }

    async fn list_workers(
        &self,
        _request: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        let records = self
            .workers
            .list()
            .await
            .map_err(|error| store_status(&error))?;
        Ok(Response::new(v1::ListWorkersResponse {
            workers: records.iter().map(worker_info).collect(),
        }))
    }
}
