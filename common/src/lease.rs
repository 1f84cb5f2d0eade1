//! Lease rules for tasks: who may report on a task, and when a lease is extended or lost.
//!
//! # Invariants
//! - INV-L1: a report (complete, fail, release, heartbeat) is applied only when it carries the
//!   task's current lease epoch and comes from the lease holder. Anything else is stale and is
//!   answered "roll back and drop the task", never "retry".
//! - INV-L2: an expired lease is never extended; the owner reaps it, bumps the chunk's fence
//!   epoch (INV-F1) and only then offers the chunk again under a new lease epoch.
//!
//! # Design decisions
//! Expiry is decided by the reaper, not by reports: a completion that arrives after the lease's
//! deadline but before the reaper took the lease is still current. It is safe, because the
//! worker's write committed under a fence epoch the owner had not yet bumped.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::{LeaseEpoch, WorkerId};

/// A task's current lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Increases on every grant of the task.
    pub epoch: LeaseEpoch,
    /// Who holds it.
    pub worker: WorkerId,
    /// Deadline in the store's clock (Unix ms in Redis, tokio ms in memory).
    pub expires_at_ms: u64,
}

/// How a report about a task is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The report carries the current epoch from the holder: apply it.
    Current,
    /// The task is leased at another epoch or to another worker: refuse (INV-L1).
    Stale,
    /// The task has no lease (done, reaped, or never existed): refuse.
    Unknown,
}

/// Judges a report from `worker` carrying `epoch` against the task's lease (INV-L1).
pub fn judge(lease: Option<&Lease>, worker: &WorkerId, epoch: LeaseEpoch) -> Verdict {
    match lease {
        None => Verdict::Unknown,
        Some(lease) if lease.epoch == epoch && &lease.worker == worker => Verdict::Current,
        Some(_) => Verdict::Stale,
    }
}

/// The lease after a heartbeat at `now_ms`, or `None` if it may not be extended (INV-L2).
pub fn extend(
    lease: &Lease,
    worker: &WorkerId,
    epoch: LeaseEpoch,
    now_ms: u64,
    ttl: Duration,
) -> Option<Lease> {
    if judge(Some(lease), worker, epoch) != Verdict::Current || now_ms >= lease.expires_at_ms {
        return None;
    }
    Some(Lease {
        expires_at_ms: now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
        ..lease.clone()
    })
}

/// A fresh lease for `worker`, one epoch past `previous` (the task's last epoch, if any).
pub fn grant(previous: Option<LeaseEpoch>, worker: &WorkerId, now_ms: u64, ttl: Duration) -> Lease {
    Lease {
        epoch: previous.map_or(LeaseEpoch(1), LeaseEpoch::next),
        worker: worker.clone(),
        expires_at_ms: now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
    }
}

/// Whether the reaper should take the lease back at `now_ms`.
pub fn is_expired(lease: &Lease, now_ms: u64) -> bool {
    now_ms >= lease.expires_at_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(name: &str) -> WorkerId {
        WorkerId::parse(name).unwrap()
    }

    #[test]
    fn only_the_holder_at_the_current_epoch_is_current() {
        let lease = grant(None, &worker("a"), 1_000, Duration::from_secs(5));
        assert_eq!(lease.epoch, LeaseEpoch(1));
        assert_eq!(lease.expires_at_ms, 6_000);
        assert_eq!(
            judge(Some(&lease), &worker("a"), LeaseEpoch(1)),
            Verdict::Current
        );
        assert_eq!(
            judge(Some(&lease), &worker("a"), LeaseEpoch(0)),
            Verdict::Stale
        );
        assert_eq!(
            judge(Some(&lease), &worker("b"), LeaseEpoch(1)),
            Verdict::Stale
        );
        assert_eq!(judge(None, &worker("a"), LeaseEpoch(1)), Verdict::Unknown);
    }

    #[test]
    fn regrant_advances_the_epoch_so_old_reports_are_stale() {
        let first = grant(None, &worker("a"), 0, Duration::from_secs(1));
        let second = grant(
            Some(first.epoch),
            &worker("b"),
            2_000,
            Duration::from_secs(1),
        );
        assert_eq!(second.epoch, LeaseEpoch(2));
        assert_eq!(
            judge(Some(&second), &worker("a"), first.epoch),
            Verdict::Stale
        );
        // Even the same worker, leased again, cannot report with its old epoch.
        let third = grant(
            Some(second.epoch),
            &worker("a"),
            3_000,
            Duration::from_secs(1),
        );
        assert_eq!(
            judge(Some(&third), &worker("a"), first.epoch),
            Verdict::Stale
        );
    }

    #[test]
    fn extension_only_before_expiry_by_the_holder() {
        let ttl = Duration::from_secs(5);
        let lease = grant(None, &worker("a"), 0, ttl);
        let extended = extend(&lease, &worker("a"), lease.epoch, 4_000, ttl).unwrap();
        assert_eq!(extended.expires_at_ms, 9_000);
        assert_eq!(extended.epoch, lease.epoch);
        assert_eq!(
            extend(&lease, &worker("a"), lease.epoch, 5_000, ttl),
            None,
            "INV-L2"
        );
        assert_eq!(extend(&lease, &worker("b"), lease.epoch, 1_000, ttl), None);
        assert_eq!(
            extend(&lease, &worker("a"), LeaseEpoch(9), 1_000, ttl),
            None
        );
        assert!(!is_expired(&lease, 4_999));
        assert!(is_expired(&lease, 5_000));
    }
}
