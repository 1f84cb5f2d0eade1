//! `shoal.v1.MigrationService`: what people and other services call.
//!
//! Submit runs the preflight synchronously (a refused migration is answered at once, with the
//! problem and the fix, and nothing is changed); the migration then runs in the background on
//! this coordinator, which owns it (see [`crate::owners`]). Any coordinator answers for any
//! migration: its own from memory, the others' from the status their owners publish. Pause,
//! resume, volume and cancel are recorded in the live store and applied by the owner, wherever
//! it runs; so is the release of a deferred cut-over. The dry-run plan and the chunk-time volume answer
//! `UNIMPLEMENTED` until their issues.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use shoal_common::ids::MigrationId;
use shoal_proto::v1;
use shoal_proto::v1::migration_service_server::MigrationService;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::info;

use super::{store_status, worker_info};
use crate::owners::Owners;
use crate::registry::{Outcome, status};
use crate::store::worker_registry::WorkerRegistry;

/// Serves operators and client services.
#[derive(Debug, Clone)]
pub struct MigrationApi {
    /// Where registrations live (Redis in the fleet).
    workers: Arc<dyn WorkerRegistry>,
    /// Ownership and statuses of migrations.
    owners: Owners,
    /// What the coordinator's own configuration warns of (listed with the migrations).
    warnings: Arc<[String]>,
}

impl MigrationApi {
    /// A service over the given stores.
    pub fn new(workers: Arc<dyn WorkerRegistry>, owners: Owners, warnings: Arc<[String]>) -> Self {
        Self {
            workers,
            owners,
            warnings,
        }
    }

    fn parse(raw_id: &str) -> Result<MigrationId, Status> {
        MigrationId::parse(raw_id).map_err(|error| super::id_status("migration_id", &error))
    }

    async fn status(&self, id: &MigrationId) -> Result<v1::MigrationStatus, Status> {
        self.owners
            .status_of(id)
            .await?
            .ok_or_else(|| Status::not_found(format!("migration {:?} not found", id.as_str())))
    }
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
        let id = self.owners.submit(&spec).await?;
        info!(migration_id = %id, "migration submitted");
        Ok(Response::new(v1::SubmitMigrationResponse {
            migration_id: id.to_string(),
            status: Some(self.status(&id).await?),
        }))
    }

    async fn plan_migration(
        &self,
        request: Request<v1::PlanMigrationRequest>,
    ) -> Result<Response<v1::PlanMigrationResponse>, Status> {
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("spec is required"))?;
        Ok(Response::new(self.owners.plan(&spec).await?))
    }

    async fn get_migration(
        &self,
        request: Request<v1::GetMigrationRequest>,
    ) -> Result<Response<v1::GetMigrationResponse>, Status> {
        let id = Self::parse(&request.into_inner().migration_id)?;
        Ok(Response::new(v1::GetMigrationResponse {
            status: Some(self.status(&id).await?),
        }))
    }

    async fn list_migrations(
        &self,
        _request: Request<v1::ListMigrationsRequest>,
    ) -> Result<Response<v1::ListMigrationsResponse>, Status> {
        let migrations = self.owners.statuses().await?;
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
            warnings: self.warnings.to_vec(),
        }))
    }

    type WatchMigrationStream = WatchStream;

    async fn watch_migration(
        &self,
        request: Request<v1::WatchMigrationRequest>,
    ) -> Result<Response<Self::WatchMigrationStream>, Status> {
        let id = Self::parse(&request.into_inner().migration_id)?;
        // Fails with NOT_FOUND before the stream opens.
        self.status(&id).await?;
        let (sender, receiver) = mpsc::channel(16);
        let owners = self.owners.clone();
        tokio::spawn(async move {
            loop {
                // The owner's channels when it runs here, else the published status.
                let local = owners.local(&id);
                let current = match &local {
                    Some(entry) => status(&id, entry),
                    None => match owners.status_of(&id).await {
                        Ok(Some(current)) => current,
                        // Between a loss of the live store and the rebuild from MySQL.
                        Ok(None) => {
                            tokio::select! {
                                () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                                () = sender.closed() => return,
                            }
                        }
                        Err(error) => {
                            let _ = sender.send(Err(error)).await;
                            return;
                        }
                    },
                };
                let ended = current.outcome != v1::Outcome::Running as i32;
                let response = v1::WatchMigrationResponse {
                    status: Some(current),
                };
                if sender.send(Ok(response)).await.is_err() || ended {
                    return;
                }
                match local {
                    Some(entry) => {
                        let mut progress = entry.progress.clone();
                        let mut outcome = entry.outcome.clone();
                        if *outcome.borrow() != Outcome::Running {
                            continue;
                        }
                        tokio::select! {
                            _ = progress.changed() => {}
                            _ = outcome.changed() => {}
                            () = sender.closed() => return,
                        }
                    }
                    None => {
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_millis(500)) => {}
                            () = sender.closed() => return,
                        }
                    }
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
        let id = Self::parse(&request.into_inner().migration_id)?;
        self.status(&id).await?;
        self.owners
            .change_intents(&id, |intents| intents.paused = true)
            .await?;
        Ok(Response::new(v1::PauseMigrationResponse {
            status: Some(self.status(&id).await?),
        }))
    }

    async fn resume_migration(
        &self,
        request: Request<v1::ResumeMigrationRequest>,
    ) -> Result<Response<v1::ResumeMigrationResponse>, Status> {
        let id = Self::parse(&request.into_inner().migration_id)?;
        self.status(&id).await?;
        self.owners
            .change_intents(&id, |intents| intents.paused = false)
            .await?;
        Ok(Response::new(v1::ResumeMigrationResponse {
            status: Some(self.status(&id).await?),
        }))
    }

    async fn cancel_migration(
        &self,
        request: Request<v1::CancelMigrationRequest>,
    ) -> Result<Response<v1::CancelMigrationResponse>, Status> {
        let id = Self::parse(&request.into_inner().migration_id)?;
        self.status(&id).await?;
        self.owners
            .change_intents(&id, |intents| intents.cancelled = true)
            .await?;
        Ok(Response::new(v1::CancelMigrationResponse {
            status: Some(self.status(&id).await?),
        }))
    }

    async fn set_volume(
        &self,
        request: Request<v1::SetVolumeRequest>,
    ) -> Result<Response<v1::SetVolumeResponse>, Status> {
        let request = request.into_inner();
        let id = Self::parse(&request.migration_id)?;
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
        self.status(&id).await?;
        let threads = request.threads;
        self.owners
            .change_intents(&id, |intents| intents.threads = threads)
            .await?;
        info!(migration_id = %id, threads, "volume changed");
        Ok(Response::new(v1::SetVolumeResponse {
            status: Some(self.status(&id).await?),
        }))
    }

    async fn release_cutover(
        &self,
        request: Request<v1::ReleaseCutoverRequest>,
    ) -> Result<Response<v1::ReleaseCutoverResponse>, Status> {
        let id = Self::parse(&request.into_inner().migration_id)?;
        self.status(&id).await?;
        self.owners
            .change_intents(&id, |intents| intents.released = true)
            .await?;
        info!(migration_id = %id, "deferred cut-over released");
        Ok(Response::new(v1::ReleaseCutoverResponse {
            status: Some(self.status(&id).await?),
        }))
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
