//! The worker's Prometheus metrics and its `/metrics` endpoint (`--http`).
//!
//! A worker is stateless, so its metrics are about the work it did: chunks by outcome, rows,
//! wall time per chunk, busy slots. Migration-level numbers come from the coordinator.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::executor::Ending;

/// Every metric the worker exports, with its help text (also the documented list).
pub const METRICS: [(&str, &str); 4] = [
    (
        "shoal_worker_chunks_total",
        "Chunk tasks this worker ended, by outcome: done, fenced, failed, lease_lost, released",
    ),
    ("shoal_worker_rows_copied_total", "Rows this worker copied"),
    (
        "shoal_worker_chunk_duration_seconds",
        "Wall time of this worker's completed chunk copies",
    ),
    ("shoal_worker_busy_slots", "Slots running a task now"),
];

pub(crate) fn outcome_name(ending: &Ending) -> &'static str {
    match ending {
        Ending::Done(Ok(_)) => "done",
        Ending::Done(Err(crate::copy::Error::Fenced { .. })) => "fenced",
        Ending::Done(Err(_)) => "failed",
        Ending::LeaseLost => "lease_lost",
        Ending::Shutdown => "released",
    }
}

pub(crate) fn chunk_ended(outcome: &'static str) {
    counter!("shoal_worker_chunks_total", "outcome" => outcome).increment(1);
}

pub(crate) fn chunk_copied(rows: u64, took: Duration) {
    counter!("shoal_worker_rows_copied_total").increment(rows);
    histogram!("shoal_worker_chunk_duration_seconds").record(took.as_secs_f64());
}

/// Counts a slot as busy while alive.
#[derive(Debug)]
pub(crate) struct BusySlot;

impl BusySlot {
    pub(crate) fn new() -> Self {
        gauge!("shoal_worker_busy_slots").increment(1.0);
        Self
    }
}

impl Drop for BusySlot {
    fn drop(&mut self) {
        gauge!("shoal_worker_busy_slots").decrement(1.0);
    }
}

/// Installs the recorder and serves `GET /metrics` on `address` until `shutdown`.
pub async fn serve(address: SocketAddr, shutdown: CancellationToken) -> anyhow::Result<()> {
    let handle = shoal_common::telemetry::install_metrics();
    for (name, help) in METRICS {
        match name {
            "shoal_worker_chunk_duration_seconds" => describe_histogram!(name, help),
            "shoal_worker_busy_slots" => describe_gauge!(name, help),
            _ => describe_counter!(name, help),
        }
    }
    // Present from the start, so that a rate() over them begins at zero.
    for outcome in ["done", "fenced", "failed", "lease_lost", "released"] {
        counter!("shoal_worker_chunks_total", "outcome" => outcome).increment(0);
    }
    counter!("shoal_worker_rows_copied_total").increment(0);
    gauge!("shoal_worker_busy_slots").set(0.0);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listen on {address} (--http)"))?;
    info!(%address, "metrics listening");
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            warn!(%error, "metrics endpoint stopped");
        }
    });
    Ok(())
}
