//! MySQL sessions as shoal needs them, and target names resolved to DSNs.
//!
//! Every shoal connection runs with `time_zone='+00:00'`, utf8mb4, a strict `sql_mode` with
//! `NO_AUTO_VALUE_ON_ZERO` (so copied zeros stay zeros and bad values fail instead of being
//! mangled), and short lock waits (so shoal never queues behind the application for long).
//!
//! # Secrets
//! Targets are names. Each process resolves a name to a DSN from its own environment
//! (`SHOAL_TARGET_<NAME>`) or a file (`SHOAL_TARGET_<NAME>_FILE`), so no password travels in gRPC
//! or sits in Redis; [`redact_dsn`] keeps passwords out of logs and errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::{OptsBuilder, Pool, PoolConstraints, PoolOpts};

/// Why a target cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No DSN is configured for the name.
    #[error(
        "target {name:?} is not configured on this process; set SHOAL_TARGET_{env} (a DSN) or \
         SHOAL_TARGET_{env}_FILE (a file holding one)"
    )]
    UnknownTarget {
        /// The target name.
        name: String,
        /// Its environment-variable form.
        env: String,
    },
    /// The DSN does not parse.
    #[error("the DSN of target {name:?} ({redacted}) is invalid: {reason}")]
    BadDsn {
        /// The target name.
        name: String,
        /// The DSN without its password.
        redacted: String,
        /// What is wrong.
        reason: String,
    },
    /// The DSN file cannot be read.
    #[error("read the DSN file of target {name:?}: {source}")]
    DsnFile {
        /// The target name.
        name: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Statements run on every new session.
pub fn session_setup(lock_wait_timeout: Duration) -> Vec<String> {
    let seconds = lock_wait_timeout.as_secs().max(1);
    vec![
        "SET time_zone = '+00:00'".to_owned(),
        "SET NAMES utf8mb4".to_owned(),
        "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION,\
         ERROR_FOR_DIVISION_BY_ZERO'"
            .to_owned(),
        format!("SET SESSION innodb_lock_wait_timeout = {seconds}"),
        format!("SET SESSION lock_wait_timeout = {seconds}"),
    ]
}

/// A DSN with its password replaced by `***`.
pub fn redact_dsn(dsn: &str) -> String {
    let Some((scheme, rest)) = dsn.split_once("://") else {
        return "<not a URL>".to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return dsn.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => dsn.to_owned(),
    }
}

/// Whether `error` means the server refuses new connections for now (too many connections, the
/// account's connection limit, a refused or reset socket while it restarts): waiting may cure it.
pub fn refused_for_now(error: &mysql_async::Error) -> bool {
    match error {
        mysql_async::Error::Server(server) => matches!(server.code, 1040 | 1203),
        mysql_async::Error::Io(_) => true,
        _ => false,
    }
}

/// Runs `connect` again while the server refuses new connections, for up to `patience`, with
/// back-off; any other error, or the last refusal, is returned.
pub async fn patiently<T, F, Fut>(
    patience: Duration,
    mut connect: F,
) -> Result<T, mysql_async::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, mysql_async::Error>>,
{
    let started = std::time::Instant::now();
    let mut attempt = 0;
    loop {
        match connect().await {
            Ok(value) => return Ok(value),
            Err(error) if refused_for_now(&error) && started.elapsed() < patience => {
                attempt += 1;
                tracing::warn!(%error, attempt, "the server refuses new connections; retrying");
                tokio::time::sleep(shoal_common::backoff::delay(
                    attempt,
                    Duration::from_millis(100),
                    Duration::from_secs(2),
                    0.5,
                ))
                .await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Builds a pool for `dsn` with shoal's session settings, selecting `database` when given (a
/// typed option: a name never becomes part of a URL, where `?` or `#` would change its meaning).
pub fn pool_for(
    name: &str,
    dsn: &str,
    database: Option<&str>,
    lock_wait_timeout: Duration,
    max_connections: usize,
) -> Result<Pool, Error> {
    let opts = shoal_mysql::dsn::opts(dsn).map_err(|reason| Error::BadDsn {
        name: name.to_owned(),
        redacted: redact_dsn(dsn),
        reason,
    })?;
    let constraints = PoolConstraints::new(0, max_connections.max(1)).unwrap_or_default();
    let mut builder = OptsBuilder::from_opts(opts);
    if let Some(database) = database {
        builder = builder.db_name(Some(database));
    }
    let builder = builder
        .setup(session_setup(lock_wait_timeout))
        .pool_opts(PoolOpts::default().with_constraints(constraints))
        .tcp_nodelay(true)
        .stmt_cache_size(64);
    Ok(Pool::new(builder))
}

fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Resolves target names to pools, once per name.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// DSNs given directly (e.g. `shoal run --dsn`), by name.
    explicit: Arc<HashMap<String, String>>,
    /// Pools opened so far.
    pools: Arc<Mutex<HashMap<String, Pool>>>,
    /// Lock-wait bound of every session.
    lock_wait_timeout: Duration,
    /// Connections per pool.
    max_connections: usize,
}

impl Targets {
    /// Targets from the environment, plus `explicit` name → DSN pairs.
    pub fn new(
        explicit: HashMap<String, String>,
        lock_wait_timeout: Duration,
        max_connections: usize,
    ) -> Self {
        Self {
            explicit: Arc::new(explicit),
            pools: Arc::default(),
            lock_wait_timeout,
            max_connections,
        }
    }

    /// The DSN configured for `name`.
    pub fn dsn(&self, name: &str) -> Result<String, Error> {
        if let Some(dsn) = self.explicit.get(name) {
            return Ok(dsn.clone());
        }
        let env = env_name(name);
        if let Ok(dsn) = std::env::var(format!("SHOAL_TARGET_{env}")) {
            return Ok(dsn);
        }
        if let Ok(path) = std::env::var(format!("SHOAL_TARGET_{env}_FILE")) {
            let text = std::fs::read_to_string(path).map_err(|source| Error::DsnFile {
                name: name.to_owned(),
                source,
            })?;
            return Ok(text.trim().to_owned());
        }
        Err(Error::UnknownTarget {
            name: name.to_owned(),
            env,
        })
    }

    /// Every target name configured on this process: the explicit ones and those named by
    /// `SHOAL_TARGET_<NAME>[_FILE]` variables (lower-cased).
    pub fn configured(&self) -> Vec<String> {
        let mut names: Vec<String> = self.explicit.keys().cloned().collect();
        for (key, _) in std::env::vars() {
            if let Some(rest) = key.strip_prefix("SHOAL_TARGET_") {
                let name = rest
                    .strip_suffix("_FILE")
                    .unwrap_or(rest)
                    .to_ascii_lowercase();
                if !name.is_empty() && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// The pool of `name`, opened on first use.
    pub fn pool(&self, name: &str) -> Result<Pool, Error> {
        let mut pools = self
            .pools
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(pool) = pools.get(name) {
            return Ok(pool.clone());
        }
        let pool = pool_for(
            name,
            &self.dsn(name)?,
            None,
            self.lock_wait_timeout,
            self.max_connections,
        )?;
        pools.insert(name.to_owned(), pool.clone());
        Ok(pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_password() {
        assert_eq!(
            redact_dsn("mysql://root:hunter2@db:3306/shop"),
            "mysql://root:***@db:3306/shop"
        );
        assert_eq!(redact_dsn("mysql://root@db/shop"), "mysql://root@db/shop");
        assert_eq!(redact_dsn("garbage hunter2"), "<not a URL>");
    }

    #[test]
    fn explicit_targets_win_and_unknown_ones_name_the_variable() {
        let targets = Targets::new(
            HashMap::from([("local".to_owned(), "mysql://u@h/d".to_owned())]),
            Duration::from_secs(3),
            4,
        );
        assert_eq!(targets.dsn("local").unwrap(), "mysql://u@h/d");
        let error = targets
            .dsn("shop-primary-never-set")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("SHOAL_TARGET_SHOP_PRIMARY_NEVER_SET"),
            "{error}"
        );
    }

    #[test]
    fn bad_dsn_errors_do_not_leak_the_password() {
        let error = pool_for(
            "x",
            "mysql://u:hunter2@host:notaport/db",
            None,
            Duration::from_secs(1),
            1,
        )
        .expect_err("a port that is not a number is refused")
        .to_string();
        assert!(error.contains("u:***@"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
