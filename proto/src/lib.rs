//! shoal's gRPC contract, `shoal.v1`, generated from `proto/shoal/v1/*.proto` at build time.
//!
//! # Layout
//! - `shoal/v1/common.proto`: keys, key ranges, table references, worker info.
//! - `shoal/v1/migration.proto`: `MigrationService`, what people and services call.
//! - `shoal/v1/work.proto`: `WorkService`, what workers call.
//!
//! [`auth`] holds the bearer token the calls carry when the fleet requires one; [`tls`] the
//! TLS (and mutual TLS) flags and configurations;
//! [`connection`] the connect timeout and keep-alive every client and server uses.
//!
//! Ids travel as strings and integers on the wire; `shoal-common` turns them into newtypes at
//! the edge.

pub mod auth;
pub mod connection;
pub mod tls;

/// The `shoal.v1` package.
pub mod v1 {
    #![allow(missing_docs, unused_qualifications, missing_debug_implementations)]
    tonic::include_proto!("shoal.v1");
}

/// Encoded `FileDescriptorSet` of every shoal proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("shoal_descriptor");
