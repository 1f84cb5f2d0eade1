//! Identifier newtypes.
//!
//! # Design decisions
//! Every id is its own type so that a `WorkerId` can never be passed where a `TaskId` is
//! expected. String ids are validated once, at the edge (`parse`), and are then known to be
//! non-empty and free of characters that would break a Redis key (`:`) or a log line.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The id is empty.
    #[error("{kind} is empty")]
    Empty {
        /// Which id was being parsed.
        kind: &'static str,
    },
    /// The id is longer than [`MAX_ID_LEN`].
    #[error("{kind} is longer than {MAX_ID_LEN} characters")]
    TooLong {
        /// Which id was being parsed.
        kind: &'static str,
    },
    /// The id has a character outside `[A-Za-z0-9._-]`.
    #[error("{kind} {value:?} may only contain letters, digits, '.', '_' and '-'")]
    BadCharacter {
        /// Which id was being parsed.
        kind: &'static str,
        /// The rejected value.
        value: String,
    },
}

/// Longest id accepted from the network.
pub const MAX_ID_LEN: usize = 128;

fn validate(kind: &'static str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::Empty { kind });
    }
    if value.len() > MAX_ID_LEN {
        return Err(Error::TooLong { kind });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !value.chars().all(allowed) {
        return Err(Error::BadCharacter {
            kind,
            value: value.to_owned(),
        });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates a string received from outside (gRPC, Redis, a flag).
            pub fn parse(value: impl Into<String>) -> Result<Self, Error> {
                let value = value.into();
                validate($kind, &value)?;
                Ok(Self(value))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(value: String) -> Result<Self, Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

string_id!(
    /// A migration, unique across the fleet.
    MigrationId,
    "migration id"
);
string_id!(
    /// A worker process, chosen by the worker at start (host, pid and a random suffix).
    WorkerId,
    "worker id"
);
string_id!(
    /// A coordinator replica.
    CoordinatorId,
    "coordinator id"
);
string_id!(
    /// A task (one leased chunk copy or checksum range).
    TaskId,
    "task id"
);

impl WorkerId {
    /// A fresh id for this process: `<host>-<pid>-<random>`, sanitised to the allowed characters.
    pub fn generate(hostname: &str, pid: u32) -> Self {
        let random = uuid::Uuid::new_v4().simple().to_string();
        Self(format!("{}-{pid}-{}", sanitise(hostname), &random[..8]))
    }
}

impl CoordinatorId {
    /// A fresh id for this process: `<host>-<pid>`, sanitised to the allowed characters.
    pub fn generate(hostname: &str, pid: u32) -> Self {
        Self(format!("{}-{pid}", sanitise(hostname)))
    }
}

/// Replaces characters that ids may not hold with '-', and bounds the length.
fn sanitise(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "host".to_owned()
    } else {
        cleaned
    }
}

macro_rules! epoch {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub u64);

        impl $name {
            /// The next epoch.
            pub fn next(self) -> Self {
                Self(self.0 + 1)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

epoch!(
    /// Epoch of one lease of a task; reports carrying an older one are refused (INV-L1).
    LeaseEpoch
);
epoch!(
    /// Epoch stored in `_<t>_fence` for a chunk; copy transactions check it (INV-F1).
    FenceEpoch
);
epoch!(
    /// Epoch of a migration's owner; durable writes check it (INV-O1).
    OwnerEpoch
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_empty_long_and_odd_ids() {
        assert_eq!(WorkerId::parse(""), Err(Error::Empty { kind: "worker id" }));
        assert!(matches!(
            WorkerId::parse("a".repeat(MAX_ID_LEN + 1)),
            Err(Error::TooLong { .. })
        ));
        assert!(matches!(
            MigrationId::parse("shoal:worker:x"),
            Err(Error::BadCharacter { .. })
        ));
        assert_eq!(MigrationId::parse("m-1.a_b").unwrap().as_str(), "m-1.a_b");
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let first = WorkerId::generate("host name:with/odd chars", 42);
        let second = WorkerId::generate("host name:with/odd chars", 42);
        assert!(WorkerId::parse(first.as_str()).is_ok());
        assert!(first.as_str().starts_with("host-name-with-odd-chars-42-"));
        assert_ne!(first, second);
        assert_eq!(
            CoordinatorId::generate("", 7).as_str(),
            "host-7",
            "an empty hostname still yields a valid id"
        );
    }

    #[test]
    fn epochs_advance() {
        assert_eq!(LeaseEpoch(1).next(), LeaseEpoch(2));
        assert!(FenceEpoch(3) > FenceEpoch(2));
    }
}
