//! The shoal worker: a stateless process that registers with a coordinator, heartbeats, and
//! long-polls for chunk-copy and checksum tasks, running up to `--concurrency` at once.
//!
//! # Layout
//! - [`config`]: flags and their `SHOAL_*` environment equivalents.
//! - [`worker`]: the process: registration, heartbeat loop, task slots, graceful drain.
//!
//! # Invariants
//! - A worker holds nothing durable. If it dies, its registration and leases expire and its
//!   tasks are re-leased under a new fence epoch (INV-F1), so a worker that merely stalled can
//!   never write after its chunk moved on.
//! - On SIGTERM it stops polling, gives back what it holds, deregisters and exits 0.

pub mod config;
pub mod worker;
