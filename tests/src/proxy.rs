//! A loopback TCP proxy whose one-way delay can be changed while connections run: the network
//! between workers and a coordinator, slowed on demand by the fault campaign.
//!
//! Each direction of each connection is a delay line: bytes read at `t` are written at
//! `t + delay` (the delay in force when they were read), in order. Latency grows; bandwidth and
//! the byte stream are untouched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A running proxy; dropping it closes the listener and every connection through it.
#[derive(Debug)]
pub struct DelayProxy {
    /// Where clients connect.
    pub address: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl DelayProxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let delay_ms = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(
            listener,
            target,
            Arc::clone(&delay_ms),
            stop.clone(),
        ));
        Ok(Self {
            address,
            delay_ms,
            stop,
        })
    }

    /// `http://` URL of the proxy (for gRPC clients).
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Sets the one-way delay for bytes read from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        let Ok((client, _)) = accepted else {
            continue;
        };
        let delay_ms = Arc::clone(&delay_ms);
        let stop = stop.clone();
        tokio::spawn(async move {
            // The target refusing (a coordinator being restarted) closes the client's connection.
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::select! {
                _ = async {
                    tokio::join!(
                        delay_line(client_read, server_write, Arc::clone(&delay_ms)),
                        delay_line(server_read, client_write, delay_ms),
                    )
                } => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

/// Copies `from` to `to`, each read delivered `delay_ms` after it was read.
async fn delay_line(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay_ms: Arc<AtomicU64>) {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buffer = vec![0_u8; 64 * 1024];
        loop {
            let read = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            let due = Instant::now() + Duration::from_millis(delay_ms.load(Ordering::Relaxed));
            if sender.send((due, buffer[..read].to_vec())).is_err() {
                break;
            }
        }
    };
    let write = async move {
        while let Some((due, bytes)) = receiver.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

#[cfg(test)]
mod tests {
    use super::DelayProxy;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_pass_intact_and_no_sooner_than_the_delay_in_force() {
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = echo.accept().await.unwrap();
            let mut buffer = [0_u8; 1024];
            loop {
                let read = socket.read(&mut buffer).await.unwrap();
                if read == 0 {
                    break;
                }
                socket.write_all(&buffer[..read]).await.unwrap();
            }
        });
        let proxy = DelayProxy::start(target).await.unwrap();
        let mut client = tokio::net::TcpStream::connect(proxy.address).await.unwrap();
        let mut round_trip = async |message: &[u8]| {
            let started = tokio::time::Instant::now();
            client.write_all(message).await.unwrap();
            let mut answer = vec![0_u8; message.len()];
            client.read_exact(&mut answer).await.unwrap();
            assert_eq!(answer, message);
            started.elapsed()
        };
        round_trip(b"no delay").await;
        proxy.set_delay(Duration::from_millis(150));
        // Both directions are delayed: at least two delays per round trip.
        assert!(round_trip(b"delayed both ways").await >= Duration::from_millis(300));
    }
}
