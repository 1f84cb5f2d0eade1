//! shoal's test harness and end-to-end tests.
//!
//! # Layout
//! - [`servers`]: private MariaDB (row binlog on) and Redis instances, each in its own temp
//!   directory on free ports, shared by every test of one `cargo nextest run` and reaped when
//!   the run ends; [`servers::shared`] is the entry point, [`servers::TestDatabase`] the
//!   per-test database.
//! - [`flavours`]: one test body on both servers (MariaDB and a private MySQL).
//! - [`chaos`]: the fault campaign (`make chaos`, and a short one in `make test`).
//! - [`mariadb`], [`redis_server`]: starting one instance of each, owned or detached;
//!   [`mysql`]: a private MySQL 9.7 (Debian sid, in a chroot), owned by its test.
//! - [`processes`]: the built `shoal-coordinator` / `shoal-worker` binaries as child processes
//!   on free ports, with their logs captured to files.
//! - [`proxy`]: a loopback TCP proxy with a settable delay (network faults).
//! - [`perf`]: CPU profiles of a process with Linux `perf` (the benchmark's).
//! - [`otlp`]: an OTLP/gRPC trace receiver the processes under test export their spans to.
//! - [`writer`]: a concurrent writer with an independent ledger of what it committed.
//! - [`scenario`]: the seeded table, the ALTER and the exact comparison scenarios share.
//! - [`wait`]: waiting for a condition with a deadline (never sleep-and-hope).
//! - [`alter_texts`]: generated ALTER texts (proptest) for comparing shoal's reading with the
//!   server's.
//! - `tests/*.rs`: the end-to-end tests.
//!
//! The harness is a library so that benchmarks and the demo can use it too.

pub mod alter_texts;
pub mod chaos;
pub mod flavours;
pub mod mariadb;
pub mod mysql;
pub mod otlp;
pub mod perf;
pub mod processes;
pub mod proxy;
pub mod redis_server;
pub mod scenario;
pub mod servers;
pub mod system;
pub mod tls;
pub mod wait;
pub mod writer;
