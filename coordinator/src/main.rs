//! `shoal-coordinator`: see the crate docs of `shoal_coordinator`.

use anyhow::Context;
use clap::Parser;
use shoal_common::signals::shutdown_token;
use shoal_common::telemetry;
use shoal_coordinator::config::Config;
use shoal_coordinator::server::Coordinator;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = telemetry::init(Some("shoal-coordinator"), config.log_format);
    let coordinator = Coordinator::bind(config)
        .await
        .context("start coordinator")?;
    coordinator.run(shutdown_token()).await
}
