//! shoal's domain types and pure decision logic, shared by the coordinator, the worker and tests.
//!
//! # Layout
//! - [`backoff`]: capped jittered retry delays.
//! - [`changes`]: the change buffer (last image per key, deferred until its chunk drains).
//! - [`checkpoint`]: what a checkpoint holds and whether a saved one may be resumed.
//! - [`chunk`]: chunk ranges, the lazy planner and the ledger of drained chunks.
//! - [`ids`]: newtypes for the ids that travel through the system (`MigrationId`, `WorkerId`, ...).
//!   Proto strings and integers become these at the edge; no bare ids in the core.
//! - [`lease`]: task lease rules (grant, extend, judge reports, expiry).
//! - [`lifecycle`]: the lifecycle state machine (states, events, total transition function).
//! - [`names`]: names of the helper tables beside a migrated table.
//! - [`registry`]: the worker registry's rules (record, heartbeat cadence, expiry), pure.
//! - [`sizing`]: adaptive chunk sizing from the server-side time of recent chunks.
//! - [`signals`]: SIGTERM/SIGINT as the start of graceful shutdown.
//! - [`sql`]: identifier quoting.
//! - [`task`]: tasks, copy context, outcomes.
//! - [`telemetry`]: logs (text or JSON, `RUST_LOG` filter), OpenTelemetry trace export and the
//!   Prometheus recorder, shared by every binary.
//!
//! Apart from the process plumbing in `signals` and `telemetry`, nothing here performs I/O:
//! decisions are plain functions over plain data, and the drivers in `shoal-coordinator` and
//! `shoal-worker` perform the effects.

pub mod backoff;
pub mod changes;
pub mod checkpoint;
pub mod chunk;
pub mod ids;
pub mod key;
pub mod lease;
pub mod lifecycle;
pub mod names;
pub mod registry;
pub mod signals;
pub mod sizing;
pub mod sql;
pub mod task;
pub mod telemetry;
pub mod throttle;
