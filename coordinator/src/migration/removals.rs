//! Rows a flush removed under a secondary unique key of the new table, checked against the
//! source (INV-C1).
//!
//! # Invariants
//! - INV-C1 under unique keys: a removal is a value on the move (the removed row, or the one
//!   that took its value, has a later event that sets things right) unless the source holds the
//!   value under both rows' keys: checked after every flush outside the cut-over, failing with
//!   the value named. Every removal since the last checksum barrier is checked again under the
//!   cut-over lock after the final flush, when nothing is on the move any more: every removed
//!   key the source holds must be in the new table.
//!
//! # Design decisions
//! Under the cut-over lock the source can be read only on the lock's own connection (it holds
//! `t` WRITE) and the shadow only on another (the lock must not cover `_t_new`, see
//! `cutover.rs`), so the final check reads each side on its own connection, one key at a time:
//! removals are rare (each needs a unique value to move between rows between two flushes), and a
//! batched comparison would compare keys read under two column types.

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use shoal_common::sql::quote_identifier;

use super::Error;
use super::apply::Removed;
use super::owner::Migration;

impl Migration {
    /// `WHERE k1 = ? AND …` over the primary key.
    fn key_predicate(&self) -> String {
        self.key
            .columns
            .iter()
            .map(|column| format!("{} = ?", quote_identifier(column)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// Fails if the source holds the value a row of `removed` lost both under that row's key
    /// and under a key of the batch that removed it: the source then holds rows that collide
    /// under a UNIQUE index the ALTER adds. Anything else is a value on the move: the removed
    /// row, or the row that took its value, has a later event of its own (and a row lost to a
    /// duplicate that was resolved since is found by the checksum, or by [`verify_removals`]
    /// under the cut-over lock). Run outside the flush's transaction (whose snapshot may be
    /// older than the removal), or under a lock covering the source.
    ///
    /// [`verify_removals`]: Self::verify_removals
    pub(super) async fn check_removals(
        &self,
        connection: &mut impl Queryable,
        removed: &[Removed],
    ) -> Result<(), Error> {
        for row in removed {
            let Some((rivals, rival_params)) = &row.rivals else {
                continue;
            };
            let values: Vec<String> = row
                .columns
                .iter()
                .map(|column| format!("{column} = ?"))
                .collect();
            let sql = format!(
                "SELECT COUNT(*) FROM {} WHERE (({}) OR ({rivals})) AND {}",
                self.qualified(&self.table),
                self.key_predicate(),
                values.join(" AND ")
            );
            let params: Vec<mysql_async::Value> = row
                .key
                .iter()
                .chain(rival_params)
                .chain(&row.values)
                .cloned()
                .collect();
            let holders: Option<i64> = connection.exec_first(sql, params).await?;
            if holders.unwrap_or(0) >= 2 {
                return Err(self.conflict(row));
            }
        }
        Ok(())
    }

    /// Under the cut-over lock, after the final flush: every key removed since the last
    /// checksum barrier that the source holds (read on `holder`) is in the new table, named
    /// `shadow_name` now (read on `shadow_reader`, or on `holder` when its lock covers the new
    /// table too).
    pub(super) async fn verify_removals(
        &self,
        holder: &mut Conn,
        mut shadow_reader: Option<&mut Conn>,
        shadow_name: &str,
    ) -> Result<(), Error> {
        let source = self.qualified(&self.table);
        let shadow = self.qualified(shadow_name);
        let mut verified = std::collections::HashSet::new();
        for row in &self.unique_removals {
            if !verified.insert(format!("{:?}", row.key)) {
                continue;
            }
            let predicate = self.key_predicate();
            let in_source: Option<i64> = holder
                .exec_first(
                    format!("SELECT 1 FROM {source} WHERE {predicate}"),
                    row.key.clone(),
                )
                .await?;
            if in_source.is_none() {
                continue;
            }
            let reader = match shadow_reader.as_deref_mut() {
                Some(reader) => reader,
                None => &mut *holder,
            };
            let in_shadow: Option<i64> = reader
                .exec_first(
                    format!("SELECT 1 FROM {shadow} WHERE {predicate}"),
                    row.key.clone(),
                )
                .await?;
            if in_shadow.is_none() {
                return Err(self.conflict(row));
            }
        }
        Ok(())
    }

    fn conflict(&self, row: &Removed) -> Error {
        Error::UniqueConflict(format!(
            "the ALTER adds UNIQUE index {} on ({}), but the row with key ({}) and another row \
             hold the value ({}) in {} (the other's change pushed it out of the new table); \
             remove the duplicates or drop UNIQUE from the ALTER (the original table is untouched)",
            quote_identifier(&row.index),
            row.columns.join(", "),
            super::apply::shown(&row.key),
            super::apply::shown(&row.values),
            self.qualified(&self.table)
        ))
    }
}
