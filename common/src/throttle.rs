//! Throttle rules: whether the copy may hand out chunks, given the latest load readings.
//!
//! The copy holds (no new chunk; chunks in flight finish, changes keep being applied) while any
//! replica lags more than the limit, while the primary's `Threads_running` or InnoDB history
//! list length is above its limit, and while a reading is missing (fail closed). A replica whose
//! lag stays unknown for `unknown_lag_abort_after` aborts the migration. The checksum is never
//! held: pausing it would keep its snapshot open.
//!
//! The latency gate ([`LatencyGate`]) speaks for the application: a probe commit on the primary
//! every [`PROBE_EVERY`]; the first [`BASELINE_PROBES`] (taken while the copy holds) set the
//! baseline, and the copy holds while any of the last [`RECENT_PROBES`] took longer than the
//! limit (`max_latency_percent` of the baseline, never less than the baseline plus
//! [`MIN_HEADROOM`]) or failed. When the copy's speed and the application's latency conflict,
//! latency wins.

use std::collections::VecDeque;
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
    /// Hold while a probe commit takes more than this percentage of its pre-copy latency
    /// (200: twice as long).
    #[serde(default)]
    pub max_latency_percent: u32,
    /// After each chunk the copy rests this percentage of the chunk's statement time (gh-ost's
    /// nice ratio × 100; 1900: the copy runs a twentieth of the time). 0: off.
    #[serde(default)]
    pub nice_percent: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_replica_lag: Duration::from_secs(120),
            unknown_lag_abort_after: Duration::from_secs(600),
            max_threads_running: 0,
            max_history_list_length: 0,
            max_latency_percent: 0,
            nice_percent: 0,
        }
    }
}

/// A nice ratio as the percentage [`Limits::nice_percent`] keeps (19 → 1900; 0: off).
pub fn percent_of_nice_ratio(ratio: f64) -> Result<u32, String> {
    if ratio.is_finite() && (0.0..=100.0).contains(&ratio) {
        Ok((ratio * 100.0).round() as u32)
    } else {
        Err(format!(
            "the nice ratio must be from 0 (off) to 100 (e.g. 4: rest four times as long as each \
             chunk's statement took); got {ratio}"
        ))
    }
}

/// How long the copy rests after work that took `took`, at [`Limits::nice_percent`].
pub fn rest_after(took: Duration, nice_percent: u32) -> Duration {
    took.saturating_mul(nice_percent) / 100
}

/// A latency factor as the percentage [`Limits::max_latency_percent`] keeps (2.0 → 200; 0: off).
/// A factor of 1 or less would hold the copy on noise alone, and is refused.
pub fn percent_of_factor(factor: f64) -> Result<u32, String> {
    if factor == 0.0 {
        Ok(0)
    } else if factor.is_finite() && factor > 1.0 && factor <= 1_000.0 {
        Ok((factor * 100.0).round() as u32)
    } else {
        Err(format!(
            "the latency factor must be 0 (off) or above 1 and at most 1000 (e.g. 2: hold the \
             copy while probe commits take twice their pre-copy latency); got {factor}"
        ))
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
    /// How long this round's probe commit took, when latency is limited (`None`: it failed).
    pub probe: Option<Duration>,
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

/// How often the latency gate probes.
pub const PROBE_EVERY: Duration = Duration::from_millis(100);
/// Probes forming the baseline (their median), taken before the copy starts.
pub const BASELINE_PROBES: usize = 10;
/// The copy holds while any of this many latest probes is over the limit: a slow probe holds it
/// for at least a second.
pub const RECENT_PROBES: usize = 10;
/// The limit is at least the baseline plus this: a sub-millisecond baseline would otherwise
/// hold the copy on scheduling noise.
pub const MIN_HEADROOM: Duration = Duration::from_millis(1);

/// The latency gate: a baseline from the first probes, then a hold while recent probes are slow.
#[derive(Debug, Clone)]
pub struct LatencyGate {
    percent: u32,
    samples: Vec<Duration>,
    baseline: Option<Duration>,
    /// The latest probes, newest last (`None`: failed).
    recent: VecDeque<Option<Duration>>,
}

impl LatencyGate {
    /// A gate holding above `percent` of the baseline.
    pub fn new(percent: u32) -> Self {
        Self {
            percent,
            samples: Vec::with_capacity(BASELINE_PROBES),
            baseline: None,
            recent: VecDeque::with_capacity(RECENT_PROBES + 1),
        }
    }

    /// The pre-copy latency, once measured.
    pub fn baseline(&self) -> Option<Duration> {
        self.baseline
    }

    /// The latency above which the copy holds, once the baseline is measured.
    pub fn limit(&self) -> Option<Duration> {
        self.baseline
            .map(|baseline| (baseline * self.percent / 100).max(baseline + MIN_HEADROOM))
    }

    /// Takes one probe (`None`: it failed) and says why the copy must hold, if it must.
    pub fn observe(&mut self, probe: Option<Duration>) -> Option<String> {
        let Some(limit) = self.limit() else {
            match probe {
                Some(latency) => self.samples.push(latency),
                None => {
                    return Some(
                        "a latency probe failed while measuring the pre-copy baseline".to_owned(),
                    );
                }
            }
            if self.samples.len() < BASELINE_PROBES {
                return Some(format!(
                    "measuring the primary's commit latency before copying ({} of {} probes)",
                    self.samples.len(),
                    BASELINE_PROBES
                ));
            }
            self.samples.sort();
            self.baseline = Some(self.samples[self.samples.len() / 2]);
            return None;
        };
        self.recent.push_back(probe);
        if self.recent.len() > RECENT_PROBES {
            self.recent.pop_front();
        }
        let baseline = self.baseline.unwrap_or_default();
        if self.recent.iter().any(Option::is_none) {
            return Some("a latency probe failed (fail closed)".to_owned());
        }
        let worst = self.recent.iter().flatten().max().copied()?;
        // The reason names no latest figure: it stays the same while the copy holds.
        (worst > limit).then(|| {
            format!(
                "probe commits take over {:.1} ms ({}% of the {:.1} ms measured before the copy)",
                ms(limit),
                self.percent,
                ms(baseline)
            )
        })
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

/// The throttle's memory across rounds: how long lag has been unknown, the latency gate.
#[derive(Debug, Clone)]
pub struct Throttle {
    limits: Limits,
    /// When (ms on the caller's clock) a replica's lag became unknown.
    unknown_since_ms: Option<u64>,
    latency: Option<LatencyGate>,
}

impl Throttle {
    /// A throttle with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            unknown_since_ms: None,
            latency: (limits.max_latency_percent > 0)
                .then(|| LatencyGate::new(limits.max_latency_percent)),
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
        if let Some(gate) = &mut self.latency
            && let Some(reason) = gate.observe(readings.probe)
        {
            holds.push(reason);
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
            max_latency_percent: 0,
            nice_percent: 0,
        }
    }

    fn readings(lag_ms: Option<u64>, running: u64, history: u64) -> Readings {
        Readings {
            replicas: vec![("r1".to_owned(), lag_ms.map(Duration::from_millis))],
            threads_running: Some(running),
            history_list_length: Some(history),
            probe: None,
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
            max_latency_percent: 0,
            nice_percent: 0,
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
            probe: None,
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

    fn millis(ms: u64) -> Option<Duration> {
        Some(Duration::from_millis(ms))
    }

    #[test]
    fn the_latency_gate_holds_for_its_baseline_then_while_a_recent_probe_is_slow() {
        let mut gate = LatencyGate::new(200);
        for (index, latency) in [3, 2, 2, 9, 2, 3, 2, 2, 4].into_iter().enumerate() {
            let reason = gate.observe(millis(latency)).unwrap();
            assert!(
                reason.contains(&format!("({} of 10 probes)", index + 1)),
                "{reason}"
            );
        }
        assert_eq!(
            gate.observe(millis(2)),
            None,
            "the tenth probe sets the baseline"
        );
        assert_eq!(gate.baseline(), millis(2), "the median, not the mean");
        assert_eq!(gate.limit(), millis(4));
        assert_eq!(gate.observe(millis(4)), None, "the limit is inclusive");
        let slow = gate.observe(millis(7)).unwrap();
        assert_eq!(
            slow,
            "probe commits take over 4.0 ms (200% of the 2.0 ms measured before the copy)"
        );
        for _ in 1..RECENT_PROBES {
            assert!(
                gate.observe(millis(2)).is_some(),
                "still among the latest probes"
            );
        }
        assert_eq!(
            gate.observe(millis(2)),
            None,
            "as many fast probes release it"
        );
        assert_eq!(
            gate.observe(None).as_deref(),
            Some("a latency probe failed (fail closed)")
        );
    }

    #[test]
    fn the_latency_gate_keeps_a_millisecond_of_headroom_and_never_bases_on_failures() {
        let mut gate = LatencyGate::new(150);
        assert!(
            gate.observe(None).unwrap().contains("baseline"),
            "a failed probe holds and does not count"
        );
        for _ in 0..BASELINE_PROBES {
            gate.observe(Some(Duration::from_micros(200)));
        }
        assert_eq!(gate.baseline(), Some(Duration::from_micros(200)));
        assert_eq!(gate.limit(), Some(Duration::from_micros(1_200)));
        assert_eq!(gate.observe(Some(Duration::from_micros(900))), None);
    }

    #[test]
    fn the_nice_ratio_rests_in_proportion_to_the_work() {
        assert_eq!(percent_of_nice_ratio(0.0), Ok(0));
        assert_eq!(percent_of_nice_ratio(19.0), Ok(1900));
        assert_eq!(percent_of_nice_ratio(0.5), Ok(50));
        for bad in [-1.0, 100.5, f64::NAN, f64::INFINITY] {
            assert!(
                percent_of_nice_ratio(bad)
                    .unwrap_err()
                    .starts_with("the nice ratio must be from 0 (off) to 100")
            );
        }
        let took = Duration::from_millis(80);
        assert_eq!(rest_after(took, 0), Duration::ZERO);
        assert_eq!(rest_after(took, 50), Duration::from_millis(40));
        assert_eq!(rest_after(took, 1900), Duration::from_millis(1520));
    }

    #[test]
    fn latency_factors_of_one_or_less_are_refused() {
        assert_eq!(percent_of_factor(0.0), Ok(0));
        assert_eq!(percent_of_factor(2.0), Ok(200));
        assert_eq!(percent_of_factor(1.5), Ok(150));
        for bad in [1.0, 0.5, -2.0, f64::NAN, f64::INFINITY, 5_000.0] {
            assert!(
                percent_of_factor(bad)
                    .unwrap_err()
                    .contains("must be 0 (off) or above 1"),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_throttle_holds_on_latency_only_when_it_is_limited() {
        let quiet = Readings {
            probe: millis(50),
            ..Readings::default()
        };
        let mut off = Throttle::new(Limits::default());
        assert_eq!(off.judge(&quiet, 0), Verdict::Go);
        let mut on = Throttle::new(Limits {
            max_latency_percent: 200,
            ..Limits::default()
        });
        for _ in 1..BASELINE_PROBES {
            assert!(
                on.judge(
                    &Readings {
                        probe: millis(1),
                        ..Readings::default()
                    },
                    0
                )
                .held()
                .is_some()
            );
        }
        assert_eq!(
            on.judge(
                &Readings {
                    probe: millis(1),
                    ..Readings::default()
                },
                0
            ),
            Verdict::Go
        );
        assert!(
            on.judge(&quiet, 0)
                .held()
                .unwrap()
                .contains("probe commits take over 2.0 ms")
        );
    }
}
