//! A private MariaDB server with the row binlog on, in its own directory on a free port.
//!
//! `mariadb-install-db` initialises the datadir; `mariadbd` runs with `log_bin`,
//! `binlog_format=ROW`, `binlog_row_image=FULL` and a `server_id`, listening on 127.0.0.1 and a
//! unix socket. Root logs in over the socket only; tests use the account `shoal` over TCP.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::system::{find_program, free_port};
use crate::wait::until_blocking;

/// Account the tests (and shoal under test) use over TCP.
pub const TEST_USER: &str = "shoal";
/// Its password: a test secret, never a real one.
pub const TEST_PASSWORD: &str = "shoal-test-password";
/// Server id of the private server (the binlog needs one).
pub const SERVER_ID: u32 = 1;

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a running private server can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MariaDbInfo {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Unix socket (root logs in here).
    pub socket: PathBuf,
    /// Process id of `mariadbd`.
    pub pid: u32,
    /// Directory holding datadir, config and error log.
    pub dir: PathBuf,
}

impl MariaDbInfo {
    /// DSN of the test account for `database`.
    pub fn dsn(&self, database: &str) -> String {
        format!(
            "mysql://{TEST_USER}:{TEST_PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// The server's error log, for failure messages.
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("mariadbd.err")).unwrap_or_default()
    }

    /// Runs SQL as root over the socket with the `mariadb` client.
    pub fn root_sql(&self, sql: &str) -> anyhow::Result<String> {
        let client = find_program("mariadb", "mariadb-client")?;
        let output = Command::new(client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-uroot", "--batch", "--skip-column-names", "-e", sql])
            .output()
            .context("run the mariadb client")?;
        if !output.status.success() {
            bail!(
                "mariadb client failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// A private server. Dropping it kills the server unless it was detached.
#[derive(Debug)]
pub struct MariaDb {
    /// How to reach it.
    pub info: MariaDbInfo,
    /// The server process while owned; `None` once detached.
    child: Option<Child>,
}

fn config_text(dir: &Path, port: u16, run_as_root: bool) -> String {
    let user = if run_as_root { "user=root\n" } else { "" };
    format!(
        "[mariadbd]\n\
         {user}\
         datadir={data}\n\
         socket={dir}/mysqld.sock\n\
         pid-file={dir}/mariadbd.pid\n\
         log-error={dir}/mariadbd.err\n\
         tmpdir={dir}/tmp\n\
         port={port}\n\
         bind-address=127.0.0.1\n\
         skip-name-resolve\n\
         log-bin={dir}/binlog/mariadb-bin\n\
         binlog_format=ROW\n\
         binlog_row_image=FULL\n\
         server_id={SERVER_ID}\n\
         max_connections=500\n\
         innodb_buffer_pool_size=256M\n\
         innodb_log_file_size=128M\n\
         innodb_flush_log_at_trx_commit=2\n\
         sync_binlog=0\n\
         character-set-server=utf8mb4\n\
         collation-server=utf8mb4_general_ci\n",
        data = dir.join("data").display(),
        dir = dir.display(),
    )
}

impl MariaDb {
    /// Initialises a datadir under `dir` and starts a server on a free port; returns once it
    /// answers queries and the test account exists.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(dir, "")
    }

    /// [`MariaDb::start`] with `extra` lines appended to its `[mariadbd]` section (later
    /// settings win), e.g. the benchmark's production-like durability and buffer pool.
    pub fn start_with(dir: &Path, extra: &str) -> anyhow::Result<Self> {
        let install_db = find_program("mariadb-install-db", "mariadb-server")?;
        let server = find_program("mariadbd", "mariadb-server")?;
        find_program("mariadb", "mariadb-client")?;
        fs::create_dir_all(dir.join("binlog")).context("create the binlog directory")?;
        // A private tmpdir: concurrent bootstraps in the shared /tmp collide on file names.
        fs::create_dir_all(dir.join("tmp")).context("create the tmp directory")?;
        let run_as_root = nix::unistd::geteuid().is_root();
        let port = free_port().context("pick a port for mariadbd")?;
        let config = dir.join("my.cnf");
        fs::write(&config, config_text(dir, port, run_as_root) + extra).context("write my.cnf")?;

        let install = Command::new(install_db)
            .arg(format!("--defaults-file={}", config.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .stdin(Stdio::null())
            .output()
            .context("run mariadb-install-db")?;
        if !install.status.success() {
            bail!(
                "mariadb-install-db failed: {}{}",
                String::from_utf8_lossy(&install.stdout),
                String::from_utf8_lossy(&install.stderr)
            );
        }

        let mut child = Command::new(server)
            .arg(format!("--defaults-file={}", config.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C aimed at the test run does not reach it directly.
            .process_group(0)
            .spawn()
            .context("start mariadbd")?;
        let info = MariaDbInfo {
            port,
            socket: dir.join("mysqld.sock"),
            pid: child.id(),
            dir: dir.to_path_buf(),
        };
        let ready = until_blocking(
            "mariadbd to answer queries",
            START_TIMEOUT,
            Duration::from_millis(100),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    return Some(Err(anyhow::anyhow!(
                        "mariadbd exited with {status} during start-up; error log:\n{}",
                        info.error_log()
                    )));
                }
                info.root_sql("SELECT 1").ok().map(|_| Ok(()))
            },
        );
        let ready = ready.and_then(|outcome| outcome);
        if let Err(error) = ready {
            let _ = child.kill();
            let _ = child.wait();
            return Err(error.context(format!("error log:\n{}", info.error_log())));
        }
        let create_account = format!(
            "CREATE USER '{TEST_USER}'@'127.0.0.1' IDENTIFIED BY '{TEST_PASSWORD}'; \
             GRANT ALL PRIVILEGES ON *.* TO '{TEST_USER}'@'127.0.0.1' WITH GRANT OPTION;"
        );
        info.root_sql(&create_account)
            .context("create the test account")?;
        Ok(Self {
            info,
            child: Some(child),
        })
    }

    /// A replica of `primary` (server id 2), replicating from the primary's current binlog
    /// position; returns once both replication threads run.
    pub fn start_replica_of(dir: &Path, primary: &MariaDbInfo) -> anyhow::Result<Self> {
        let replica = Self::start_with(dir, "server_id=2\nread_only=ON\n")?;
        let status = primary.root_sql("SHOW MASTER STATUS")?;
        let mut fields = status.split_whitespace();
        let (Some(file), Some(position)) = (fields.next(), fields.next()) else {
            bail!("SHOW MASTER STATUS on the primary returned {status:?}");
        };
        replica.info.root_sql(&format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, \
             MASTER_USER='{TEST_USER}', MASTER_PASSWORD='{TEST_PASSWORD}', \
             MASTER_LOG_FILE='{file}', MASTER_LOG_POS={position}, MASTER_USE_GTID=no; \
             START SLAVE",
            primary.port
        ))?;
        until_blocking(
            "the replica's threads to run",
            START_TIMEOUT,
            Duration::from_millis(100),
            || {
                // ON once both the I/O and the SQL thread run.
                let status = replica
                    .info
                    .root_sql("SHOW GLOBAL STATUS LIKE 'Slave_running'")
                    .ok()?;
                status.contains("ON").then_some(())
            },
        )
        .with_context(|| {
            format!(
                "replica status:\n{}",
                replica
                    .info
                    .root_sql("SHOW SLAVE STATUS\\G")
                    .unwrap_or_default()
            )
        })?;
        Ok(replica)
    }

    /// Lets the server outlive this handle (for servers shared across test processes, which a
    /// reaper stops instead).
    pub fn detach(mut self) -> MariaDbInfo {
        self.child = None;
        self.info.clone()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
