//! `shoal.v1.MigrationService`: what people and other services call.
//!
//! The worker view (`ListWorkers`) is live. Migrations themselves arrive with the online-ALTER
//! issue: until then this coordinator knows no migration, says so for every id, and refuses
//! submissions with `UNIMPLEMENTED` rather than accepting work it cannot do.

use std::pin::Pin;
use std::sync::Arc;

use shoal_proto::v1;
use shoal_proto::v1::migration_service_server::MigrationService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{store_status, worker_info};
use crate::store::worker_registry::WorkerRegistry;

/// Serves operators and client services.
#[derive(Debug, Clone)]
pub struct MigrationApi {
    /// Where registrations live (Redis in the fleet).
    registry: Arc<dyn WorkerRegistry>,
}

impl MigrationApi {
    /// A service reading workers from `registry`.
    pub fn new(registry: Arc<dyn WorkerRegistry>) -> Self {
        Self { registry }
    }
}

fn unknown_migration(migration_id: &str) -> Status {
    Status::not_found(format!("migration {migration_id:?} not found"))
}

fn cannot_run_migrations() -> Status {
    Status::unimplemented("this coordinator version cannot run migrations yet")
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::WatchMigrationResponse, Status>> + Send>>;

#[tonic::async_trait]
impl MigrationService for MigrationApi {
    async fn submit_migration(
        &self,
        _request: Request<v1::SubmitMigrationRequest>,
    ) -> Result<Response<v1::SubmitMigrationResponse>, Status> {
        Err(cannot_run_migrations())
    }

    async fn plan_migration(
        &self,
        _request: Request<v1::PlanMigrationRequest>,
    ) -> Result<Response<v1::PlanMigrationResponse>, Status> {
        Err(cannot_run_migrations())
    }

    async fn get_migration(
        &self,
        request: Request<v1::GetMigrationRequest>,
    ) -> Result<Response<v1::GetMigrationResponse>, Status> {
        Err(unknown_migration(&request.into_inner().migration_id))
    }

    async fn list_migrations(
        &self,
        _request: Request<v1::ListMigrationsRequest>,
    ) -> Result<Response<v1::ListMigrationsResponse>, Status> {
        Ok(Response::new(v1::ListMigrationsResponse::default()))
    }

    type WatchMigrationStream = WatchStream;

    async fn watch_migration(
        &self,
        request: Request<v1::WatchMigrationRequest>,
    ) -> Result<Response<Self::WatchMigrationStream>, Status> {
        Err(unknown_migration(&request.into_inner().migration_id))
    }

    async fn pause_migration(
        &self,
        request: Request<v1::PauseMigrationRequest>,
    ) -> Result<Response<v1::PauseMigrationResponse>, Status> {
        Err(unknown_migration(&request.into_inner().migration_id))
    }

    async fn resume_migration(
        &self,
        request: Request<v1::ResumeMigrationRequest>,
    ) -> Result<Response<v1::ResumeMigrationResponse>, Status> {
        Err(unknown_migration(&request.into_inner().migration_id))
    }

    async fn cancel_migration(
        &self,
        request: Request<v1::CancelMigrationRequest>,
    ) -> Result<Response<v1::CancelMigrationResponse>, Status> {
        Err(unknown_migration(&request.into_inner().migration_id))
    }

    async fn set_volume(
        &self,
        request: Request<v1::SetVolumeRequest>,
    ) -> Result<Response<v1::SetVolumeResponse>, Status> {
        Err(unknown_migration(&request.into_inner().migration_id))
    }

    async fn release_cutover(
        &self,
        request: Request<v1::ReleaseCutoverRequest>,
    ) -> Result<Response<v1::ReleaseCutoverResponse>, Status> {
        Err(unknown_migration(&request.into_inner().migration_id))
    }

    async fn list_workers(
        &self,
        _request: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        let records = self
            .registry
            .list()
            .await
            .map_err(|error| store_status(&error))?;
        Ok(Response::new(v1::ListWorkersResponse {
            workers: records.iter().map(worker_info).collect(),
        }))
    }
}
