//! The private SQL server (MariaDB, or MySQL 9.7 with `SHOAL_TEST_SERVER=mysql`) and Redis
//! shared by the tests of one run, and per-test isolation.
//!
//! # Design decisions
//! nextest runs every test in its own process, so "one server per binary" cannot be a static.
//! The first test process of a run starts the servers under a directory named after the run
//! (`NEXTEST_RUN_ID`; outside nextest, the test process id), guarded by a file lock; later
//! processes find `servers.json` there and join. A detached reaper shell waits for the run to
//! end (the nextest process, or the test process outside nextest), then kills both servers by
//! pid and removes the directory. Isolation between tests is a database per test and a Redis
//! key namespace per test.
//!
//! Tests that need servers of their own (to kill or restart them) use
//! [`crate::mariadb::MariaDb::start`] / [`crate::redis_server::RedisServer::start`] directly;
//! those die with their handle.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::Context;
use mysql_async::prelude::Queryable;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use shoal_common::sql::quote_identifier;

use crate::mariadb::{MariaDb, MariaDbInfo};
use crate::redis_server::{RedisInfo, RedisServer, answers_ping};

/// The shared servers of this run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Servers {
    /// The private MariaDB, or MySQL with `SHOAL_TEST_SERVER=mysql`.
    pub mariadb: SqlServer,
    /// The private Redis.
    pub redis: RedisInfo,
}

/// Which server the shared one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Flavour {
    /// MariaDB 10.11 from Debian 12.
    MariaDb,
    /// MySQL 9.7 from Debian sid, in its chroot.
    MySql,
}

/// The flavour this run's shared server is: `SHOAL_TEST_SERVER=mysql` picks MySQL 9.7 (`make
/// test` runs the suite once on each), anything else MariaDB.
pub fn flavour() -> Flavour {
    match std::env::var("SHOAL_TEST_SERVER").as_deref() {
        Ok("mysql") => Flavour::MySql,
        _ => Flavour::MariaDb,
    }
}

/// The shared SQL server of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SqlServer {
    /// Its flavour.
    pub flavour: Flavour,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Process id of the server.
    pub pid: u32,
    /// Its directory (the reaper removes it; the error log is in it).
    pub dir: PathBuf,
}

impl SqlServer {
    /// DSN of the test account for `database`.
    pub fn dsn(&self, database: &str) -> String {
        format!(
            "mysql://{}:{}@127.0.0.1:{}/{database}",
            crate::mariadb::TEST_USER,
            crate::mariadb::TEST_PASSWORD,
            self.port
        )
    }

    /// The server's error log, for failure messages.
    pub fn error_log(&self) -> String {
        let name = match self.flavour {
            Flavour::MariaDb => "mariadbd.err",
            Flavour::MySql => "mysqld.err",
        };
        fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}

/// A database created for one test.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    /// Its name.
    pub name: String,
    /// DSN of the test account, selecting this database.
    pub dsn: String,
}

impl TestDatabase {
    /// A new connection to the database.
    pub async fn connect(&self) -> anyhow::Result<mysql_async::Conn> {
        let opts = mysql_async::Opts::from_url(&self.dsn).context("parse test DSN")?;
        mysql_async::Conn::new(opts)
            .await
            .with_context(|| format!("connect to test database {}", self.name))
    }
}

static SHARED: OnceLock<Servers> = OnceLock::new();

/// The servers shared by this test run, started on first use.
///
/// # Panics
/// When the servers cannot start (a missing Debian package is named in the message).
pub fn shared() -> &'static Servers {
    SHARED.get_or_init(|| {
        start_or_join().unwrap_or_else(|error| panic!("start the test servers: {error:#}"))
    })
}

/// A lowercase, identifier-safe label with a random suffix, unique per call.
pub fn unique_name(label: &str) -> String {
    let cleaned: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{cleaned}_{}", &random[..8])
}

impl Servers {
    /// Creates a fresh database for one test.
    pub async fn database(&self, label: &str) -> anyhow::Result<TestDatabase> {
        let name = unique_name(label);
        let opts = mysql_async::Opts::from_url(&self.mariadb.dsn("")).context("parse DSN")?;
        let mut connection = mysql_async::Conn::new(opts)
            .await
            .context("connect to the shared test server")?;
        connection
            .query_drop(format!("CREATE DATABASE {}", quote_identifier(&name)))
            .await
            .with_context(|| format!("create database {name}"))?;
        connection.disconnect().await.context("disconnect")?;
        Ok(TestDatabase {
            dsn: self.mariadb.dsn(&name),
            name,
        })
    }

    /// A Redis key namespace no other test uses.
    pub fn redis_namespace(&self, label: &str) -> String {
        unique_name(label)
    }
}

/// (directory key, pid whose exit ends the run)
fn run_identity() -> (String, u32) {
    match std::env::var("NEXTEST_RUN_ID") {
        Ok(run_id) => (
            format!("nextest-{run_id}"),
            nix::unistd::getppid().as_raw().unsigned_abs(),
        ),
        Err(_) => {
            let pid = std::process::id();
            (format!("pid-{pid}"), pid)
        }
    }
}

fn harness_root() -> PathBuf {
    std::env::var_os("SHOAL_HARNESS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("shoal-harness"))
}

fn alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|pid| kill(Pid::from_raw(pid), None).is_ok())
}

fn start_or_join() -> anyhow::Result<Servers> {
    let (key, watched_pid) = run_identity();
    let dir = harness_root().join(key);
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let lock_file = File::create(dir.join("lock")).context("create the harness lock file")?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| errno)
        .context("lock the harness directory")?;
    let state = dir.join("servers.json");
    if let Ok(text) = fs::read_to_string(&state) {
        let servers: Servers = serde_json::from_str(&text).context("read servers.json")?;
        if alive(servers.mariadb.pid) && answers_ping(servers.redis.port) {
            return Ok(servers);
        }
        anyhow::bail!(
            "the shared test servers in {} died during the run; MariaDB error log:\n{}",
            dir.display(),
            servers.mariadb.error_log()
        );
    }
    let sql = match flavour() {
        Flavour::MariaDb => {
            let info: MariaDbInfo = MariaDb::start(&dir.join("mariadb"))?.detach();
            SqlServer {
                flavour: Flavour::MariaDb,
                port: info.port,
                pid: info.pid,
                dir: info.dir,
            }
        }
        Flavour::MySql => {
            let (port, pid, server_dir) = crate::mysql::MySql::start()?.detach();
            SqlServer {
                flavour: Flavour::MySql,
                port,
                pid,
                dir: server_dir,
            }
        }
    };
    let redis = RedisServer::start(&dir.join("redis"))?;
    spawn_reaper(watched_pid, sql.pid, redis.info.pid, &[&dir, &sql.dir])?;
    let servers = Servers {
        mariadb: sql,
        redis: redis.detach(),
    };
    fs::write(&state, serde_json::to_string(&servers)?).context("write servers.json")?;
    Ok(servers)
}

/// Starts a detached shell that kills the servers and removes `dirs` once `watched_pid` exits.
fn spawn_reaper(
    watched_pid: u32,
    sql_pid: u32,
    redis_pid: u32,
    dirs: &[&Path],
) -> anyhow::Result<()> {
    let script = r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done
kill -9 "$2" "$3" 2>/dev/null
for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$2" 2>/dev/null || kill -0 "$3" 2>/dev/null || break; sleep 0.3; done
shift 3
rm -rf "$@""#;
    Command::new("sh")
        .args(["-c", script, "shoal-reaper"])
        .arg(watched_pid.to_string())
        .arg(sql_pid.to_string())
        .arg(redis_pid.to_string())
        .args(dirs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("start the server reaper")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::unique_name;

    #[test]
    fn unique_names_are_identifier_safe_and_distinct() {
        let first = unique_name("Fleet Registry/SIGKILL");
        assert!(first.starts_with("fleet_registry_sigkill_"), "{first}");
        assert!(first.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        assert_ne!(first, unique_name("Fleet Registry/SIGKILL"));
    }
}
