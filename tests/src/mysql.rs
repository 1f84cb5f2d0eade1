//! A private MySQL 9.7 with the row binlog on, in its own directory on a free port.
//!
//! Debian 12 has no MySQL server; Debian sid's `mysql-server-core` runs in a debootstrapped
//! root (`scripts/ensure-deps.sh` makes it, at `$SHOAL_SID_ROOT`, default `/opt/sid`). The
//! chroot shares the host's network, so shoal reaches the server over TCP on 127.0.0.1. The
//! server runs as the chroot's `mysql` user with GTIDs on, `binlog_row_metadata=FULL` and the
//! defaults of a stock 9.7 otherwise (`caching_sha2_password`, `utf8mb4_0900_ai_ci`). Root logs
//! in over the socket without a password; tests use the account `shoal` over TCP. Starting one
//! needs root (chroot).

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::mariadb::{TEST_PASSWORD, TEST_USER};
use crate::system::free_port;
use crate::wait::until_blocking;

const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The root filesystem holding MySQL.
pub fn sid_root() -> PathBuf {
    std::env::var_os("SHOAL_SID_ROOT").map_or_else(|| PathBuf::from("/opt/sid"), PathBuf::from)
}

/// A private MySQL server. Dropping it kills the server and removes its directory.
#[derive(Debug)]
pub struct MySql {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// The server's directory as seen inside the chroot.
    dir_inside: PathBuf,
    /// The server process (`chroot … mysqld`).
    child: Option<Child>,
}

impl MySql {
    /// Starts a server on a free port from a copy of the template datadir (see [`template`]); returns
    /// once the test account can log in over TCP.
    pub fn start() -> anyhow::Result<Self> {
        let root = sid_root();
        if !root.join("usr/sbin/mysqld").exists() {
            bail!(
                "MySQL 9.7 is not installed in {} (Debian sid's mysql-server-core in a \
                 debootstrapped root): run `make deps` as root, which makes it",
                root.display()
            );
        }
        if !nix::unistd::geteuid().is_root() {
            bail!("starting the private MySQL needs root (it runs in a chroot)");
        }
        let name = format!("shoal-mysql-{}", uuid::Uuid::new_v4().simple());
        let dir_inside = PathBuf::from("/var/tmp").join(&name);
        let dir = host_path(&dir_inside);
        let ids = chroot_output(&["id", "-u", "mysql"])
            .and_then(|uid| chroot_output(&["id", "-g", "mysql"]).map(|gid| (uid, gid)))
            .context("the chroot's mysql user (make deps creates it)")?;
        let owner = format!("{}:{}", ids.0.trim(), ids.1.trim());
        let template = template(&owner)?;
        fs::create_dir_all(dir.join("files")).context("create the MySQL directory")?;
        copy_tree(&template.join("data"), &dir.join("data"))?;
        chown(&owner, &dir)?;
        let port = free_port().context("pick a port for mysqld")?;
        fs::write(dir.join("my.cnf"), config(&dir_inside, port)).context("write my.cnf")?;
        let defaults = format!("--defaults-file={}", dir_inside.join("my.cnf").display());
        let userspec = format!("--userspec={owner}");
        let child = Command::new("chroot")
            .arg(&userspec)
            .arg(&root)
            .args(["/usr/sbin/mysqld", &defaults])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("start mysqld")?;
        let mut server = Self {
            port,
            dir_inside,
            child: Some(child),
        };
        let ready = until_blocking(
            "mysqld to answer queries",
            START_TIMEOUT,
            Duration::from_millis(200),
            || server.root_sql("SELECT 1").ok(),
        );
        if let Err(error) = ready {
            return Err(error.context(format!("error log:\n{}", server.error_log())));
        }
        server.root_sql(&format!(
            "CREATE USER '{TEST_USER}'@'127.0.0.1' IDENTIFIED BY '{TEST_PASSWORD}'; \
             GRANT ALL PRIVILEGES ON *.* TO '{TEST_USER}'@'127.0.0.1' WITH GRANT OPTION;"
        ))?;
        // caching_sha2_password: the first login over TCP without TLS needs the server's RSA
        // key; one login by the client (which fetches it) puts the account in the server's
        // cache, and later logins (the driver's) take the fast path.
        server.client(&[
            "--protocol=TCP",
            "--host=127.0.0.1",
            &format!("--port={port}"),
            &format!("--user={TEST_USER}"),
            &format!("--password={TEST_PASSWORD}"),
            "--get-server-public-key",
            "-e",
            "SELECT 1",
        ])?;
        if let Some(child) = server.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            bail!("mysqld exited with {status}:\n{}", server.error_log());
        }
        Ok(server)
    }

    /// DSN of the test account for `database`.
    pub fn dsn(&self, database: &str) -> String {
        format!(
            "mysql://{TEST_USER}:{TEST_PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Makes the server present `cert` (with `key`, issued by `ca`) from now on
    /// (`ALTER INSTANCE RELOAD TLS`); its own certificate names no host.
    pub fn install_tls(&self, ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<()> {
        let tls = self.dir().join("tls");
        fs::create_dir_all(&tls).context("create the TLS directory")?;
        let mut settings = Vec::new();
        for (variable, file, leaf) in [
            ("ssl_ca", ca, "ca.pem"),
            ("ssl_cert", cert, "cert.pem"),
            ("ssl_key", key, "key.pem"),
        ] {
            fs::copy(file, tls.join(leaf)).context("copy a TLS file")?;
            settings.push(format!(
                "SET GLOBAL {variable} = '{}';",
                self.dir_inside.join("tls").join(leaf).display()
            ));
        }
        let owner = format!(
            "{}:{}",
            chroot_output(&["id", "-u", "mysql"])?.trim(),
            chroot_output(&["id", "-g", "mysql"])?.trim()
        );
        chown(&owner, &tls)?;
        self.root_sql(&format!(
            "{} ALTER INSTANCE RELOAD TLS;",
            settings.join(" ")
        ))?;
        Ok(())
    }

    fn dir(&self) -> PathBuf {
        host_path(&self.dir_inside)
    }

    /// The server's error log, for failure messages.
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir().join("mysqld.err")).unwrap_or_default()
    }

    /// Runs SQL as root over the socket with the chroot's `mysql` client.
    pub fn root_sql(&self, sql: &str) -> anyhow::Result<String> {
        let socket = self.dir_inside.join("mysqld.sock");
        self.client(&[
            &format!("--socket={}", socket.display()),
            "-uroot",
            "--batch",
            "--skip-column-names",
            "-e",
            sql,
        ])
    }

    /// Logs `user` in once over TCP with the client, which fetches the server's RSA key: the
    /// account then sits in `caching_sha2_password`'s cache and the driver's logins (no TLS) take
    /// the fast path.
    pub fn prime_login(&self, user: &str, password: &str) -> anyhow::Result<()> {
        self.client(&[
            "--protocol=TCP",
            "--host=127.0.0.1",
            &format!("--port={}", self.port),
            &format!("--user={user}"),
            &format!("--password={password}"),
            "--get-server-public-key",
            "-e",
            "SELECT 1",
        ])?;
        Ok(())
    }

    fn client(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new("chroot")
            .arg(sid_root())
            .args(["/usr/bin/mysql", "--no-defaults"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("run the mysql client")?;
        if !output.status.success() {
            bail!(
                "mysql client failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl MySql {
    /// Lets the server outlive this handle (the shared server of a run, which the run's reaper
    /// kills): its port, process id and directory (as the host sees it).
    pub fn detach(mut self) -> (u16, u32, PathBuf) {
        let pid = self.child.take().map_or(0, |child| child.id());
        let dir = self.dir();
        // Nothing left for Drop to kill; the directory is the reaper's to remove.
        self.dir_inside = PathBuf::new();
        (self.port, pid, dir)
    }
}

impl Drop for MySql {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `chroot` execs mysqld, so the child is the server itself.
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.dir_inside.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(self.dir());
        }
    }
}

/// `inside` (a path in the chroot) as the host sees it.
fn host_path(inside: &Path) -> PathBuf {
    sid_root().join(inside.strip_prefix("/").unwrap_or(inside))
}

/// The server's settings for a directory (as the chroot sees it) and a port. The binlog is
/// named relative to the datadir, so that a copied datadir's binlog index stays true.
fn config(dir_inside: &Path, port: u16) -> String {
    let inside = |leaf: &str| dir_inside.join(leaf).display().to_string();
    format!(
        "[mysqld]\n\
         datadir={data}\n\
         socket={socket}\n\
         pid-file={pid}\n\
         log-error={error}\n\
         port={port}\n\
         bind-address=127.0.0.1\n\
         mysqlx=OFF\n\
         skip-name-resolve\n\
         server_id=1\n\
         log_bin=binlog\n\
         binlog_format=ROW\n\
         binlog_row_image=FULL\n\
         binlog_row_metadata=FULL\n\
         gtid_mode=ON\n\
         enforce_gtid_consistency=ON\n\
         max_connections=500\n\
         innodb_buffer_pool_size=256M\n\
         innodb_redo_log_capacity=16M\n\
         innodb_flush_log_at_trx_commit=2\n\
         sync_binlog=0\n\
         performance_schema=ON\n\
         secure-file-priv={files}\n",
        data = inside("data"),
        socket = inside("mysqld.sock"),
        pid = inside("mysqld.pid"),
        error = inside("mysqld.err"),
        files = inside("files"),
    )
}

/// An initialised datadir, made once per mysqld binary and kept in the root
/// (`/var/tmp/shoal-mysql-template-<size>-<mtime>`): each server starts from a copy instead of
/// running `--initialize-insecure` (seconds) again. Concurrent first users each initialise a
/// directory of their own; the first rename wins and the others use it.
fn template(owner: &str) -> anyhow::Result<PathBuf> {
    let binary = fs::metadata(sid_root().join("usr/sbin/mysqld")).context("mysqld")?;
    let stamp = binary
        .modified()
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_secs());
    let inside = PathBuf::from(format!(
        "/var/tmp/shoal-mysql-template-{}-{stamp}",
        binary.len()
    ));
    let ready = host_path(&inside);
    if ready.join("data/auto.cnf").exists() {
        return Ok(ready);
    }
    let scratch_inside = PathBuf::from(format!(
        "{}.tmp-{}",
        inside.display(),
        uuid::Uuid::new_v4().simple()
    ));
    let scratch = host_path(&scratch_inside);
    fs::create_dir_all(scratch.join("data")).context("create the template directory")?;
    fs::create_dir_all(scratch.join("files")).context("create the template directory")?;
    chown(owner, &scratch)?;
    fs::write(scratch.join("my.cnf"), config(&scratch_inside, 0)).context("write my.cnf")?;
    let initialise = Command::new("chroot")
        .arg(format!("--userspec={owner}"))
        .arg(sid_root())
        .args([
            "/usr/sbin/mysqld",
            &format!(
                "--defaults-file={}",
                scratch_inside.join("my.cnf").display()
            ),
            "--initialize-insecure",
        ])
        .stdin(Stdio::null())
        .output()
        .context("initialise the MySQL datadir")?;
    if !initialise.status.success() {
        let log = fs::read_to_string(scratch.join("mysqld.err")).unwrap_or_default();
        let _ = fs::remove_dir_all(&scratch);
        bail!(
            "mysqld --initialize-insecure failed: {}{log}",
            String::from_utf8_lossy(&initialise.stderr)
        );
    }
    if fs::rename(&scratch, &ready).is_err() {
        // Another process made it first.
        let _ = fs::remove_dir_all(&scratch);
    }
    Ok(ready)
}

/// `cp -a from to`.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .context("copy the template datadir")?;
    if !status.success() {
        bail!("cp -a {} {} failed", from.display(), to.display());
    }
    Ok(())
}

/// `chown -R owner dir`.
fn chown(owner: &str, dir: &Path) -> anyhow::Result<()> {
    let status = Command::new("chown")
        .args(["-R", owner])
        .arg(dir)
        .status()
        .context("chown the MySQL directory")?;
    if !status.success() {
        bail!("chown of {} failed", dir.display());
    }
    Ok(())
}

/// Output of a command run in the chroot.
fn chroot_output(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("chroot")
        .arg(sid_root())
        .args(args)
        .output()
        .with_context(|| format!("run {args:?} in the chroot"))?;
    if !output.status.success() {
        bail!(
            "{args:?} in the chroot failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
