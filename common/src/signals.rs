//! Shutdown signals shared by every long-running binary.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Completes on the first SIGTERM or SIGINT, naming it.
pub async fn shutdown_requested() -> std::io::Result<&'static str> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let name = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    Ok(name)
}

/// A token cancelled on the first SIGTERM or SIGINT: graceful shutdown starts there (stop taking
/// work, finish or hand back what is in flight, leave the registry, exit 0).
/// Must be called inside a tokio runtime.
pub fn shutdown_token() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        match shutdown_requested().await {
            Ok(signal) => tracing::info!(signal, "shutting down"),
            Err(error) => tracing::error!(%error, "cannot listen for signals; shutting down"),
        }
        on_signal.cancel();
    });
    shutdown
}
