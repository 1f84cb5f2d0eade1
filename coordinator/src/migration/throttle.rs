//! The throttle monitor (design "Throttling"): while the copy runs, it writes a heartbeat row on
//! the primary every half second, reads it back on each replica (the lag is this process's clock
//! now minus the time the replica's row was written: one clock, no skew, and unlike
//! `Seconds_Behind_Master` it keeps growing while the replica's SQL thread is stopped), reads
//! the primary's `Threads_running` and InnoDB history list length when they are limited, and
//! publishes the verdict of [`shoal_common::throttle::Throttle`]. The copy hands out no chunk
//! while the verdict holds; it starts held (fail closed) until the first round.
//!
//! With a latency limit, rounds come every [`PROBE_EVERY`] instead, each timing one probe commit
//! (an upsert of row 2 of the heartbeat table on a connection of its own, lock waits bounded to
//! a second); the heartbeat and the other readings still come every half second.

use std::time::{Duration, Instant};

use mysql_async::Conn;
use mysql_async::Pool;
use mysql_async::prelude::Queryable;
use shoal_common::throttle::{Limits, PROBE_EVERY, Readings, Throttle, Verdict};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

use super::Error;
use super::owner::Migration;

/// How often the monitor writes the heartbeat and takes readings.
const ROUND: Duration = Duration::from_millis(500);
/// Bound on one reading; a replica slower than this counts as unknown.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// `ER_LOCK_WAIT_TIMEOUT`.
const LOCK_WAIT_TIMEOUT: u16 = 1205;

/// A replica to watch: a label for messages (host:port, never the password) and its pool.
#[derive(Clone)]
pub struct Replica {
    /// The target name it was resolved from (fleet migrations; recorded in checkpoints).
    pub target: Option<String>,
    /// `host:port`.
    pub label: String,
    /// Connections to it.
    pub pool: Pool,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

impl Replica {
    /// A replica from its DSN (only the host and port are ever shown), and the target name it
    /// was resolved from.
    pub fn from_dsn(
        dsn: &str,
        target: Option<String>,
        lock_wait_timeout: Duration,
    ) -> Result<Self, Error> {
        let label = match shoal_mysql::dsn::opts(dsn) {
            Ok(opts) => format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port()),
            Err(_) => shoal_worker::session::redact_dsn(dsn),
        };
        let pool = shoal_worker::session::pool_for("replica", dsn, None, lock_wait_timeout, 2)?;
        Ok(Self {
            target,
            label,
            pool,
        })
    }
}

/// A running monitor: its verdicts, and a guard that stops it when dropped.
pub(super) struct Monitor {
    pub(super) verdict: watch::Receiver<Verdict>,
    _stop: DropGuard,
}

impl Migration {
    /// Whether any throttle check is on.
    fn throttled_at_all(&self) -> bool {
        let limits = &self.options.limits;
        !self.options.replicas.is_empty()
            || limits.max_threads_running > 0
            || limits.max_history_list_length > 0
            || limits.max_latency_percent > 0
    }

    /// Creates the heartbeat table when replicas are watched or latency is probed (`Initial`,
    /// and on resume if a previous owner had none).
    pub(super) async fn create_heartbeat(&self, connection: &mut Conn) -> Result<(), Error> {
        if self.options.replicas.is_empty() && self.options.limits.max_latency_percent == 0 {
            return Ok(());
        }
        connection
            .query_drop(format!(
                "CREATE TABLE IF NOT EXISTS {} (id TINYINT UNSIGNED NOT NULL PRIMARY KEY, \
                 sent_ms BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
                self.qualified(&shoal_common::names::heartbeat(&self.table))
            ))
            .await?;
        Ok(())
    }

    /// Starts the monitor for the copy, or `None` when nothing is limited.
    pub(super) fn start_throttle(&self) -> Option<Monitor> {
        self.throttled_at_all()
            .then(|| self.start_monitor(self.options.limits, self.options.replicas.clone()))
    }

    /// Starts a monitor of the latency gate alone (the checksum's pacing), or `None` when
    /// latency is not limited.
    pub(super) fn start_latency_gate(&self) -> Option<Monitor> {
        let percent = self.options.limits.max_latency_percent;
        (percent > 0).then(|| {
            let limits = Limits {
                max_replica_lag: Duration::ZERO,
                unknown_lag_abort_after: Duration::ZERO,
                max_threads_running: 0,
                max_history_list_length: 0,
                max_latency_percent: percent,
                nice_percent: 0,
            };
            self.start_monitor(limits, Vec::new())
        })
    }

    fn start_monitor(&self, limits: Limits, replicas: Vec<Replica>) -> Monitor {
        let (sender, verdict) = watch::channel(Verdict::Hold(
            "waiting for the first throttle reading".to_owned(),
        ));
        let stop = CancellationToken::new();
        let round = Round {
            primary: self.pool.clone(),
            replicas,
            heartbeat: self.qualified(&shoal_common::names::heartbeat(&self.table)),
            upsert: format!(
                "INSERT INTO {} (id, sent_ms) VALUES (?, ?) \
                 ON DUPLICATE KEY UPDATE sent_ms = VALUES(sent_ms)",
                self.qualified(&shoal_common::names::heartbeat(&self.table))
            ),
            limits,
            probe: None,
            cached: Readings::default(),
        };
        tokio::spawn(run(round, sender, stop.clone()));
        Monitor {
            verdict,
            _stop: stop.drop_guard(),
        }
    }

    /// Publishes the reason the copy is held (or that it no longer is), logging as [`HoldLog`]
    /// says.
    pub(super) fn publish_throttled(&self, reason: Option<&str>, log: &mut HoldLog) {
        if self.progress.borrow().throttled.as_deref() == reason {
            return;
        }
        let id = &self.options.id;
        let now = Instant::now();
        match reason {
            Some(reason) => {
                let repeated = log.last_logged.as_ref().is_some_and(|(at, logged)| {
                    logged == reason && now.duration_since(*at) < QUIET_REPEATS_FOR
                });
                if repeated {
                    debug!(migration_id = %id, reason, "copy throttled");
                } else {
                    info!(migration_id = %id, reason, "copy throttled");
                    log.last_logged = Some((now, reason.to_owned()));
                }
                log.held_since.get_or_insert(now);
            }
            None => {
                let held = log.held_since.take().map(|since| now.duration_since(since));
                if held.is_some_and(|held| held >= LOGGED_HOLD) {
                    info!(migration_id = %id, "copy no longer throttled");
                } else {
                    debug!(migration_id = %id, "copy no longer throttled");
                }
            }
        }
        self.progress
            .send_modify(|progress| progress.throttled = reason.map(str::to_owned));
    }
}

/// A hold logged at info is logged again at info only after this long (with the same reason).
const QUIET_REPEATS_FOR: Duration = Duration::from_secs(30);
/// A release is logged at info when its hold lasted this long.
const LOGGED_HOLD: Duration = Duration::from_secs(1);

/// What the copy loop remembers to keep throttle logs readable: the latency gate holds and
/// releases the copy several times a second, which at info level would bury everything else.
#[derive(Debug, Default)]
pub(super) struct HoldLog {
    held_since: Option<Instant>,
    last_logged: Option<(Instant, String)>,
}

/// What one round reads and writes.
struct Round {
    primary: Pool,
    replicas: Vec<Replica>,
    heartbeat: String,
    /// Writes this process's clock into a row of the heartbeat table: row 1 for the replicas,
    /// row 2 for the latency probe (built once; the probe runs ten times a second).
    upsert: String,
    limits: Limits,
    /// The latency probe's own connection.
    probe: Option<Conn>,
    /// The latest heartbeat-round readings, judged again between them.
    cached: Readings,
}

async fn run(mut round: Round, sender: watch::Sender<Verdict>, stop: CancellationToken) {
    let mut throttle = Throttle::new(round.limits);
    let probing = round.limits.max_latency_percent > 0;
    let every = if probing { PROBE_EVERY } else { ROUND };
    let rounds_per_beat = (ROUND.as_millis() / every.as_millis()).max(1);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for count in 0u128.. {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if count % rounds_per_beat == 0 {
            round.cached = round.read().await;
        }
        let mut readings = round.cached.clone();
        if probing {
            readings.probe = round.probe().await;
        }
        let verdict = throttle.judge(&readings, crate::api::unix_millis_now());
        sender.send_if_modified(|current| {
            let changed = *current != verdict;
            *current = verdict;
            changed
        });
    }
}

impl Round {
    async fn read(&self) -> Readings {
        if !self.replicas.is_empty()
            && let Err(error) = self.beat().await
        {
            // The replicas' lag then grows until the copy holds: failing closed.
            warn!(%error, "writing the replica-lag heartbeat failed");
        }
        let mut readings = Readings::default();
        let now_ms = crate::api::unix_millis_now();
        for replica in &self.replicas {
            let sent = tokio::time::timeout(READ_TIMEOUT, async {
                let mut connection = replica.pool.get_conn().await?;
                connection
                    .exec_first::<u64, _, _>(
                        format!("SELECT sent_ms FROM {} WHERE id = 1", self.heartbeat),
                        (),
                    )
                    .await
            })
            .await;
            let lag = match sent {
                Ok(Ok(Some(sent_ms))) => {
                    Some(Duration::from_millis(now_ms.saturating_sub(sent_ms)))
                }
                Ok(Ok(None)) => None,
                Ok(Err(error)) => {
                    warn!(replica = %replica.label, %error, "reading the heartbeat failed");
                    None
                }
                Err(_) => None,
            };
            readings.replicas.push((replica.label.clone(), lag));
        }
        if self.limits.max_threads_running > 0 || self.limits.max_history_list_length > 0 {
            let load = tokio::time::timeout(READ_TIMEOUT, self.load()).await;
            if let Ok(Ok((running, history))) = load {
                readings.threads_running = running;
                readings.history_list_length = history;
            }
        }
        readings
    }

    /// Times one probe commit, or `None` when it failed or took over [`READ_TIMEOUT`] (its
    /// connection is then dropped and the next probe opens another).
    async fn probe(&mut self) -> Option<Duration> {
        let outcome = tokio::time::timeout(READ_TIMEOUT, async {
            let mut connection = match self.probe.take() {
                Some(connection) => connection,
                None => {
                    let mut connection = self.primary.get_conn().await?;
                    // A probe waiting on a row lock counts as slow; it need not wait long to.
                    connection
                        .query_drop("SET SESSION innodb_lock_wait_timeout = 1")
                        .await?;
                    connection
                }
            };
            let started = Instant::now();
            match connection
                .exec_drop(&self.upsert, (2u8, crate::api::unix_millis_now()))
                .await
            {
                Ok(()) => {}
                // A probe that gave up waiting on a row lock was slow, not failed: the
                // application's commits wait the same way.
                Err(mysql_async::Error::Server(error)) if error.code == LOCK_WAIT_TIMEOUT => {}
                Err(error) => return Err(error),
            }
            let latency = started.elapsed();
            self.probe = Some(connection);
            Ok::<_, mysql_async::Error>(latency)
        })
        .await;
        match outcome {
            Ok(Ok(latency)) => Some(latency),
            Ok(Err(error)) => {
                warn!(%error, "a latency probe failed");
                None
            }
            // The connection, mid-statement, was dropped with the future.
            Err(_) => None,
        }
    }

    /// Writes this process's clock into the heartbeat row.
    async fn beat(&self) -> Result<(), mysql_async::Error> {
        let mut connection = self.primary.get_conn().await?;
        connection
            .exec_drop(&self.upsert, (1u8, crate::api::unix_millis_now()))
            .await
    }

    /// The primary's `Threads_running` and history list length (`trx_rseg_history_len`, which
    /// both MariaDB and MySQL 8 count by default).
    async fn load(&self) -> Result<(Option<u64>, Option<u64>), mysql_async::Error> {
        let mut connection = self.primary.get_conn().await?;
        let running: Option<(String, u64)> = connection
            .query_first("SHOW GLOBAL STATUS LIKE 'Threads_running'")
            .await?;
        let history: Option<u64> = connection
            .query_first(
                "SELECT `COUNT` FROM information_schema.INNODB_METRICS \
                 WHERE NAME = 'trx_rseg_history_len'",
            )
            .await?;
        Ok((running.map(|(_, value)| value), history))
    }
}
