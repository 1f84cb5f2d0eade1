//! The shoal coordinator: holds each migration's lifecycle and leases, and hands chunk-copy and
//! checksum tasks to stateless workers over gRPC. Any number of replicas share live state
//! through Redis; durable state lives in MySQL beside the migrated table.
//!
//! # Layout
//! - [`config`]: flags and their `SHOAL_*` environment equivalents.
//! - [`server`]: the process: binds, serves gRPC (plus health and reflection), drains on
//!   shutdown.
//! - [`api`]: the gRPC services (`MigrationService`, `WorkService`) and error mapping.
//! - [`http`]: the JSON status API for dashboards (same statuses as gRPC) and `/metrics`;
//!   [`tls_listener`] serves it over TLS.
//! - [`metrics`]: the Prometheus metrics of the migrations this replica owns.
//! - [`embedded`]: `shoal run`, one process with in-process workers and an in-memory store.
//! - [`migration`]: one online schema change, phase by phase, as its owner runs it.
//! - [`registry`]: the migrations this coordinator runs, their progress and outcome.
//! - [`store`]: live-state stores behind traits, in memory and in Redis, with one conformance
//!   suite.
//!
//! The `shoal` CLI (`src/bin/shoal.rs`) is built from this crate too: it is a client of the
//! same gRPC API.

pub mod api;
pub mod config;
pub mod embedded;
pub mod http;
pub mod metrics;
pub mod migration;
pub mod owners;
pub mod registry;
pub mod server;
pub mod store;
pub mod tls_listener;
