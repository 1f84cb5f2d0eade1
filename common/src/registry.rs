//! Rules of the worker registry: what a registration holds, how often a worker must heartbeat,
//! and when a silent worker counts as gone.
//!
//! # Invariants
//! - INV-R1: a worker is listed only while its last heartbeat is younger than the registration
//!   TTL; a worker that stops heartbeating (SIGKILL, partition) disappears within the TTL.
//! - INV-R2: a worker heartbeats at least three times per TTL, so a single lost or slow
//!   heartbeat never expires a healthy worker.
//!
//! # Design decisions
//! The TTL is enforced by the store (Redis `PX`, or the in-memory store's clock), not by the
//! coordinator that happens to answer `ListWorkers`, so every coordinator replica gives the same
//! answer. A worker whose registration vanished (expired, or Redis lost its data) learns it from
//! its next heartbeat and registers again.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::WorkerId;

/// Heartbeats sent per registration TTL (INV-R2).
pub const HEARTBEATS_PER_TTL: u32 = 3;

/// Shortest TTL accepted: below this a busy host could miss its heartbeats.
pub const MIN_TTL: Duration = Duration::from_millis(300);

/// What the registry stores for a live worker. Contains nothing secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Identity the worker chose.
    pub worker_id: WorkerId,
    /// Host it runs on, for operators.
    pub hostname: String,
    /// Its process id, for operators.
    pub pid: u32,
    /// How many tasks it runs at once.
    pub slots: u32,
    /// Tasks it holds now (from its last heartbeat).
    pub busy_slots: u32,
    /// Its shoal version.
    pub version: String,
    /// Unix milliseconds of registration.
    pub registered_at_ms: u64,
    /// Unix milliseconds of the last heartbeat.
    pub last_heartbeat_at_ms: u64,
}

/// Why a registry setting is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The TTL is shorter than [`MIN_TTL`].
    #[error("worker TTL {ttl:?} is shorter than the minimum {MIN_TTL:?}; raise --worker-ttl")]
    TtlTooShort {
        /// The refused TTL.
        ttl: Duration,
    },
}

/// Timing of registrations, derived from the one configured TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrationTiming {
    /// A registration without heartbeat lives this long.
    pub ttl: Duration,
    /// Workers heartbeat this often (INV-R2).
    pub heartbeat_interval: Duration,
}

impl RegistrationTiming {
    /// Derives the heartbeat cadence from a TTL, refusing TTLs too short to be safe.
    pub fn from_ttl(ttl: Duration) -> Result<Self, Error> {
        if ttl < MIN_TTL {
            return Err(Error::TtlTooShort { ttl });
        }
        Ok(Self {
            ttl,
            heartbeat_interval: ttl / HEARTBEATS_PER_TTL,
        })
    }
}

/// Whether a registration last refreshed at `last_refresh` has expired at `now` (INV-R1).
/// Times are in any monotone unit shared by both arguments.
pub fn is_expired(last_refresh: Duration, ttl: Duration, now: Duration) -> bool {
    now.saturating_sub(last_refresh) >= ttl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_is_a_third_of_the_ttl() {
        let timing = RegistrationTiming::from_ttl(Duration::from_secs(9)).unwrap();
        assert_eq!(timing.heartbeat_interval, Duration::from_secs(3));
        assert_eq!(timing.ttl, Duration::from_secs(9));
    }

    #[test]
    fn refuses_a_ttl_below_the_minimum() {
        let refused = RegistrationTiming::from_ttl(Duration::from_millis(100));
        assert_eq!(
            refused,
            Err(Error::TtlTooShort {
                ttl: Duration::from_millis(100)
            })
        );
        assert!(RegistrationTiming::from_ttl(MIN_TTL).is_ok());
    }

    #[test]
    fn expiry_is_at_exactly_one_ttl() {
        let ttl = Duration::from_secs(10);
        let refreshed = Duration::from_secs(100);
        assert!(!is_expired(refreshed, ttl, Duration::from_secs(109)));
        assert!(is_expired(refreshed, ttl, Duration::from_secs(110)));
        // A clock reading before the refresh (another replica's skew) is not an expiry.
        assert!(!is_expired(refreshed, ttl, Duration::from_secs(50)));
    }
}
