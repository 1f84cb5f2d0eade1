//! The built shoal binaries as child processes, with logs captured to files.
//!
//! Binaries are looked up in `SHOAL_BIN_DIR`, else beside the test executable
//! (`target/<profile>/`). `make test` builds them first (`cargo build --workspace --bins`).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shoal_proto::v1::migration_service_client::MigrationServiceClient;
use shoal_proto::v1::work_service_client::WorkServiceClient;
use tonic::transport::Channel;

use crate::system::free_port;
use crate::wait;

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Directory holding the built shoal binaries.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SHOAL_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("locate the running executable")?;
    let dir = exe
        .parent()
        .context("the running executable has no directory")?;
    // Tests run from target/<profile>/deps/, binaries such as the demo from target/<profile>/.
    if dir.file_name().is_some_and(|name| name == "deps") {
        return dir
            .parent()
            .map(Path::to_path_buf)
            .context("deps/ has no parent");
    }
    Ok(dir.to_path_buf())
}

fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.is_file() {
        bail!(
            "{} is not built; run `cargo build --workspace --bins` first (make test does)",
            path.display()
        );
    }
    Ok(path)
}

/// A running shoal process. Dropping it kills the process (SIGKILL) if it still runs.
#[derive(Debug)]
pub struct ShoalProcess {
    /// Label for messages ("coordinator", "worker-a").
    pub name: String,
    /// Captured stdout and stderr.
    pub log_path: PathBuf,
    /// Keeps the log directory alive as long as the process handle.
    _log_dir: tempfile::TempDir,
    child: Child,
}

impl ShoalProcess {
    /// Starts `binary` with `args` and `env`, capturing both output streams into one log file.
    pub fn spawn(
        name: &str,
        binary_name: &str,
        args: &[String],
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let program = binary(binary_name)?;
        let log_dir = tempfile::Builder::new()
            .prefix("shoal-proc-")
            .tempdir()
            .context("create a log directory")?;
        let log_path = log_dir.path().join(format!("{name}.log"));
        let log = File::create(&log_path).context("create the log file")?;
        let mut command = Command::new(&program);
        command
            .args(args)
            .env("RUST_LOG", "info,shoal=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("clone the log handle")?)
            .stderr(log);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        Ok(Self {
            name: name.to_owned(),
            log_path,
            _log_dir: log_dir,
            child,
        })
    }

    /// Operating-system process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process has logged so far.
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = i32::try_from(self.pid()).context("pid out of range")?;
        kill(Pid::from_raw(pid), signal).with_context(|| format!("send {signal} to {}", self.name))
    }

    /// The exit status if the process has ended.
    pub fn try_exit_status(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        self.child.try_wait().context("poll child")
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let what = format!("{} to exit", self.name);
        let (status, _) = wait::until(&what, timeout, Duration::from_millis(20), || {
            let status = self.child.try_wait().ok().flatten();
            async move { status }
        })
        .await?;
        Ok(status)
    }

    /// Fails if the log holds an ERROR line: unexpected errors fail end-to-end tests.
    pub fn assert_no_error_logs(&self) {
        let logs = self.logs();
        let errors: Vec<&str> = logs
            .lines()
            .filter(|line| line.contains(" ERROR "))
            .collect();
        assert!(
            errors.is_empty(),
            "{} logged errors:\n{}",
            self.name,
            errors.join("\n")
        );
    }
}

impl Drop for ShoalProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How to start a coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorOptions {
    /// Redis URL; `None` runs it with the in-memory store.
    pub redis_url: Option<String>,
    /// Redis key namespace.
    pub namespace: String,
    /// Registration TTL of workers.
    pub worker_ttl: Duration,
    /// Extra environment (e.g. `SHOAL_TARGET_<NAME>` DSNs).
    pub env: Vec<(&'static str, String)>,
    /// Extra flags (e.g. `--owner-ttl 3s`).
    pub args: Vec<String>,
}

/// A coordinator process and its gRPC address.
#[derive(Debug)]
pub struct CoordinatorProcess {
    /// The process.
    pub process: ShoalProcess,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// `127.0.0.1:<port>` of the JSON status API.
    pub http_address: String,
}

impl CoordinatorProcess {
    /// Starts `shoal-coordinator` on a free port and waits until its gRPC API answers. A port
    /// found free can be taken before the coordinator binds it (another test, or an outgoing
    /// connection's ephemeral port): then it starts again on new ports, up to three times.
    pub async fn start(name: &str, options: &CoordinatorOptions) -> anyhow::Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::start_at(name, options, None).await {
                Err(error)
                    if attempt < 3 && error.to_string().contains("Address already in use") =>
                {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// [`CoordinatorProcess::start`] at given addresses (`url`, HTTP address), e.g. those of the
    /// coordinator it replaces, so that workers pointed at it reach the new process.
    pub async fn start_at(
        name: &str,
        options: &CoordinatorOptions,
        addresses: Option<(String, String)>,
    ) -> anyhow::Result<Self> {
        let (port, http_address) = match addresses {
            Some((url, http)) => (
                url.rsplit(':')
                    .next()
                    .and_then(|port| port.parse::<u16>().ok())
                    .context("a coordinator URL ends with its port")?,
                http,
            ),
            None => (free_port()?, format!("127.0.0.1:{}", free_port()?)),
        };
        let mut args = vec![
            "--http".to_owned(),
            http_address.clone(),
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--namespace".to_owned(),
            options.namespace.clone(),
            "--worker-ttl".to_owned(),
            format!("{}ms", options.worker_ttl.as_millis()),
            "--id".to_owned(),
            name.to_owned(),
        ];
        if let Some(url) = &options.redis_url {
            args.extend(["--redis".to_owned(), url.clone()]);
        }
        args.extend(options.args.iter().cloned());
        let mut process = ShoalProcess::spawn(name, "shoal-coordinator", &args, &options.env)?;
        let url = format!("http://127.0.0.1:{port}");
        let what = format!("{name} to serve gRPC at {url}");
        let ready = wait::until(&what, READY_TIMEOUT, Duration::from_millis(50), || {
            let url = url.clone();
            async move {
                let mut client = MigrationServiceClient::connect(url).await.ok()?;
                match client
                    .list_workers(shoal_proto::v1::ListWorkersRequest {})
                    .await
                {
                    // A coordinator that requires a token is serving too.
                    Err(status) if status.code() != tonic::Code::Unauthenticated => None,
                    _ => Some(()),
                }
            }
        })
        .await;
        if let Err(error) = ready {
            let exited = process.try_exit_status().ok().flatten();
            bail!("{error} (exit: {exited:?}); log:\n{}", process.logs());
        }
        Ok(Self {
            process,
            url,
            http_address,
        })
    }

    /// A client of its MigrationService.
    pub async fn migration_client(&self) -> anyhow::Result<MigrationServiceClient<Channel>> {
        Ok(MigrationServiceClient::connect(self.url.clone()).await?)
    }

    /// The status of migration `id`, as `GetMigration` returns it.
    pub async fn status(&self, id: &str) -> anyhow::Result<shoal_proto::v1::MigrationStatus> {
        self.migration_client()
            .await?
            .get_migration(shoal_proto::v1::GetMigrationRequest {
                migration_id: id.to_owned(),
            })
            .await?
            .into_inner()
            .status
            .context("GetMigration answered without a status")
    }

    /// A client of its WorkService.
    pub async fn work_client(&self) -> anyhow::Result<WorkServiceClient<Channel>> {
        Ok(WorkServiceClient::connect(self.url.clone()).await?)
    }
}

/// Starts `shoal-worker` named `id` against `coordinator_url`, with extra `env`
/// (e.g. `SHOAL_TARGET_<NAME>` DSNs).
pub fn start_worker(
    id: &str,
    coordinator_url: &str,
    concurrency: u32,
    env: &[(&str, String)],
) -> anyhow::Result<ShoalProcess> {
    let args = vec![
        "--coordinator".to_owned(),
        coordinator_url.to_owned(),
        "--id".to_owned(),
        id.to_owned(),
        "--concurrency".to_owned(),
        concurrency.to_string(),
        "--poll-wait".to_owned(),
        "2s".to_owned(),
    ];
    ShoalProcess::spawn(id, "shoal-worker", &args, env)
}

/// A plain HTTP/1.1 GET on `address`; returns the status code and the body.
pub async fn http_get(address: &str, path: &str) -> anyhow::Result<(u16, String)> {
    http_get_with(address, path, &[]).await
}

/// [`http_get`] with extra request headers.
pub async fn http_get_with(
    address: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(get_request(address, path, headers).as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    parse_response(&response)
}

/// An HTTP/1.1 GET of `path` on `address` with extra `headers`, closing the connection after.
pub fn get_request(address: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n{extra}Connection: close\r\n\r\n")
}

/// The status code and body of an HTTP response.
pub fn parse_response(response: &str) -> anyhow::Result<(u16, String)> {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("no HTTP status code")?;
    Ok((code, body.to_owned()))
}
