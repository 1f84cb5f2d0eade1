//! Applying buffered changes to the shadow table.
//!
//! Upserts become `REPLACE INTO _<t>_new (cols) VALUES …` from the binlog images (never a
//! re-read of the source), deletes `DELETE … WHERE pk IN (…)`. REPLACE, not `ON DUPLICATE KEY
//! UPDATE`, stays right when a transaction moves a unique value between rows (Spirit #847): the
//! row holding the value is replaced, not merged. Deletes go first, then upserts: the buffer
//! holds one change per key, and where two entries are one key under a collation only the last
//! stored spelling can be an upsert (see `shoal_common::changes`).
//!
//! # Unique keys of the new table
//! A REPLACE also removes any *other* row holding a value it writes under a secondary unique
//! key. That is normal while values move between rows (the row that held the value is changed
//! by a later event, which writes it back), and a silent loss when the source still holds both
//! rows (an ALTER adding a UNIQUE key over data that gains a duplicate after the copy). When the
//! new table has such keys, each batch therefore deletes its own keys first, reads the rows its
//! values collide with (each is a row REPLACE will remove), writes, and compares the affected
//! rows with the batch: every removal is returned as a [`Removed`] for the owner to check
//! against the source (INV-C1), and an unexplained one fails the flush.

use mysql_async::Value;
use mysql_async::prelude::Queryable;
use shoal_common::changes::Change;
use shoal_common::key::Key;
use shoal_common::sql::{quote_identifier, quote_qualified};

use super::Error;
use super::catalog::Column;

/// Rows per REPLACE statement.
const REPLACE_ROWS: usize = 500;
/// Placeholders per statement at most (the protocol's limit is 65,535).
const MAX_PARAMS: usize = 60_000;
/// Keys per DELETE statement.
const DELETE_KEYS: usize = 1_000;

/// How a value is bound into its placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// As it is, once.
    Once,
    /// As it is, twice (the placeholder uses it twice).
    Twice,
    /// As hexadecimal text (raw bytes the session's character set would reject).
    Hex,
}

/// The placeholder rendering a binlog value of `column` as the copy path would write it, and how
/// the value is bound. The binlog gives TIMESTAMP as seconds since the epoch (with a
/// fraction); sessions run at `time_zone = '+00:00'`, so `FROM_UNIXTIME` gives back the stored
/// instant, and 0 is the zero timestamp. Character columns arrive as raw bytes in the column's own
/// character set, which the utf8mb4 session would misread: they are reinterpreted explicitly.
pub fn placeholder(column: &Column) -> (String, Bind) {
    // MySQL's JSON as JSON, so that a shadow column of another type gets the server's own
    // rendering of it, as the copy path writes it.
    if column.data_type == "json" {
        return ("CAST(? AS JSON)".to_owned(), Bind::Once);
    }
    // MySQL 9's VECTOR takes its bytes as a binary string only ("cannot be converted to
    // 'vector' type", 6136, when bound as the session's text).
    if column.data_type == "vector" {
        return ("CAST(? AS BINARY)".to_owned(), Bind::Once);
    }
    if column.data_type == "timestamp" {
        return (
            "IF(? = 0, '0000-00-00 00:00:00', FROM_UNIXTIME(?))".to_owned(),
            Bind::Twice,
        );
    }
    match column.charset.as_deref() {
        Some(charset)
            if charset != "utf8mb4"
                && charset != "binary"
                && charset
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            (format!("CONVERT(UNHEX(?) USING {charset})"), Bind::Hex)
        }
        _ => ("?".to_owned(), Bind::Once),
    }
}

/// Writes changes into the shadow table.
#[derive(Debug, Clone)]
pub struct Applier {
    /// `schema`.`_t_new`, quoted.
    shadow: String,
    /// Shadow column list, quoted.
    shadow_columns: String,
    /// For each copied column, its index in a source row image.
    source_indices: Vec<usize>,
    /// One row's placeholder tuple, e.g. `(?, ?, IF(? = 0, …, FROM_UNIXTIME(?)))`.
    tuple: String,
    /// How each copied column's value is bound in `tuple`.
    binds: Vec<Bind>,
    /// Key columns, quoted, with each one's placeholder and binding.
    key: Vec<(String, String, Bind)>,
    /// Each copied column's placeholder (the parts of `tuple`).
    placeholders: Vec<String>,
    /// Which copied columns are MySQL JSON (a typed document is written by its own expression).
    json: Vec<bool>,
    /// The shadow's secondary unique keys over copied columns.
    unique_keys: Vec<UniqueKey>,
    /// The shadow's secondary unique keys over a column that is not copied (added or generated):
    /// a removal under one cannot be named, so it fails the flush.
    uncovered_unique: Vec<String>,
}

/// What one flush did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// Rows replaced.
    pub upserts: usize,
    /// Keys deleted.
    pub deletes: usize,
    /// Other rows a written value pushed out under a secondary unique key.
    pub removed: Vec<Removed>,
}

/// A row of the shadow table that a REPLACE removed because a written row took its value under
/// a secondary unique key. Legitimate only if the source no longer holds that row with that
/// value (a later event of its own then writes it back).
#[derive(Debug, Clone, PartialEq)]
pub struct Removed {
    /// Its primary-key values, as read from the shadow table.
    pub key: Vec<Value>,
    /// The unique index whose value it lost.
    pub index: String,
    /// That index's columns, quoted.
    pub columns: Vec<String>,
    /// Its values under that index, as read from the shadow table.
    pub values: Vec<Value>,
    /// The keys of the batch that removed it (one of them took the value), as a predicate and
    /// its parameters: a real duplicate is the source holding the value under this row's key and
    /// one of these. Dropped once checked.
    pub rivals: Option<(String, Vec<Value>)>,
}

/// `values` as SQL literals, for messages.
pub fn shown(values: &[Value]) -> String {
    values
        .iter()
        .map(|value| value.as_sql(false))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A secondary unique key of the shadow table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UniqueKey {
    /// Index name.
    name: String,
    /// Its columns, quoted.
    columns: Vec<String>,
    /// Each part as the index compares it: the column, or `LEFT(column, n)` for a prefix.
    compared: Vec<String>,
    /// Each part's prefix length, if only a prefix is indexed.
    prefixes: Vec<Option<u64>>,
    /// Each column's position among the copied columns.
    positions: Vec<usize>,
}

impl Applier {
    /// An applier for the shadow table `shadow_table`, copying `source_indices` of each image
    /// (defined as `source_columns` in the source) into `shadow_columns`.
    pub fn new(
        schema: &str,
        shadow_table: &str,
        shadow_columns: &[String],
        source_indices: Vec<usize>,
        source_columns: &[Column],
        key_columns: &[Column],
    ) -> Self {
        let (placeholders, binds): (Vec<String>, Vec<Bind>) =
            source_columns.iter().map(placeholder).unzip();
        Self {
            tuple: format!("({})", placeholders.join(", ")),
            placeholders,
            json: source_columns
                .iter()
                .map(|column| column.data_type == "json")
                .collect(),
            unique_keys: Vec::new(),
            uncovered_unique: Vec::new(),
            binds,
            shadow: quote_qualified(schema, shadow_table),
            shadow_columns: shadow_columns
                .iter()
                .map(|column| quote_identifier(column))
                .collect::<Vec<_>>()
                .join(", "),
            source_indices,
            key: key_columns
                .iter()
                .map(|column| {
                    let (placeholder, bind) = placeholder(column);
                    (quote_identifier(&column.name), placeholder, bind)
                })
                .collect(),
        }
    }

    /// The same applier, guarding the shadow's secondary unique `indexes` (name → parts, columns
    /// as the shadow names them); `shadow_columns` are the copied columns.
    pub fn with_unique_keys(
        mut self,
        indexes: &std::collections::BTreeMap<String, Vec<super::unique::IndexPart>>,
        shadow_columns: &[String],
    ) -> Self {
        for (name, parts) in indexes {
            let positions: Option<Vec<usize>> = parts
                .iter()
                .map(|part| {
                    shadow_columns
                        .iter()
                        .position(|copied| *copied == part.column)
                })
                .collect();
            let Some(positions) = positions else {
                self.uncovered_unique.push(name.clone());
                continue;
            };
            // A prefix part collides on its prefix: compare `LEFT(…, n)` on both sides.
            self.unique_keys.push(UniqueKey {
                name: name.clone(),
                columns: parts
                    .iter()
                    .map(|part| quote_identifier(&part.column))
                    .collect(),
                compared: parts
                    .iter()
                    .map(|part| match part.prefix {
                        Some(length) => {
                            format!("LEFT({}, {length})", quote_identifier(&part.column))
                        }
                        None => quote_identifier(&part.column),
                    })
                    .collect(),
                prefixes: parts.iter().map(|part| part.prefix).collect(),
                positions,
            });
        }
        self
    }

    /// Applies `changes` on `connection` (which may hold `LOCK TABLES` during cut-over).
    pub async fn apply(
        &self,
        connection: &mut impl Queryable,
        changes: &[(Key, Change<Vec<Value>>)],
    ) -> Result<Applied, Error> {
        let mut applied = Applied::default();
        let (deletes, upserts): (Vec<_>, Vec<_>) = changes
            .iter()
            .partition(|(_, change)| matches!(change, Change::Delete));
        self.delete(connection, &deletes, &mut applied).await?;
        self.replace(connection, &upserts, &mut applied).await?;
        Ok(applied)
    }

    fn bind(bind: Bind, value: &Value, params: &mut Vec<Value>) {
        match (bind, value) {
            (Bind::Once, value) => params.push(value.clone()),
            (Bind::Twice, value) => params.extend([value.clone(), value.clone()]),
            (Bind::Hex, Value::Bytes(bytes)) => {
                let hex: String = bytes.iter().map(|byte| format!("{byte:02X}")).collect();
                params.push(Value::Bytes(hex.into_bytes()));
            }
            (Bind::Hex, value) => params.push(value.clone()),
        }
    }

    async fn delete(
        &self,
        connection: &mut impl Queryable,
        deletes: &[&(Key, Change<Vec<Value>>)],
        applied: &mut Applied,
    ) -> Result<(), Error> {
        for keys in deletes.chunks(DELETE_KEYS) {
            let keys: Vec<&Key> = keys.iter().map(|(key, _)| key).collect();
            self.delete_keys(connection, &keys).await?;
            applied.deletes += keys.len();
        }
        Ok(())
    }

    /// `DELETE FROM _t_new WHERE <key in keys>`.
    async fn delete_keys(
        &self,
        connection: &mut impl Queryable,
        keys: &[&Key],
    ) -> Result<(), Error> {
        let (predicate, params) = self.keys_predicate(keys);
        let sql = format!("DELETE FROM {} WHERE {predicate}", self.shadow);
        connection.exec_drop(sql, params).await?;
        Ok(())
    }

    /// A predicate matching the rows of `keys` (rendered as the copy writes them), and its
    /// parameters.
    fn keys_predicate(&self, keys: &[&Key]) -> (String, Vec<Value>) {
        let mut params = Vec::new();
        for key in keys {
            for ((_, _, bind), part) in self.key.iter().zip(&key.0) {
                Self::bind(*bind, &shoal_worker::keys::part_to_value(part), &mut params);
            }
        }
        let predicate = match self.key.as_slice() {
            [(column, placeholder, _)] => {
                format!(
                    "{column} IN ({})",
                    vec![placeholder.as_str(); keys.len()].join(", ")
                )
            }
            columns => {
                let one: Vec<String> = columns
                    .iter()
                    .map(|(column, placeholder, _)| format!("{column} = {placeholder}"))
                    .collect();
                let one = format!("({})", one.join(" AND "));
                vec![one; keys.len()].join(" OR ")
            }
        };
        (predicate, params)
    }

    async fn replace(
        &self,
        connection: &mut impl Queryable,
        upserts: &[&(Key, Change<Vec<Value>>)],
        applied: &mut Applied,
    ) -> Result<(), Error> {
        let guarded = !self.unique_keys.is_empty() || !self.uncovered_unique.is_empty();
        let mut start = 0;
        while start < upserts.len() {
            // Up to REPLACE_ROWS rows, fewer if their placeholders would pass MAX_PARAMS.
            let mut params = Vec::new();
            let mut tuples: Vec<String> = Vec::new();
            let mut images: Vec<Vec<&Value>> = Vec::new();
            let mut end = start;
            while end < upserts.len() && end - start < REPLACE_ROWS {
                let Change::Upsert(row) = &upserts[end].1 else {
                    end += 1;
                    continue;
                };
                let before = params.len();
                let (tuple, image) = self.row_tuple(row, &mut params)?;
                if params.len() > MAX_PARAMS && end > start {
                    params.truncate(before);
                    break;
                }
                tuples.push(tuple);
                images.push(image);
                end += 1;
            }
            let rows = &upserts[start..end];
            start = end;
            let mut removed = Vec::new();
            if guarded {
                let keys: Vec<&Key> = rows.iter().map(|(key, _)| key).collect();
                self.delete_keys(connection, &keys).await?;
                removed = self.colliding_rows(connection, &images).await?;
                if !removed.is_empty() {
                    let rivals = self.keys_predicate(&keys);
                    for row in &mut removed {
                        row.rivals = Some(rivals.clone());
                    }
                }
            }
            let sql = format!(
                "REPLACE INTO {} ({}) VALUES {}",
                self.shadow,
                self.shadow_columns,
                tuples.join(", ")
            );
            let result = connection.exec_iter(sql, params).await?;
            let affected = usize::try_from(result.affected_rows()).unwrap_or(usize::MAX);
            result.drop_result().await?;
            if guarded {
                // Each own key was deleted first: every affected row beyond one per written row
                // is another row removed, and each must be one read above.
                if affected != images.len() + removed.len() {
                    return Err(Error::UniqueConflict(format!(
                        "writing {} changed rows to {} removed {} other row(s) under a unique \
                         index, {} of them accounted for{}: the source holds rows that collide \
                         under a UNIQUE index the ALTER adds (remove the duplicates, or drop \
                         UNIQUE from the ALTER; the original table is untouched)",
                        images.len(),
                        self.shadow,
                        affected.saturating_sub(images.len()),
                        removed.len(),
                        self.batch_duplicate(&images)
                            .map(|found| format!(" ({found})"))
                            .unwrap_or_default()
                    )));
                }
            }
            let warnings: Vec<(String, u16, String)> = connection.query("SHOW WARNINGS").await?;
            if let Some((_, code, message)) = warnings.into_iter().next() {
                return Err(Error::Apply(format!(
                    "applying changes to {} raised warning {code}: {message}",
                    self.shadow
                )));
            }
            applied.upserts += rows.len();
            applied.removed.extend(removed);
        }
        Ok(())
    }

    /// One row's value tuple, its values bound into `params`, and its copied values. A typed
    /// JSON document (MySQL) is written by its own expression; every other value through the
    /// column's placeholder.
    fn row_tuple<'r>(
        &self,
        row: &'r [Value],
        params: &mut Vec<Value>,
    ) -> Result<(String, Vec<&'r Value>), Error> {
        let mut image = Vec::with_capacity(self.source_indices.len());
        let mut parts: Option<Vec<String>> = None;
        for (at, (&index, &bind)) in self.source_indices.iter().zip(&self.binds).enumerate() {
            let value = row
                .get(index)
                .ok_or_else(|| Error::Binlog(format!("row image lacks column {index}")))?;
            image.push(value);
            let typed = if self.json[at] {
                shoal_mysql::json::typed(value).map_err(Error::Apply)?
            } else {
                None
            };
            match typed {
                Some(document) => {
                    let parts = parts.get_or_insert_with(|| self.placeholders[..at].to_vec());
                    parts.push(document.expression(params));
                }
                None => {
                    Self::bind(bind, value, params);
                    if let Some(parts) = parts.as_mut() {
                        parts.push(self.placeholders[at].clone());
                    }
                }
            }
        }
        let tuple = match parts {
            Some(parts) => format!("({})", parts.join(", ")),
            None => self.tuple.clone(),
        };
        Ok((tuple, image))
    }

    /// The shadow rows (own keys already deleted) that the written `images` collide with under
    /// each secondary unique key: the rows a REPLACE of them removes. NULLs never collide.
    async fn colliding_rows(
        &self,
        connection: &mut impl Queryable,
        images: &[Vec<&Value>],
    ) -> Result<Vec<Removed>, Error> {
        let mut removed: Vec<Removed> = Vec::new();
        let key_columns: Vec<&str> = self
            .key
            .iter()
            .map(|(column, _, _)| column.as_str())
            .collect();
        for unique in &self.unique_keys {
            let mut params = Vec::new();
            let mut tuples = 0;
            for image in images {
                let values: Vec<&Value> = unique.positions.iter().map(|&at| image[at]).collect();
                if values.iter().any(|value| **value == Value::NULL) {
                    continue;
                }
                for (&at, value) in unique.positions.iter().zip(values) {
                    Self::bind(self.binds[at], value, &mut params);
                }
                tuples += 1;
            }
            if tuples == 0 {
                continue;
            }
            let tuple: Vec<String> = unique
                .positions
                .iter()
                .zip(&unique.prefixes)
                .map(|(&at, prefix)| match prefix {
                    Some(length) => format!("LEFT({}, {length})", self.placeholders[at]),
                    None => self.placeholders[at].clone(),
                })
                .collect();
            let tuple = format!("({})", tuple.join(", "));
            // A locking read: it sees (and holds) what the REPLACE will meet, not the
            // transaction's snapshot, and keeps a copy from adding a colliding row meanwhile.
            let sql = format!(
                "SELECT {}, {} FROM {} WHERE ({}) IN ({}) FOR UPDATE",
                key_columns.join(", "),
                unique.columns.join(", "),
                self.shadow,
                unique.compared.join(", "),
                vec![tuple.as_str(); tuples].join(", ")
            );
            let rows: Vec<mysql_async::Row> = connection.exec(sql, params).await?;
            for row in rows {
                let values = row.unwrap();
                let (key, values) = values.split_at(key_columns.len());
                if removed.iter().any(|known| known.key == key) {
                    continue;
                }
                removed.push(Removed {
                    key: key.to_vec(),
                    index: unique.name.clone(),
                    columns: unique.columns.clone(),
                    values: values.to_vec(),
                    rivals: None,
                });
            }
        }
        Ok(removed)
    }

    /// Two written images equal under a secondary unique key (byte for byte), named.
    fn batch_duplicate(&self, images: &[Vec<&Value>]) -> Option<String> {
        for unique in &self.unique_keys {
            let mut seen: Vec<Vec<&Value>> = Vec::new();
            for image in images {
                let values: Vec<&Value> = unique.positions.iter().map(|&at| image[at]).collect();
                if values.iter().any(|value| **value == Value::NULL) {
                    continue;
                }
                if seen.contains(&values) {
                    let shown: Vec<String> =
                        values.iter().map(|value| value.as_sql(true)).collect();
                    return Some(format!(
                        "value ({}) written twice under unique index {}",
                        shown.join(", "),
                        quote_identifier(&unique.name)
                    ));
                }
                seen.push(values);
            }
        }
        if self.uncovered_unique.is_empty() {
            None
        } else {
            Some(format!(
                "unique index(es) {} cover columns the change stream does not carry",
                self.uncovered_unique.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Bind, placeholder};
    use crate::migration::catalog::Column;

    fn column(data_type: &str, charset: Option<&str>) -> Column {
        Column {
            name: "c".into(),
            data_type: data_type.into(),
            column_type: data_type.into(),
            generated: false,
            charset: charset.map(str::to_owned),
            nullable: false,
        }
    }

    #[test]
    fn values_are_rendered_through_the_column_definition() {
        let (timestamp, bind) = placeholder(&column("timestamp", None));
        assert_eq!(bind, Bind::Twice);
        assert!(timestamp.contains("FROM_UNIXTIME(?)"));
        assert_eq!(
            placeholder(&column("datetime", None)),
            ("?".to_owned(), Bind::Once)
        );
        assert_eq!(
            placeholder(&column("varchar", Some("utf8mb4"))),
            ("?".to_owned(), Bind::Once)
        );
        assert_eq!(
            placeholder(&column("varchar", Some("latin1"))),
            ("CONVERT(UNHEX(?) USING latin1)".to_owned(), Bind::Hex)
        );
    }
}
