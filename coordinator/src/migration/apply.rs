//! Applying buffered changes to the shadow table.
//!
//! Upserts become `REPLACE INTO _<t>_new (cols) VALUES …` from the binlog images (never a
//! re-read of the source), deletes `DELETE … WHERE pk IN (…)`. REPLACE, not `ON DUPLICATE KEY
//! UPDATE`, stays right when a transaction moves a unique value between rows (Spirit #847): the
//! row holding the value is replaced, not merged. The batches of one flush are key-disjoint (the
//! buffer holds one change per key), so their order does not matter.

use mysql_async::Value;
use mysql_async::prelude::Queryable;
use shoal_common::changes::Change;
use shoal_common::sql::{quote_identifier, quote_qualified};

use super::Error;

/// Rows per REPLACE statement.
const REPLACE_ROWS: usize = 500;
/// Keys per DELETE statement.
const DELETE_KEYS: usize = 1_000;

/// Writes changes into the shadow table.
#[derive(Debug, Clone)]
pub struct Applier {
    /// `schema`.`_t_new`, quoted.
    shadow: String,
    /// Shadow column list, quoted.
    shadow_columns: String,
    /// For each copied column, its index in a source row image.
    source_indices: Vec<usize>,
    /// Key column, quoted.
    key: String,
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
    /// into `shadow_columns`.
    pub fn new(
        schema: &str,
        shadow_table: &str,
        shadow_columns: &[String],
        source_indices: Vec<usize>,
        key_column: &str,
    ) -> Self {
        Self {
            shadow: quote_qualified(schema, shadow_table),
            shadow_columns: shadow_columns
                .iter()
                .map(|column| quote_identifier(column))
                .collect::<Vec<_>>()
                .join(", "),
            source_indices,
            key: quote_identifier(key_column),
        }
    }

    /// Applies `changes` on `connection` (which may hold `LOCK TABLES` during cut-over).
    pub async fn apply(
        &self,
        connection: &mut impl Queryable,
        changes: Vec<(i64, Change<Vec<Value>>)>,
    ) -> Result<Applied, Error> {
        let mut applied = Applied::default();
        let mut upserts: Vec<Vec<Value>> = Vec::new();
        let mut deletes: Vec<i64> = Vec::new();
        for (key, change) in changes {
            match change {
                Change::Upsert(row) => upserts.push(row),
                Change::Delete => deletes.push(key),
            }
        }
        for keys in deletes.chunks(DELETE_KEYS) {
            let sql = format!(
                "DELETE FROM {} WHERE {} IN ({})",
                self.shadow,
                self.key,
                vec!["?"; keys.len()].join(", ")
            );
            connection.exec_drop(sql, keys.to_vec()).await?;
            applied.deletes += keys.len();
        }
        let width = self.source_indices.len();
        let tuple = format!("({})", vec!["?"; width].join(", "));
        for rows in upserts.chunks(REPLACE_ROWS) {
            let mut params = Vec::with_capacity(rows.len() * width);
            for row in rows {
                for &index in &self.source_indices {
                    let value = row
                        .get(index)
                        .cloned()
                        .ok_or_else(|| Error::Binlog(format!("row image lacks column {index}")))?;
                    params.push(value);
                }
            }
            let sql = format!(
                "REPLACE INTO {} ({}) VALUES {}",
                self.shadow,
                self.shadow_columns,
                vec![tuple.as_str(); rows.len()].join(", ")
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
        Ok(applied)
    }
}
