//! The fault campaign: a fleet (two coordinators, three workers, Redis, MariaDB) migrates a table
//! under a concurrent writer with an independent ledger, while faults are injected at random
//! moments of every phase. Each run ends with the migration completed and the table equal to the
//! ledger, or it is reported as a divergence, a failure or a stuck migration.
//!
//! Seeded: the same seed picks the same faults in the same order at the same delays (the
//! machine's timing still decides which phase each lands in, and the report says).
//! `make chaos SEED=… RUNS=… FAULTS=…` runs a campaign; `tests/tests/chaos.rs` a short one in
//! `make test`.

#![allow(clippy::missing_panics_doc)]

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::Context;
use mysql_async::prelude::Queryable;
use nix::sys::signal::Signal;
use shoal_proto::v1;

use crate::processes::{CoordinatorOptions, CoordinatorProcess, ShoalProcess, start_worker};
use crate::proxy::DelayProxy;
use crate::redis_server::RedisServer;
use crate::scenario;
use crate::servers::TestDatabase;
use crate::writer::{self, SplitMix, Writer};

/// Owner and lease TTLs of the campaign's fleet: short, so that recoveries are quick.
const TTL: Duration = Duration::from_secs(3);
/// A run that has not ended this long after its last fault is stuck.
const STUCK_AFTER: Duration = Duration::from_secs(180);

/// A fault the campaign injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL of a worker (a new one replaces it).
    KillWorker,
    /// SIGKILL of the coordinator owning the migration (restarted as a standby).
    KillOwner,
    /// SIGSTOP of a worker past its lease, then SIGCONT: a zombie the fence must stop.
    StopWorker,
    /// SIGSTOP of the owner past its owner lease, then SIGCONT: a deposed owner.
    StopOwner,
    /// `KILL` of the connections writing the shadow table (chunk copies, change flushes).
    KillCopyConnections,
    /// `KILL` of the binlog stream's connection.
    KillBinlogStream,
    /// Redis killed and restarted empty on the same port.
    RestartRedis,
    /// Redis unreachable for three seconds (SIGSTOP, then SIGCONT): calls hang, then resume
    /// with leases that lapsed meanwhile (Redis's clock kept running).
    PauseRedis,
    /// MySQL refuses new connections for three seconds (`max_connections` at its floor, held
    /// full) while
    /// shoal's copy connections and binlog stream are killed, so that they must reconnect.
    /// Server-wide: only for campaigns on a private server (`make chaos`).
    RefuseConnections,
    /// Worker–coordinator traffic delayed 0.3–1.5 s each way for four seconds (every worker
    /// reaches its coordinator through a [`DelayProxy`]): heartbeats and reports arrive late,
    /// leases lapse in transit.
    DelayNetwork,
}

impl Fault {
    /// Every fault class, each claimed survivable.
    pub const ALL: [Fault; 10] = [
        Fault::KillWorker,
        Fault::KillOwner,
        Fault::StopWorker,
        Fault::StopOwner,
        Fault::KillCopyConnections,
        Fault::KillBinlogStream,
        Fault::RestartRedis,
        Fault::RefuseConnections,
        Fault::DelayNetwork,
        Fault::PauseRedis,
    ];

    /// The classes that touch nothing server-wide: safe on a server other tests share (the
    /// short campaign in `make test` draws from these; `DelayNetwork` and `PauseRedis` are left
    /// to `make chaos` so that the short campaign's seeded sequence stays as it was measured).
    pub const SHARED_SERVER: [Fault; 7] = [
        Fault::KillWorker,
        Fault::KillOwner,
        Fault::StopWorker,
        Fault::StopOwner,
        Fault::KillCopyConnections,
        Fault::KillBinlogStream,
        Fault::RestartRedis,
    ];
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One injected fault.
#[derive(Debug, Clone)]
pub struct Injected {
    /// What.
    pub fault: Fault,
    /// The migration's state when it was injected.
    pub state: String,
    /// What the injection touched (or why it touched nothing).
    pub detail: String,
    /// Seconds after the run started.
    pub at: f64,
    /// Seconds until the migration made progress again (more rows copied, a later state, or
    /// its end); `None` if it never did.
    pub recovered_after: Option<f64>,
    /// Chunks copied again between this fault and the next (or the end): chunk tasks that
    /// came back to an owner plus chunks a resuming owner recopied.
    pub chunks_redone: u64,
}

/// How one run ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The run's seed.
    pub seed: u64,
    /// Faults injected, in order.
    pub faults: Vec<Injected>,
    /// "completed", "failed: …" or "stuck".
    pub outcome: String,
    /// Rows differing from the writer's ledger (0 = exact).
    pub differences: usize,
    /// shoal tables left behind after the run.
    pub leftovers: Vec<String>,
    /// Seconds from submit to the end.
    pub seconds: f64,
    /// Coverage: takeovers, chunks fenced, chunks returned, writer's deletes and key moves.
    pub coverage: BTreeMap<&'static str, u64>,
}

impl RunReport {
    /// Completed, exact and clean.
    pub fn survived(&self) -> bool {
        self.outcome == "completed" && self.differences == 0 && self.leftovers.is_empty()
    }
}

/// The fleet of one run.
struct Fleet {
    options: CoordinatorOptions,
    coordinators: Vec<(String, CoordinatorProcess)>,
    /// One per coordinator, at the same index: the workers' way to it.
    proxies: Vec<DelayProxy>,
    workers: Vec<ShoalProcess>,
    env: Vec<(&'static str, String)>,
    spawned_workers: u32,
}

impl Fleet {
    async fn start(
        shoal_dsn: &str,
        redis_url: &str,
        namespace: &str,
        late_phases: bool,
    ) -> anyhow::Result<Self> {
        let env = vec![("SHOAL_TARGET_LOCAL", shoal_dsn.to_owned())];
        let mut coordinator_env = env.clone();
        if late_phases {
            // Stretch the short phases so that a fault can land in them: 1.5 s entering
            // APPLY_CHANGESET, before each CHECKSUM pass and entering CUT_OVER, and 0.3 s in
            // CUT_OVER with the table locked.
            coordinator_env.push((
                "SHOAL_FAILPOINTS",
                "apply.before=sleep(1500);checksum.before=sleep(1500);\
                 cutover.before=sleep(1500);cutover.locked=sleep(300)"
                    .to_owned(),
            ));
        }
        let ttl = format!("{}ms", TTL.as_millis());
        let options = CoordinatorOptions {
            redis_url: Some(redis_url.to_owned()),
            namespace: namespace.to_owned(),
            worker_ttl: TTL,
            env: coordinator_env,
            args: vec![
                "--owner-ttl".to_owned(),
                ttl.clone(),
                "--lease-ttl".to_owned(),
                ttl,
                "--checkpoint-interval".to_owned(),
                "2s".to_owned(),
            ],
        };
        let mut coordinators = Vec::new();
        let mut proxies = Vec::new();
        for name in ["c1", "c2"] {
            let coordinator = CoordinatorProcess::start(name, &options).await?;
            let address = coordinator
                .url
                .trim_start_matches("http://")
                .parse()
                .context("coordinator address")?;
            proxies.push(DelayProxy::start(address).await?);
            coordinators.push((name.to_owned(), coordinator));
        }
        let mut fleet = Self {
            options,
            coordinators,
            proxies,
            workers: Vec::new(),
            env,
            spawned_workers: 0,
        };
        for _ in 0..3 {
            fleet.add_worker()?;
        }
        Ok(fleet)
    }

    /// A new worker, alternating between the coordinators (through their proxies).
    fn add_worker(&mut self) -> anyhow::Result<()> {
        self.spawned_workers += 1;
        let index = self.spawned_workers as usize % self.coordinators.len();
        let url = self.proxies[index].url();
        let id = format!("w{}", self.spawned_workers);
        let mut env = self.env.clone();
        env.push((
            "SHOAL_FAILPOINTS",
            "copy.server_sleep=sleep(100)".to_owned(),
        ));
        self.workers.push(start_worker(&id, &url, 2, &env)?);
        Ok(())
    }

    async fn status(&self, id: &str) -> Option<v1::MigrationStatus> {
        for (_, coordinator) in &self.coordinators {
            if let Ok(status) = coordinator.status(id).await {
                return Some(status);
            }
        }
        None
    }

    /// Restarts coordinator `index` at its own addresses (workers keep their URL).
    async fn restart_coordinator(&mut self, index: usize) -> anyhow::Result<()> {
        let (name, old) = &self.coordinators[index];
        let restarted = CoordinatorProcess::start_at(
            name,
            &self.options,
            Some((old.url.clone(), old.http_address.clone())),
        )
        .await?;
        self.coordinators[index].1 = restarted;
        Ok(())
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for (_, coordinator) in &self.coordinators {
            all.push_str(&coordinator.process.logs());
        }
        for worker in &self.workers {
            all.push_str(&worker.logs());
        }
        all
    }
}

/// The coordinator id holding the migration's owner lease in Redis.
async fn owner_of(redis_url: &str, namespace: &str, id: &str) -> Option<String> {
    let client = redis::Client::open(redis_url).ok()?;
    let mut connection = client.get_multiplexed_async_connection().await.ok()?;
    redis::cmd("GET")
        .arg(format!("{namespace}:m:{id}:owner"))
        .query_async(&mut connection)
        .await
        .ok()
        .flatten()
}

/// `KILL`s the other connections of `database` (never another test's: the server may be shared)
/// that the processlist condition `which` selects; returns how many.
async fn kill_connections(database: &TestDatabase, which: &str) -> u64 {
    let Ok(mut connection) = database.connect().await else {
        return 0;
    };
    kill_on(&mut connection, database, which).await
}

/// [`kill_connections`] from an open connection.
async fn kill_on(connection: &mut mysql_async::Conn, database: &TestDatabase, which: &str) -> u64 {
    let ids: Vec<u64> = connection
        .exec(
            format!(
                "SELECT ID FROM {} \
                 WHERE ID <> CONNECTION_ID() AND DB = ? AND ({which})",
                scenario::processlist()
            ),
            (&database.name,),
        )
        .await
        .unwrap_or_default();
    let mut killed = 0;
    for id in ids {
        if connection.query_drop(format!("KILL {id}")).await.is_ok() {
            killed += 1;
        }
    }
    killed
}

/// Fills `max_connections` (at its floor of 10) with held connections, kills shoal's copy
/// connections and
/// binlog stream (they must reconnect and are refused), waits `window`, and restores it.
pub async fn refuse_connections(
    database: &TestDatabase,
    window: Duration,
) -> anyhow::Result<String> {
    let mut admin = database.connect().await?;
    let previous: u64 = admin
        .query_first("SELECT @@GLOBAL.max_connections")
        .await?
        .unwrap_or(500);
    // MariaDB's floor is 10: hold enough connections that every new one is over the limit
    // (accounts with SUPER or CONNECTION ADMIN, like these, are let in regardless).
    let mut fillers = Vec::new();
    for _ in 0..12 {
        fillers.push(database.connect().await?);
    }
    admin.query_drop("SET GLOBAL max_connections = 10").await?;
    let killed = kill_on(
        &mut admin,
        database,
        "INFO LIKE '%`\\_orders\\_new`%' OR INFO LIKE 'SELECT SLEEP(%' OR COMMAND = 'Binlog Dump'",
    )
    .await;
    tokio::time::sleep(window).await;
    admin
        .query_drop(format!("SET GLOBAL max_connections = {previous}"))
        .await?;
    drop(fillers);
    Ok(format!(
        "refused new connections for {window:?} after killing {killed} connection(s)"
    ))
}

/// Injects `fault`; returns what it touched.
async fn inject(
    fault: Fault,
    fleet: &mut Fleet,
    redis: &mut RedisServer,
    database: &TestDatabase,
    id: &str,
    random: &mut SplitMix,
) -> anyhow::Result<String> {
    let redis_url = redis.info.url();
    let namespace = fleet.options.namespace.clone();
    let owner_index = |fleet: &Fleet, owner: Option<String>| {
        owner.and_then(|owner| {
            fleet
                .coordinators
                .iter()
                .position(|(name, _)| *name == owner)
        })
    };
    Ok(match fault {
        Fault::KillWorker => {
            let index = random.below(fleet.workers.len() as u64) as usize;
            let mut worker = fleet.workers.remove(index);
            worker.signal(Signal::SIGKILL)?;
            worker.wait_exit(Duration::from_secs(10)).await?;
            fleet.add_worker()?;
            format!("killed {}", worker.name)
        }
        Fault::StopWorker => {
            let index = random.below(fleet.workers.len() as u64) as usize;
            let worker = &fleet.workers[index];
            worker.signal(Signal::SIGSTOP)?;
            tokio::time::sleep(TTL + Duration::from_secs(1)).await;
            worker.signal(Signal::SIGCONT)?;
            format!(
                "stopped {} for {:?}",
                worker.name,
                TTL + Duration::from_secs(1)
            )
        }
        Fault::KillOwner => {
            let owner = owner_of(&redis_url, &namespace, id).await;
            let Some(index) = owner_index(fleet, owner.clone()) else {
                return Ok(format!("no owner to kill ({owner:?})"));
            };
            let process = &mut fleet.coordinators[index].1.process;
            process.signal(Signal::SIGKILL)?;
            process.wait_exit(Duration::from_secs(10)).await?;
            fleet.restart_coordinator(index).await?;
            format!("killed and restarted {}", fleet.coordinators[index].0)
        }
        Fault::StopOwner => {
            let owner = owner_of(&redis_url, &namespace, id).await;
            let Some(index) = owner_index(fleet, owner.clone()) else {
                return Ok(format!("no owner to stop ({owner:?})"));
            };
            let process = &fleet.coordinators[index].1.process;
            process.signal(Signal::SIGSTOP)?;
            tokio::time::sleep(TTL + Duration::from_millis(1_500)).await;
            process.signal(Signal::SIGCONT)?;
            format!(
                "stopped {} past its owner lease",
                fleet.coordinators[index].0
            )
        }
        Fault::KillCopyConnections => {
            // Copies and flushes write the shadow table; the copies' failpoint sleeps inside
            // their fenced transaction.
            let killed = kill_connections(
                database,
                "INFO LIKE '%`\\_orders\\_new`%' OR INFO LIKE 'SELECT SLEEP(%'",
            )
            .await;
            format!("killed {killed} connection(s) writing the shadow table")
        }
        Fault::KillBinlogStream => {
            let killed = kill_connections(database, "COMMAND = 'Binlog Dump'").await;
            format!("killed {killed} binlog stream(s)")
        }
        Fault::RestartRedis => {
            redis.restart()?;
            "Redis restarted empty".to_owned()
        }
        Fault::PauseRedis => {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(redis.info.pid)?);
            let window = Duration::from_secs(3);
            nix::sys::signal::kill(pid, Signal::SIGSTOP)?;
            tokio::time::sleep(window).await;
            nix::sys::signal::kill(pid, Signal::SIGCONT)?;
            format!("Redis stopped for {window:?}")
        }
        Fault::RefuseConnections => refuse_connections(database, Duration::from_secs(3)).await?,
        Fault::DelayNetwork => {
            let delay = Duration::from_millis(300 + random.below(1_200));
            let window = Duration::from_secs(4);
            for proxy in &fleet.proxies {
                proxy.set_delay(delay);
            }
            tokio::time::sleep(window).await;
            for proxy in &fleet.proxies {
                proxy.set_delay(Duration::ZERO);
            }
            format!("delayed worker-coordinator traffic {delay:?} each way for {window:?}")
        }
    })
}

/// What a run injects, and how.
#[derive(Debug, Clone, Copy)]
pub struct Plan<'a> {
    /// The fault classes drawn from.
    pub classes: &'a [Fault],
    /// The fleet's DSN (default: the database's own, whose account the harness also uses for
    /// its faults and checks).
    pub shoal_dsn: Option<&'a str>,
    /// Aim the run's last fault at a later phase (the random schedule otherwise lands in
    /// `COPY_ROWS`): the short phases are stretched with failpoints and the migration waits on
    /// the sentinel (`--defer-cutover`) until the runner drops it.
    pub late: Option<Late>,
}

/// The last fault of a run: which class, aimed at which phase.
#[derive(Debug, Clone, Copy)]
pub struct Late {
    /// `ApplyChangeset`, `Checksum`, `WaitingOnSentinelTable` or `CutOver`.
    pub phase: v1::State,
    /// The class injected there.
    pub fault: Fault,
}

impl Late {
    /// The phases a late fault is aimed at, in lifecycle order.
    pub const PHASES: [v1::State; 4] = [
        v1::State::ApplyChangeset,
        v1::State::Checksum,
        v1::State::WaitingOnSentinelTable,
        v1::State::CutOver,
    ];

    /// Run `index` of a campaign: phases in turn, classes in turn, so that ten runs put a
    /// late fault in every phase and (with ten classes) every class in a late phase.
    pub fn for_run(index: usize, classes: &[Fault]) -> Self {
        Self {
            phase: Self::PHASES[index % Self::PHASES.len()],
            fault: classes[index % classes.len()],
        }
    }
}

/// Releases a migration waiting on the sentinel by dropping `_shoal_sentinel` (what an
/// operator does; a resumed owner creates it again and waits again).
async fn drop_sentinel(database: &TestDatabase) {
    if let Ok(mut connection) = database.connect().await {
        let _ = connection
            .query_drop("DROP TABLE IF EXISTS `_shoal_sentinel`")
            .await;
    }
}

/// Keeps `hot` equal to the key ranges of the migration's leased chunk tasks (read from the
/// task store in Redis every 50 ms) until `stop`: the writer aims half its operations there.
async fn track_chunks_in_flight(
    redis_url: String,
    namespace: String,
    id: String,
    hot: writer::HotRanges,
    stop: tokio_util::sync::CancellationToken,
) {
    let Ok(client) = redis::Client::open(redis_url) else {
        return;
    };
    let bound = |key: Option<&shoal_common::key::Key>| match key.map(|key| key.0.as_slice()) {
        Some([shoal_common::key::KeyPart::Int(value)]) => Some(*value),
        None => None,
        Some(_) => Some(0),
    };
    while !stop.is_cancelled() {
        let mut ranges = Vec::new();
        if let Ok(mut connection) = client.get_multiplexed_async_connection().await {
            let ids: Vec<String> = redis::cmd("SMEMBERS")
                .arg(format!("{namespace}:m:{id}:tasks"))
                .query_async(&mut connection)
                .await
                .unwrap_or_default();
            for task in ids {
                let fields: (Option<String>, Option<String>) = redis::cmd("HMGET")
                    .arg(format!("{namespace}:task:{task}"))
                    .arg("state")
                    .arg("spec")
                    .query_async(&mut connection)
                    .await
                    .unwrap_or_default();
                if let (Some(state), Some(spec)) = fields
                    && state == "leased"
                    && let Ok(spec) = serde_json::from_str::<shoal_common::task::TaskSpec>(&spec)
                {
                    ranges.push((
                        bound(spec.range.lower.as_ref()).unwrap_or(i64::MIN),
                        bound(spec.range.upper.as_ref()).unwrap_or(i64::MAX),
                    ));
                }
            }
        }
        if let Ok(mut hot) = hot.lock() {
            *hot = ranges;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs one migration under the writer with `faults` faults drawn as `plan` says; `run_seed`
/// picks them.
pub async fn run_once(
    database: &TestDatabase,
    redis: &mut RedisServer,
    rows: u64,
    faults: u32,
    run_seed: u64,
    plan: &Plan<'_>,
) -> anyhow::Result<RunReport> {
    let classes = plan.classes;
    let shoal_dsn = plan.shoal_dsn;
    let mut random = SplitMix::new(run_seed);
    let mut connection = database.connect().await?;
    writer::seed(&mut connection, "orders", rows).await?;
    let ledger = writer::read_table(&mut connection, "orders").await?;
    let namespace = crate::servers::unique_name("chaos");
    let mut fleet = Fleet::start(
        shoal_dsn.unwrap_or(&database.dsn),
        &redis.info.url(),
        &namespace,
        plan.late.is_some(),
    )
    .await?;
    let writer = Writer::start(
        &database.dsn,
        "orders",
        ledger,
        run_seed,
        Duration::from_micros(500),
    )
    .await?;
    let started = Instant::now();
    // Two chunks at a time, 1,000 keys each, every copy held open 100 ms longer (failpoint): the
    // copy lasts long enough for the faults, with many chunk boundaries for them to land on.
    let mut options = vec!["--threads", "2", "--target-chunk-time", "0"];
    if plan.late.is_some() {
        options.push("--defer-cutover");
    }
    let id = scenario::submit(&fleet.coordinators[0].1.url, &options).await;
    let stop_sampling = tokio_util::sync::CancellationToken::new();
    let tracker = tokio::spawn(track_chunks_in_flight(
        redis.info.url(),
        namespace.clone(),
        id.clone(),
        std::sync::Arc::clone(&writer.hot),
        stop_sampling.clone(),
    ));
    let sampler = tokio::spawn(sample_progress(
        fleet
            .coordinators
            .iter()
            .map(|(_, coordinator)| coordinator.url.clone())
            .collect(),
        id.clone(),
        started,
        stop_sampling.clone(),
    ));
    let mut injected = Vec::new();
    let mut outcome = None;
    for index in 0..faults {
        let late = plan.late.filter(|_| index + 1 == faults);
        if let Some(late) = late {
            let target = late.phase as i32;
            // Until the migration is at or past the target phase (or has ended), releasing
            // the sentinel when it waits there and the target lies beyond.
            let _ = crate::wait::until(
                "the target phase",
                STUCK_AFTER,
                Duration::from_millis(20),
                || async {
                    let status = fleet.status(&id).await?;
                    if status.state >= target || status.outcome != v1::Outcome::Running as i32 {
                        return Some(status);
                    }
                    if status.state == v1::State::WaitingOnSentinelTable as i32 {
                        drop_sentinel(database).await;
                    }
                    None
                },
            )
            .await;
        } else {
            let delay = Duration::from_millis(200 + random.below(1_800));
            tokio::time::sleep(delay).await;
        }
        let status = fleet.status(&id).await;
        if let Some(status) = &status
            && status.outcome != v1::Outcome::Running as i32
        {
            outcome = Some(status.clone());
            break;
        }
        let state = status.map_or_else(
            || "unknown".to_owned(),
            |status| {
                v1::State::try_from(status.state)
                    .map(|state| state.as_str_name().to_owned())
                    .unwrap_or_default()
            },
        );
        let fault = match late {
            Some(late) => late.fault,
            None => classes[random.below(classes.len() as u64) as usize],
        };
        let at = started.elapsed().as_secs_f64();
        let detail = inject(fault, &mut fleet, redis, database, &id, &mut random).await?;
        eprintln!("chaos: {fault} in {state}: {detail}");
        injected.push(Injected {
            fault,
            state,
            detail,
            at,
            recovered_after: None,
            chunks_redone: 0,
        });
    }
    // Wait for the end; a run that has not ended STUCK_AFTER its last fault is stuck.
    let outcome = match outcome {
        Some(status) => Some(status),
        None => crate::wait::until(
            "the migration to end",
            STUCK_AFTER,
            Duration::from_millis(200),
            || async {
                let status = fleet.status(&id).await?;
                if status.state == v1::State::WaitingOnSentinelTable as i32 {
                    drop_sentinel(database).await;
                }
                Some(status).filter(|status| status.outcome != v1::Outcome::Running as i32)
            },
        )
        .await
        .ok()
        .map(|(status, _)| status),
    };
    let seconds = started.elapsed().as_secs_f64();
    stop_sampling.cancel();
    let samples = sampler.await.unwrap_or_default();
    let _ = tracker.await;
    let ends: Vec<f64> = injected
        .iter()
        .skip(1)
        .map(|fault| fault.at)
        .chain([f64::INFINITY])
        .collect();
    for (fault, end) in injected.iter_mut().zip(ends) {
        fault.recovered_after = recovery(&samples, fault.at);
        let redone = |until: f64| {
            per_owner_total(
                samples.iter().filter(|sample| sample.at <= until),
                |sample| sample.chunks_returned + sample.chunks_recopied,
            )
        };
        fault.chunks_redone = redone(end).saturating_sub(redone(fault.at));
    }
    let stats = std::sync::Arc::clone(&writer.stats);
    let expected = writer.stop().await?;
    // A fresh connection: the first one idled through every fault of the run (its read failed
    // once, "bytes remaining on stream", in a full `make test`; not diagnosed).
    let mut connection = database.connect().await?;
    let actual = writer::read_table(&mut connection, "orders").await?;
    let differences = writer::differences(&expected, &actual).len();
    let tables = scenario::tables(&mut connection, &database.name).await;
    let leftovers: Vec<String> = tables
        .into_iter()
        .filter(|name| name.starts_with('_'))
        .collect();
    let outcome = match outcome {
        None => "stuck".to_owned(),
        Some(status) if status.outcome == v1::Outcome::Completed as i32 => {
            let columns = scenario::columns(&mut connection, &database.name, "orders").await;
            if columns.iter().any(|column| column == "note") {
                "completed".to_owned()
            } else {
                "completed without the new column".to_owned()
            }
        }
        Some(status) => format!("failed: {}", status.message),
    };
    let logs = fleet.logs();
    let count = |needle: &str| logs.matches(needle).count() as u64;
    let coverage = BTreeMap::from([
        ("takeovers", count("taking the migration over")),
        ("resumes", count("resuming from the checkpoint")),
        ("chunks fenced", count("chunk fenced")),
        ("chunks returned", count("chunk returned; fencing")),
        (
            "chunks recopied by resumes",
            logs.split("chunks_to_recopy=")
                .skip(1)
                .filter_map(|rest| {
                    rest.split(|c: char| !c.is_ascii_digit())
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .sum(),
        ),
        ("stale completions refused", count("completion refused")),
        ("checksum barriers", count("checksum barrier")),
        ("checksum mismatches repaired", count("checksum mismatch")),
        (
            "copies that skipped rows on a unique-key conflict",
            count("rows skipped on a unique-key conflict"),
        ),
        (
            "cut-over attempts retried",
            count("cut-over attempt failed"),
        ),
        (
            "changes deferred then applied",
            per_owner_total(&samples, |sample| sample.deferred),
        ),
        (
            "writer deletes",
            stats.deletes.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "writer deletes in chunks in flight",
            stats
                .deletes_in_flight
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "writer key moves",
            stats.key_moves.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "writer key moves from or into chunks in flight",
            stats
                .key_moves_in_flight
                .load(std::sync::atomic::Ordering::Relaxed),
        ),
    ]);
    // A mismatch is repaired by design (rows a copy skipped on a unique-key conflict are
    // settled by their deferred changes or the checksum); show which ranges, to tell.
    for line in logs
        .lines()
        .filter(|line| line.contains("checksum mismatch"))
    {
        eprintln!("chaos: {line}");
    }
    if outcome != "completed" || differences > 0 {
        eprintln!("chaos: run {run_seed:#x} ended {outcome}; logs:\n{logs}");
    }
    Ok(RunReport {
        seed: run_seed,
        faults: injected,
        outcome,
        differences,
        leftovers,
        seconds,
        coverage,
    })
}

/// One status sample.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    /// Seconds since the run started.
    at: f64,
    /// `v1::State`.
    state: i32,
    rows_copied: u64,
    ended: bool,
    /// The owner epoch of the coordinator answering for the migration.
    owner_epoch: u64,
    /// The owner's own counters (each new owner starts from 0): changes deferred then
    /// applied, chunks returned, chunks recopied by its resume.
    deferred: u64,
    chunks_returned: u64,
    chunks_recopied: u64,
}

/// The total over owners of a counter each owner keeps from 0: its largest value per owner
/// epoch, summed.
fn per_owner_total<'a>(
    samples: impl IntoIterator<Item = &'a Sample>,
    counter: impl Fn(&Sample) -> u64,
) -> u64 {
    let mut largest: BTreeMap<u64, u64> = BTreeMap::new();
    for sample in samples {
        let value = largest.entry(sample.owner_epoch).or_default();
        *value = (*value).max(counter(sample));
    }
    largest.values().sum()
}

/// Samples the migration's status from any coordinator every 100 ms until `stop`.
async fn sample_progress(
    urls: Vec<String>,
    id: String,
    started: Instant,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    while !stop.is_cancelled() {
        for url in &urls {
            let Ok(mut client) =
                v1::migration_service_client::MigrationServiceClient::connect(url.clone()).await
            else {
                continue;
            };
            let request = v1::GetMigrationRequest {
                migration_id: id.clone(),
            };
            if let Ok(response) = client.get_migration(request).await
                && let Some(status) = response.into_inner().status
            {
                let number = |key: &str| {
                    status
                        .metadata
                        .get(key)
                        .and_then(|value| value.parse().ok())
                        .unwrap_or(0)
                };
                samples.push(Sample {
                    at: started.elapsed().as_secs_f64(),
                    state: status.state,
                    rows_copied: status.progress.map_or(0, |progress| progress.rows_copied),
                    ended: status.outcome != v1::Outcome::Running as i32,
                    owner_epoch: number("owner_epoch"),
                    deferred: number("changes_deferred"),
                    chunks_returned: number("chunks_returned"),
                    chunks_recopied: number("chunks_recopied"),
                });
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    samples
}

/// Seconds from `at` until a sample shows progress beyond the last sample before `at`.
fn recovery(samples: &[Sample], at: f64) -> Option<f64> {
    let before = samples.iter().rev().find(|sample| sample.at <= at)?;
    samples
        .iter()
        .find(|sample| {
            sample.at > at
                && (sample.ended
                    || sample.state > before.state
                    || sample.rows_copied > before.rows_copied)
        })
        .map(|sample| sample.at - at)
}

/// Prints a campaign's reports as markdown; returns whether every run survived.
pub fn summarize(reports: &[RunReport]) -> bool {
    println!("| run seed | faults (state) | outcome | differences | leftovers | seconds |");
    println!("|---|---|---|---:|---|---:|");
    let mut by_class: BTreeMap<Fault, (u32, u32, Vec<f64>, u64)> = BTreeMap::new();
    let mut by_phase: BTreeMap<&str, u32> = BTreeMap::new();
    for report in reports {
        let faults: Vec<String> = report
            .faults
            .iter()
            .map(|injected| {
                let recovered = injected
                    .recovered_after
                    .map_or_else(|| "no progress after".to_owned(), |s| format!("{s:.1} s"));
                format!(
                    "{} ({}; {recovered}, {} chunk(s) redone)",
                    injected.fault, injected.state, injected.chunks_redone
                )
            })
            .collect();
        println!(
            "| {:#x} | {} | {} | {} | {} | {:.1} |",
            report.seed,
            faults.join(", "),
            report.outcome,
            report.differences,
            report.leftovers.join(" "),
            report.seconds
        );
        for injected in &report.faults {
            let entry = by_class.entry(injected.fault).or_default();
            entry.0 += 1;
            entry.1 += u32::from(report.survived());
            entry.2.extend(injected.recovered_after);
            entry.3 += injected.chunks_redone;
            *by_phase.entry(&injected.state).or_default() += 1;
        }
    }
    println!(
        "\n| fault class | injected | in runs that completed exactly | progress again after (median / max, s) | chunks redone after it |"
    );
    println!("|---|---:|---:|---|---:|");
    for (fault, (injected, survived, recoveries, redone)) in &mut by_class {
        recoveries.sort_by(f64::total_cmp);
        let recovery = match (recoveries.get(recoveries.len() / 2), recoveries.last()) {
            (Some(median), Some(max)) => format!("{median:.1} / {max:.1}"),
            _ => "never".to_owned(),
        };
        println!("| {fault} | {injected} | {survived} | {recovery} | {redone} |");
    }
    let phases: Vec<String> = by_phase
        .iter()
        .map(|(phase, count)| format!("{phase} {count}"))
        .collect();
    println!("\nFaults by phase: {}", phases.join(", "));
    let mut coverage: BTreeMap<&str, u64> = BTreeMap::new();
    for report in reports {
        for (name, value) in &report.coverage {
            *coverage.entry(name).or_default() += value;
        }
    }
    let coverage: Vec<String> = coverage
        .iter()
        .map(|(name, value)| format!("{name} {value}"))
        .collect();
    println!("\nCoverage: {}", coverage.join(", "));
    let total: usize = reports.iter().map(|report| report.faults.len()).sum();
    let survived = reports.iter().filter(|report| report.survived()).count();
    println!(
        "\n{} run(s), {total} fault(s), {survived} completed exactly with nothing left behind",
        reports.len()
    );
    survived == reports.len()
}

/// Seeds of a campaign's runs, derived from the campaign seed.
pub fn run_seeds(seed: u64, runs: u32) -> Vec<u64> {
    let mut random = SplitMix::new(seed);
    (0..runs).map(|_| random.next_u64()).collect()
}

#[cfg(test)]
mod tests {
    use super::{Fault, Late, Sample, per_owner_total, recovery};

    #[test]
    fn recovery_is_the_time_to_the_first_sample_beyond_the_last_one_before_the_fault() {
        let samples = [
            (1.0, 2, 100, false),
            (2.0, 2, 200, false),
            (3.0, 2, 200, false),
            (4.5, 2, 200, false),
            (5.0, 2, 300, false),
            (6.0, 3, 300, false),
            (7.0, 3, 300, true),
        ]
        .map(|(at, state, rows_copied, ended)| Sample {
            at,
            state,
            rows_copied,
            ended,
            ..Sample::default()
        });
        assert_eq!(recovery(&samples, 2.5), Some(2.5), "rows moved at 5.0");
        assert_eq!(recovery(&samples, 5.5), Some(0.5), "a later state at 6.0");
        assert_eq!(recovery(&samples, 6.5), Some(0.5), "the end at 7.0");
        assert_eq!(recovery(&samples, 0.5), None, "no sample before the fault");
        assert_eq!(recovery(&samples[..4], 2.5), None, "never moved again");
    }

    #[test]
    fn a_counter_that_starts_over_with_each_owner_is_summed_across_owners() {
        let samples = [(1, 0), (1, 3), (1, 7), (2, 2), (2, 5), (3, 0), (3, 9)].map(
            |(owner_epoch, deferred)| Sample {
                owner_epoch,
                deferred,
                ..Sample::default()
            },
        );
        assert_eq!(
            per_owner_total(&samples, |sample| sample.deferred),
            7 + 5 + 9
        );
        assert_eq!(per_owner_total(&samples[..0], |sample| sample.deferred), 0);
    }

    #[test]
    fn ten_runs_aim_a_late_fault_at_every_phase_and_every_class() {
        let late: Vec<Late> = (0..10).map(|run| Late::for_run(run, &Fault::ALL)).collect();
        for phase in Late::PHASES {
            assert!(late.iter().any(|late| late.phase == phase), "{phase:?}");
        }
        for fault in Fault::ALL {
            assert!(late.iter().any(|late| late.fault == fault), "{fault}");
        }
    }
}
