//! The I/O side of chunk planning: the integer key's bounds and the probes of the key order
//! that [`ChunkPlanner`] asks for (the planner itself is pure, in `shoal_common::chunk`).

use mysql_async::Value;
use mysql_async::prelude::Queryable;
use shoal_common::chunk::{ChunkId, ChunkPlanner, ChunkRange, Probe, Step, dense};
use shoal_common::key::{Key, KeyPart, KeyShape};
use shoal_worker::keys::{key_from_values, order_by, part_from_value, range_predicate};

use super::Error;

/// A planner for `source` (quoted) of about `rows` rows: a single integer key dense in its
/// bounds (read now) is cut arithmetically, any other key by probing.
pub async fn new_planner(
    connection: &mut impl Queryable,
    source: &str,
    rows: u64,
    key: &KeyShape,
) -> Result<ChunkPlanner, Error> {
    if !key.is_integer() {
        return Ok(ChunkPlanner::probing());
    }
    let column = order_by(&key.columns);
    let bounds: Option<(Value, Value)> = connection
        .exec_first(
            format!("SELECT MIN({column}), MAX({column}) FROM {source}"),
            (),
        )
        .await?;
    let as_int = |value: &Value| -> Result<Option<i128>, Error> {
        if *value == Value::NULL {
            return Ok(None);
        }
        match part_from_value(key.kinds[0], value).map_err(Error::Copy)? {
            KeyPart::Int(value) => Ok(Some(i128::from(value))),
            KeyPart::UInt(value) => Ok(Some(i128::from(value))),
            other => Err(Error::Copy(format!("integer key bound {other}"))),
        }
    };
    let bounds = match &bounds {
        Some((min, max)) => as_int(min)?.zip(as_int(max)?),
        None => None,
    };
    if let Some((min, max)) = bounds {
        let span = u128::try_from(max - min + 1).unwrap_or(u128::MAX);
        if !dense(span, rows) {
            return Ok(ChunkPlanner::probing());
        }
    }
    Ok(ChunkPlanner::arithmetic(
        bounds,
        key.kinds[0] == shoal_common::key::KeyKind::Unsigned,
    ))
}

/// The key `probe.offset` rows from `probe.from` in `source`'s key order, if there is one.
async fn probe(
    connection: &mut impl Queryable,
    source: &str,
    key: &KeyShape,
    probe: &Probe,
) -> Result<Option<Key>, Error> {
    let range = ChunkRange {
        lower: probe.from.clone(),
        upper: None,
    };
    let (predicate, mut params) = range_predicate(&key.columns, &range);
    params.push(Value::UInt(probe.offset));
    let columns = order_by(&key.columns);
    let row: Option<mysql_async::Row> = connection
        .exec_first(
            format!(
                "SELECT {columns} FROM {source} FORCE INDEX (PRIMARY) WHERE {predicate} \
                 ORDER BY {columns} LIMIT 1 OFFSET ?"
            ),
            params,
        )
        .await?;
    row.map(|row| {
        key_from_values(&key.kinds, row.unwrap().iter())
            .map_err(|error| Error::Copy(format!("probing the key order: {error}")))
    })
    .transpose()
}

/// The next chunk of about `rows` keys, probing `source` if the planner asks; `None` once
/// every chunk is planned.
pub async fn next_chunk(
    connection: &mut impl Queryable,
    source: &str,
    key: &KeyShape,
    planner: &mut ChunkPlanner,
    rows: u64,
) -> Result<Option<(ChunkId, ChunkRange)>, Error> {
    let step = match planner.next(rows) {
        Step::Probe(question) => {
            let found = probe(connection, source, key, &question).await?;
            planner.probed(question, found)
        }
        step => step,
    };
    Ok(match step {
        Step::Chunk(id, range) => Some((id, range)),
        Step::Done | Step::Probe(_) => None,
    })
}
