//! A private `redis-server` without persistence, on a free port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::system::{find_program, free_port};
use crate::wait::until_blocking;

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Where a running private Redis can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisInfo {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Process id of `redis-server`.
    pub pid: u32,
    /// Directory holding its log.
    pub dir: PathBuf,
}

impl RedisInfo {
    /// `redis://` URL of the server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// Whether a Redis answers PING on `port`.
pub fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// A private Redis. Dropping it kills the server unless it was detached.
#[derive(Debug)]
pub struct RedisServer {
    /// How to reach it.
    pub info: RedisInfo,
    /// The server process while owned; `None` once detached.
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` with no persistence under `dir`; returns once it answers PING.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let port = free_port().context("pick a port for redis")?;
        Self::start_on(dir, port)
    }

    /// Kills the server (SIGKILL: nothing is saved) and starts an empty one on the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let restarted = Self::start_on(&self.info.dir, self.info.port)?;
        *self = restarted;
        Ok(())
    }

    fn start_on(dir: &Path, port: u16) -> anyhow::Result<Self> {
        let program = find_program("redis-server", "redis-server")?;
        std::fs::create_dir_all(dir).context("create the redis directory")?;
        let mut child = Command::new(program)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("start redis-server")?;
        let info = RedisInfo {
            port,
            pid: child.id(),
            dir: dir.to_path_buf(),
        };
        let ready = until_blocking(
            "redis-server to answer PING",
            START_TIMEOUT,
            Duration::from_millis(50),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    return Some(Err(anyhow::anyhow!(
                        "redis-server exited with {status}; log:\n{}",
                        std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default()
                    )));
                }
                answers_ping(port).then_some(Ok(()))
            },
        )
        .and_then(|outcome| outcome);
        if let Err(error) = ready {
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
        Ok(Self {
            info,
            child: Some(child),
        })
    }

    /// Lets the server outlive this handle (shared servers are stopped by a reaper).
    pub fn detach(mut self) -> RedisInfo {
        self.child = None;
        self.info.clone()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
