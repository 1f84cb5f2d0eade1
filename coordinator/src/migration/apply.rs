//! Applying buffered changes to the shadow table.
//!
//! Upserts become `REPLACE INTO _<t>_new (cols) VALUES …` from the binlog images (never a
//! re-read of the source), deletes `DELETE … WHERE pk IN (…)`. REPLACE, not `ON DUPLICATE KEY
//! UPDATE`, stays right when a transaction moves a unique value between rows (Spirit #847): the
//! row holding the value is replaced, not merged. Deletes go first, then upserts: the buffer
//! holds one change per key, and where two entries are one key under a collation only the last
//! stored spelling can be an upsert (see `shoal_common::changes`).

use mysql_async::Value;
use mysql_async::prelude::Queryable;
use shoal_common::changes::Change;
use shoal_common::key::Key;
use shoal_common::sql::{quote_identifier, quote_qualified};

use super::Error;
use super::catalog::Column;

/// Rows per REPLACE statement.
const REPLACE_ROWS: usize = 500;
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
}

/// What one flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Rows replaced.
    pub upserts: usize,
    /// Keys deleted.
    pub deletes: usize,
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
            let mut params = Vec::new();
            for (key, _) in keys {
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
            let sql = format!("DELETE FROM {} WHERE {predicate}", self.shadow);
            connection.exec_drop(sql, params).await?;
            applied.deletes += keys.len();
        }
        Ok(())
    }

    async fn replace(
        &self,
        connection: &mut impl Queryable,
        upserts: &[&(Key, Change<Vec<Value>>)],
        applied: &mut Applied,
    ) -> Result<(), Error> {
        let width = self.binds.len()
            + self
                .binds
                .iter()
                .filter(|bind| **bind == Bind::Twice)
                .count();
        for rows in upserts.chunks(REPLACE_ROWS) {
            let mut params = Vec::with_capacity(rows.len() * width);
            for (_, change) in rows {
                let Change::Upsert(row) = change else {
                    continue;
                };
                for (&index, &bind) in self.source_indices.iter().zip(&self.binds) {
                    let value = row
                        .get(index)
                        .ok_or_else(|| Error::Binlog(format!("row image lacks column {index}")))?;
                    Self::bind(bind, value, &mut params);
                }
            }
            let sql = format!(
                "REPLACE INTO {} ({}) VALUES {}",
                self.shadow,
                self.shadow_columns,
                vec![self.tuple.as_str(); rows.len()].join(", ")
            );
            connection.exec_drop(sql, params).await?;
            let warnings: Vec<(String, u16, String)> = connection.query("SHOW WARNINGS").await?;
            if let Some((_, code, message)) = warnings.into_iter().next() {
                return Err(Error::Apply(format!(
                    "applying changes to {} raised warning {code}: {message}",
                    self.shadow
                )));
            }
            applied.upserts += rows.len();
        }
        Ok(())
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
