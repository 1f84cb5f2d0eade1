//! Worker configuration: flags, each with a `SHOAL_*` environment equivalent.

use std::time::Duration;

use clap::Parser;
use shoal_common::telemetry::LogFormat;

/// shoal worker: leases chunk-copy and checksum tasks from a coordinator and runs them.
#[derive(Debug, Clone, Parser)]
#[command(name = "shoal-worker", version, about, long_about = None)]
#[command(
    after_help = "Example:\n  shoal-worker --coordinator http://coordinator:7420 --concurrency 4"
)]
pub struct Config {
    /// gRPC address of any coordinator replica.
    #[arg(
        long,
        env = "SHOAL_COORDINATOR",
        default_value = "http://127.0.0.1:7420"
    )]
    pub coordinator: String,

    /// Tasks run at once (slots).
    #[arg(long, env = "SHOAL_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,

    /// How long one AcquireTask long poll may wait (the coordinator may cap it).
    #[arg(long, env = "SHOAL_POLL_WAIT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub poll_wait: Duration,

    /// Bound on every lock wait of the worker's MySQL sessions.
    #[arg(long, env = "SHOAL_LOCK_WAIT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub lock_wait_timeout: Duration,

    /// Identity of this worker (default: host name, pid and a random suffix).
    #[arg(long, env = "SHOAL_WORKER_ID")]
    pub id: Option<String>,

    /// File holding the bearer token the coordinators require (their --auth-token-file).
    #[arg(long, env = "SHOAL_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<std::path::PathBuf>,

    /// TLS to the coordinator (an https:// --coordinator), and this worker's certificate for
    /// mutual TLS.
    #[command(flatten)]
    pub tls: shoal_proto::tls::ClientTlsArgs,

    /// Address of the Prometheus `/metrics` endpoint; off when unset.
    #[arg(long, env = "SHOAL_HTTP")]
    pub http: Option<std::net::SocketAddr>,

    /// Log line format: text or json.
    #[arg(long, env = "SHOAL_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_bound_concurrency() {
        let config = Config::try_parse_from(["shoal-worker", "--concurrency", "2"]).unwrap();
        assert_eq!(config.concurrency, 2);
        assert!(Config::try_parse_from(["shoal-worker", "--concurrency", "0"]).is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Config::command().debug_assert();
    }
}
