//! Stores behind traits, each with an in-memory and a Redis implementation and one conformance
//! suite that runs against both.
//!
//! # What is stored where
//! - Durable (MySQL, in the migrated schema): checkpoints, fences, the owner epoch. Nothing in
//!   this module is durable.
//! - Live (Redis, or memory for `shoal run`): the worker registry; later the task queues, leases,
//!   status history and owner leases. Everything here can be lost: workers re-register on their
//!   next heartbeat, and migrations are rebuilt from their MySQL checkpoints.
//!
//! # Design decisions
//! The trait is the seam between the embedded mode (`shoal run`, one process, no Redis) and the
//! fleet: the logic above it is never forked. Expiry is the store's job (Redis `PEXPIRE`, or the
//! memory store's tokio clock), so every coordinator replica gives the same answer.

pub mod memory;
pub mod memory_migrations;
pub mod memory_tasks;
pub mod migrations;
pub mod redis;
pub mod redis_migrations;
pub mod redis_tasks;
pub mod tasks;
pub mod worker_registry;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

/// Errors of every store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis could not be reached or timed out; the call may be retried.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error, or held data shoal cannot read.
    #[error("redis error: {0}")]
    Backend(String),
    /// The live store records another owner of the migration: the caller was deposed.
    #[error("not the migration's owner (the live store names {0:?})")]
    NotOwner(String),
    /// A stored record is corrupt.
    #[error("corrupt record {key}: {reason}")]
    Corrupt {
        /// The key holding the record.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    /// Whether retrying the same call can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

impl From<::redis::RedisError> for Error {
    fn from(error: ::redis::RedisError) -> Self {
        if error.is_io_error()
            || error.is_timeout()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
        {
            Error::Unavailable(error.to_string())
        } else {
            Error::Backend(error.to_string())
        }
    }
}
