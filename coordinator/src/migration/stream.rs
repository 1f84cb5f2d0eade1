//! The owner's side of the change stream: starting the reader, filing its messages into the
//! change buffer (an UPDATE that moves a key is a delete plus an upsert), catching up to a
//! position, and stopping.

use std::time::Duration;

use mysql_async::Value;
use shoal_common::key::Key;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Error;
use super::binlog::{self, BinlogPos, RowChange, StreamMsg, StreamTable};
use super::owner::Migration;

/// Restarts of a lost change stream one owner allows before failing the migration.
const MAX_STREAM_RESTARTS: u32 = 10;
/// A stream that ran this long since its last restart starts its restart count over: a long
/// migration survives any number of isolated losses, a stream that keeps failing does not.
pub(super) const RESTARTS_FORGOTTEN_AFTER: Duration = Duration::from_secs(600);

/// Whether the stream ended because its connection was lost rather than on bad data: an I/O
/// error, a killed connection (1927), a lost connection (2013), a server shutdown (1053), or no
/// event nor heartbeat for too long.
fn connection_lost(error: &Error) -> bool {
    match error {
        Error::Mysql(
            mysql_async::Error::Io(_)
            | mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed),
        ) => true,
        Error::Mysql(mysql_async::Error::Server(server)) => {
            // Shutdown, killed, lost; too many connections (a reconnect was refused).
            matches!(server.code, 1053 | 1927 | 2013 | 1040 | 1203)
        }
        Error::Binlog(message) => {
            message.starts_with("no binlog event or heartbeat")
                || message == "the binlog stream ended"
        }
        _ => false,
    }
}

/// The change stream as the owner holds it.
pub(super) struct Stream {
    pub(super) receiver: mpsc::Receiver<StreamMsg>,
    pub(super) reader: JoinHandle<Result<(), Error>>,
    pub(super) stop: CancellationToken,
}

impl Migration {
    pub(super) async fn start_stream(&mut self, start: BinlogPos) -> Result<(), Error> {
        let columns = self.source.columns.clone();
        self.start_stream_of(start, columns).await
    }

    /// Starts the stream of the table as it had `columns` (the original's, when a new owner
    /// reads the binlog up to a swap its predecessor made).
    pub(super) async fn start_stream_of(
        &mut self,
        start: BinlogPos,
        columns: Vec<super::catalog::Column>,
    ) -> Result<(), Error> {
        let opts = shoal_mysql::dsn::opts(&self.options.dsn).map_err(Error::Preflight)?;
        let (sender, receiver) = mpsc::channel(256);
        let stop = CancellationToken::new();
        let table = StreamTable {
            schema: self.schema.clone(),
            table: self.table.clone(),
            columns: columns.into(),
            names_fold_case: self.server.names_fold_case,
        };
        // A server id per stream (two dumps with one id make the server drop the older): random
        // in the high range [2^30, 2^31), never the server's own id.
        let random = u32::try_from(uuid::Uuid::new_v4().as_u128() & 0x3fff_ffff).unwrap_or(1);
        let mut replica_id = 0x4000_0000 | random;
        if replica_id == self.server.server_id {
            replica_id ^= 1;
        }
        let reader = tokio::spawn(binlog::read_stream(
            opts,
            replica_id,
            start.clone(),
            table,
            sender,
            stop.clone(),
        ));
        self.stream_position = Some(start.clone());
        self.safe_position = Some(start);
        self.stream = Some(Stream {
            receiver,
            reader,
            stop,
        });
        Ok(())
    }

    /// Files one stream message into the buffer.
    pub(super) fn on_stream_message(&mut self, message: StreamMsg) -> Result<(), Error> {
        match message {
            StreamMsg::Position(position) => self.stream_position = Some(position),
            StreamMsg::Boundary(position) => {
                if self
                    .stream_position
                    .as_ref()
                    .is_none_or(|current| *current < position)
                {
                    self.stream_position = Some(position.clone());
                }
                self.safe_position = Some(position);
            }
            StreamMsg::Ddl(text, position) => {
                if !self.cutting_over {
                    return Err(Error::Binlog(format!(
                        "DDL on `{}`.`{}` during the migration: {text:.200}",
                        self.schema, self.table
                    )));
                }
                // The swap's own rename: every change buffered since the final flush (which
                // left the buffer empty) went to the original.
                let late = self.swap_audit.unwrap_or(self.buffer.len());
                self.changes_before_swap.get_or_insert(late);
                self.stream_position = Some(position);
            }
            StreamMsg::SwapNameTaken(position) => {
                // The shadow took the swap name after the final flush: changes counted before
                // it were flushed.
                if let Some(count) = self.swap_audit.as_mut() {
                    *count = 0;
                }
                self.stream_position = Some(position);
            }
            StreamMsg::Rows(changes, position, written_at) => {
                self.last_event_at = written_at;
                if let Some(count) = self.swap_audit.as_mut() {
                    *count += changes.len();
                    self.stream_position = Some(position);
                    return Ok(());
                }
                for change in changes {
                    match change {
                        RowChange::Insert(after) => {
                            let key = self.key_of(&after)?;
                            self.buffer.upsert(key, after);
                        }
                        RowChange::Update(before, after) => {
                            let old_key = self.key_of(&before)?;
                            let new_key = self.key_of(&after)?;
                            self.buffer.update(old_key, new_key, after);
                        }
                        RowChange::Delete(before) => {
                            let key = self.key_of(&before)?;
                            self.buffer.delete(key);
                        }
                    }
                }
                self.stream_position = Some(position);
            }
        }
        Ok(())
    }

    fn key_of(&self, row: &[Value]) -> Result<Key, Error> {
        let values = self
            .key_indices
            .iter()
            .map(|&index| {
                row.get(index)
                    .ok_or_else(|| Error::Binlog(format!("row image lacks key column {index}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        shoal_worker::keys::key_from_values(&self.key.kinds, values)
            .map_err(|error| Error::Binlog(format!("primary key in the binlog: {error}")))
    }

    /// The stream's failure, if it ended.
    pub(super) async fn stream_failure(&mut self) -> Error {
        if let Some(stream) = self.stream.take() {
            match stream.reader.await {
                Ok(Err(error)) => return error,
                Ok(Ok(())) => return Error::Binlog("the change stream stopped".to_owned()),
                Err(join) => return Error::Binlog(format!("the change stream panicked: {join}")),
            }
        }
        Error::Binlog("the change stream is not running".to_owned())
    }

    /// After the stream ended with `failure`: a lost connection (killed, network, server
    /// restart) restarts it at the last transaction boundary it delivered (the position a
    /// checkpoint would record); replaying from there is harmless, since the buffer keeps the
    /// last image per key and events come again in order. Anything else fails the migration.
    pub(super) async fn restart_stream(&mut self, failure: Error) -> Result<(), Error> {
        self.check_cancelled()?;
        let Some(position) = self.safe_position.clone() else {
            return Err(failure);
        };
        if self
            .stream_restarted_at
            .is_some_and(|at| at.elapsed() >= RESTARTS_FORGOTTEN_AFTER)
        {
            self.stream_restarts = 0;
        }
        if !connection_lost(&failure) || self.stream_restarts >= MAX_STREAM_RESTARTS {
            return Err(failure);
        }
        self.stream_restarts += 1;
        self.stream_restarted_at = Some(std::time::Instant::now());
        tracing::warn!(
            migration_id = %self.options.id, error = %failure, %position,
            restarts = self.stream_restarts, "change stream lost; restarting it"
        );
        tokio::time::sleep(Duration::from_millis(200 * u64::from(self.stream_restarts))).await;
        self.start_stream(position).await
    }

    pub(super) async fn stop_stream(&mut self) {
        if let Some(stream) = self.stream.take() {
            stream.stop.cancel();
            drop(stream.receiver);
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.reader).await;
        }
    }

    /// Moves every message the stream has ready into the buffer, without waiting.
    pub(super) async fn pump_stream(&mut self) -> Result<(), Error> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                return Err(Error::Binlog("the change stream is not running".to_owned()));
            };
            match stream.receiver.try_recv() {
                Ok(message) => self.on_stream_message(message)?,
                Err(mpsc::error::TryRecvError::Empty) => return Ok(()),
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    let failure = self.stream_failure().await;
                    self.restart_stream(failure).await?;
                }
            }
        }
    }

    /// Waits until the stream has delivered everything before `target`.
    pub(super) async fn catch_up(
        &mut self,
        target: &BinlogPos,
        deadline: Duration,
    ) -> Result<(), Error> {
        let started = tokio::time::Instant::now();
        while self
            .stream_position
            .as_ref()
            .is_none_or(|position| position < target)
        {
            self.check_cancelled()?;
            let remaining = deadline.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                return Err(Error::Binlog(format!(
                    "the change stream did not reach {target} within {deadline:?} (at {:?})",
                    self.stream_position
                )));
            }
            let Some(stream) = self.stream.as_mut() else {
                return Err(Error::Binlog("the change stream is not running".to_owned()));
            };
            match tokio::time::timeout(remaining, stream.receiver.recv()).await {
                Ok(Some(message)) => self.on_stream_message(message)?,
                Ok(None) => {
                    let failure = self.stream_failure().await;
                    self.restart_stream(failure).await?;
                }
                Err(_) => {}
            }
        }
        Ok(())
    }
}
