//! `make demo`: a shoal fleet end to end on private servers, then everything cleaned up.
//!
//! Starts a private MariaDB (row binlog on) and Redis, one `shoal-coordinator` and two
//! `shoal-worker` processes, and shows the fleet through the `shoal` CLI. Migrations themselves
//! join this demo with the online-ALTER issue.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use shoal_tests::mariadb::MariaDb;
use shoal_tests::processes::{CoordinatorOptions, CoordinatorProcess, bin_dir, start_worker};
use shoal_tests::redis_server::RedisServer;
use shoal_tests::wait;

fn shoal_cli(coordinator_url: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(bin_dir()?.join("shoal"))
        .args(["--coordinator", coordinator_url])
        .args(args)
        .output()
        .context("run the shoal CLI")?;
    if !output.status.success() {
        bail!(
            "shoal {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new().prefix("shoal-demo-").tempdir()?;
    println!("==> starting a private MariaDB (binlog_format=ROW, binlog_row_image=FULL)");
    let mariadb = MariaDb::start(&scratch.path().join("mariadb"))?;
    println!(
        "    {}",
        mariadb
            .info
            .root_sql("SELECT CONCAT(VERSION(), ' log_bin=', @@log_bin, ' format=', @@binlog_format, ' image=', @@binlog_row_image)")?
            .trim()
    );
    println!("==> starting a private Redis (no persistence)");
    let redis = RedisServer::start(&scratch.path().join("redis"))?;

    println!("==> starting shoal-coordinator");
    let options = CoordinatorOptions {
        redis_url: Some(redis.info.url()),
        namespace: "demo".to_owned(),
        worker_ttl: Duration::from_secs(3),
        env: Vec::new(),
    };
    let coordinator = CoordinatorProcess::start("coordinator", &options).await?;
    println!("    gRPC at {}", coordinator.url);

    println!("==> starting two shoal-worker processes");
    let workers = [
        start_worker("demo-worker-1", &coordinator.url, 4, &[])?,
        start_worker("demo-worker-2", &coordinator.url, 4, &[])?,
    ];
    wait::until(
        "both workers to register",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            shoal_cli(&coordinator.url, &["workers", "--output", "json"])
                .ok()
                .filter(|json| json.contains("demo-worker-1") && json.contains("demo-worker-2"))
        },
    )
    .await?;
    println!("==> shoal workers");
    print!("{}", shoal_cli(&coordinator.url, &["workers"])?);

    println!("==> stopping worker 1 with SIGTERM (graceful: it deregisters and exits 0)");
    let [mut first, second] = workers;
    first.signal(nix::sys::signal::Signal::SIGTERM)?;
    let status = first.wait_exit(Duration::from_secs(10)).await?;
    println!("    {status}");
    print!("{}", shoal_cli(&coordinator.url, &["workers"])?);

    println!("==> cleaning up (processes and servers stop, the scratch directory is removed)");
    drop(second);
    drop(coordinator);
    drop(redis);
    drop(mariadb);
    println!("demo finished");
    Ok(())
}
