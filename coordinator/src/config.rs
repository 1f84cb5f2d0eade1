//! Coordinator configuration: flags, each with a `SHOAL_*` environment equivalent.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use shoal_common::telemetry::LogFormat;

/// shoal coordinator: holds migration lifecycles and leases, and hands chunk tasks to workers.
#[derive(Debug, Clone, Parser)]
#[command(name = "shoal-coordinator", version, about, long_about = None)]
#[command(
    after_help = "Example:\n  shoal-coordinator --redis redis://127.0.0.1:6379 --listen 0.0.0.0:7420 \\\n    --auth-token-file /run/secrets/shoal-token"
)]
pub struct Config {
    /// Address the gRPC API (MigrationService, WorkService, health, reflection) listens on.
    #[arg(long, env = "SHOAL_LISTEN", default_value = "127.0.0.1:7420")]
    pub listen: SocketAddr,

    /// Address of the JSON status API (`/api/v1/migrations/...`) and of `/metrics`; off when
    /// unset.
    #[arg(long, env = "SHOAL_HTTP")]
    pub http: Option<SocketAddr>,

    /// Redis URL for the live state shared by coordinator replicas. Without it the coordinator
    /// keeps that state in memory, and only one coordinator may run.
    #[arg(long, env = "SHOAL_REDIS")]
    pub redis: Option<String>,

    /// Prefix of every Redis key, so several fleets can share one Redis.
    #[arg(long, env = "SHOAL_NAMESPACE", default_value = "shoal")]
    pub namespace: String,

    /// A worker that has not heartbeated for this long is dropped from the registry.
    #[arg(long, env = "SHOAL_WORKER_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub worker_ttl: Duration,

    /// Lease of one chunk task; workers extend it every third of it.
    #[arg(long, env = "SHOAL_LEASE_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,

    /// Longest time one AcquireTask long poll is held open.
    #[arg(long, env = "SHOAL_MAX_POLL_WAIT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub max_poll_wait: Duration,

    /// Owner lease of a migration: a standby coordinator takes an orphaned migration over once
    /// its owner has not renewed the lease for this long.
    #[arg(long, env = "SHOAL_OWNER_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub owner_ttl: Duration,

    /// How often the owner of a migration writes its checkpoint while copying.
    #[arg(long, env = "SHOAL_CHECKPOINT_INTERVAL", default_value = "50s", value_parser = humantime::parse_duration)]
    pub checkpoint_interval: Duration,

    /// How often the owner logs a status line for each migration until its cut-over.
    #[arg(long, env = "SHOAL_STATUS_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub status_interval: Duration,

    /// Identity of this replica (default: host name and pid).
    #[arg(long, env = "SHOAL_COORDINATOR_ID")]
    pub id: Option<String>,

    /// File holding a bearer token: every gRPC call (except health checks) and every status-API
    /// request must then carry `authorization: Bearer <token>`. Workers and the CLI take the
    /// same flag.
    #[arg(long, env = "SHOAL_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<std::path::PathBuf>,

    /// Listen beyond loopback with no bearer token (and, for gRPC, no client certificates):
    /// anyone who reaches the port may then submit ALTERs. Refused without this flag.
    #[arg(long, env = "SHOAL_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// Most shoal migrations copying on one MySQL server at once, across every process that
    /// sets it (advisory locks `shoal/slot/<i>`); a migration over the cap is refused. 0: no cap.
    #[arg(long, env = "SHOAL_MAX_CONCURRENT_MIGRATIONS", default_value_t = 0)]
    pub max_concurrent_migrations: u32,

    /// TLS (and mutual TLS) for gRPC and the status API.
    #[command(flatten)]
    pub tls: shoal_proto::tls::ServerTlsArgs,

    /// Log line format: text or json.
    #[arg(long, env = "SHOAL_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// An endpoint that would accept calls from beyond this host without authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// gRPC without a bearer token or client certificates.
    Grpc(SocketAddr),
    /// The status API without a bearer token (it does not ask for client certificates).
    StatusApi(SocketAddr),
}

impl Exposure {
    /// What anyone who reaches it can do.
    pub fn power(self) -> &'static str {
        match self {
            Exposure::Grpc(_) => "submit ALTERs",
            Exposure::StatusApi(_) => "read every migration's status",
        }
    }
}

impl std::fmt::Display for Exposure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exposure::Grpc(address) => write!(f, "gRPC on {address}"),
            Exposure::StatusApi(address) => write!(f, "the status API on {address}"),
        }
    }
}

impl Config {
    /// The endpoints that would accept calls from beyond this host without authentication.
    pub fn unauthenticated_exposure(&self) -> Vec<Exposure> {
        let token = self.auth_token_file.is_some();
        let mut exposed = Vec::new();
        if !self.listen.ip().is_loopback() && !token && self.tls.tls_client_ca.is_none() {
            exposed.push(Exposure::Grpc(self.listen));
        }
        if let Some(http) = self.http
            && !http.ip().is_loopback()
            && !token
        {
            exposed.push(Exposure::StatusApi(http));
        }
        exposed
    }

    /// What the status API and `ListMigrations` show about the coordinator itself: each
    /// endpoint open without authentication because `--allow-unauthenticated` was given.
    pub fn warnings(&self) -> Vec<String> {
        self.unauthenticated_exposure()
            .into_iter()
            .map(|endpoint| {
                format!(
                    "{endpoint} accepts calls without authentication (--allow-unauthenticated): \
                     anyone who reaches it can {}",
                    endpoint.power()
                )
            })
            .collect()
    }

    /// The refusal to start with [`Self::unauthenticated_exposure`], unless
    /// `--allow-unauthenticated` says so.
    pub fn check_exposure(&self) -> Result<(), String> {
        let exposed = self.unauthenticated_exposure();
        if exposed.is_empty() || self.allow_unauthenticated {
            return Ok(());
        }
        let described: Vec<String> = exposed
            .iter()
            .map(|endpoint| {
                format!(
                    "{endpoint} (anyone who reaches it could {})",
                    endpoint.power()
                )
            })
            .collect();
        Err(format!(
            "{} would accept calls without authentication; give --auth-token-file (or, for \
             gRPC, --tls-client-ca), listen on 127.0.0.1, or pass --allow-unauthenticated",
            described.join(" and ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_loopback_needs_a_token_client_certificates_or_the_explicit_flag() {
        let parse = |args: &[&str]| {
            let mut all = vec!["shoal-coordinator"];
            all.extend_from_slice(args);
            Config::try_parse_from(all).unwrap()
        };
        assert!(parse(&[]).check_exposure().is_ok(), "loopback by default");
        let open = parse(&["--listen", "0.0.0.0:7420"]);
        let refusal = open.check_exposure().unwrap_err();
        assert!(
            refusal.contains("gRPC on 0.0.0.0:7420") && refusal.contains("--auth-token-file"),
            "{refusal}"
        );
        assert!(
            parse(&["--listen", "0.0.0.0:7420", "--auth-token-file", "t"])
                .check_exposure()
                .is_ok()
        );
        assert!(
            parse(&[
                "--listen",
                "10.0.0.1:7420",
                "--tls-cert",
                "c",
                "--tls-key",
                "k",
                "--tls-client-ca",
                "ca"
            ])
            .check_exposure()
            .is_ok(),
            "mutual TLS authenticates gRPC"
        );
        // Client certificates do not cover the status API.
        let http = parse(&[
            "--http",
            "[::]:8080",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--tls-client-ca",
            "ca",
        ]);
        assert!(
            http.check_exposure()
                .unwrap_err()
                .contains("the status API on [::]:8080")
        );
        assert!(
            parse(&["--listen", "0.0.0.0:7420", "--allow-unauthenticated"])
                .check_exposure()
                .is_ok()
        );
        assert!(
            parse(&["--listen", "[::1]:7420", "--http", "127.0.0.1:8080"])
                .check_exposure()
                .is_ok()
        );
    }

    #[test]
    fn flags_parse_with_defaults() {
        let config = Config::try_parse_from(["shoal-coordinator", "--worker-ttl", "2s"]).unwrap();
        assert_eq!(config.worker_ttl, Duration::from_secs(2));
        assert_eq!(config.listen, "127.0.0.1:7420".parse().unwrap());
        assert_eq!(config.redis, None);
        assert_eq!(config.log_format, LogFormat::Text);
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Config::try_parse_from(["shoal-coordinator", "--worker-ttl", "soon"]).is_err());
        assert!(Config::try_parse_from(["shoal-coordinator", "--log-format", "xml"]).is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Config::command().debug_assert();
    }
}
