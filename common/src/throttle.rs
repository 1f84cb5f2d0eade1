//! Throttle rules: whether the copy may hand out chunks, given the latest load readings.
//!
//! The copy holds (no new chunk; chunks in flight finish, changes keep being applied) while any
//! replica lags more than the limit, while the primary's `Threads_running` or InnoDB history
//! list length is above its limit, and while a reading is missing (fail closed). A replica whose
//! lag stays unknown for `unknown_lag_abort_after` aborts the migration. The checksum is never
//! held: pausing it would keep its snapshot open.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits of one migration; a zero limit is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Hold while any replica lags more than this.
    pub max_replica_lag: Duration,
    /// Abort when a replica's lag has been unknown this long.
    pub unknown_lag_abort_after: Duration,
    /// Hold while the primary's `Threads_running` is above this.
    pub max_threads_running: u64,
    /// Hold while the primary's InnoDB history list length is above this.
    pub max_history_list_length: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_replica_lag: Duration::from_secs(120),
            unknown_lag_abort_after: Duration::from_secs(600),
            max_threads_running: 0,
            max_history_list_length: 0,
        }
    }
}

/// One round of readings. `None` means the reading failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readings {
    /// Each replica's name (redacted DSN) and lag behind shoal's heartbeat.
    pub replicas: Vec<(String, Option<Duration>)>,
    /// The primary's `Threads_running`, when limited.
    pub threads_running: Option<u64>,
    /// The primary's InnoDB history list length, when limited.
    pub history_list_length: Option<u64>,
}

/// What the copy should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Hand out chunks.
    Go,
    /// Hand out no new chunk, for this reason.
    Hold(String),
    /// Fail the migration (before cut-over; the table is untouched), for this reason.
    Abort(String),
}

impl Verdict {
    /// The reason the copy is held, if it is.
    pub fn held(&self) -> Option<&str> {
        match self {
            Verdict::Hold(reason) => Some(reason),
            _ => None,
        }
    }
}

/// The throttle's memory across rounds: how long lag has been unknown.
#[derive(Debug, Clone)]
pub struct Throttle {
    limits: Limits,
    /// When (ms on the caller's clock) a replica's lag became unknown.
    unknown_since_ms: Option<u64>,
}

impl Throttle {
    /// A throttle with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            unknown_since_ms: None,
        }
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Judges one round of readings taken at `now_ms`.
    pub fn judge(&mut self, readings: &Readings, now_ms: u64) -> Verdict {
        let limits = self.limits;
        let mut holds = Vec::new();
        let unknown: Vec<&str> = readings
            .replicas
            .iter()
            .filter(|(_, lag)| lag.is_none())
            .map(|(name, _)| name.as_str())
            .collect();
        if unknown.is_empty() {
            self.unknown_since_ms = None;
        } else {
            let since = *self.unknown_since_ms.get_or_insert(now_ms);
            let for_ms = now_ms.saturating_sub(since);
            let names = unknown.join(", ");
            if !limits.unknown_lag_abort_after.is_zero()
                && Duration::from_millis(for_ms) >= limits.unknown_lag_abort_after
            {
                return Verdict::Abort(format!(
                    "the lag of replica {names} has been unknown for {} s (shoal's heartbeat \
                     row cannot be read there); fix replication or the replica DSN, or raise \
                     --unknown-lag-abort-after",
                    for_ms / 1000
                ));
            }
            holds.push(format!(
                "replica {names}: lag unknown for {} s (heartbeat not readable)",
                for_ms / 1000
            ));
        }
        if !limits.max_replica_lag.is_zero() {
            for (name, lag) in &readings.replicas {
                if let Some(lag) = lag
                    && *lag > limits.max_replica_lag
                {
                    holds.push(format!(
                        "replica {name} lags {:.1} s (limit {} s)",
                        lag.as_secs_f64(),
                        limits.max_replica_lag.as_secs_f64()
                    ));
                }
            }
        }
        if limits.max_threads_running > 0 {
            match readings.threads_running {
                Some(running) if running > limits.max_threads_running => holds.push(format!(
                    "Threads_running is {running} (limit {})",
                    limits.max_threads_running
                )),
                Some(_) => {}
                None => holds.push("Threads_running cannot be read".to_owned()),
            }
        }
        if limits.max_history_list_length > 0 {
            match readings.history_list_length {
                Some(length) if length > limits.max_history_list_length => {
                    holds.push(format!(
                        "InnoDB history list length is {length} (limit {}; a long transaction \
                         keeps old row versions)",
                        limits.max_history_list_length
                    ));
                }
                Some(_) => {}
                None => holds.push("InnoDB history list length cannot be read".to_owned()),
            }
        }
        if holds.is_empty() {
            Verdict::Go
        } else {
            Verdict::Hold(holds.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_replica_lag: Duration::from_secs(2),
            unknown_lag_abort_after: Duration::from_secs(10),
            max_threads_running: 20,
            max_history_list_length: 1_000,
        }
    }

    fn readings(lag_ms: Option<u64>, running: u64, history: u64) -> Readings {
        Readings {
            replicas: vec![("r1".to_owned(), lag_ms.map(Duration::from_millis))],
            threads_running: Some(running),
            history_list_length: Some(history),
        }
    }

    #[test]
    fn goes_below_every_limit_and_holds_above_any() {
        let mut throttle = Throttle::new(limits());
        assert_eq!(throttle.judge(&readings(Some(500), 3, 10), 0), Verdict::Go);
        assert_eq!(
            throttle.judge(&readings(Some(2_000), 20, 1_000), 0),
            Verdict::Go,
            "limits are inclusive"
        );
        let lag = throttle.judge(&readings(Some(3_500), 3, 10), 0);
        assert_eq!(lag.held(), Some("replica r1 lags 3.5 s (limit 2 s)"));
        let running = throttle.judge(&readings(Some(0), 21, 10), 0);
        assert_eq!(running.held(), Some("Threads_running is 21 (limit 20)"));
        let history = throttle.judge(&readings(Some(0), 3, 5_000), 0);
        assert!(
            history
                .held()
                .unwrap()
                .starts_with("InnoDB history list length is 5000")
        );
        let both = throttle.judge(&readings(Some(9_000), 30, 10), 0);
        assert!(
            both.held().unwrap().contains("lags 9.0 s")
                && both.held().unwrap().contains("Threads_running")
        );
    }

    #[test]
    fn unknown_lag_holds_then_aborts_and_a_reading_resets_the_clock() {
        let mut throttle = Throttle::new(limits());
        let held = throttle.judge(&readings(None, 0, 0), 1_000);
        assert_eq!(
            held.held(),
            Some("replica r1: lag unknown for 0 s (heartbeat not readable)")
        );
        assert!(
            throttle
                .judge(&readings(None, 0, 0), 10_999)
                .held()
                .is_some()
        );
        assert_eq!(
            throttle.judge(&readings(Some(100), 0, 0), 11_000),
            Verdict::Go
        );
        assert!(
            throttle
                .judge(&readings(None, 0, 0), 12_000)
                .held()
                .is_some(),
            "a good reading restarted the clock"
        );
        assert!(matches!(
            throttle.judge(&readings(None, 0, 0), 22_000),
            Verdict::Abort(reason) if reason.contains("unknown for 10 s")
        ));
    }

    #[test]
    fn off_limits_ignore_their_readings_but_missing_readings_of_set_limits_hold() {
        let mut throttle = Throttle::new(Limits {
            max_replica_lag: Duration::ZERO,
            unknown_lag_abort_after: Duration::ZERO,
            max_threads_running: 0,
            max_history_list_length: 0,
        });
        assert_eq!(
            throttle.judge(&readings(Some(1_000_000), 999, 999_999), 0),
            Verdict::Go
        );
        assert!(
            throttle
                .judge(&readings(None, 0, 0), 1_000_000)
                .held()
                .is_some(),
            "unknown lag still holds (fail closed) but never aborts with the abort off"
        );
        let mut throttle = Throttle::new(limits());
        let missing = Readings {
            replicas: Vec::new(),
            threads_running: None,
            history_list_length: None,
        };
        let held = throttle.judge(&missing, 0);
        assert!(
            held.held()
                .unwrap()
                .contains("Threads_running cannot be read")
        );
        assert!(
            held.held()
                .unwrap()
                .contains("history list length cannot be read")
        );
    }
}
