//! The owner of one migration: preflight, the INSTANT attempt, `Initial`, the phase sequence,
//! and `ErrCleanup`.
//!
//! Transitions: Initial → CopyRows → ApplyChangeset → Checksum → CutOver → Close; any failure
//! before the rename → ErrCleanup (the original table untouched, shoal's tables dropped).
//!
//! # Invariants
//! - Preflight only reads: a refused migration leaves the server exactly as it was.
//! - Everything `Initial` creates exists before any row is copied, and the change stream starts
//!   at a position read before the first chunk is planned, so no change can fall between the
//!   stream's start and the copy (INV-C1).

use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool, Value};
use shoal_common::changes::ChangeBuffer;
use shoal_common::checkpoint::{CutoverMarker, Saved, check_resume, next_owner_epoch};
use shoal_common::chunk::{ChunkId, ChunkLedger, ChunkPlanner, ChunkRange};
use shoal_common::ids::MigrationId;
use shoal_common::key::{KeyKind, KeyShape};
use shoal_common::names;
use shoal_common::sql::quote_qualified;
use shoal_worker::session::pool_for;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, warn};

use super::alter::{self, AlterStatement};
use super::apply::Applier;
use super::binlog::{self, BinlogPos};
use super::catalog::{self, ServerInfo, TableInfo};
use super::checkpoint::{self, Duties};
use super::columns;
use super::indexes;
use super::stream::Stream;
use super::{ChangePath, Error, Intents, MigrationOptions, Progress, State};
use crate::store::tasks::TaskStore;
use shoal_common::lifecycle::{Event, transition};

/// Times the deferred indexes' build is started again after its connection was lost.
const MAX_BUILD_ATTEMPTS: u32 = 3;

/// Where a migration starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    /// From the beginning (INSTANT attempt, `Initial`).
    Fresh,
    /// From a checkpoint, at this state.
    At(State),
    /// A checkpointed cut-over had already renamed: only `Close` remains.
    Swapped,
}

/// A migration being run by its owner.
pub struct Migration {
    pub(super) options: MigrationOptions,
    pub(super) pool: Pool,
    pub(super) store: Arc<dyn TaskStore>,
    pub(super) progress: watch::Sender<Progress>,
    pub(super) cancel: CancellationToken,
    /// Cancelled when this owner lost the migration (lease lost, live store lost, shutdown):
    /// it stops at once and cleans nothing up.
    pub(super) deposed: CancellationToken,
    /// Operator intents (pause, volume), read at every step of the copy.
    pub(super) intents: watch::Receiver<Intents>,
    pub(super) schema: String,
    pub(super) table: String,
    pub(super) statement: AlterStatement,
    pub(super) server: ServerInfo,
    /// The source's `SHOW CREATE TABLE` at the start, without its `AUTO_INCREMENT=` counter:
    /// the cut-over refuses to swap if another session changed it meanwhile.
    pub(super) source_definition: String,
    pub(super) source: TableInfo,
    /// Copied columns as named in the source, and in the shadow table.
    pub(super) source_columns: Vec<String>,
    pub(super) shadow_columns: Vec<String>,
    /// The same columns as the checksum's row hash sees them, on each table.
    pub(super) source_hashed: Vec<shoal_worker::checksum::HashColumn>,
    pub(super) shadow_hashed: Vec<shoal_worker::checksum::HashColumn>,
    /// The primary key's columns and kinds, and each column's index in row images.
    pub(super) key: KeyShape,
    pub(super) key_indices: Vec<usize>,
    pub(super) applier: Option<Applier>,
    /// The dedicated connection holding the advisory lock.
    pub(super) lock_connection: Option<Conn>,
    pub(super) stream: Option<Stream>,
    /// Position the stream has delivered up to.
    pub(super) stream_position: Option<BinlogPos>,
    /// Times a lost change stream was restarted in a row (the count starts over once the
    /// stream has run for [`super::stream::RESTARTS_FORGOTTEN_AFTER`]), and when it last was.
    pub(super) stream_restarts: u32,
    pub(super) stream_restarted_at: Option<std::time::Instant>,
    /// The last transaction boundary the stream delivered: where it may restart (P).
    pub(super) safe_position: Option<BinlogPos>,
    /// The chunk planner, once the copy began.
    pub(super) planner: Option<ChunkPlanner>,
    /// Chunks a resumed owner must copy again (planned but not drained in the checkpoint).
    pub(super) recopy: Vec<(ChunkId, ChunkRange)>,
    /// Definitions of the shadow table's secondary indexes dropped for the copy, to be added
    /// back in `RestoreSecondaryIndexes` (kept in the checkpoint).
    pub(super) deferred_indexes: Vec<String>,
    /// The owner epoch this owner holds (INV-O1).
    pub(super) owner_epoch: u64,
    /// The dedicated connection checkpoints are written on.
    pub(super) checkpoint_connection: Option<Conn>,
    /// Periodic checkpoint and status line.
    pub(super) duties: Duties,
    /// How far the cut-over got, as the checkpoint records it.
    pub(super) cutover_marker: CutoverMarker,
    /// The checkpoint found by preflight, resumed once the advisory lock is held.
    pub(super) resume: Option<Saved>,
    /// The preflight's capacity warnings (a fresh run's; `shoal plan` shows them).
    pub(super) capacity: Vec<super::capacity::Concern>,
    /// Changes not yet applied (INV-C2: deferred until their chunk drains).
    pub(super) buffer: ChangeBuffer<Vec<Value>>,
    /// Planned chunks and which are drained (INV-W1).
    pub(super) ledger: ChunkLedger,
    /// Ranges being repaired after a checksum mismatch: their changes are deferred again.
    pub(super) repairing: Vec<ChunkRange>,
    /// Set once shoal's own rename is queued: a DDL event on the table is then expected.
    pub(super) cutting_over: bool,
    /// Row changes of `t` the stream delivered after the final flush and before the swap's own
    /// rename (`None` until the stream shows the rename): writes the original took after its
    /// lock was lost, missing from the new table.
    pub(super) changes_before_swap: Option<usize>,
    /// Set while a new owner proves a swap its predecessor made (see
    /// `Migration::prove_swap_of_predecessor`): row changes of the original counted since the
    /// shadow took the swap name, instead of buffered.
    pub(super) swap_audit: Option<usize>,
    /// Set while the cut-over lock holds the source: a flush cannot read the source then, and
    /// its removals are verified under the lock instead.
    pub(super) under_cutover_lock: bool,
    /// Rows flushes removed under a secondary unique key since the last checksum barrier,
    /// verified again under the cut-over lock (INV-C1).
    pub(super) unique_removals: Vec<super::apply::Removed>,
    /// Whether shoal's tables exist (so ErrCleanup knows what to drop).
    pub(super) created_tables: bool,
    /// Key span of the next copy chunks, from the time of recent ones.
    pub(super) sizer: shoal_common::sizing::ChunkSizer,
    /// When the server wrote the last row event the stream delivered (Unix seconds).
    pub(super) last_event_at: u32,
    /// Workers whose chunk completions arrived recently, and when.
    pub(super) recent_workers:
        std::collections::HashMap<shoal_common::ids::WorkerId, std::time::Instant>,
    /// The migration's root span (one trace per migration) and the current `phase.<state>` span.
    pub(super) root_span: tracing::Span,
    pub(super) phase_span: std::sync::Mutex<tracing::Span>,
}

impl std::fmt::Debug for Migration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migration")
            .field("options", &self.options)
            .field("schema", &self.schema)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl Migration {
    /// Validates the migration without changing anything (preflight).
    pub async fn prepare(
        options: MigrationOptions,
        store: Arc<dyn TaskStore>,
        progress: watch::Sender<Progress>,
        cancel: CancellationToken,
    ) -> Result<Self, Error> {
        let statement = alter::parse(&options.alter)?;
        let opts = shoal_mysql::dsn::opts(&options.dsn).map_err(|error| {
            Error::Preflight(format!(
                "the DSN {} is invalid: {error}",
                shoal_worker::session::redact_dsn(&options.dsn)
            ))
        })?;
        let schema = options
            .schema
            .as_deref()
            .filter(|schema| !schema.is_empty())
            .or(opts.db_name())
            .or(statement.schema.as_deref())
            .map(str::to_owned)
            .ok_or_else(|| {
                Error::Preflight("the DSN selects no database; add /<schema> to it".to_owned())
            })?;
        shoal_common::sql::check_name("schema name", &schema).map_err(Error::Preflight)?;
        statement.check_schema(&schema)?;
        let table = statement.table.clone();
        let pool = pool_for(
            &options.target,
            &options.dsn,
            Some(&schema),
            options.lock_wait_timeout,
            options.threads as usize + 4,
        )?;
        let mut connection = pool.get_conn().await.map_err(|error| match error {
            // ER_BAD_DB_ERROR
            mysql_async::Error::Server(server) if server.code == 1049 => Error::Preflight(format!(
                "schema `{schema}` does not exist on the server; check the DSN's /<schema> \
                 (and the ALTER's schema)"
            )),
            // ER_SECURE_TRANSPORT_REQUIRED (MySQL's require_secure_transport=ON).
            mysql_async::Error::Server(server) if server.code == 3159 => Error::Preflight(
                "the server accepts TLS connections only (require_secure_transport=ON): add \
                 ssl_ca=<CA file> (or require_ssl=true) to the DSN; see docs/operations.md"
                    .to_owned(),
            ),
            other => other.into(),
        })?;
        let server = catalog::check_server(&mut connection).await?;
        catalog::check_privileges(&mut connection, &schema, server.mariadb).await?;
        let qualified = quote_qualified(&schema, &table);
        catalog::refuse_other_than_tables(&mut connection, &schema, &table).await?;
        let source = catalog::read_table(&mut connection, &schema, &table)
            .await?
            .ok_or_else(|| {
                Error::Preflight(format!(
                    "table {qualified} does not exist; check the schema and the ALTER"
                ))
            })?;
        let (key, key_indices) = key_shape(&source, &qualified)?;
        if !names::fits(&table) {
            return Err(Error::Preflight(format!(
                "table name `{table}` is too long for shoal's helper tables (64-character limit)"
            )));
        }
        let mut capacity = Vec::new();
        let resume = match checkpoint::read(&mut connection, &schema, &table).await? {
            Some(saved) => {
                check_resume(&saved, &options.alter, &server.identity())
                    .map_err(|refusal| Error::Preflight(format!("{qualified}: {refusal}")))?;
                Some(saved)
            }
            None => {
                for helper in names::all(&table) {
                    if catalog::table_exists(&mut connection, &schema, &helper).await? {
                        return Err(Error::Preflight(format!(
                            "table `{schema}`.`{helper}` already exists (left by an earlier run?); \
                             drop it if no migration of {qualified} is running"
                        )));
                    }
                }
                let rows = catalog::estimated_rows(&mut connection, &schema, &table).await?;
                let concerns = super::capacity::check(
                    &mut connection,
                    &schema,
                    &table,
                    rows,
                    options.strict,
                    server.mariadb,
                )
                .await?;
                for concern in &concerns {
                    if concern.refuse {
                        return Err(Error::Preflight(format!(
                            "{qualified}: {}; {}",
                            concern.message, concern.fix
                        )));
                    }
                    warn!(code = concern.code, fix = %concern.fix, "{}", concern.message);
                }
                capacity = concerns;
                None
            }
        };
        let mut options = options;
        let mut initial_intents = Intents {
            paused: false,
            threads: options.threads,
            released: false,
        };
        if let Some(saved) = &resume {
            // A resumed migration keeps its id and the operator's intents.
            options.id = MigrationId::parse(&saved.detail.migration_id)
                .map_err(|error| Error::Preflight(format!("the checkpoint's id: {error}")))?;
            progress.send_modify(|progress| progress.resumed_id = Some(options.id.to_string()));
            initial_intents = Intents {
                paused: saved.detail.intents.paused,
                threads: saved.detail.intents.threads.max(1),
                released: saved.detail.intents.released,
            };
        }
        let triggers: Option<String> = connection
            .exec_first(
                "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = ? AND EVENT_OBJECT_TABLE = ? LIMIT 1",
                (&schema, &table),
            )
            .await?;
        if let Some(trigger) = triggers {
            return Err(Error::Preflight(format!(
                "table {qualified} has trigger `{trigger}`; shoal cannot carry triggers across the cut-over: drop it first"
            )));
        }
        check_foreign_keys(&mut connection, &schema, &table, &qualified).await?;
        let source_definition = catalog::definition(&mut connection, &schema, &table).await?;
        drop(connection);
        // Without an operator channel the intents stay as submitted (or as checkpointed).
        let (_, intents) = watch::channel(initial_intents);
        let sizer = shoal_common::sizing::ChunkSizer::new(shoal_common::sizing::SizingRules::new(
            options.chunk_rows,
            options.target_chunk_time,
        ));
        Ok(Self {
            intents,
            options,
            pool,
            store,
            progress,
            cancel,
            deposed: CancellationToken::new(),
            schema,
            table,
            statement,
            server,
            source,
            source_definition,
            source_columns: Vec::new(),
            shadow_columns: Vec::new(),
            source_hashed: Vec::new(),
            shadow_hashed: Vec::new(),
            key,
            key_indices,
            applier: None,
            lock_connection: None,
            stream: None,
            stream_position: None,
            stream_restarts: 0,
            stream_restarted_at: None,
            safe_position: None,
            planner: None,
            recopy: Vec::new(),
            deferred_indexes: Vec::new(),
            owner_epoch: 0,
            checkpoint_connection: None,
            duties: Duties::default(),
            cutover_marker: CutoverMarker::NotStarted,
            resume,
            capacity,
            buffer: ChangeBuffer::default(),
            ledger: ChunkLedger::default(),
            repairing: Vec::new(),
            cutting_over: false,
            under_cutover_lock: false,
            changes_before_swap: None,
            swap_audit: None,
            unique_removals: Vec::new(),
            created_tables: false,
            sizer,
            last_event_at: 0,
            recent_workers: std::collections::HashMap::new(),
            root_span: tracing::Span::none(),
            phase_span: std::sync::Mutex::new(tracing::Span::none()),
        })
    }

    /// The id the migration runs under (a resumed one keeps its checkpointed id).
    pub fn id(&self) -> &MigrationId {
        &self.options.id
    }

    /// The operator intents a resumed migration starts with (`None`: a fresh start).
    pub fn resumed_intents(&self) -> Option<Intents> {
        self.resume.as_ref().map(|_| *self.intents.borrow())
    }

    /// Stops the migration without cleanup when `deposed` is cancelled.
    pub fn with_deposed(mut self, deposed: CancellationToken) -> Self {
        self.deposed = deposed;
        self
    }

    /// Lets an operator pause, resume and change the volume through `intents`.
    pub fn with_intents(mut self, intents: watch::Receiver<Intents>) -> Self {
        self.intents = intents;
        self
    }

    pub(super) fn qualified(&self, table: &str) -> String {
        quote_qualified(&self.schema, table)
    }

    /// Applies a lifecycle event (the pure `transition` decides) and publishes the new state.
    pub(super) fn advance(&self, event: Event) -> Result<State, Error> {
        let current = self.progress.borrow().state;
        let next = transition(current, event)?;
        info!(migration_id = %self.options.id, from = %current, state = %next, "entering state");
        *self.phase() = tracing::info_span!(
            parent: &self.root_span,
            "phase",
            otel.name = format!("phase.{}", next.snake_name()),
            state = %next
        );
        let at_ms = crate::api::unix_millis_now();
        self.progress.send_modify(|progress| {
            progress.state = next;
            progress
                .history
                .record(shoal_common::lifecycle::Transition {
                    from: current,
                    to: next,
                    at_ms,
                    message: format!("{event:?}"),
                });
        });
        Ok(next)
    }

    /// Whether another owner took over since this one raised its epoch (the Redis lease lost, or
    /// a higher owner epoch in the checkpoint table): then a failure must not be cleaned up.
    pub(super) async fn deposed_meanwhile(&self) -> Option<Error> {
        if self.deposed.is_cancelled() {
            return Some(Error::Deposed("the owner lease was lost".to_owned()));
        }
        if self.owner_epoch == 0 || !self.created_tables {
            return None;
        }
        let mut connection = self.pool.get_conn().await.ok()?;
        match self.check_owner(&mut connection, false).await {
            Err(deposed @ Error::Deposed(_)) => Some(deposed),
            _ => None,
        }
    }

    /// The current `phase.<state>` span, parent of the spans of that phase.
    pub(super) fn phase(&self) -> std::sync::MutexGuard<'_, tracing::Span> {
        self.phase_span
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn check_cancelled(&self) -> Result<(), Error> {
        if self.deposed.is_cancelled() {
            return Err(Error::Deposed(
                "stopped (shutdown, or the owner lease was lost); progress stays in the checkpoint"
                    .to_owned(),
            ));
        }
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    /// Runs the migration to the end. On failure before the rename the original table is left
    /// untouched and shoal's tables are removed.
    pub async fn run(mut self) -> Result<ChangePath, Error> {
        let span = tracing::info_span!(
            parent: None,
            "migration",
            migration.id = %self.options.id,
            db.namespace = %self.schema,
            db.collection.name = %self.table,
            statement.digest = %shoal_common::telemetry::statement_digest(
                &shoal_common::checkpoint::normalize_statement(&self.options.alter)
            ),
            outcome = tracing::field::Empty,
        );
        self.root_span = span.clone();
        *self.phase() = tracing::info_span!(
            parent: &span,
            "phase",
            otel.name = "phase.initial",
            state = %State::Initial
        );
        let result = self.run_traced().instrument(span.clone()).await;
        // The last phase ends before the migration does.
        *self.phase() = tracing::Span::none();
        span.record(
            "outcome",
            match &result {
                Ok(_) => "completed",
                Err(Error::Cancelled) => "cancelled",
                Err(Error::Deposed(_)) => "stopped",
                Err(_) => "failed",
            },
        );
        result
    }

    async fn run_traced(&mut self) -> Result<ChangePath, Error> {
        let mut result = self.run_phases().await;
        if let Err(error) = &result
            && !matches!(error, Error::Deposed(_) | Error::Cancelled)
            && let Some(deposed) = self.deposed_meanwhile().await
        {
            // A takeover kills the previous owner's connections: the error it sees then is a
            // deposition, and cleaning up would destroy the new owner's work (INV-O1).
            warn!(migration_id = %self.options.id, %error, "failed after losing ownership; not cleaning up");
            result = Err(deposed);
        }
        if let Err(error) = &result {
            if matches!(error, Error::Deposed(_)) {
                // Asked to stop (shutdown, or a lease that lapsed): save progress for the next
                // owner. The write is fenced, so it is refused if another owner took over.
                if self.deposed.is_cancelled()
                    && self.created_tables
                    && self.repairing.is_empty()
                    && self.progress.borrow().state < State::CutOver
                {
                    match self.write_checkpoint().await {
                        Ok(()) => {
                            info!(migration_id = %self.options.id, "checkpoint written on stop")
                        }
                        Err(error) => {
                            warn!(migration_id = %self.options.id, %error, "no checkpoint on stop")
                        }
                    }
                }
                // The next owner runs the migration: touch nothing else.
                warn!(migration_id = %self.options.id, %error, "deposed; stopping without cleanup");
                self.stop_stream().await;
                return result;
            }
            if let Error::CutoverAmbiguous(_) = error {
                error!(migration_id = %self.options.id, %error, "cut-over outcome unknown; touching nothing");
                self.stop_stream().await;
                self.release_lock().await;
                return result;
            }
            let failed_in = self.progress.borrow().state;
            match self.advance(Event::Fail) {
                Ok(_) => {
                    warn!(migration_id = %self.options.id, %error, %failed_in, "migration failed; cleaning up");
                    if let Err(cleanup) = self.cleanup().await {
                        warn!(migration_id = %self.options.id, error = %cleanup, "cleanup after failure");
                    }
                }
                // After the rename the new table is live: nothing may be cleaned up.
                Err(refused) => {
                    warn!(migration_id = %self.options.id, %error, %refused, "failed after the swap")
                }
            }
        }
        result
    }

    async fn run_phases(&mut self) -> Result<ChangePath, Error> {
        self.lock().await?;
        let resumed = match self.resume.take() {
            Some(saved) => self.resume_from(saved).await?,
            None => Resume::Fresh,
        };
        let copy_needed = match resumed {
            Resume::Swapped => {
                self.progress
                    .send_modify(|progress| progress.path = Some(ChangePath::Copy));
                self.advance(Event::ResumeAt(State::Close))?;
                self.close().await?;
                return Ok(ChangePath::Copy);
            }
            Resume::At(state) => {
                self.progress
                    .send_modify(|progress| progress.path = Some(ChangePath::Copy));
                self.advance(Event::ResumeAt(state))?;
                state == State::CopyRows
            }
            Resume::Fresh => {
                if !self.options.no_instant && self.try_instant().await? {
                    self.progress
                        .send_modify(|progress| progress.path = Some(ChangePath::Instant));
                    self.release_lock().await;
                    return Ok(ChangePath::Instant);
                }
                self.progress
                    .send_modify(|progress| progress.path = Some(ChangePath::Copy));
                self.initial().await?;
                self.advance(Event::CopyStarted)?;
                true
            }
        };
        if copy_needed {
            self.copy_rows().await?;
            self.wait_while_paused().await?;
            self.advance(Event::CopyDone)?;
        }
        self.apply_changeset().await?;
        self.advance(Event::ChangesetApplied)?;
        self.restore_indexes().await?;
        self.advance(Event::IndexesRestored)?;
        self.analyze().await?;
        self.advance(Event::Analyzed)?;
        shoal_worker::failpoint::hit("checksum.before", self.options.id.as_str()).await;
        self.checksum().await?;
        self.advance(Event::ChecksumPassed)?;
        let defer = self.options.defer_cutover && !self.intents.borrow().released;
        if defer && self.wait_on_sentinel().await? {
            info!(migration_id = %self.options.id, "long wait on the sentinel: checksum again");
            self.checksum().await?;
        }
        self.advance(Event::BeginCutOver)?;
        self.cutover().await?;
        self.advance(Event::CutOverDone)?;
        self.close().await?;
        Ok(ChangePath::Copy)
    }

    /// Whether the copy runs without the shadow table's plain secondary indexes. Not when the
    /// migration holds or paces its copy for replicas or the application: the index build is
    /// one statement, which replicas replay serially (lagging by its time) and which no throttle
    /// can pause.
    pub(super) fn defers_indexes(&self) -> bool {
        !self.options.keep_secondary_indexes
            && self.options.replicas.is_empty()
            && self.options.limits.max_latency_percent == 0
            && self.options.limits.nice_percent == 0
    }

    /// `RestoreSecondaryIndexes`: adds back the indexes the copy ran without (those the shadow
    /// table still lacks: a resumed owner may find them built). A lost connection (a killed
    /// statement: the server rolls the build back) builds again on a fresh one, unless this owner
    /// was deposed meanwhile.
    async fn restore_indexes(&mut self) -> Result<(), Error> {
        if self.deferred_indexes.is_empty() {
            return Ok(());
        }
        let shadow = self.qualified(&names::shadow(&self.table));
        let started = std::time::Instant::now();
        let mut attempt = 0;
        let added = loop {
            let mut connection = self.connect().await?;
            shoal_worker::failpoint::hit(
                "indexes.build",
                &format!("connection={}", connection.id()),
            )
            .await;
            match indexes::restore(&mut connection, &shadow, &self.deferred_indexes).await {
                Err(error) if error.connection_lost() && attempt < MAX_BUILD_ATTEMPTS => {
                    if let Some(deposed) = self.deposed_meanwhile().await {
                        return Err(deposed);
                    }
                    attempt += 1;
                    warn!(migration_id = %self.options.id, %error, attempt, "the index build's connection was lost; building again");
                }
                result => break result?,
            }
        };
        info!(
            migration_id = %self.options.id,
            added,
            seconds = started.elapsed().as_secs_f64(),
            "secondary indexes added back to {shadow}"
        );
        shoal_worker::failpoint::hit("indexes.restored", self.options.id.as_str()).await;
        Ok(())
    }

    /// `AnalyzeTable`: fresh index statistics on the shadow table before it takes traffic.
    async fn analyze(&mut self) -> Result<(), Error> {
        let mut connection = self.connect().await?;
        let shadow = self.qualified(&names::shadow(&self.table));
        let _: Vec<mysql_async::Row> = connection.query(format!("ANALYZE TABLE {shadow}")).await?;
        Ok(())
    }

    /// Mutual exclusion across `shoal run` and every fleet: `GET_LOCK('shoal/<schema>.<t>')` on
    /// a dedicated connection, held until the end. A coordinator taking over first kills the
    /// lock's holder if the checkpoint names it as the previous owner's connection (a stalled
    /// owner still holds the lock), then waits for the lock.
    async fn lock(&mut self) -> Result<(), Error> {
        let mut connection = self.connect().await?;
        let name = names::advisory_lock(&self.schema, &self.table);
        let mut wait = 0;
        if self.options.take_over
            && let Some(saved) = &self.resume
        {
            // Killing for a takeover this coordinator has already given up would hit the owner
            // that replaced it.
            if self.deposed.is_cancelled() {
                return Err(Error::Deposed(
                    "deposed before taking the migration's lock".to_owned(),
                ));
            }
            // A stalled previous owner still holds the lock: kill its connection (only if the
            // checkpoint names it as the previous owner's).
            let holder: Option<Option<u64>> = connection
                .exec_first("SELECT IS_USED_LOCK(?)", (&name,))
                .await?;
            if let Some(holder) = holder.flatten()
                && saved.detail.owner_connections.contains(&holder)
            {
                match connection
                    .query_drop(shoal_mysql::flavour::kill(holder, false))
                    .await
                {
                    Ok(()) => info!(
                        connection = holder,
                        "killed the previous owner's lock connection"
                    ),
                    // 1094: unknown thread (it just went away).
                    Err(mysql_async::Error::Server(server)) if server.code == 1094 => {}
                    Err(error) => return Err(error.into()),
                }
            }
            wait = self.options.lock_wait_timeout.as_secs().max(1);
        }
        let got: Option<i64> = connection
            .exec_first("SELECT GET_LOCK(?, ?)", (&name, wait))
            .await?;
        if got != Some(1) {
            return Err(Error::Preflight(format!(
                "another migration of `{}`.`{}` is running (advisory lock {name:?} is held)",
                self.schema, self.table
            )));
        }
        self.take_slot(&mut connection, wait).await?;
        self.lock_connection = Some(connection);
        Ok(())
    }

    /// Checks that the advisory lock is still held. Its connection sits idle for the whole
    /// migration, so an operator's or pt-kill's `KILL` of idle connections takes the lock with
    /// it; it is then taken again on a fresh connection (with the server slot). If another
    /// session took it meanwhile, another migration of this table may be running: this owner
    /// stops without cleaning up (as a deposed owner does), leaving the tables to it.
    pub(super) async fn check_lock(&mut self) -> Result<(), Error> {
        let Some(connection) = self.lock_connection.as_mut() else {
            return Ok(());
        };
        let name = names::advisory_lock(&self.schema, &self.table);
        let held: Result<Option<Option<i64>>, _> = connection
            .exec_first("SELECT IS_USED_LOCK(?) = CONNECTION_ID()", (&name,))
            .await;
        match held.map_err(Error::from) {
            Ok(Some(Some(1))) => return Ok(()),
            Ok(_) => {}
            Err(error) if error.connection_lost() => {}
            Err(error) => return Err(error),
        }
        self.lock_connection = None;
        if let Some(deposed) = self.deposed_meanwhile().await {
            // A takeover kills the previous owner's lock connection: never take it back then.
            return Err(deposed);
        }
        warn!(migration_id = %self.options.id, "the advisory lock's connection was lost; taking the lock again");
        let mut connection = self.connect().await?;
        let got: Option<i64> = connection
            .exec_first("SELECT GET_LOCK(?, 0)", (&name,))
            .await?;
        if got != Some(1) {
            return Err(Error::Deposed(format!(
                "the advisory lock {name:?} was lost and another session holds it now (another \
                 migration of `{}`.`{}`?); stopping without cleanup",
                self.schema, self.table
            )));
        }
        self.take_slot(&mut connection, 0).await?;
        self.lock_connection = Some(connection);
        info!(migration_id = %self.options.id, "advisory lock taken again");
        Ok(())
    }

    /// The per-server cap: one of `max_concurrent_migrations` advisory locks `shoal/slot/<i>`,
    /// held on the lock connection with the table's lock (a taken-over owner's slot went with
    /// its killed connection).
    async fn take_slot(&self, connection: &mut Conn, wait: u64) -> Result<(), Error> {
        let cap = self.options.max_concurrent_migrations;
        if cap == 0 {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
        loop {
            for slot in 0..cap {
                let got: Option<i64> = connection
                    .exec_first("SELECT GET_LOCK(?, 0)", (format!("shoal/slot/{slot}"),))
                    .await?;
                if got == Some(1) {
                    return Ok(());
                }
            }
            if std::time::Instant::now() >= deadline {
                let _ = connection.query_drop("DO RELEASE_ALL_LOCKS()").await;
                return Err(Error::Preflight(format!(
                    "this server already runs {cap} shoal migration(s), the cap \
                     (--max-concurrent-migrations {cap}); wait for one to finish or raise the cap"
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// A connection of the migration's pool, waiting (up to [`super::CONNECT_PATIENCE`]) while
    /// the server refuses new connections.
    pub(super) async fn connect(&self) -> Result<Conn, Error> {
        connect(&self.pool).await
    }

    pub(super) async fn release_lock(&mut self) {
        if let Some(mut connection) = self.lock_connection.take() {
            // The table's lock and the server slot.
            if let Err(error) = connection.query_drop("DO RELEASE_ALL_LOCKS()").await {
                warn!(%error, "release the advisory lock; it ends with the connection");
            }
        }
    }

    /// Tries the change natively with `ALGORITHM=INSTANT`. True if it ran.
    async fn try_instant(&mut self) -> Result<bool, Error> {
        let mut connection = self.connect().await?;
        match connection
            .exec_drop(self.statement.instant(&self.schema), ())
            .await
        {
            Ok(()) => {
                info!(migration_id = %self.options.id, "ALTER ran with ALGORITHM=INSTANT: no copy needed");
                Ok(true)
            }
            Err(mysql_async::Error::Server(error)) => {
                match shoal_mysql::flavour::instant_refusal(
                    error.code,
                    self.server.mariadb,
                    &self.server.version,
                ) {
                    Some(why) => {
                        info!(migration_id = %self.options.id, reason = %error.message, "INSTANT refused ({why}); copying");
                        Ok(false)
                    }
                    None => Err(Error::Preflight(format!(
                        "the server refused the ALTER ({}): {}; the table is unchanged",
                        error.code, error.message
                    ))),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    /// `Initial`: shadow table from `CREATE TABLE … LIKE` plus the user's ALTER text, the fence
    /// table, the binlog position, the checkpoint table with the first checkpoint, the stream.
    async fn initial(&mut self) -> Result<(), Error> {
        let mut connection = self.connect().await?;
        let source = self.qualified(&self.table);
        let shadow_name = names::shadow(&self.table);
        let shadow = self.qualified(&shadow_name);
        self.created_tables = true;
        connection
            .query_drop(format!("CREATE TABLE {shadow} LIKE {source}"))
            .await?;
        if let Err(error) = connection
            .exec_drop(self.statement.applied_to(&self.schema, &shadow_name), ())
            .await
        {
            return Err(match error {
                mysql_async::Error::Server(server) => Error::Preflight(format!(
                    "the server refused the ALTER ({}): {}; the table is unchanged",
                    server.code, server.message
                )),
                other => other.into(),
            });
        }
        if self.defers_indexes() {
            self.deferred_indexes = indexes::defer(&mut connection, &shadow).await?;
        }
        connection
            .query_drop(format!(
                "CREATE TABLE {} (chunk BIGINT UNSIGNED NOT NULL PRIMARY KEY, epoch BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
                self.qualified(&names::fence(&self.table))
            ))
            .await?;
        self.create_heartbeat(&mut connection).await?;
        self.prepare_columns(&mut connection).await?;
        let start = binlog::current_position(&mut connection, &self.server).await?;
        refuse_prepared_xa(&mut connection).await?;
        self.owner_epoch = next_owner_epoch(self.store.owner_epoch(&self.options.id).await?, None);
        let epoch = self.owner_epoch;
        self.progress
            .send_modify(|progress| progress.owner_epoch = epoch);
        self.create_checkpoint(&start).await?;
        self.enter_sentinel().await?;
        self.start_stream(start).await?;
        info!(
            migration_id = %self.options.id,
            columns = self.source_columns.len(),
            "shadow table {shadow} created; change stream started"
        );
        Ok(())
    }

    /// Maps the source's columns onto the shadow table's (names compared as the server compares
    /// them) and builds the applier.
    async fn prepare_columns(&mut self, connection: &mut Conn) -> Result<(), Error> {
        let shadow_name = names::shadow(&self.table);
        let shadow_info = catalog::read_table(connection, &self.schema, &shadow_name)
            .await?
            .ok_or_else(|| Error::Preflight("the shadow table vanished".to_owned()))?;
        let source_named = named_columns(connection, &self.source.columns).await?;
        let shadow_named = named_columns(connection, &shadow_info.columns).await?;
        let dropped = columns::name_keys(connection, &self.statement.dropped_columns).await?;
        let mapping = columns::map(&source_named, &shadow_named, &dropped).map_err(|unmapped| {
            Error::Preflight(format!("{}: {unmapped}", self.qualified(&self.table)))
        })?;
        let same_key = shadow_info.primary_key.len() == self.source.primary_key.len()
            && shadow_info
                .primary_key
                .iter()
                .zip(&self.source.primary_key)
                .all(|(shadow_column, source_column)| {
                    shadow_info
                        .index_of(shadow_column)
                        .and_then(|index| mapping[index])
                        .is_some_and(|index| &self.source.columns[index].name == source_column)
                });
        if !same_key {
            return Err(Error::Preflight(
                "the ALTER changes the primary key; shoal needs the same key on both tables"
                    .to_owned(),
            ));
        }
        let mut source_indices = Vec::new();
        self.source_columns.clear();
        self.shadow_columns.clear();
        self.source_hashed.clear();
        self.shadow_hashed.clear();
        for (column, counterpart) in shadow_info.columns.iter().zip(&mapping) {
            if let Some(index) = *counterpart {
                source_indices.push(index);
                self.source_columns
                    .push(self.source.columns[index].name.clone());
                self.shadow_columns.push(column.name.clone());
                self.source_hashed.push(self.source.columns[index].hashed());
                self.shadow_hashed.push(column.hashed());
            }
        }
        let source_types: Vec<catalog::Column> = source_indices
            .iter()
            .map(|&index| self.source.columns[index].clone())
            .collect();
        let unique_indexes =
            super::unique::unique_index_parts(connection, &self.schema, &shadow_name).await?;
        self.applier = Some(
            Applier::new(
                &self.schema,
                &shadow_name,
                &self.shadow_columns,
                source_indices,
                &source_types,
                &self
                    .key_indices
                    .iter()
                    .map(|&index| self.source.columns[index].clone())
                    .collect::<Vec<_>>(),
            )
            .with_unique_keys(&unique_indexes, &self.shadow_columns),
        );
        Ok(())
    }

    /// Resumes from a checkpoint: reads the catalogue if a cut-over had begun, checks that P is
    /// still in the binlog, takes ownership (fencing the previous owner), restores the plan and
    /// restarts the stream at P.
    async fn resume_from(&mut self, saved: Saved) -> Result<Resume, Error> {
        let mut connection = self.connect().await?;
        let live_epoch = self.store.owner_epoch(&self.options.id).await?;
        if saved.detail.cutover != CutoverMarker::NotStarted {
            let mut present = Vec::new();
            for name in [
                names::shadow(&self.table),
                names::swap(&self.table),
                names::old(&self.table),
                names::swapped_out(&self.table),
            ] {
                present.push(catalog::table_exists(&mut connection, &self.schema, &name).await?);
            }
            let [shadow, swap, old, swapped_out] = present[..] else {
                return Err(Error::Cutover("catalogue read".to_owned()));
            };
            if (shadow || swap) && !old && !swapped_out {
                info!(migration_id = %self.options.id, "the cut-over had begun but not renamed: resuming");
                self.restore_shadow_name().await?;
            } else if !shadow
                && !swap
                && (old || swapped_out || saved.detail.cutover == CutoverMarker::Done)
            {
                info!(migration_id = %self.options.id, "the cut-over had renamed: closing");
                self.claim(&saved, live_epoch).await?;
                if saved.detail.cutover == CutoverMarker::Started {
                    let original = if swapped_out {
                        names::swapped_out(&self.table)
                    } else {
                        names::old(&self.table)
                    };
                    let from = BinlogPos {
                        file: saved.binlog_file.clone(),
                        pos: saved.binlog_pos,
                    };
                    self.prove_swap_of_predecessor(from, &original).await?;
                }
                if swapped_out {
                    self.name_the_original_old(&mut connection).await?;
                }
                if saved.detail.cutover == CutoverMarker::Started {
                    // The proof's stream gave the position the marker is written at.
                    self.mark_cutover(CutoverMarker::Done).await?;
                } else {
                    self.cutover_marker = CutoverMarker::Done;
                }
                self.created_tables = false;
                return Ok(Resume::Swapped);
            } else {
                return Err(Error::Preflight(format!(
                    "the checkpoint says a cut-over of {} began, and the catalogue is ambiguous \
                     (_new: {shadow}, swap: {swap}, _old: {old}, shoal_old: {swapped_out}); stop and \
                     inspect the schema by hand",
                    self.qualified(&self.table)
                )));
            }
        }
        if !catalog::table_exists(&mut connection, &self.schema, &names::shadow(&self.table))
            .await?
        {
            return Err(Error::Preflight(format!(
                "a checkpoint exists for {} but the shadow table {} is missing; drop shoal's \
                 tables for it to start over",
                self.qualified(&self.table),
                self.qualified(&names::shadow(&self.table))
            )));
        }
        let logs: Vec<mysql_async::Row> = connection.query("SHOW BINARY LOGS").await?;
        let available = logs
            .iter()
            .any(|row| row.get::<String, _>(0).as_deref() == Some(saved.binlog_file.as_str()));
        if !available && self.options.strict {
            return Err(Error::Preflight(format!(
                "the checkpoint's binlog file {} was purged, so the migration cannot resume; \
                 --strict forbids a fresh start (run without --strict to start over)",
                saved.binlog_file
            )));
        }
        self.claim(&saved, live_epoch).await?;
        // The previous owner's tasks: their reports become unknown (their chunks are fenced
        // again before they are copied).
        self.store.clear(&self.options.id).await?;
        if !available {
            warn!(
                migration_id = %self.options.id,
                file = %saved.binlog_file,
                "the checkpoint's binlog file was purged; starting afresh"
            );
            self.created_tables = true;
            self.drop_helper_tables().await?;
            self.created_tables = false;
            return Ok(Resume::Fresh);
        }
        self.created_tables = true;
        self.create_heartbeat(&mut connection).await?;
        self.prepare_columns(&mut connection).await?;
        self.deferred_indexes
            .clone_from(&saved.detail.deferred_indexes);
        if let Some(plan) = &saved.detail.plan {
            let (planner, ledger, undrained) = plan.restore();
            self.planner = Some(planner);
            self.ledger = ledger;
            self.recopy = undrained;
        }
        let state = if saved.detail.state <= State::CopyRows {
            State::CopyRows
        } else {
            State::ApplyChangeset
        };
        let recopy = self.recopy.len() as u64;
        self.progress.send_modify(|progress| {
            progress.rows_copied = saved.detail.rows_copied;
            progress.resumed_at = Some(state);
            progress.chunks_recopied = recopy;
        });
        let start = BinlogPos {
            file: saved.binlog_file.clone(),
            pos: saved.binlog_pos,
        };
        info!(
            migration_id = %self.options.id,
            position = %start,
            %state,
            chunks_to_recopy = recopy,
            owner_epoch = self.owner_epoch,
            "resuming from the checkpoint"
        );
        self.enter_sentinel().await?;
        self.start_stream(start).await?;
        Ok(Resume::At(state))
    }

    /// `ErrCleanup`: stop everything and drop shoal's tables; the source table is untouched.
    async fn cleanup(&mut self) -> Result<(), Error> {
        self.stop_stream().await;
        self.store.clear(&self.options.id).await?;
        self.drop_helper_tables().await?;
        self.leave_sentinel().await;
        self.release_lock().await;
        Ok(())
    }

    /// Drops shoal's tables (never the source or `_<t>_old`), if this owner created or adopted
    /// them.
    async fn drop_helper_tables(&mut self) -> Result<(), Error> {
        if !self.created_tables {
            return Ok(());
        }
        self.checkpoint_connection = None;
        let mut connection = self.connect().await?;
        for helper in [
            names::shadow(&self.table),
            names::checkpoint(&self.table),
            names::fence(&self.table),
            names::heartbeat(&self.table),
            names::swap(&self.table),
        ] {
            connection
                .query_drop(format!("DROP TABLE IF EXISTS {}", self.qualified(&helper)))
                .await?;
        }
        Ok(())
    }
}

/// `columns` with the server's comparison keys of their names.
pub(super) async fn named_columns(
    connection: &mut Conn,
    columns: &[catalog::Column],
) -> Result<Vec<columns::NamedColumn>, Error> {
    let names: Vec<String> = columns.iter().map(|column| column.name.clone()).collect();
    let keys = columns::name_keys(connection, &names).await?;
    Ok(columns
        .iter()
        .zip(keys)
        .map(|(column, key)| columns::NamedColumn {
            name: column.name.clone(),
            key,
            generated: column.generated,
        })
        .collect())
}

/// A connection of `pool`, waiting (up to [`super::CONNECT_PATIENCE`]) while the server refuses
/// new connections.
pub(super) async fn connect(pool: &Pool) -> Result<Conn, Error> {
    Ok(shoal_worker::session::patiently(super::CONNECT_PATIENCE, || pool.get_conn()).await?)
}

/// The primary key's shape and each key column's index in row images, or the refusal naming
/// what shoal cannot key on.
fn key_shape(source: &TableInfo, qualified: &str) -> Result<(KeyShape, Vec<usize>), Error> {
    if source.primary_key.is_empty() {
        return Err(Error::Preflight(format!(
            "table {qualified} has no primary key; shoal needs one to copy in chunks: add one first"
        )));
    }
    let mut kinds = Vec::new();
    let mut indices = Vec::new();
    for name in &source.primary_key {
        let index = source.index_of(name).ok_or_else(|| {
            Error::Preflight(format!(
                "primary key column `{name}` of {qualified} not found"
            ))
        })?;
        let column = &source.columns[index];
        let kind =
            KeyKind::of(&column.data_type, column.unsigned_bits().is_some()).ok_or_else(|| {
                Error::Preflight(format!(
                    "the primary key of {qualified} includes `{name}` of type {}; shoal keys on \
                     integers, DECIMAL, CHAR/VARCHAR, BINARY/VARBINARY, DATE and DATETIME columns",
                    column.column_type
                ))
            })?;
        kinds.push(kind);
        indices.push(index);
    }
    Ok((
        KeyShape {
            columns: source.primary_key.clone(),
            kinds,
        },
        indices,
    ))
}

/// Refuses a table that has foreign keys, or that other tables' foreign keys reference: the
/// cut-over's rename would leave them pointing at the old table (or drop them with it).
async fn check_foreign_keys(
    connection: &mut Conn,
    schema: &str,
    table: &str,
    qualified: &str,
) -> Result<(), Error> {
    let found: Option<(String, String, String, String, String)> = connection
        .exec_first(
            "SELECT CONSTRAINT_NAME, CONSTRAINT_SCHEMA, TABLE_NAME, UNIQUE_CONSTRAINT_SCHEMA, REFERENCED_TABLE_NAME \
             FROM information_schema.REFERENTIAL_CONSTRAINTS \
             WHERE (CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?) \
                OR (UNIQUE_CONSTRAINT_SCHEMA = ? AND REFERENCED_TABLE_NAME = ?) LIMIT 1",
            (schema, table, schema, table),
        )
        .await?;
    let Some((name, child_schema, child, parent_schema, parent)) = found else {
        return Ok(());
    };
    let on_this_table = child_schema == schema && child == table;
    let child = quote_qualified(&child_schema, &child);
    let parent = quote_qualified(&parent_schema, &parent);
    Err(Error::Preflight(if on_this_table {
        format!(
            "table {qualified} has foreign key `{name}` referencing {parent}; shoal cannot carry \
             foreign keys across the cut-over: drop the constraint first"
        )
    } else {
        format!(
            "table {qualified} is referenced by foreign key `{name}` of {child}; shoal cannot \
             carry foreign keys across the cut-over: drop the constraint first"
        )
    }))
}

/// An XA transaction prepared before the stream's start logged its rows before it: its
/// `XA COMMIT` would reach the stream with no rows to apply. Checked after the start position
/// is read (one prepared later is seen by the stream, which refuses XA on the table). Listing
/// them needs `XA_RECOVER_ADMIN` on MySQL 8.0+; without it the check cannot be made and shoal
/// says so.
async fn refuse_prepared_xa(connection: &mut Conn) -> Result<(), Error> {
    match connection.query::<mysql_async::Row, _>("XA RECOVER").await {
        Ok(prepared) if prepared.is_empty() => Ok(()),
        Ok(prepared) => Err(Error::Preflight(format!(
            "{} prepared XA transaction(s) on the server (XA RECOVER): their rows were logged \
             before shoal's start and their outcome is not known yet; XA COMMIT or XA ROLLBACK \
             them, then run the migration again",
            prepared.len()
        ))),
        // ER_SPECIFIC_ACCESS_DENIED_ERROR / ER_XAER_RMERR: cannot list them.
        Err(mysql_async::Error::Server(server)) if matches!(server.code, 1227 | 1401) => {
            warn!(
                code = server.code,
                "prepared XA transactions not checked (XA RECOVER refused: grant XA_RECOVER_ADMIN)"
            );
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}
