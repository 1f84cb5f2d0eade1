//! shoal's database layer: the facts that differ between MySQL and MariaDB, and between their
//! versions, each with the versions it holds for.
//!
//! - [`dsn`]: DSNs and their TLS modes.
//! - [`flavour`]: version rules (which statement reports the binlog position).
//! - [`events`]: what the change reader does with each binlog event type (an explicit list:
//!   anything not on it stops the migration), and the events inside MySQL's compressed
//!   transaction payloads.
//! - [`position`]: binlog positions and the file names rotate events give.
//! - [`json`]: MySQL's binary JSON from the binlog, written back without changing a type.
//!
//! New flavour-specific code goes here; the older SQL of the coordinator and the workers moves
//! here step by step (see `docs/architecture.md`).

pub mod dsn;
pub mod events;
pub mod flavour;
pub mod json;
pub mod position;
