//! The shoal worker: a stateless process that registers with a coordinator, heartbeats, and
//! long-polls for chunk-copy and checksum tasks, running up to `--concurrency` at once. The
//! same executor runs in-process under `shoal run`.
//!
//! # Layout
//! - [`config`]: flags and their `SHOAL_*` environment equivalents.
//! - [`worker`]: the process: registration, heartbeat loop, graceful drain.
//! - [`executor`]: the slot loop, generic over where tasks come from ([`executor::TaskSource`]:
//!   gRPC in the fleet, the task store directly under `shoal run`).
//! - [`checksum`]: the digest of one key range (count and a non-linear hash).
//! - [`copy`]: one chunk copy, fenced (INV-F1), warnings checked.
//! - [`session`]: MySQL session settings and target names resolved to DSNs.
//! - [`wire`]: tasks between domain and protobuf form (shared with the coordinator).
//! - [`failpoint`]: named failpoints for deterministic fault tests.
//! - [`metrics`]: the worker's Prometheus metrics and its `/metrics` endpoint.
//!
//! # Invariants
//! - A worker holds nothing durable. If it dies, its registration and leases expire and its
//!   tasks are re-leased under a new fence epoch (INV-F1), so a worker that merely stalled can
//!   never write after its chunk moved on.
//! - On SIGTERM it stops polling, gives back what it holds, deregisters and exits 0.

pub mod checksum;
pub mod config;
pub mod copy;
pub mod executor;
pub mod failpoint;
pub mod keys;
pub mod metrics;
pub mod session;
pub mod wire;
pub mod worker;
