//! `shoal-worker`: see the crate docs of `shoal_worker`.

use clap::Parser;
use shoal_common::signals::shutdown_token;
use shoal_common::telemetry;
use shoal_worker::config::Config;
use shoal_worker::worker::Worker;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = telemetry::init(Some("shoal-worker"), config.log_format);
    let worker = Worker::new(config)?;
    worker.run(shutdown_token()).await
}
