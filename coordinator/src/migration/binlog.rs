//! Change capture: the row binlog of the source table, decoded into full row images.
//!
//! A reader task owns the binlog connection and sends [`StreamMsg`]s over a bounded channel (so a
//! slow applier pauses the reader instead of growing memory). It works on MariaDB 10.11 as
//! measured in `stack-notes.md`: real GTID events are asked for (`@mariadb_slave_capability=4`),
//! heartbeats every 0.5 s prove liveness, and the file name of the first (fake) rotate event is
//! not trusted.
//!
//! # Invariants
//! - INV-C2: no event for the table is skipped. A rows event without a full column image, a
//!   statement-format change of the table, an event type the decoder cannot read (apart from an
//!   allow-list) or a JSON diff is fatal, never ignored.
//! - Positions only move forward; a position is sent after every event, so "caught up to P"
//!   means every event before P was delivered.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::binlog::events::{EventData, RowsEventData};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, Opts, Value};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use shoal_mysql::events::{self, EventClass, Payload};
pub use shoal_mysql::position::BinlogPos;
use shoal_mysql::position::next_file_name;

use super::Error;
use super::catalog::Column;

/// XA on the migrated table: its rows are logged when it is prepared and its outcome later, so
/// shoal cannot tell which to apply.
fn xa_refused(table: &StreamTable) -> Error {
    Error::Binlog(format!(
        "an XA transaction changed `{}`.`{}`: its rows are logged at XA PREPARE and its outcome \
         later, which shoal does not follow; run the migration when no XA transaction writes the \
         table (the original table is untouched)",
        table.schema, table.table
    ))
}

/// The server's current binlog position (the statement by flavour and version:
/// [`shoal_mysql::flavour::binary_log_status`]).
pub async fn current_position(
    connection: &mut impl Queryable,
    server: &super::catalog::ServerInfo,
) -> Result<BinlogPos, Error> {
    let statement = shoal_mysql::flavour::binary_log_status(server.mariadb, &server.version);
    let row: Option<mysql_async::Row> = connection.query_first(statement).await?;
    let row = row.ok_or_else(|| Error::Preflight("the binary log is off".to_owned()))?;
    let file: Option<String> = row.get(0);
    let pos: Option<u64> = row.get(1);
    match (file, pos) {
        (Some(file), Some(pos)) => Ok(BinlogPos { file, pos }),
        _ => Err(Error::Binlog("cannot read the binlog position".to_owned())),
    }
}

/// One row change of the source table, with full images in column order.
#[derive(Debug, Clone, PartialEq)]
pub enum RowChange {
    /// A new row.
    Insert(Vec<Value>),
    /// A changed row: before and after images.
    Update(Vec<Value>, Vec<Value>),
    /// A deleted row.
    Delete(Vec<Value>),
}

/// What the reader reports.
#[derive(Debug)]
pub enum StreamMsg {
    /// Row changes of the source table, the position after them, and when the server wrote
    /// the event (Unix seconds).
    Rows(Vec<RowChange>, BinlogPos, u32),
    /// The stream reached this position (after any event, or a heartbeat).
    Position(BinlogPos),
    /// A DDL statement naming the source table (shoal's own cut-over rename, or fatal).
    Ddl(String, BinlogPos),
    /// A DDL statement naming the table the shadow takes for the swap (`t_shoal_swap`): the
    /// cut-over renamed the shadow for it, after its final flush under the lock.
    SwapNameTaken(BinlogPos),
    /// A transaction boundary: the stream may be restarted here (INV-W1's P must be one; a
    /// position inside a transaction would restart after its table map and lose its rows).
    Boundary(BinlogPos),
}

/// What the reader needs to know about the table.
#[derive(Debug, Clone)]
pub struct StreamTable {
    /// Schema of the table.
    pub schema: String,
    /// The table.
    pub table: String,
    /// Its columns, in binlog order.
    pub columns: Arc<[Column]>,
    /// The server compares table names without regard to case (`lower_case_table_names`).
    pub names_fold_case: bool,
}

/// Renders a decoded binlog value through the column's definition, so that the change path
/// writes what the copy path writes: unsigned integers decoded as negative are repaired, ENUM
/// indexes and SET bitmasks become their labels (robust to an ALTER that redefines the list),
/// BINARY values get back their trailing zero bytes.
fn normalize(value: Value, column: &Column) -> Value {
    match (column.data_type.as_str(), value) {
        ("enum", Value::Int(index)) => {
            let labels = column.labels();
            let label = usize::try_from(index)
                .ok()
                .and_then(|index| index.checked_sub(1))
                .and_then(|index| labels.get(index).cloned())
                .unwrap_or_default();
            Value::Bytes(label.into_bytes())
        }
        ("set", Value::Bytes(bitmask)) => {
            let mut bits: u64 = 0;
            for (shift, byte) in bitmask.iter().take(8).enumerate() {
                bits |= u64::from(*byte) << (8 * shift);
            }
            let chosen: Vec<String> = column
                .labels()
                .into_iter()
                .enumerate()
                .filter(|(index, _)| *index < 64 && bits & (1 << index) != 0)
                .map(|(_, label)| label)
                .collect();
            Value::Bytes(chosen.join(",").into_bytes())
        }
        // The binlog drops a BINARY(n) value's trailing zero bytes; the column holds all n.
        ("binary", Value::Bytes(mut bytes)) => {
            let width = column
                .column_type
                .strip_prefix("binary(")
                .and_then(|rest| rest.strip_suffix(')'))
                .and_then(|width| width.parse::<usize>().ok())
                .unwrap_or(0);
            if bytes.len() < width {
                bytes.resize(width, 0);
            }
            Value::Bytes(bytes)
        }
        (_, Value::Int(signed)) if signed < 0 && column.unsigned_bits().is_some() => {
            let bits = column.unsigned_bits().unwrap_or(64);
            let mask = if bits == 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            Value::UInt(u64::from_ne_bytes(signed.to_ne_bytes()) & mask)
        }
        (_, value) => value,
    }
}

fn image(
    row: Option<mysql_async::binlog::row::BinlogRow>,
    table: &StreamTable,
) -> Result<Vec<Value>, Error> {
    let row = row.ok_or_else(|| Error::Binlog("rows event without a row image".to_owned()))?;
    if row.len() != table.columns.len() {
        return Err(Error::Binlog(format!(
            "row image of `{}`.`{}` has {} columns, the table has {}: was it altered under shoal?",
            table.schema,
            table.table,
            row.len(),
            table.columns.len()
        )));
    }
    let mut values = Vec::with_capacity(row.len());
    for (index, column) in table.columns.iter().enumerate() {
        match row.as_ref(index) {
            Some(BinlogValue::Value(value)) => values.push(normalize(value.clone(), column)),
            Some(BinlogValue::Jsonb(json)) => {
                // MySQL's binary JSON (MariaDB logs JSON as text).
                values.push(shoal_mysql::json::row_value(json).map_err(|reason| {
                    Error::Binlog(format!(
                        "column {} of `{}`.`{}`: {reason}; the original table is untouched",
                        column.name, table.schema, table.table
                    ))
                })?);
            }
            Some(BinlogValue::JsonDiff(_)) => {
                return Err(Error::Binlog(format!(
                    "partial JSON update of column {}: set binlog_row_value_options='' ",
                    column.name
                )));
            }
            None => {
                return Err(Error::Binlog(format!(
                    "column {} is missing from a row image: a session wrote with \
                     binlog_row_image other than FULL; shoal cannot see that change",
                    column.name
                )));
            }
        }
    }
    Ok(values)
}

/// Opens the stream at `start` and forwards changes of `table` until cancelled or fatal.
pub async fn read_stream(
    opts: Opts,
    replica_server_id: u32,
    start: BinlogPos,
    table: StreamTable,
    sender: mpsc::Sender<StreamMsg>,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let mut connection =
        shoal_worker::session::patiently(super::CONNECT_PATIENCE, || Conn::new(opts.clone()))
            .await?;
    // MySQL 8.4+ reads the heartbeat period from `@source_heartbeat_period`, older servers and
    // MariaDB from `@master_heartbeat_period`; each ignores the other.
    for variable in ["@master_heartbeat_period", "@source_heartbeat_period"] {
        connection
            .query_drop(format!("SET {variable} = 500000000"))
            .await?;
    }
    connection
        .query_drop("SET @mariadb_slave_capability = 4")
        .await?;
    let request = BinlogStreamRequest::new(replica_server_id)
        .with_filename(start.file.as_bytes())
        .with_pos(start.pos);
    let mut stream = connection.get_binlog_stream(request).await?;
    let mut file = start.file.clone();
    let mut table_ids: Vec<u64> = Vec::new();
    let mut payload = Payload::default();
    // Whether the current transaction changed the table (for XA).
    let mut touched = false;
    // Whether the open compressed transaction ended (its XID), until its last event.
    let mut held_end = false;
    // The last position sent.
    let mut reached = start.clone();
    let liveness = Duration::from_secs(10);
    loop {
        let next = tokio::select! {
            () = cancel.cancelled() => break,
            next = tokio::time::timeout(liveness, stream.next()) => next,
        };
        let event = match next {
            Err(_) => {
                return Err(Error::Binlog(format!(
                    "no binlog event or heartbeat for {liveness:?}"
                )));
            }
            Ok(None) => return Err(Error::Binlog("the binlog stream ended".to_owned())),
            Ok(Some(event)) => event?,
        };
        let type_raw = event.header().event_type_raw();
        let class = events::classify(type_raw);
        if let EventClass::Fatal(reason) = class {
            return Err(Error::Binlog(format!(
                "binlog event type {type_raw} at {file}:{}: {reason}; refusing to lose changes",
                event.header().log_pos()
            )));
        }
        // Events inside a compressed transaction take the payload's end as their position.
        let inside = payload
            .take_one(type_raw, event.header().event_size())
            .map_err(Error::Binlog)?;
        let log_pos = match inside {
            Some(end) => end,
            None => u64::from(event.header().log_pos()),
        };
        if class == EventClass::Gtid && log_pos != 0 && inside.is_none() {
            let before = BinlogPos {
                file: file.clone(),
                pos: log_pos.saturating_sub(u64::from(event.header().event_size())),
            };
            if sender.send(StreamMsg::Boundary(before)).await.is_err() {
                break;
            }
        }
        // Whether this event ends a transaction (commit or rollback).
        let mut ends_transaction = false;
        let mut rows = Vec::new();
        let data = match class {
            EventClass::NoChanges | EventClass::Gtid | EventClass::Xid => None,
            _ => Some(event.read_data().map_err(|error| {
                Error::Binlog(format!("decode event type {type_raw}: {error}"))
            })?),
        };
        if class == EventClass::Xid {
            ends_transaction = true;
        }
        match data.flatten() {
            None if matches!(
                class,
                EventClass::NoChanges | EventClass::Gtid | EventClass::Xid
            ) => {}
            None => {
                return Err(Error::Binlog(format!(
                    "binlog event type {type_raw} cannot be decoded; refusing to lose changes"
                )));
            }
            Some(EventData::TransactionPayloadEvent(compressed)) => {
                if inside.is_some() {
                    return Err(Error::Binlog(
                        "a transaction payload inside another one".to_owned(),
                    ));
                }
                payload.open(&compressed, log_pos).map_err(Error::Binlog)?;
                tracing::debug!(
                    events = payload.remaining(),
                    end = log_pos,
                    "a compressed transaction (TRANSACTION_PAYLOAD) opened"
                );
                continue;
            }
            Some(EventData::XaPrepareLogEvent(_)) => {
                if touched {
                    return Err(xa_refused(&table));
                }
                ends_transaction = true;
            }
            Some(EventData::RotateEvent(_)) if inside.is_some() => {
                return Err(Error::Binlog(
                    "a rotate event inside a compressed transaction".to_owned(),
                ));
            }
            Some(EventData::RotateEvent(rotate)) => {
                file = next_file_name(&file, &rotate.name());
                // Positions compare by file name: a name shoal cannot trust must stop the stream,
                // never make it look ahead of the server.
                if !file
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                {
                    return Err(Error::Binlog(format!(
                        "the binlog rotated to a file name shoal cannot read: {file:?}"
                    )));
                }
                continue;
            }
            Some(EventData::TableMapEvent(map)) => {
                if map.database_name() == table.schema.as_str()
                    && map.table_name() == table.table.as_str()
                {
                    let id = map.table_id();
                    if !table_ids.contains(&id) {
                        table_ids.push(id);
                    }
                    let count = usize::try_from(map.columns_count()).unwrap_or(usize::MAX);
                    if count != table.columns.len() {
                        return Err(Error::Binlog(format!(
                            "`{}`.`{}` now has {count} columns, shoal expected {}: the table was altered \
                             during the migration",
                            table.schema,
                            table.table,
                            table.columns.len()
                        )));
                    }
                }
            }
            Some(EventData::RowsEvent(rows_event)) => {
                let id = rows_event.table_id();
                if table_ids.contains(&id) {
                    let map = stream.get_tme(id).ok_or_else(|| {
                        Error::Binlog(format!("rows event for unknown table id {id}"))
                    })?;
                    let columns = table.columns.len();
                    let before_full = rows_event.columns_before_image().is_none_or(|bits| {
                        bits.len() >= columns && bits.iter().take(columns).all(|bit| *bit)
                    });
                    let after_full = rows_event.columns_after_image().is_none_or(|bits| {
                        bits.len() >= columns && bits.iter().take(columns).all(|bit| *bit)
                    });
                    if !before_full || !after_full {
                        return Err(Error::Binlog(format!(
                            "a rows event of `{}`.`{}` lacks columns: a session wrote with binlog_row_image \
                             other than FULL",
                            table.schema, table.table
                        )));
                    }
                    shoal_worker::failpoint::hit("binlog.rows", &table.table).await;
                    for decoded in rows_event.rows(map) {
                        let (before, after) = decoded
                            .map_err(|error| Error::Binlog(format!("decode rows: {error}")))?;
                        let change = match &rows_event {
                            RowsEventData::WriteRowsEvent(_)
                            | RowsEventData::WriteRowsEventV1(_) => {
                                RowChange::Insert(image(after, &table)?)
                            }
                            RowsEventData::UpdateRowsEvent(_)
                            | RowsEventData::UpdateRowsEventV1(_) => {
                                RowChange::Update(image(before, &table)?, image(after, &table)?)
                            }
                            RowsEventData::DeleteRowsEvent(_)
                            | RowsEventData::DeleteRowsEventV1(_) => {
                                RowChange::Delete(image(before, &table)?)
                            }
                            RowsEventData::PartialUpdateRowsEvent(_) => {
                                return Err(Error::Binlog("partial-update rows event".to_owned()));
                            }
                        };
                        rows.push(change);
                    }
                    touched = true;
                }
            }
            Some(EventData::ExecuteLoadQueryEvent(load)) => {
                // `LOAD DATA` logged as a statement: fatal if it names the table.
                let text = load.query();
                let kind = super::alter::classify_query(
                    &text,
                    &load.schema(),
                    &table.schema,
                    &table.table,
                    table.names_fold_case,
                );
                if kind != super::alter::QueryKind::Unrelated {
                    return Err(Error::Binlog(format!(
                        "a statement-format LOAD DATA changes `{}`: {text:.120}; shoal needs ROW \
                         format from every session",
                        table.table
                    )));
                }
            }
            Some(EventData::QueryEvent(query)) => {
                let text = query.query();
                let text = text.trim();
                let upper = text.to_ascii_uppercase();
                ends_transaction = matches!(upper.as_str(), "COMMIT" | "ROLLBACK");
                if touched && upper.starts_with("XA ") {
                    // MariaDB logs `XA END`/`XA PREPARE` as statements.
                    return Err(xa_refused(&table));
                }
                let default_schema = query.schema();
                let kind = super::alter::classify_query(
                    text,
                    &default_schema,
                    &table.schema,
                    &table.table,
                    table.names_fold_case,
                );
                let position = BinlogPos {
                    file: file.clone(),
                    pos: log_pos,
                };
                match kind {
                    super::alter::QueryKind::Unrelated => {
                        let swap_name = shoal_common::names::swap(&table.table);
                        if inside.is_none()
                            && super::alter::classify_query(
                                text,
                                &default_schema,
                                &table.schema,
                                &swap_name,
                                table.names_fold_case,
                            ) == super::alter::QueryKind::Ddl
                            && sender
                                .send(StreamMsg::SwapNameTaken(position))
                                .await
                                .is_err()
                        {
                            break;
                        }
                    }
                    super::alter::QueryKind::Ddl if inside.is_some() => {
                        return Err(Error::Binlog(format!(
                            "DDL inside a compressed transaction: {text:.120}"
                        )));
                    }
                    super::alter::QueryKind::Ddl => {
                        if sender
                            .send(StreamMsg::Ddl(text.to_owned(), position))
                            .await
                            .is_err()
                        {
                            break;
                        }
                        continue;
                    }
                    super::alter::QueryKind::Statement => {
                        return Err(Error::Binlog(format!(
                            "a statement-format event changes `{}`: {text:.120}; shoal needs ROW \
                             format from every session",
                            table.table
                        )));
                    }
                }
            }
            Some(other) => {
                return Err(Error::Binlog(format!(
                    "binlog event type {type_raw} decoded as {other:?}, which the reader does not \
                     expect"
                )));
            }
        }
        if ends_transaction || class == EventClass::Gtid {
            touched = false;
        }
        if inside.is_some() {
            // A compressed transaction's events share one position, its end: "caught up to
            // it" must mean all of them arrived.
            if payload.remaining() > 0 {
                // Not its last event: rows go now, at the position already reached (before the
                // transaction), so that a huge transaction is not held in memory and nothing
                // claims the payload's end before all of it arrived.
                held_end |= ends_transaction;
                if !rows.is_empty() {
                    let message =
                        StreamMsg::Rows(rows, reached.clone(), event.header().timestamp());
                    if sender.send(message).await.is_err() {
                        break;
                    }
                }
                continue;
            }
            ends_transaction |= std::mem::take(&mut held_end);
        }
        if log_pos == 0 {
            continue;
        }
        let position = BinlogPos {
            file: file.clone(),
            pos: log_pos,
        };
        reached = position.clone();
        let message = if ends_transaction {
            StreamMsg::Boundary(position)
        } else if rows.is_empty() {
            StreamMsg::Position(position)
        } else {
            StreamMsg::Rows(rows, position, event.header().timestamp())
        };
        if sender.send(message).await.is_err() {
            break;
        }
    }
    let _ = stream.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_values_are_repaired() {
        let column = Column {
            name: "u".into(),
            data_type: "int".into(),
            column_type: "int(10) unsigned".into(),
            generated: false,
            charset: None,
            nullable: false,
        };
        assert_eq!(
            normalize(Value::Int(-1), &column),
            Value::UInt(4_294_967_295)
        );
        assert_eq!(normalize(Value::Int(5), &column), Value::Int(5));
    }

    #[test]
    fn binary_values_get_their_trailing_zeros_back() {
        let column = Column {
            name: "b".into(),
            data_type: "binary".into(),
            column_type: "binary(4)".into(),
            generated: false,
            charset: Some("binary".into()),
            nullable: false,
        };
        assert_eq!(
            normalize(Value::Bytes(vec![7, 0xff]), &column),
            Value::Bytes(vec![7, 0xff, 0, 0])
        );
        assert_eq!(
            normalize(Value::Bytes(vec![1, 2, 3, 4]), &column),
            Value::Bytes(vec![1, 2, 3, 4])
        );
    }
}
