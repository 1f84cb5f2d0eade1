//! The throttle monitor (design "Throttling"): while the copy runs, it writes a heartbeat row on
//! the primary every half second, reads it back on each replica (the lag is this process's clock
//! now minus the time the replica's row was written: one clock, no skew, and unlike
//! `Seconds_Behind_Master` it keeps growing while the replica's SQL thread is stopped), reads
//! the primary's `Threads_running` and InnoDB history list length when they are limited, and
//! publishes the verdict of [`shoal_common::throttle::Throttle`]. The copy hands out no chunk
//! while the verdict holds; it starts held (fail closed) until the first round.

use std::time::Duration;

use mysql_async::Pool;
use mysql_async::prelude::Queryable;
use shoal_common::throttle::{Limits, Readings, Throttle, Verdict};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{info, warn};

use super::Error;
use super::owner::Migration;

/// How often the monitor writes the heartbeat and takes readings.
const ROUND: Duration = Duration::from_millis(500);
/// Bound on one reading; a replica slower than this counts as unknown.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

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
        let label = match mysql_async::Opts::from_url(dsn) {
            Ok(opts) => format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port()),
            Err(_) => shoal_worker::session::redact_dsn(dsn),
        };
        let pool = shoal_worker::session::pool_for("replica", dsn, lock_wait_timeout, 2)?;
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
    }

    /// Creates the heartbeat table when replicas are watched (`Initial`, and on resume if a
    /// previous owner had none).
    pub(super) async fn create_heartbeat(
        &self,
        connection: &mut mysql_async::Conn,
    ) -> Result<(), Error> {
        if self.options.replicas.is_empty() {
            return Ok(());
        }
        connection
            .query_drop(format!(
                "CREATE TABLE IF NOT EXISTS {} (id TINYINT UNSIGNED NOT NULL PRIMARY KEY, \
                 sent_ms BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB",
                self.qualified(&shoal_common::names::heartbeat(&self.table))
            ))
            .await?;
        Ok(())
    }

    /// Starts the monitor for the copy, or `None` when nothing is limited.
    pub(super) fn start_throttle(&self) -> Option<Monitor> {
        if !self.throttled_at_all() {
            return None;
        }
        let (sender, verdict) = watch::channel(Verdict::Hold(
            "waiting for the first throttle reading".to_owned(),
        ));
        let stop = CancellationToken::new();
        let round = Round {
            primary: self.pool.clone(),
            replicas: self.options.replicas.clone(),
            heartbeat: self.qualified(&shoal_common::names::heartbeat(&self.table)),
            limits: self.options.limits,
        };
        tokio::spawn(run(round, sender, stop.clone()));
        Some(Monitor {
            verdict,
            _stop: stop.drop_guard(),
        })
    }

    /// Publishes the reason the copy is held (or that it no longer is).
    pub(super) fn publish_throttled(&self, reason: Option<&str>) {
        if self.progress.borrow().throttled.as_deref() != reason {
            match reason {
                Some(reason) => {
                    info!(migration_id = %self.options.id, reason, "copy throttled");
                }
                None => info!(migration_id = %self.options.id, "copy no longer throttled"),
            }
            self.progress
                .send_modify(|progress| progress.throttled = reason.map(str::to_owned));
        }
    }
}

/// What one round reads and writes.
struct Round {
    primary: Pool,
    replicas: Vec<Replica>,
    heartbeat: String,
    limits: Limits,
}

async fn run(round: Round, sender: watch::Sender<Verdict>, stop: CancellationToken) {
    let mut throttle = Throttle::new(round.limits);
    let mut ticker = tokio::time::interval(ROUND);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let readings = round.read().await;
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

    /// Writes this process's clock into the heartbeat row.
    async fn beat(&self) -> Result<(), mysql_async::Error> {
        let mut connection = self.primary.get_conn().await?;
        connection
            .exec_drop(
                format!(
                    "INSERT INTO {} (id, sent_ms) VALUES (1, ?) \
                     ON DUPLICATE KEY UPDATE sent_ms = VALUES(sent_ms)",
                    self.heartbeat
                ),
                (crate::api::unix_millis_now(),),
            )
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
