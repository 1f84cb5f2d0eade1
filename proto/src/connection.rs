//! How shoal's gRPC clients (workers, the CLI) and the coordinator keep connections honest: a
//! bounded connect, and HTTP/2 keep-alive pings on both sides, so that a dead peer, a silent
//! partition or a TLS session the server already refused is noticed in seconds instead of when
//! TCP gives up (minutes) or never.

use std::time::Duration;

use tonic::transport::{Endpoint, Server};

/// Longest a client waits for a TCP (and TLS) connection to a coordinator.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an otherwise idle connection is pinged.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection is dropped.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a server waits for a client's TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `endpoint` with shoal's client connection policy.
pub fn client(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
}

/// `server` with shoal's server connection policy.
pub fn server(server: Server) -> Server {
    server
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
}
