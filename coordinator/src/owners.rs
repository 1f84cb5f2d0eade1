//! Ownership of migrations across coordinator replicas: submitting, owning, handing over and
//! taking over.
//!
//! Every coordinator runs [`Owners::run`]. Each round (a third of the owner TTL) it:
//! 1. reads the live store's incarnation: if it changed, the store lost everything; this
//!    coordinator stops owning (without cleanup) and re-registers every migration it finds a
//!    checkpoint for in its targets, so that a full resume follows;
//! 2. renews the owner lease of each migration it runs (a lost lease deposes it), applies the
//!    intents operators recorded through any coordinator, and publishes the status;
//! 3. tries to take over every active migration nobody holds: the new owner resumes from the
//!    MySQL checkpoint, which fences the old owner (INV-O1). The takeover's preparation (its
//!    preflight on the target) runs beside the rounds, whose renewals keep its lease meanwhile.
//!
//! # Invariants
//! - A migration runs here only while this coordinator holds its owner lease; a deposed or
//!   shutting-down owner stops without cleanup (shoal's tables stay for the next owner).
//! - A takeover needs a checkpoint; without one the migration is ended as failed rather than
//!   started afresh on a table whose state is unknown.
//! - No round waits on a target server: a slow takeover preflight (a loaded or refusing server)
//!   must neither let its own lease lapse (another coordinator would take the migration over
//!   beside it, and the two would kill each other's connections) nor hold up the renewal of
//!   the other migrations this coordinator owns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use prost::Message;
use shoal_common::ids::MigrationId;
use shoal_common::names;
use shoal_common::task::CopyMode;
use shoal_proto::v1;
use shoal_worker::session::Targets;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{info, warn};

use crate::embedded::new_migration_id;
use crate::migration::owner::Migration;
use crate::migration::{Error, Intents, MigrationOptions, Progress};
use crate::registry::{Entry, Outcome, Registry, status};
use crate::store::migrations::{MigrationRecord, MigrationStore, OperatorIntents};
use crate::store::tasks::TaskStore;

/// What the owners on this coordinator use.
#[derive(Debug, Clone)]
pub struct OwnerSettings {
    /// This coordinator's id: the owner lease's value, recorded in checkpoints.
    pub owner: String,
    /// The fleet's name (its live-store namespace), recorded in checkpoints: a rebuild from
    /// MySQL adopts only checkpoints of its own fleet.
    pub fleet: String,
    /// Lease of one task.
    pub lease_ttl: Duration,
    /// Owner lease; a standby takes an orphaned migration over after it expires.
    pub owner_ttl: Duration,
    /// Checkpoint cadence while copying.
    pub checkpoint_interval: Duration,
    /// Status line cadence.
    pub status_interval: Duration,
    /// Per-server cap on shoal migrations copying at once (0: none).
    pub max_concurrent_migrations: u32,
}

/// A migration running on this coordinator, or being taken over by it.
#[derive(Debug, Clone)]
struct Owned {
    /// Stops it without cleanup.
    deposed: CancellationToken,
}

#[derive(Debug)]
struct Inner {
    settings: OwnerSettings,
    store: Arc<dyn MigrationStore>,
    tasks: Arc<dyn TaskStore>,
    registry: Registry,
    targets: Targets,
    shutdown: CancellationToken,
    owned: Mutex<HashMap<MigrationId, Owned>>,
    incarnation: Mutex<Option<String>>,
}

/// The ownership runtime of one coordinator (cheap to clone).
#[derive(Debug, Clone)]
pub struct Owners {
    inner: Arc<Inner>,
}

/// The record of a submitted spec (a fresh id; preflight may adopt a checkpoint's).
fn record_of(spec: &v1::MigrationSpec) -> Result<MigrationRecord, Status> {
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
    if !table.table.is_empty() && table.table != statement.table {
        return Err(Status::invalid_argument(format!(
            "the ALTER alters table `{}` but the request names table `{}`; send the ALTER of \
             the table you named (or leave spec.table.table empty)",
            statement.table.replace('`', "``"),
            table.table.replace('`', "``")
        )));
    }
    let schema = if table.schema.is_empty() {
        statement.schema.clone().unwrap_or_default()
    } else {
        table.schema.clone()
    };
    let options = spec.options.clone().unwrap_or_default();
    Ok(MigrationRecord {
        id: new_migration_id(&statement.table).to_string(),
        target: table.target.clone(),
        schema,
        alter: spec.alter_statement.clone(),
        threads: if options.threads == 0 {
            4
        } else {
            options.threads.min(256)
        },
        chunk_rows: 1_000,
        target_chunk_ms: crate::api::std_duration(options.target_chunk_time.as_ref()).map_or_else(
            shoal_common::checkpoint::default_target_chunk_ms,
            |target| u64::try_from(target.as_millis()).unwrap_or(u64::MAX),
        ),
        copy_mode: match v1::CopyMode::try_from(options.copy_mode) {
            Ok(v1::CopyMode::Buffered) => CopyMode::Buffered,
            _ => CopyMode::default(),
        },
        keep_old_table: options.keep_old_table,
        no_instant: options.no_instant,
        keep_secondary_indexes: options.keep_secondary_indexes,
        strict: options.strict,
        defer_cutover: options.defer_cutover,
        lock_wait_timeout_ms: crate::api::std_duration(options.lock_wait_timeout.as_ref())
            .filter(|timeout| !timeout.is_zero())
            .map_or(5_000, |timeout| {
                u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)
            }),
        replica_targets: options.replica_targets.clone(),
        limits: limits_of(&options)?,
    })
}

/// The throttle limits a request asks for (unset durations take the defaults).
fn limits_of(options: &v1::MigrationOptions) -> Result<shoal_common::throttle::Limits, Status> {
    let defaults = shoal_common::throttle::Limits::default();
    Ok(shoal_common::throttle::Limits {
        max_replica_lag: crate::api::std_duration(options.max_replica_lag.as_ref())
            .unwrap_or(defaults.max_replica_lag),
        unknown_lag_abort_after: crate::api::std_duration(options.unknown_lag_abort_after.as_ref())
            .unwrap_or(defaults.unknown_lag_abort_after),
        max_threads_running: options.max_threads_running,
        max_history_list_length: options.max_history_list_length,
        max_latency_percent: shoal_common::throttle::percent_of_factor(options.max_latency_factor)
            .map_err(|error| {
                Status::invalid_argument(format!("spec.options.max_latency_factor: {error}"))
            })?,
        nice_percent: shoal_common::throttle::percent_of_nice_ratio(options.nice_ratio).map_err(
            |error| Status::invalid_argument(format!("spec.options.nice_ratio: {error}")),
        )?,
    })
}

/// The spec a record stands for (what status answers show).
fn spec_of(record: &MigrationRecord) -> v1::MigrationSpec {
    v1::MigrationSpec {
        table: Some(v1::TableRef {
            target: record.target.clone(),
            schema: record.schema.clone(),
            table: String::new(),
        }),
        alter_statement: record.alter.clone(),
        options: Some(v1::MigrationOptions {
            threads: record.threads,
            defer_cutover: record.defer_cutover,
            strict: record.strict,
            keep_old_table: record.keep_old_table,
            no_instant: record.no_instant,
            keep_secondary_indexes: record.keep_secondary_indexes,
            lock_wait_timeout: Some(crate::api::proto_duration(Duration::from_millis(
                record.lock_wait_timeout_ms,
            ))),
            copy_mode: match record.copy_mode {
                CopyMode::Buffered => v1::CopyMode::Buffered as i32,
                CopyMode::Server => v1::CopyMode::Server as i32,
            },
            replica_targets: record.replica_targets.clone(),
            max_replica_lag: Some(crate::api::proto_duration(record.limits.max_replica_lag)),
            unknown_lag_abort_after: Some(crate::api::proto_duration(
                record.limits.unknown_lag_abort_after,
            )),
            max_threads_running: record.limits.max_threads_running,
            max_history_list_length: record.limits.max_history_list_length,
            max_latency_factor: f64::from(record.limits.max_latency_percent) / 100.0,
            nice_ratio: f64::from(record.limits.nice_percent) / 100.0,
            ..v1::MigrationOptions::default()
        }),
    }
}

fn preflight_status(error: &Error) -> Status {
    match error {
        Error::Preflight(_) | Error::Target(_) => Status::failed_precondition(error.to_string()),
        Error::Alter(_) => Status::invalid_argument(error.to_string()),
        Error::Mysql(_) => Status::unavailable(error.to_string()),
        _ => Status::internal(error.to_string()),
    }
}

impl Owners {
    /// The runtime over the given stores.
    pub fn new(
        settings: OwnerSettings,
        store: Arc<dyn MigrationStore>,
        tasks: Arc<dyn TaskStore>,
        registry: Registry,
        targets: Targets,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                store,
                tasks,
                registry,
                targets,
                shutdown,
                owned: Mutex::default(),
                incarnation: Mutex::default(),
            }),
        }
    }

    fn owned(&self) -> std::sync::MutexGuard<'_, HashMap<MigrationId, Owned>> {
        self.inner
            .owned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn options(
        &self,
        record: &MigrationRecord,
        take_over: bool,
    ) -> Result<MigrationOptions, Error> {
        let dsn = self.inner.targets.dsn(&record.target)?;
        let schema = (!record.schema.is_empty()).then(|| record.schema.clone());
        let settings = &self.inner.settings;
        let lock_wait_timeout = Duration::from_millis(record.lock_wait_timeout_ms);
        let replicas = record
            .replica_targets
            .iter()
            .map(|name| {
                let dsn = self.inner.targets.dsn(name)?;
                crate::migration::throttle::Replica::from_dsn(
                    &dsn,
                    Some(name.clone()),
                    lock_wait_timeout,
                )
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(MigrationOptions {
            id: MigrationId::parse(record.id.clone())
                .map_err(|error| Error::Preflight(format!("migration id: {error}")))?,
            target: record.target.clone(),
            dsn,
            schema,
            alter: record.alter.clone(),
            threads: record.threads,
            chunk_rows: record.chunk_rows,
            target_chunk_time: Duration::from_millis(record.target_chunk_ms),
            copy_mode: record.copy_mode,
            keep_old_table: record.keep_old_table,
            no_instant: record.no_instant,
            keep_secondary_indexes: record.keep_secondary_indexes,
            lock_wait_timeout: Duration::from_millis(record.lock_wait_timeout_ms),
            lease_ttl: settings.lease_ttl,
            checkpoint_interval: settings.checkpoint_interval,
            status_interval: settings.status_interval,
            strict: record.strict,
            defer_cutover: record.defer_cutover,
            owner: settings.owner.clone(),
            fleet: Some(settings.fleet.clone()),
            take_over,
            replicas,
            limits: record.limits,
            max_concurrent_migrations: settings.max_concurrent_migrations,
        })
    }

    /// Submits a migration: preflight (answered at once), then this coordinator owns and runs
    /// it. Submitting the ALTER of a checkpointed migration resumes it under its own id.
    pub async fn submit(&self, spec: &v1::MigrationSpec) -> Result<MigrationId, Status> {
        let mut record = record_of(spec)?;
        let options = self
            .options(&record, false)
            .map_err(|error| preflight_status(&error))?;
        let (progress, progress_receiver) = watch::channel(Progress::default());
        let cancel = CancellationToken::new();
        let migration = Migration::prepare(
            options,
            Arc::clone(&self.inner.tasks),
            progress,
            cancel.clone(),
        )
        .await
        .map_err(|error| preflight_status(&error))?;
        record.id = migration.id().to_string();
        let id = migration.id().clone();
        let store = &self.inner.store;
        let owner = &self.inner.settings.owner;
        if !store
            .try_own(&id, owner, self.inner.settings.owner_ttl)
            .await
            .map_err(|error| crate::api::store_status(&error))?
        {
            return Err(Status::already_exists(format!(
                "migration {id} is owned by another coordinator"
            )));
        }
        store
            .register(&record)
            .await
            .map_err(|error| crate::api::store_status(&error))?;
        let deposed = self.inner.shutdown.child_token();
        self.start(migration, &record, progress_receiver, cancel, deposed)
            .await;
        Ok(id)
    }

    /// The dry run of `spec`: its checks and plan, changing nothing.
    pub async fn plan(
        &self,
        spec: &v1::MigrationSpec,
    ) -> Result<v1::PlanMigrationResponse, Status> {
        let record = record_of(spec)?;
        let prepared = match self.options(&record, false) {
            Ok(options) => {
                Migration::prepare(
                    options,
                    Arc::clone(&self.inner.tasks),
                    watch::channel(Progress::default()).0,
                    CancellationToken::new(),
                )
                .await
            }
            Err(error) => Err(error),
        };
        crate::migration::plan::plan_or_refusal(prepared)
            .await
            .map_err(|error| preflight_status(&error))
    }

    /// Runs an owned migration in the background; `deposed` stops it without cleanup.
    async fn start(
        &self,
        migration: Migration,
        record: &MigrationRecord,
        progress: watch::Receiver<Progress>,
        cancel: CancellationToken,
        deposed: CancellationToken,
    ) {
        let id = migration.id().clone();
        let recorded = self.inner.store.intents(&id).await.ok().flatten();
        let mut intents = migration.resumed_intents().unwrap_or(Intents {
            paused: false,
            threads: record.threads,
            released: false,
        });
        if let Some(recorded) = recorded {
            intents.paused = recorded.paused;
            intents.released |= recorded.released;
            if recorded.threads > 0 {
                intents.threads = recorded.threads;
            }
        }
        let (intents_sender, intents_receiver) = watch::channel(intents);
        let (outcome_sender, outcome) = watch::channel(Outcome::Running);
        let entry = Entry {
            spec: spec_of(record),
            progress,
            outcome,
            cancel,
            intents: Arc::new(intents_sender),
        };
        self.inner.registry.insert(id.clone(), entry.clone());
        self.owned().insert(
            id.clone(),
            Owned {
                deposed: deposed.clone(),
            },
        );
        info!(migration_id = %id, "owning the migration");
        self.publish(&id, &entry).await;
        let migration = migration
            .with_intents(intents_receiver)
            .with_deposed(deposed.clone());
        let owners = self.clone();
        tokio::spawn(async move {
            let result = migration.run().await;
            let deposed_now = matches!(result, Err(Error::Deposed(_)));
            let outcome = match result {
                Ok(path) => Outcome::Completed(path),
                Err(Error::Cancelled) => Outcome::Cancelled,
                Err(error) => {
                    warn!(migration_id = %id, %error, "migration stopped");
                    Outcome::Failed(error.to_string())
                }
            };
            let _ = outcome_sender.send(outcome);
            let store = &owners.inner.store;
            let owner = &owners.inner.settings.owner;
            if deposed_now {
                // The next owner answers for it now (from the status it publishes). Forgotten
                // before it leaves `owned`, so that a takeover here starts from a clean slate.
                owners.inner.registry.remove(&id);
                owners.owned().remove(&id);
                // Hand the migration over at once if this coordinator is shutting down; a
                // lease already lost is not ours to give back.
                if owners.inner.shutdown.is_cancelled() {
                    let _ = store.disown(&id, owner).await;
                }
                return;
            }
            owners.owned().remove(&id);
            owners.publish(&id, &entry).await;
            if let Err(error) = store.finish(&id).await {
                warn!(migration_id = %id, %error, "record the migration's end");
            }
            let _ = store.disown(&id, owner).await;
        });
    }

    async fn publish(&self, id: &MigrationId, entry: &Entry) {
        observe(id, entry);
        let encoded = status(id, entry).encode_to_vec();
        if let Err(error) = self.inner.store.put_status(id, encoded).await {
            warn!(migration_id = %id, %error, "publish the status");
        }
    }

    /// Sets the metrics of every migration this coordinator owns, or owned and saw end.
    pub fn observe_metrics(&self) {
        for (id, entry) in self.inner.registry.all() {
            observe(&id, &entry);
        }
    }

    /// Records operator intents for `id` (any coordinator) and applies them at once when the
    /// migration runs here.
    pub async fn change_intents(
        &self,
        id: &MigrationId,
        change: impl Fn(&mut OperatorIntents),
    ) -> Result<(), Status> {
        let store = &self.inner.store;
        let mut intents = store
            .intents(id)
            .await
            .map_err(|error| crate::api::store_status(&error))?
            .unwrap_or_default();
        change(&mut intents);
        store
            .set_intents(id, &intents)
            .await
            .map_err(|error| crate::api::store_status(&error))?;
        if let Some(entry) = self.inner.registry.get(id) {
            apply_intents(&entry, &intents);
        }
        Ok(())
    }

    /// The status of `id`: from this coordinator if it runs (or ran) it, else as published.
    pub async fn status_of(&self, id: &MigrationId) -> Result<Option<v1::MigrationStatus>, Status> {
        if let Some(entry) = self.inner.registry.get(id) {
            return Ok(Some(status(id, &entry)));
        }
        let encoded = self
            .inner
            .store
            .status(id)
            .await
            .map_err(|error| crate::api::store_status(&error))?;
        encoded
            .map(|bytes| v1::MigrationStatus::decode(bytes.as_slice()))
            .transpose()
            .map_err(|error| Status::internal(format!("stored status: {error}")))
    }

    /// Every migration's status; this coordinator's own are fresher than the published ones.
    pub async fn statuses(&self) -> Result<Vec<v1::MigrationStatus>, Status> {
        let mut by_id: std::collections::BTreeMap<String, v1::MigrationStatus> = self
            .inner
            .store
            .statuses()
            .await
            .map_err(|error| crate::api::store_status(&error))?
            .iter()
            .filter_map(|bytes| v1::MigrationStatus::decode(bytes.as_slice()).ok())
            .map(|status| (status.migration_id.clone(), status))
            .collect();
        for (id, entry) in self.inner.registry.all() {
            by_id.insert(id.to_string(), status(&id, &entry));
        }
        Ok(by_id.into_values().collect())
    }

    /// The local entry of a migration this coordinator runs or ran.
    pub fn local(&self, id: &MigrationId) -> Option<Entry> {
        self.inner.registry.get(id)
    }

    /// After shutdown began: waits (up to `limit`) until every migration running here has
    /// stopped, written its last checkpoint and handed its owner lease back.
    pub async fn wait_stopped(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.owned().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = self.owned().len();
        if left > 0 {
            warn!(
                left,
                "migrations still stopping at exit; their leases expire instead"
            );
        }
    }

    /// The ownership loop; returns when the coordinator shuts down.
    pub async fn run(self) {
        let tick = self.inner.settings.owner_ttl / 3;
        // A round at once: the incarnation seen at start is what a later Redis loss is noticed
        // against (found by the fault campaign: Redis restarted before the first round went
        // unnoticed, and the migration it deposed was never rebuilt).
        loop {
            if let Err(error) = self.round().await {
                warn!(%error, "ownership round failed; retrying");
            }
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                () = tokio::time::sleep(tick) => {}
            }
        }
    }

    async fn round(&self) -> Result<(), crate::store::Error> {
        let store = &self.inner.store;
        let settings = &self.inner.settings;
        let current = store.incarnation().await?;
        let lost = {
            let mut seen = self
                .inner
                .incarnation
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let lost = seen.as_ref().is_some_and(|seen| *seen != current);
            *seen = Some(current);
            lost
        };
        if lost {
            warn!(
                "the live store lost its data; rebuilding the migrations from their MySQL checkpoints"
            );
            let owned: Vec<Owned> = self.owned().values().cloned().collect();
            for handle in owned {
                handle.deposed.cancel();
            }
            self.rebuild_from_checkpoints().await;
        }
        let owned: Vec<(MigrationId, Owned)> = self
            .owned()
            .iter()
            .map(|(id, handle)| (id.clone(), handle.clone()))
            .collect();
        for (id, handle) in owned {
            if handle.deposed.is_cancelled() {
                continue;
            }
            if !store
                .renew(&id, &settings.owner, settings.owner_ttl)
                .await?
            {
                warn!(migration_id = %id, "the owner lease was lost; stopping without cleanup");
                handle.deposed.cancel();
                continue;
            }
            if let Some(entry) = self.inner.registry.get(&id) {
                if let Some(intents) = store.intents(&id).await? {
                    apply_intents(&entry, &intents);
                }
                self.publish(&id, &entry).await;
            }
        }
        for record in store.active().await? {
            let Ok(id) = MigrationId::parse(record.id.clone()) else {
                continue;
            };
            if self.owned().contains_key(&id) {
                continue;
            }
            if store
                .try_own(&id, &settings.owner, settings.owner_ttl)
                .await?
            {
                // The list may be stale: an owner records a migration's end before it gives its
                // lease up, so once the lease is ours an ended migration is no longer active.
                // (Found by a failover test: a completed migration taken over again in that
                // window was marked failed for want of a checkpoint.)
                if store
                    .active()
                    .await?
                    .iter()
                    .any(|active| active.id == record.id)
                {
                    // Owned (so renewed by the next rounds) while it prepares beside them.
                    let deposed = self.inner.shutdown.child_token();
                    self.owned().insert(
                        id.clone(),
                        Owned {
                            deposed: deposed.clone(),
                        },
                    );
                    let owners = self.clone();
                    tokio::spawn(async move { owners.take_over(id, record, deposed).await });
                } else {
                    store.disown(&id, &settings.owner).await?;
                }
            }
        }
        Ok(())
    }

    /// Resumes an orphaned migration from its checkpoint (already in `owned`, with `deposed`).
    async fn take_over(
        &self,
        id: MigrationId,
        record: MigrationRecord,
        deposed: CancellationToken,
    ) {
        info!(migration_id = %id, "taking the migration over");
        shoal_worker::failpoint::hit("owners.take_over", id.as_str()).await;
        let store = &self.inner.store;
        let owner = &self.inner.settings.owner;
        let (progress, progress_receiver) = watch::channel(Progress::default());
        let cancel = CancellationToken::new();
        let prepared = match self.options(&record, true) {
            Ok(options) => {
                Migration::prepare(
                    options,
                    Arc::clone(&self.inner.tasks),
                    progress,
                    cancel.clone(),
                )
                .await
            }
            Err(error) => Err(error),
        };
        match prepared {
            Ok(_) if deposed.is_cancelled() => {
                // The lease was lost, the store lost its data, or this coordinator is stopping.
                info!(migration_id = %id, "deposed while preparing the takeover; not starting it");
                if self.inner.shutdown.is_cancelled() {
                    let _ = store.disown(&id, owner).await;
                }
                self.owned().remove(&id);
            }
            Ok(migration) if migration.resumed_intents().is_some() => {
                self.start(migration, &record, progress_receiver, cancel, deposed)
                    .await;
            }
            Ok(_) => {
                warn!(migration_id = %id, "no checkpoint to resume from: the previous owner ended it or never got past Initial; ending it");
                let (_, outcome) = watch::channel(Outcome::Failed(
                    "its owner stopped before the first checkpoint; submit it again".to_owned(),
                ));
                let entry = Entry {
                    spec: spec_of(&record),
                    progress: progress_receiver,
                    outcome,
                    cancel,
                    intents: Arc::new(
                        watch::channel(Intents {
                            paused: false,
                            threads: record.threads,
                            released: false,
                        })
                        .0,
                    ),
                };
                self.inner.registry.insert(id.clone(), entry.clone());
                self.publish(&id, &entry).await;
                let _ = store.finish(&id).await;
                let _ = store.disown(&id, owner).await;
                self.owned().remove(&id);
            }
            Err(error) => {
                // Perhaps a target this coordinator cannot reach: leave it to another replica.
                warn!(migration_id = %id, %error, "cannot take the migration over; releasing it");
                let _ = store.disown(&id, owner).await;
                self.owned().remove(&id);
            }
        }
    }

    /// After the live store lost its data: registers every migration with a checkpoint in this
    /// coordinator's targets, with the intents the checkpoint recorded.
    async fn rebuild_from_checkpoints(&self) {
        for target in self.inner.targets.configured() {
            if let Err(error) = self.rebuild_target(&target).await {
                warn!(%target, %error, "rebuild from the checkpoints of this target");
            }
        }
    }

    async fn rebuild_target(&self, target: &str) -> Result<(), Error> {
        let dsn = self.inner.targets.dsn(target)?;
        let opts = shoal_mysql::dsn::opts(&dsn)
            .map_err(|error| Error::Preflight(format!("target {target}: {error}")))?;
        let mut connection = mysql_async::Conn::new(opts).await?;
        let tables: Vec<(String, String)> = connection
            .query(
                "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
                 WHERE TABLE_NAME LIKE '\\_%\\_chkpnt'",
            )
            .await?;
        for (schema, name) in tables {
            let Some(table) = name
                .strip_prefix('_')
                .and_then(|rest| rest.strip_suffix("_chkpnt"))
            else {
                continue;
            };
            if names::checkpoint(table) != name {
                continue;
            }
            let Some(saved) =
                crate::migration::checkpoint::read(&mut connection, &schema, table).await?
            else {
                continue;
            };
            let detail = &saved.detail;
            if detail.fleet.as_deref() != Some(self.inner.settings.fleet.as_str()) {
                // A `shoal run`, or another fleet's migration: not ours to adopt.
                continue;
            }
            let record = MigrationRecord::from_checkpoint(&schema, &saved);
            let id = MigrationId::parse(record.id.clone())
                .map_err(|error| Error::Preflight(format!("migration id: {error}")))?;
            self.inner.store.register(&record).await?;
            let intents = OperatorIntents {
                paused: detail.intents.paused,
                threads: detail.intents.threads,
                released: detail.intents.released,
                cancelled: false,
            };
            self.inner.store.set_intents(&id, &intents).await?;
            info!(migration_id = %id, "re-registered from its checkpoint");
        }
        Ok(())
    }
}

/// Applies recorded intents to a running migration.
fn observe(id: &MigrationId, entry: &Entry) {
    crate::metrics::observe(
        id,
        &entry.progress.borrow(),
        &entry.outcome.borrow(),
        crate::api::unix_millis_now(),
    );
}

fn apply_intents(entry: &Entry, intents: &OperatorIntents) {
    entry.intents.send_if_modified(|current| {
        let threads = if intents.threads > 0 {
            intents.threads
        } else {
            current.threads
        };
        let released = current.released || intents.released;
        let changed = current.paused != intents.paused
            || current.threads != threads
            || current.released != released;
        current.paused = intents.paused;
        current.threads = threads;
        current.released = released;
        changed
    });
    if intents.cancelled && !entry.cancel.is_cancelled() {
        entry.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(max_latency_factor: f64) -> v1::MigrationSpec {
        v1::MigrationSpec {
            table: Some(v1::TableRef {
                target: "shop".to_owned(),
                schema: "shop".to_owned(),
                table: String::new(),
            }),
            alter_statement: "ALTER TABLE orders ADD COLUMN note INT".to_owned(),
            options: Some(v1::MigrationOptions {
                max_latency_factor,
                ..v1::MigrationOptions::default()
            }),
        }
    }

    #[test]
    fn a_latency_factor_is_kept_as_a_percentage_and_a_bad_one_is_refused() {
        let record = record_of(&spec(2.5)).unwrap();
        assert_eq!(record.limits.max_latency_percent, 250);
        assert_eq!(record_of(&spec(0.0)).unwrap().limits.max_latency_percent, 0);
        for bad in [0.5, 1.0, -3.0, f64::NAN] {
            let status = record_of(&spec(bad)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad}");
            assert!(
                status
                    .message()
                    .starts_with("spec.options.max_latency_factor: the latency factor must be"),
                "{}",
                status.message()
            );
        }
    }
}
