//! Copying one chunk from the source table into the shadow table.
//!
//! # Invariants
//! - INV-F1: the write transaction begins with `SELECT epoch … LOCK IN SHARE MODE` on the
//!   chunk's fence row and aborts unless it equals the task's fence epoch. The owner bumps the
//!   epoch with an `UPDATE` (which waits for this shared lock) before it re-leases, repairs or
//!   drains the chunk, so a worker that stalled past its lease can never write after that.
//! - The write transaction clears the chunk's range in the shadow table before copying, so a
//!   recopied chunk never keeps a stale row (INV-W1: chunks outside the drained set start empty).
//! - Every copy statement's warnings are read: anything but a duplicate key fails the chunk
//!   (`INSERT IGNORE` would otherwise turn truncation and NULL-into-NOT-NULL into silent
//!   corruption). A duplicate on `PRIMARY` is a row an earlier attempt already copied. A
//!   duplicate on another unique key is counted, not fatal: it is either transient (the row's
//!   unique value moved to a row already applied from the binlog, and the row's own deferred
//!   change will put it right) or a real violation of a new UNIQUE index, which the checksum then
//!   finds, and which fails the migration before cut-over naming the value.
//!
//! # Design decisions
//! Buffered mode reads the range at READ COMMITTED in its own statement, outside the write
//! transaction (a plain consistent read: no row locks, and the table's metadata lock is released
//! when the read ends), and only then opens the fenced write transaction; a worker stalled
//! between read and write therefore blocks nobody, and the same code can later copy between
//! servers. Server mode runs `INSERT IGNORE … SELECT` inside
//! the fenced transaction: fastest on one box, shared locks on the source range meanwhile.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mysql_async::consts::ColumnType;
use mysql_async::prelude::Queryable;
use mysql_async::{IsolationLevel, Pool, Row, TxOpts, Value};
use shoal_common::chunk::ChunkRange;
use shoal_common::sql::{quote_identifier, quote_qualified};
use shoal_common::task::{CopyMode, CopyOutcome, TaskSpec};

use crate::failpoint;
use crate::keys::{order_by, range_predicate};

/// MySQL's limit on placeholders in one statement.
const MAX_PLACEHOLDERS: usize = 65_535;
/// Upper bound on the bytes of one `INSERT` batch.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// Why a chunk copy did not complete.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The task's shadow or fence table is not the one shoal names after its source table: a
    /// task no coordinator made (written into the live store by hand). Nothing is run.
    #[error(
        "task tables do not belong together: source `{source_table}`, shadow `{shadow}`, fence \
         `{fence}`; refusing to run it"
    )]
    Mismatched {
        /// The task's source table.
        source_table: String,
        /// Its shadow table.
        shadow: String,
        /// Its fence table.
        fence: String,
    },
    /// The fence epoch moved on: the chunk was re-leased or repaired. Roll back, drop the task.
    #[error("chunk {chunk} is fenced at epoch {found:?}, task holds epoch {held}; dropping it")]
    Fenced {
        /// The chunk.
        chunk: u64,
        /// Epoch in the fence table (None: row missing).
        found: Option<u64>,
        /// Epoch of the task.
        held: u64,
    },
    /// A copy statement raised a warning that would lose or change data.
    #[error("copy of {range} raised warning {code}: {message}{}", row_note(.row.as_deref()))]
    Warning {
        /// The range copied.
        range: ChunkRange,
        /// Server warning code.
        code: u16,
        /// Server message.
        message: String,
        /// Position in the range's key order of the row the warning names (`at row N`).
        row_offset: Option<u64>,
        /// That row's primary key, e.g. "`id` = 150", once looked up.
        row: Option<String>,
    },
    /// A server or connection error.
    #[error("mysql: {0}")]
    Mysql(#[from] mysql_async::Error),
}

impl Error {
    /// Whether running the same task again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Mysql(mysql_async::Error::Server(server)) => {
                // Lock wait timeout, deadlock, lost connection during query, killed query, too
                // many connections (server or account).
                matches!(server.code, 1205 | 1213 | 2013 | 1317 | 1927 | 1040 | 1203)
            }
            Error::Mysql(mysql_async::Error::Io(_) | mysql_async::Error::Driver(_)) => true,
            _ => false,
        }
    }
}

fn column_list(columns: &[String]) -> String {
    columns
        .iter()
        .map(|column| quote_identifier(column))
        .collect::<Vec<_>>()
        .join(", ")
}

fn row_note(row: Option<&str>) -> String {
    row.map(|row| format!(" (the first such row: {row})"))
        .unwrap_or_default()
}

/// The row number a server warning names ("… at row 17"), counted from 1.
fn warning_row(message: &str) -> Option<u64> {
    let (_, rest) = message.rsplit_once(" at row ")?;
    rest.trim_end().parse().ok().filter(|row| *row > 0)
}

/// Whether a duplicate-key message (1062) names the primary key: MariaDB says `for key
/// 'PRIMARY'`, MySQL 8.0.19+ `for key '<table>.PRIMARY'`. The key name ends the message, so a
/// value that contains the word cannot pass for it.
pub fn is_primary_duplicate(message: &str) -> bool {
    let message = message.trim_end();
    message.ends_with(" for key 'PRIMARY'") || message.ends_with(".PRIMARY'")
}

/// Reads `SHOW WARNINGS` after a copy or repair statement: fails on any warning but a
/// duplicate key; returns the duplicates on keys other than `PRIMARY` (rows skipped).
/// `first_row` is the position, in the range's key order, of the statement's first row.
pub async fn check_warnings(
    transaction: &mut impl Queryable,
    range: &ChunkRange,
    first_row: u64,
) -> Result<Vec<String>, Error> {
    let warnings: Vec<(String, u16, String)> = transaction.query("SHOW WARNINGS").await?;
    let mut unique_conflicts = Vec::new();
    for (_level, code, message) in warnings {
        if code == 1062 {
            if !is_primary_duplicate(&message) {
                unique_conflicts.push(message);
            }
            continue;
        }
        return Err(Error::Warning {
            range: range.clone(),
            code,
            row_offset: warning_row(&message).map(|row| first_row + row - 1),
            message,
            row: None,
        });
    }
    Ok(unique_conflicts)
}

/// Refuses a task whose shadow or fence table is not the one named after its source: the fence
/// check proves a task current only for the tables that fence belongs to.
pub fn check_tables(context: &shoal_common::task::CopyContext) -> Result<(), Error> {
    if context.shadow_table == shoal_common::names::shadow(&context.source_table)
        && context.fence_table == shoal_common::names::fence(&context.source_table)
    {
        return Ok(());
    }
    Err(Error::Mismatched {
        source_table: context.source_table.clone(),
        shadow: context.shadow_table.clone(),
        fence: context.fence_table.clone(),
    })
}

/// Checks the chunk's fence under a shared lock (INV-F1).
async fn check_fence(transaction: &mut impl Queryable, spec: &TaskSpec) -> Result<(), Error> {
    let context = &spec.context;
    check_tables(context)?;
    let sql = format!(
        "SELECT epoch FROM {} WHERE chunk = ? LOCK IN SHARE MODE",
        quote_qualified(&context.schema, &context.fence_table)
    );
    let found: Option<u64> = transaction.exec_first(sql, (spec.chunk.0,)).await?;
    if found != Some(spec.fence_epoch.0) {
        return Err(Error::Fenced {
            chunk: spec.chunk.0,
            found,
            held: spec.fence_epoch.0,
        });
    }
    Ok(())
}

fn row_bytes(row: &[Value]) -> usize {
    row.iter()
        .map(|value| match value {
            Value::Bytes(bytes) => bytes.len() + 8,
            _ => 16,
        })
        .sum()
}

/// Copies one chunk; returns rows written and server-side statement time. The id of the MySQL
/// connection doing it is stored in `connection_id` (so that a worker told to stop can
/// `KILL QUERY` its own statement).
pub async fn copy_chunk(
    pool: &Pool,
    spec: &TaskSpec,
    connection_id: &AtomicU32,
) -> Result<CopyOutcome, Error> {
    let context = &spec.context;
    let source = quote_qualified(&context.schema, &context.source_table);
    let shadow = quote_qualified(&context.schema, &context.shadow_table);
    let source_columns = column_list(&context.source_columns);
    let shadow_columns = column_list(&context.shadow_columns);
    let (predicate, params) = range_predicate(&context.key_columns, &spec.range);
    let key = order_by(&context.key_columns);

    // A server refusing connections for a while: wait a little here, then hand the task back.
    let mut connection =
        crate::session::patiently(Duration::from_secs(10), || pool.get_conn()).await?;
    connection_id.store(connection.id(), Ordering::SeqCst);
    let mut statement_time = Duration::ZERO;
    let mut conflicts = Vec::new();
    // Buffered: read first, outside the write transaction, so that a worker stalled between read
    // and write holds no lock (not even the table's metadata lock) that could block the owner.
    let buffered_rows = match context.copy_mode {
        CopyMode::Buffered => {
            let read = format!(
                "SELECT {source_columns} FROM {source} FORCE INDEX (PRIMARY) \
                 WHERE {predicate} ORDER BY {key}"
            );
            connection
                .query_drop("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
                .await?;
            let started = Instant::now();
            let rows: Vec<Row> = connection.exec(read, params.clone()).await?;
            statement_time += started.elapsed();
            failpoint::hit(
                "copy.after_read",
                &format!("chunk={} range={}", spec.chunk, spec.range),
            )
            .await;
            Some(rows)
        }
        CopyMode::Server => None,
    };
    let mut options = TxOpts::new();
    options.with_isolation_level(IsolationLevel::ReadCommitted);
    let mut transaction = connection.start_transaction(options).await?;
    check_fence(&mut transaction, spec).await?;
    // INV-W1: a chunk is copied from an empty range. Rows an earlier attempt (or an owner that
    // died before checkpointing this chunk as drained) left behind may be stale.
    transaction
        .exec_drop(
            format!("DELETE FROM {shadow} WHERE {predicate}"),
            params.clone(),
        )
        .await?;
    // A server-side stall inside the fenced transaction, for tests of a worker stopped mid-chunk.
    // `SLEEP` answers 1 when its query is killed instead of failing: report that as the error a
    // killed copy statement gets.
    if let Some(stall) = failpoint::take("copy.server_sleep", &format!("chunk={}", spec.chunk)) {
        let killed: Option<i64> = transaction
            .query_first(format!("SELECT SLEEP({:.3})", stall.as_secs_f64()))
            .await?;
        if killed == Some(1) {
            return Err(Error::Mysql(mysql_async::Error::Server(
                mysql_async::ServerError {
                    code: 1317,
                    message: "Query execution was interrupted".to_owned(),
                    state: "70100".to_owned(),
                },
            )));
        }
    }
    let rows_written = match buffered_rows {
        None => {
            // In key order, so that a warning's row number names a key.
            let sql = format!(
                "INSERT IGNORE INTO {shadow} ({shadow_columns}) SELECT {source_columns} \
                 FROM {source} FORCE INDEX (PRIMARY) WHERE {predicate} ORDER BY {key}"
            );
            let started = Instant::now();
            transaction.exec_drop(sql, params.clone()).await?;
            statement_time += started.elapsed();
            let written = transaction.affected_rows();
            match check_warnings(&mut transaction, &spec.range, 0).await {
                Ok(found) => conflicts.extend(found),
                Err(error) => {
                    return Err(
                        name_row(&mut transaction, context, &predicate, params, error).await,
                    );
                }
            }
            written
        }
        Some(rows) => {
            let width = context.shadow_columns.len().max(1);
            let tuple = value_tuple(rows.first().map(Row::columns_ref), width);
            let max_rows = (MAX_PLACEHOLDERS / width)
                .min(usize::try_from(context.batch_rows.max(1)).unwrap_or(usize::MAX));
            let mut written = 0;
            let mut batch: Vec<Value> = Vec::new();
            let mut batch_rows = 0;
            let mut batch_bytes = 0;
            let total = rows.len();
            let mut batch_start = 0;
            for (index, row) in rows.into_iter().enumerate() {
                let values = row.unwrap();
                batch_bytes += row_bytes(&values);
                batch.extend(values);
                batch_rows += 1;
                let last = index + 1 == total;
                if batch_rows >= max_rows || batch_bytes >= MAX_BATCH_BYTES || last {
                    let inserted = insert_batch(
                        &mut transaction,
                        &shadow,
                        &shadow_columns,
                        (&tuple, width),
                        &mut batch,
                        (spec, batch_start),
                        &mut conflicts,
                    )
                    .await;
                    let (affected, took) = match inserted {
                        Ok(done) => done,
                        Err(error) => {
                            return Err(name_row(
                                &mut transaction,
                                context,
                                &predicate,
                                params,
                                error,
                            )
                            .await);
                        }
                    };
                    written += affected;
                    statement_time += took;
                    batch_start = index as u64 + 1;
                    batch_rows = 0;
                    batch_bytes = 0;
                }
            }
            written
        }
    };
    transaction.commit().await?;
    if let Some(first) = conflicts.first() {
        tracing::info!(chunk = %spec.chunk, count = conflicts.len(), first = %first, "rows skipped on a unique-key conflict; their deferred changes or the checksum settle them");
    }
    Ok(CopyOutcome {
        rows: rows_written,
        statement_time,
        unique_conflicts: conflicts.len() as u64,
    })
}

/// The placeholder a value read as `column_type` is written back through: MySQL 9's VECTOR
/// takes its bytes only as a binary string (bound as text it fails with 6136).
fn placeholder(column_type: ColumnType) -> &'static str {
    if column_type == ColumnType::MYSQL_TYPE_VECTOR {
        "CAST(? AS BINARY)"
    } else {
        "?"
    }
}

/// One row's placeholder tuple for rows read with `columns` (plain `?`s without them).
fn value_tuple(columns: Option<&[mysql_async::Column]>, width: usize) -> String {
    let parts: Vec<&str> = match columns {
        Some(columns) => columns
            .iter()
            .map(|column| placeholder(column.column_type()))
            .collect(),
        None => vec!["?"; width],
    };
    format!("({})", parts.join(", "))
}

async fn insert_batch(
    transaction: &mut mysql_async::Transaction<'_>,
    shadow: &str,
    shadow_columns: &str,
    (tuple, width): (&str, usize),
    batch: &mut Vec<Value>,
    (spec, first_row): (&TaskSpec, u64),
    conflicts: &mut Vec<String>,
) -> Result<(u64, Duration), Error> {
    let rows = batch.len() / width;
    let sql = format!(
        "INSERT IGNORE INTO {shadow} ({shadow_columns}) VALUES {}",
        vec![tuple; rows].join(", ")
    );
    let params = std::mem::take(batch);
    let started = Instant::now();
    transaction.exec_drop(sql, params).await?;
    let took = started.elapsed();
    let affected = transaction.affected_rows();
    conflicts.extend(check_warnings(transaction, &spec.range, first_row).await?);
    Ok((affected, took))
}

/// Fills in the primary key of the row a copy warning points at, read from the source in the
/// copy's key order (best effort: the error stands without it).
async fn name_row(
    transaction: &mut impl Queryable,
    context: &shoal_common::task::CopyContext,
    predicate: &str,
    mut params: Vec<Value>,
    error: Error,
) -> Error {
    let Error::Warning {
        range,
        code,
        message,
        row_offset: Some(offset),
        row: None,
    } = error
    else {
        return error;
    };
    let columns = column_list(&context.key_columns);
    let sql = format!(
        "SELECT {columns} FROM {} FORCE INDEX (PRIMARY) WHERE {predicate} ORDER BY {} LIMIT 1 \
         OFFSET ?",
        quote_qualified(&context.schema, &context.source_table),
        order_by(&context.key_columns)
    );
    params.push(Value::UInt(offset));
    let found: Option<Row> = transaction.exec_first(sql, params).await.ok().flatten();
    let row = found.map(|row| {
        let values: Vec<String> = row
            .unwrap()
            .iter()
            .map(|value| value.as_sql(false))
            .collect();
        if values.len() == 1 {
            format!("{columns} = {}", values[0])
        } else {
            format!("({columns}) = ({})", values.join(", "))
        }
    });
    Error::Warning {
        range,
        code,
        message,
        row_offset: Some(offset),
        row,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_pairing_a_fence_with_other_tables_is_refused() {
        let context = |shadow: &str, fence: &str| shoal_common::task::CopyContext {
            target: "local".to_owned(),
            schema: "shop".to_owned(),
            source_table: "orders".to_owned(),
            shadow_table: shadow.to_owned(),
            fence_table: fence.to_owned(),
            source_columns: Vec::new(),
            shadow_columns: Vec::new(),
            key_columns: Vec::new(),
            copy_mode: CopyMode::Server,
            batch_rows: 1,
        };
        assert!(check_tables(&context("_orders_new", "_orders_fence")).is_ok());
        for (shadow, fence) in [
            ("customers", "_orders_fence"),
            ("_orders_new", "_users_fence"),
        ] {
            assert!(matches!(
                check_tables(&context(shadow, fence)),
                Err(Error::Mismatched { .. })
            ));
        }
    }

    #[test]
    fn vectors_are_written_back_as_binary_strings() {
        assert_eq!(
            placeholder(ColumnType::MYSQL_TYPE_VECTOR),
            "CAST(? AS BINARY)"
        );
        assert_eq!(placeholder(ColumnType::MYSQL_TYPE_BLOB), "?");
        assert_eq!(placeholder(ColumnType::MYSQL_TYPE_VAR_STRING), "?");
        assert_eq!(value_tuple(None, 3), "(?, ?, ?)");
    }

    #[test]
    fn primary_key_duplicates_are_told_in_both_flavours() {
        assert!(is_primary_duplicate(
            "Duplicate entry '5' for key 'PRIMARY'"
        ));
        assert!(is_primary_duplicate(
            "Duplicate entry '5' for key '_orders_new.PRIMARY'"
        ));
        assert!(!is_primary_duplicate("Duplicate entry '5' for key 'uk'"));
        assert!(!is_primary_duplicate(
            "Duplicate entry 'for key 'PRIMARY'' for key '_t_new.uk_c'"
        ));
    }

    #[test]
    fn warnings_name_their_row_and_the_error_its_key() {
        assert_eq!(
            warning_row("Out of range value for column 'k' at row 17"),
            Some(17)
        );
        assert_eq!(warning_row("Data truncated for column 'c' at row 0"), None);
        assert_eq!(warning_row("Incorrect string value"), None);
        let warning = Error::Warning {
            range: ChunkRange::ALL,
            code: 1264,
            message: "Out of range value for column 'k' at row 3".into(),
            row_offset: Some(2),
            row: Some("`id` = 150".into()),
        };
        assert!(
            warning
                .to_string()
                .ends_with("at row 3 (the first such row: `id` = 150)"),
            "{warning}"
        );
    }

    #[test]
    fn only_transient_server_errors_are_retryable() {
        let fenced = Error::Fenced {
            chunk: 1,
            found: Some(2),
            held: 1,
        };
        assert!(
            !fenced.is_retryable(),
            "a fenced task is dropped, never retried"
        );
        let warning = Error::Warning {
            range: ChunkRange::ALL,
            code: 1265,
            message: "truncated".into(),
            row_offset: None,
            row: None,
        };
        assert!(
            !warning.is_retryable(),
            "a data-changing warning is not retried"
        );
    }
}
