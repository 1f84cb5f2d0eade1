//! A UNIQUE index the ALTER adds over data that violates it.
//!
//! Copies use `INSERT IGNORE`, so a row whose value collides on a unique key of the shadow table
//! is skipped and counted as a conflict. Conflicts can be transient (the application moved a
//! unique value between two rows while the copy ran; the change stream then makes it right),
//! so a conflict alone proves nothing. When the copy reported any, the owner asks the source
//! itself, before the checksum: a value appearing more than once under a unique index of the
//! shadow table that the source does not have means the ALTER cannot succeed. The migration
//! then fails before cut-over naming the index and one duplicated value.

use std::collections::BTreeMap;
use std::fmt;

use mysql_async::Value;
use mysql_async::prelude::Queryable;
use shoal_common::sql::{quote_identifier, quote_qualified};

use super::Error;

/// A unique index of the shadow table: name and columns in index order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueIndex {
    /// Its name.
    pub name: String,
    /// Its columns, in order.
    pub columns: Vec<String>,
}

/// One duplicated value under a new unique index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The index the ALTER adds.
    pub index: UniqueIndex,
    /// The duplicated value, one SQL literal per column.
    pub values: Vec<String>,
    /// How many rows of the source hold it.
    pub rows: u64,
}

impl fmt::Display for Duplicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns: Vec<String> = self
            .index
            .columns
            .iter()
            .map(|column| quote_identifier(column))
            .collect();
        write!(
            f,
            "the ALTER adds UNIQUE index {} on ({}), but {} rows hold the value ({})",
            quote_identifier(&self.index.name),
            columns.join(", "),
            self.rows,
            self.values.join(", ")
        )
    }
}

/// Groups `(index, column)` rows (in `SEQ_IN_INDEX` order) of unique, non-primary indexes.
#[cfg(test)]
fn group(rows: Vec<(String, String)>) -> BTreeMap<String, Vec<String>> {
    let mut indexes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (index, column) in rows {
        indexes.entry(index).or_default().push(column);
    }
    indexes
}

/// The shadow's unique indexes whose column list no unique index of the source has, over
/// columns the source has (an index over a column the ALTER adds cannot be checked on the
/// source; the checksum finds the rows it made the copy skip).
pub fn new_unique_indexes(
    source: &BTreeMap<String, Vec<String>>,
    shadow: &BTreeMap<String, Vec<String>>,
    source_columns: &[String],
) -> Vec<UniqueIndex> {
    shadow
        .iter()
        .filter(|(_, columns)| !source.values().any(|existing| existing == *columns))
        .filter(|(_, columns)| columns.iter().all(|column| source_columns.contains(column)))
        .map(|(name, columns)| UniqueIndex {
            name: name.clone(),
            columns: columns.clone(),
        })
        .collect()
}

async fn unique_indexes(
    connection: &mut impl Queryable,
    schema: &str,
    table: &str,
) -> Result<BTreeMap<String, Vec<String>>, Error> {
    let parts = unique_index_parts(connection, schema, table).await?;
    Ok(parts
        .into_iter()
        .map(|(index, parts)| (index, parts.into_iter().map(|part| part.column).collect()))
        .collect())
}

/// One part of a unique index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPart {
    /// The column; empty for an expression (a functional index part, MySQL 8.0.13+), which
    /// matches no column.
    pub column: String,
    /// The prefix length (`SUB_PART`: characters, or bytes of a binary string), if only a
    /// prefix is indexed.
    pub prefix: Option<u64>,
}

/// The secondary unique indexes of `schema`.`table`, their parts in index order.
pub(super) async fn unique_index_parts(
    connection: &mut impl Queryable,
    schema: &str,
    table: &str,
) -> Result<BTreeMap<String, Vec<IndexPart>>, Error> {
    let rows: Vec<(String, Option<String>, Option<u64>)> = connection
        .exec(
            "SELECT INDEX_NAME, COLUMN_NAME, SUB_PART FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0 \
             AND INDEX_NAME <> 'PRIMARY' ORDER BY INDEX_NAME, SEQ_IN_INDEX",
            (schema, table),
        )
        .await?;
    let mut indexes: BTreeMap<String, Vec<IndexPart>> = BTreeMap::new();
    for (index, column, prefix) in rows {
        indexes.entry(index).or_default().push(IndexPart {
            column: column.unwrap_or_default(),
            prefix,
        });
    }
    Ok(indexes)
}

/// The first duplicated value under a unique index the shadow table has and the source lacks,
/// read from the source (one grouping scan per such index).
pub async fn find_duplicate(
    connection: &mut impl Queryable,
    schema: &str,
    source: &str,
    shadow: &str,
    source_columns: &[String],
) -> Result<Option<Duplicate>, Error> {
    let existing = unique_indexes(connection, schema, source).await?;
    let added = unique_indexes(connection, schema, shadow).await?;
    for index in new_unique_indexes(&existing, &added, source_columns) {
        let columns: Vec<String> = index
            .columns
            .iter()
            .map(|column| quote_identifier(column))
            .collect();
        // NULLs never collide under UNIQUE.
        let not_null: Vec<String> = columns
            .iter()
            .map(|column| format!("{column} IS NOT NULL"))
            .collect();
        let sql = format!(
            "SELECT {list}, COUNT(*) FROM {table} WHERE {not_null} GROUP BY {list} \
             HAVING COUNT(*) > 1 LIMIT 1",
            list = columns.join(", "),
            table = quote_qualified(schema, source),
            not_null = not_null.join(" AND "),
        );
        // The binary protocol, so that values come back typed (a number is not quoted).
        let row: Option<mysql_async::Row> = connection.exec_first(sql, ()).await?;
        if let Some(row) = row {
            let mut values: Vec<Value> = row.unwrap();
            let rows = match values.pop() {
                Some(Value::Int(count)) => u64::try_from(count).unwrap_or(0),
                Some(Value::UInt(count)) => count,
                _ => 0,
            };
            return Ok(Some(Duplicate {
                index,
                values: values.iter().map(|value| value.as_sql(false)).collect(),
                rows,
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indexes(rows: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
        group(
            rows.iter()
                .map(|(index, column)| ((*index).to_owned(), (*column).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn only_unique_indexes_the_source_lacks_over_its_columns_are_checked() {
        let source = indexes(&[("uk", "u")]);
        let shadow = indexes(&[
            ("uk", "u"),
            ("uk_renamed_same_columns", "u"),
            ("uk_k", "k"),
            ("uk_kc", "k"),
            ("uk_kc", "c"),
            ("uk_new_column", "note"),
        ]);
        let columns: Vec<String> = ["id", "k", "c", "u"].map(str::to_owned).to_vec();
        let found = new_unique_indexes(&source, &shadow, &columns);
        let names: Vec<&str> = found.iter().map(|index| index.name.as_str()).collect();
        assert_eq!(names, ["uk_k", "uk_kc"]);
        assert_eq!(found[1].columns, ["k", "c"], "index order is kept");
    }

    #[test]
    fn the_message_names_the_index_the_columns_and_the_value() {
        let duplicate = Duplicate {
            index: UniqueIndex {
                name: "uk`k".to_owned(),
                columns: vec!["k".to_owned(), "c".to_owned()],
            },
            values: vec!["7".to_owned(), "'it''s'".to_owned()],
            rows: 3,
        };
        assert_eq!(
            duplicate.to_string(),
            "the ALTER adds UNIQUE index `uk``k` on (`k`, `c`), but 3 rows hold the value (7, 'it''s')"
        );
    }
}
