//! Primary keys in SQL: range predicates over one or more key columns, and key values to and from
//! the driver's values.
//!
//! # Design decisions
//! A range over a composite key is written out as `(a > ? OR (a = ? AND b >= ?))` rather than
//! the row comparison `(a, b) >= (?, ?)`, which MariaDB's range optimizer does not turn into an
//! index range; a redundant `a >= ?` on the first column leads the optimizer to the index too.
//! Values are always bound, never spliced into the text.

use mysql_async::Value;
use shoal_common::chunk::ChunkRange;
use shoal_common::key::{DateTime, Key, KeyKind, KeyPart};
use shoal_common::sql::quote_identifier;

/// The driver's value for a key part, to bind into a placeholder.
pub fn part_to_value(part: &KeyPart) -> Value {
    match part {
        KeyPart::Int(value) => Value::Int(*value),
        KeyPart::UInt(value) => Value::UInt(*value),
        KeyPart::Bytes(bytes) | KeyPart::Opaque(bytes) => Value::Bytes(bytes.clone()),
        KeyPart::Temporal(at) => Value::Date(
            at.year, at.month, at.day, at.hour, at.minute, at.second, at.micros,
        ),
    }
}

/// A key part of `kind` from a driver value (binary or text protocol, or a binlog image).
pub fn part_from_value(kind: KeyKind, value: &Value) -> Result<KeyPart, String> {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let part = match (kind, value) {
        (_, Value::NULL) => return Err("a primary-key value is NULL".to_owned()),
        (KeyKind::Signed, Value::Int(value)) => KeyPart::Int(*value),
        (KeyKind::Signed, Value::UInt(value)) => KeyPart::Int(
            i64::try_from(*value).map_err(|_| format!("{value} does not fit a signed key"))?,
        ),
        (KeyKind::Unsigned, Value::UInt(value)) => KeyPart::UInt(*value),
        (KeyKind::Unsigned, Value::Int(value)) => {
            KeyPart::UInt(u64::try_from(*value).map_err(|_| format!("{value} in an unsigned key"))?)
        }
        (KeyKind::Signed, Value::Bytes(bytes)) => KeyPart::Int(
            text(bytes)
                .parse()
                .map_err(|_| format!("{:?} is not an integer", text(bytes)))?,
        ),
        (KeyKind::Unsigned, Value::Bytes(bytes)) => KeyPart::UInt(
            text(bytes)
                .parse()
                .map_err(|_| format!("{:?} is not an unsigned integer", text(bytes)))?,
        ),
        (KeyKind::Bytes, Value::Bytes(bytes)) => KeyPart::Bytes(bytes.clone()),
        (KeyKind::Temporal, &Value::Date(year, month, day, hour, minute, second, micros)) => {
            KeyPart::Temporal(DateTime {
                year,
                month,
                day,
                hour,
                minute,
                second,
                micros,
            })
        }
        (KeyKind::Temporal, Value::Bytes(bytes)) => KeyPart::Temporal(
            DateTime::parse(&text(bytes))
                .ok_or_else(|| format!("{:?} is not a date or datetime", text(bytes)))?,
        ),
        (KeyKind::ServerOrdered, Value::Bytes(bytes)) => KeyPart::Opaque(bytes.clone()),
        (KeyKind::ServerOrdered, Value::Int(value)) => {
            KeyPart::Opaque(value.to_string().into_bytes())
        }
        (KeyKind::ServerOrdered, Value::UInt(value)) => {
            KeyPart::Opaque(value.to_string().into_bytes())
        }
        (kind, value) => return Err(format!("{value:?} is not a {kind:?} key value")),
    };
    Ok(part)
}

/// The key held by `values` (one per key column, in key order).
pub fn key_from_values<'a>(
    kinds: &[KeyKind],
    values: impl IntoIterator<Item = &'a Value>,
) -> Result<Key, String> {
    let parts = kinds
        .iter()
        .zip(values)
        .map(|(kind, value)| part_from_value(*kind, value))
        .collect::<Result<Vec<_>, _>>()?;
    if parts.len() != kinds.len() {
        return Err(format!(
            "a key has {} parts, the primary key {} columns",
            parts.len(),
            kinds.len()
        ));
    }
    Ok(Key(parts))
}

/// `ORDER BY` list of the key columns.
pub fn order_by(columns: &[String]) -> String {
    columns
        .iter()
        .map(|column| quote_identifier(column))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `key >= bound` (`op_last` = `>=`) or `key < bound` (`<`), part by part, with its parameters.
fn compare(columns: &[String], key: &Key, strict: &str, last: &str) -> (String, Vec<Value>) {
    let quoted: Vec<String> = columns.iter().map(|c| quote_identifier(c)).collect();
    let values: Vec<Value> = key.0.iter().map(part_to_value).collect();
    if let ([column], [value]) = (quoted.as_slice(), values.as_slice()) {
        return (format!("{column} {last} ?"), vec![value.clone()]);
    }
    let mut params = Vec::new();
    let mut alternatives = Vec::new();
    for index in 0..quoted.len().min(values.len()) {
        let mut terms = Vec::new();
        for (column, value) in quoted.iter().zip(&values).take(index) {
            terms.push(format!("{column} = ?"));
            params.push(value.clone());
        }
        let op = if index + 1 == quoted.len() {
            last
        } else {
            strict
        };
        terms.push(format!("{} {op} ?", quoted[index]));
        params.push(values[index].clone());
        alternatives.push(format!("({})", terms.join(" AND ")));
    }
    // The first column's own bound, so that the optimizer sees an index range.
    let hint = if last == ">=" { ">=" } else { "<=" };
    let mut all = vec![values[0].clone()];
    all.extend(params);
    (
        format!("{} {hint} ? AND ({})", quoted[0], alternatives.join(" OR ")),
        all,
    )
}

/// `WHERE` clause and parameters selecting `range` of the key made of `columns`.
pub fn range_predicate(columns: &[String], range: &ChunkRange) -> (String, Vec<Value>) {
    let mut clauses = Vec::new();
    let mut params = Vec::new();
    if let Some(lower) = &range.lower {
        let (clause, values) = compare(columns, lower, ">", ">=");
        clauses.push(clause);
        params.extend(values);
    }
    if let Some(upper) = &range.upper {
        let (clause, values) = compare(columns, upper, "<", "<");
        clauses.push(clause);
        params.extend(values);
    }
    if clauses.is_empty() {
        ("TRUE".to_owned(), params)
    } else {
        (
            clauses
                .into_iter()
                .map(|clause| format!("({clause})"))
                .collect::<Vec<_>>()
                .join(" AND "),
            params,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_column_ranges_are_plain_comparisons() {
        let columns = vec!["id".to_owned()];
        let (sql, params) = range_predicate(
            &columns,
            &ChunkRange {
                lower: Some(Key::int(-10)),
                upper: Some(Key::int(20)),
            },
        );
        assert_eq!(sql, "(`id` >= ?) AND (`id` < ?)");
        assert_eq!(params, vec![Value::Int(-10), Value::Int(20)]);
        let (sql, params) = range_predicate(&columns, &ChunkRange::ALL);
        assert_eq!((sql.as_str(), params.len()), ("TRUE", 0));
    }

    #[test]
    fn composite_ranges_expand_part_by_part() {
        let columns = vec!["a".to_owned(), "b`c".to_owned()];
        let key = |a: i64, b: &str| {
            Key(vec![
                KeyPart::Int(a),
                KeyPart::Opaque(b.as_bytes().to_vec()),
            ])
        };
        let (sql, params) = range_predicate(
            &columns,
            &ChunkRange {
                lower: Some(key(1, "x")),
                upper: None,
            },
        );
        assert_eq!(
            sql,
            "(`a` >= ? AND ((`a` > ?) OR (`a` = ? AND `b``c` >= ?)))"
        );
        assert_eq!(
            params,
            vec![
                Value::Int(1),
                Value::Int(1),
                Value::Int(1),
                Value::Bytes(b"x".to_vec())
            ]
        );
        let (sql, params) = range_predicate(
            &columns,
            &ChunkRange {
                lower: None,
                upper: Some(key(2, "y")),
            },
        );
        assert_eq!(
            sql,
            "(`a` <= ? AND ((`a` < ?) OR (`a` = ? AND `b``c` < ?)))"
        );
        assert_eq!(params.len(), 4);
    }

    #[test]
    fn values_convert_by_kind() {
        assert_eq!(
            part_from_value(
                KeyKind::Unsigned,
                &Value::Bytes(b"18446744073709551615".to_vec())
            ),
            Ok(KeyPart::UInt(u64::MAX))
        );
        assert_eq!(
            part_from_value(KeyKind::Signed, &Value::UInt(5)),
            Ok(KeyPart::Int(5))
        );
        assert!(part_from_value(KeyKind::Unsigned, &Value::Int(-1)).is_err());
        assert!(part_from_value(KeyKind::Signed, &Value::NULL).is_err());
        let at = Value::Date(2026, 11, 23, 9, 13, 41, 500_000);
        let part = part_from_value(KeyKind::Temporal, &at).unwrap();
        assert_eq!(part_to_value(&part), at);
        assert_eq!(
            part_from_value(
                KeyKind::Temporal,
                &Value::Bytes(b"2026-11-23 09:13:41.500000".to_vec())
            ),
            Ok(part)
        );
        assert_eq!(
            key_from_values(&[KeyKind::Signed], &[Value::Int(1), Value::Int(2)]),
            Ok(Key::int(1)),
            "a row image holds more values than the key: the caller picks the key's"
        );
        assert!(key_from_values(&[KeyKind::Signed, KeyKind::Signed], &[Value::Int(1)]).is_err());
    }
}
