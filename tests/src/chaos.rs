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

use mysql_async::prelude::Queryable;
use nix::sys::signal::Signal;
use shoal_proto::v1;

use crate::processes::{CoordinatorOptions, CoordinatorProcess, ShoalProcess, start_worker};
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
    /// MySQL refuses new connections for three seconds (`max_connections` at its floor, held
    /// full) while
    /// shoal's copy connections and binlog stream are killed, so that they must reconnect.
    /// Server-wide: only for campaigns on a private server (`make chaos`).
    RefuseConnections,
}

impl Fault {
    /// Every fault class, each claimed survivable.
    pub const ALL: [Fault; 8] = [
        Fault::KillWorker,
        Fault::KillOwner,
        Fault::StopWorker,
        Fault::StopOwner,
        Fault::KillCopyConnections,
        Fault::KillBinlogStream,
        Fault::RestartRedis,
        Fault::RefuseConnections,
    ];

    /// The classes that touch nothing server-wide: safe on a server other tests share.
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
            // Stretch the short phases so that a fault can land in them: 1.5 s in CHECKSUM
            // before each pass, 0.3 s in CUT_OVER with the table locked.
            coordinator_env.push((
                "SHOAL_FAILPOINTS",
                "checksum.before=sleep(1500);cutover.locked=sleep(300)".to_owned(),
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
        for name in ["c1", "c2"] {
            coordinators.push((
                name.to_owned(),
                CoordinatorProcess::start(name, &options).await?,
            ));
        }
        let mut fleet = Self {
            options,
            coordinators,
            workers: Vec::new(),
            env,
            spawned_workers: 0,
        };
        for _ in 0..3 {
            fleet.add_worker()?;
        }
        Ok(fleet)
    }

    /// A new worker, alternating between the coordinators.
    fn add_worker(&mut self) -> anyhow::Result<()> {
        self.spawned_workers += 1;
        let index = self.spawned_workers as usize % self.coordinators.len();
        let url = self.coordinators[index].1.url.clone();
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
                "SELECT ID FROM information_schema.PROCESSLIST \
                 WHERE ID <> CONNECTION_ID() AND DB = ? AND ({which})"
            ),
            (&database.name,),
        )
        .await
        .unwrap_or_default();
    let mut killed = 0;
    for id in ids {
        if connection.exec_drop("KILL ?", (id,)).await.is_ok() {
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
        Fault::RefuseConnections => refuse_connections(database, Duration::from_secs(3)).await?,
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
    /// Stretch `CHECKSUM` and `CUT_OVER` with failpoints and aim the last fault of the run at
    /// one of them (the random schedule otherwise lands in `COPY_ROWS`).
    pub late_phases: bool,
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
        plan.late_phases,
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
    let id = scenario::submit(
        &fleet.coordinators[0].1.url,
        &["--threads", "2", "--target-chunk-time", "0"],
    )
    .await;
    let stop_sampling = tokio_util::sync::CancellationToken::new();
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
        let late = plan.late_phases && index + 1 == faults;
        if late {
            let target = if random.below(2) == 0 {
                v1::State::Checksum
            } else {
                v1::State::CutOver
            } as i32;
            // Until the migration is in the target phase (or has ended).
            let _ = crate::wait::until(
                "the target phase",
                STUCK_AFTER,
                Duration::from_millis(20),
                || async {
                    fleet.status(&id).await.filter(|status| {
                        status.state == target || status.outcome != v1::Outcome::Running as i32
                    })
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
        let fault = classes[random.below(classes.len() as u64) as usize];
        let at = started.elapsed().as_secs_f64();
        let detail = inject(fault, &mut fleet, redis, database, &id, &mut random).await?;
        eprintln!("chaos: {fault} in {state}: {detail}");
        injected.push(Injected {
            fault,
            state,
            detail,
            at,
            recovered_after: None,
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
                fleet
                    .status(&id)
                    .await
                    .filter(|status| status.outcome != v1::Outcome::Running as i32)
            },
        )
        .await
        .ok()
        .map(|(status, _)| status),
    };
    let seconds = started.elapsed().as_secs_f64();
    stop_sampling.cancel();
    let samples = sampler.await.unwrap_or_default();
    for fault in &mut injected {
        fault.recovered_after = recovery(&samples, fault.at);
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
        (
            "writer deletes",
            stats.deletes.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "writer key moves",
            stats.key_moves.load(std::sync::atomic::Ordering::Relaxed),
        ),
    ]);
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

/// One status sample: seconds since the run started, state, rows copied, and whether it ended.
type Sample = (f64, i32, u64, bool);

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
                samples.push((
                    started.elapsed().as_secs_f64(),
                    status.state,
                    status.progress.map_or(0, |progress| progress.rows_copied),
                    status.outcome != v1::Outcome::Running as i32,
                ));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    samples
}

/// Seconds from `at` until a sample shows progress beyond the last sample before `at`.
fn recovery(samples: &[Sample], at: f64) -> Option<f64> {
    let before = samples.iter().rev().find(|sample| sample.0 <= at)?;
    samples
        .iter()
        .find(|sample| sample.0 > at && (sample.3 || sample.1 > before.1 || sample.2 > before.2))
        .map(|sample| sample.0 - at)
}

/// Prints a campaign's reports as markdown; returns whether every run survived.
pub fn summarize(reports: &[RunReport]) -> bool {
    println!("| run seed | faults (state) | outcome | differences | leftovers | seconds |");
    println!("|---|---|---|---:|---|---:|");
    let mut by_class: BTreeMap<Fault, (u32, u32, Vec<f64>)> = BTreeMap::new();
    for report in reports {
        let faults: Vec<String> = report
            .faults
            .iter()
            .map(|injected| format!("{} ({})", injected.fault, injected.state))
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
        }
    }
    println!(
        "\n| fault class | injected | in runs that completed exactly | progress again after (median / max, s) |"
    );
    println!("|---|---:|---:|---|");
    for (fault, (injected, survived, recoveries)) in &mut by_class {
        recoveries.sort_by(f64::total_cmp);
        let recovery = match (recoveries.get(recoveries.len() / 2), recoveries.last()) {
            (Some(median), Some(max)) => format!("{median:.1} / {max:.1}"),
            _ => "never".to_owned(),
        };
        println!("| {fault} | {injected} | {survived} | {recovery} |");
    }
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
    use super::recovery;

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
        ];
        assert_eq!(recovery(&samples, 2.5), Some(2.5), "rows moved at 5.0");
        assert_eq!(recovery(&samples, 5.5), Some(0.5), "a later state at 6.0");
        assert_eq!(recovery(&samples, 6.5), Some(0.5), "the end at 7.0");
        assert_eq!(recovery(&samples, 0.5), None, "no sample before the fault");
        assert_eq!(recovery(&samples[..4], 2.5), None, "never moved again");
    }
}
