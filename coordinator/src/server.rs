//! The coordinator process: builds its stores and serves gRPC until cancelled.
//!
//! `Coordinator::bind(config)` opens the socket and the stores (fails fast on a bad address or an
//! unreachable Redis); `run(cancel)` serves until the token is cancelled, then drains: open long
//! polls end, in-flight calls finish, the socket closes.

use shoal_proto::auth::{RequireToken, Token};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;

use anyhow::Context;
use shoal_common::ids::CoordinatorId;
use shoal_common::registry::RegistrationTiming;
use shoal_proto::v1::migration_service_server::MigrationServiceServer;
use shoal_proto::v1::work_service_server::WorkServiceServer;
use shoal_worker::session::Targets;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::migration_service::MigrationApi;
use crate::api::work_service::WorkApi;
use crate::config::Config;
use crate::owners::{OwnerSettings, Owners};
use crate::registry::Registry;
use crate::store::memory::MemoryWorkerRegistry;
use crate::store::memory_migrations::MemoryMigrationStore;
use crate::store::memory_tasks::MemoryTaskStore;
use crate::store::migrations::MigrationStore;
use crate::store::redis::{RedisWorkerRegistry, connect};
use crate::store::redis_migrations::RedisMigrationStore;
use crate::store::redis_tasks::RedisTaskStore;
use crate::store::tasks::TaskStore;
use crate::store::worker_registry::WorkerRegistry;

/// A bound, not yet serving, coordinator.
#[derive(Debug)]
pub struct Coordinator {
    config: Config,
    /// Identity of this replica.
    id: CoordinatorId,
    /// The listening socket, bound in `bind` so that address errors surface before serving.
    listener: TcpListener,
    /// Live worker registrations.
    registry: Arc<dyn WorkerRegistry>,
    /// Tasks and leases.
    tasks: Arc<dyn TaskStore>,
    /// Active migrations, owner leases, intents, statuses.
    migrations: Arc<dyn MigrationStore>,
    /// Registration TTL and heartbeat cadence.
    timing: RegistrationTiming,
}

impl Coordinator {
    /// Validates the configuration, connects to Redis and binds the gRPC address.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        config.check_exposure().map_err(anyhow::Error::msg)?;
        for warning in config.warnings() {
            tracing::warn!(%warning, "listening without authentication (--allow-unauthenticated)");
        }
        let timing = RegistrationTiming::from_ttl(config.worker_ttl)?;
        let id = match &config.id {
            Some(id) => CoordinatorId::parse(id.clone()).context("--id")?,
            None => CoordinatorId::generate(
                &gethostname::gethostname().to_string_lossy(),
                std::process::id(),
            ),
        };
        type Stores = (
            Arc<dyn WorkerRegistry>,
            Arc<dyn TaskStore>,
            Arc<dyn MigrationStore>,
        );
        let (registry, tasks, migrations): Stores = match &config.redis {
            Some(url) => {
                let connection = connect(url)
                    .await
                    .with_context(|| format!("connect to redis at {}", redact(url)))?;
                (
                    Arc::new(RedisWorkerRegistry::new(
                        connection.clone(),
                        config.namespace.clone(),
                    )),
                    Arc::new(RedisTaskStore::new(
                        connection.clone(),
                        config.namespace.clone(),
                    )),
                    Arc::new(RedisMigrationStore::new(
                        connection,
                        config.namespace.clone(),
                    )),
                )
            }
            None => {
                warn!("no --redis given: live state is in memory, run only one coordinator");
                (
                    Arc::new(MemoryWorkerRegistry::default()),
                    Arc::new(MemoryTaskStore::default()),
                    Arc::new(MemoryMigrationStore::default()),
                )
            }
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen on {}", config.listen))?;
        Ok(Self {
            config,
            id,
            listener,
            registry,
            tasks,
            migrations,
            timing,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then drains.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let address = self.local_addr()?;
        let token = self
            .config
            .auth_token_file
            .as_deref()
            .map(Token::from_file)
            .transpose()
            .context("--auth-token-file")?;
        let grpc_tls = self.config.tls.grpc().context("TLS")?;
        let http_tls = self.config.tls.http().context("TLS")?;
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<MigrationServiceServer<MigrationApi>>()
            .await;
        health_reporter
            .set_serving::<WorkServiceServer<WorkApi>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(shoal_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("build the reflection service")?;
        let targets = Targets::new(std::collections::HashMap::new(), Duration::from_secs(5), 16);
        let owners = Owners::new(
            OwnerSettings {
                owner: self.id.to_string(),
                fleet: self.config.namespace.clone(),
                lease_ttl: self.config.lease_ttl,
                owner_ttl: self.config.owner_ttl,
                checkpoint_interval: self.config.checkpoint_interval,
                status_interval: self.config.status_interval,
                max_concurrent_migrations: self.config.max_concurrent_migrations,
            },
            Arc::clone(&self.migrations),
            Arc::clone(&self.tasks),
            Registry::default(),
            targets,
            shutdown.clone(),
        );
        tokio::spawn(owners.clone().run());
        shoal_common::telemetry::install_metrics();
        crate::metrics::describe();
        let warnings: Arc<[String]> = self.config.warnings().into();
        if let Some(http) = self.config.http {
            let listener = TcpListener::bind(http)
                .await
                .with_context(|| format!("listen on {http} (--http)"))?;
            info!(address = %http, tls = http_tls.is_some(), "status API listening");
            let router = crate::http::router(owners.clone(), token.clone(), warnings.clone());
            match http_tls {
                Some(config) => {
                    let listener = crate::tls_listener::TlsListener::new(listener, config)?;
                    tokio::spawn(serve_http(listener, router, shutdown.clone()));
                }
                None => {
                    tokio::spawn(serve_http(listener, router, shutdown.clone()));
                }
            }
        }
        let migration_api = MigrationApi::new(Arc::clone(&self.registry), owners.clone(), warnings);
        let work_api = WorkApi::new(
            self.id.clone(),
            Arc::clone(&self.registry),
            Arc::clone(&self.tasks),
            self.config.lease_ttl,
            self.timing,
            self.config.max_poll_wait,
            shutdown.clone(),
        );
        info!(
            coordinator_id = %self.id,
            %address,
            worker_ttl = ?self.timing.ttl,
            tls = grpc_tls.is_some(),
            mutual_tls = self.config.tls.tls_client_ca.is_some(),
            "coordinator listening"
        );
        let mut server = shoal_proto::connection::server(tonic::transport::Server::builder());
        if let Some(config) = grpc_tls {
            server = server.tls_config(config).context("gRPC TLS")?;
        }
        server
            // Health stays open: probes carry no token.
            .add_service(health_service)
            .add_service(InterceptedService::new(
                reflection,
                RequireToken::new(token.clone()),
            ))
            .add_service(MigrationServiceServer::with_interceptor(
                migration_api,
                RequireToken::new(token.clone()),
            ))
            .add_service(WorkServiceServer::with_interceptor(
                work_api,
                RequireToken::new(token),
            ))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(self.listener),
                shutdown.cancelled_owned(),
            )
            .await
            .context("serve gRPC")?;
        // Hand the migrations over: each stops, checkpoints and gives its lease back, so that a
        // standby resumes at once rather than after the owner TTL.
        owners.wait_stopped(Duration::from_secs(10)).await;
        info!(coordinator_id = %self.id, "coordinator stopped");
        Ok(())
    }
}

/// Serves the status API on `listener` until `stop`.
async fn serve_http<L>(listener: L, router: axum::Router, stop: CancellationToken)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    if let Err(error) = served {
        warn!(%error, "status API stopped");
    }
}

/// A URL with any password replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact("redis://user:s3cret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact("redis://:s3cret@host"), "redis://:***@host");
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
        assert_eq!(redact("not a url"), "not a url");
    }
}
