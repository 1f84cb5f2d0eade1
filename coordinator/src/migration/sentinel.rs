//! The sentinel (seed: Spirit PR #886): with `--defer-cutover` a migration waits before its
//! cut-over until `_shoal_sentinel` is dropped (which releases every waiting migration) or its
//! own row is removed (`shoal release ID` asks the owner to remove it).
//!
//! shoal creates `_shoal_sentinel (migration_id, table_name, status, updated_at)` if it is
//! missing and keeps one row per waiting migration: `copying` until the wait point, then
//! `ready`. A sentinel made by hand without `migration_id` and `status` columns is honoured:
//! shoal writes no row and waits for the drop. The table is left in place afterwards (other
//! migrations may be using it); shoal removes only its own row.
//!
//! # Invariants
//! - While waiting, changes keep being applied and checkpoints written; after a long wait the
//!   checksum runs again before the cut-over.
//! - A drop racing the `ready` update is a release, never an error.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tracing::info;

use super::owner::Migration;
use super::{Error, catalog};

/// The sentinel table's name, in the migrated table's schema.
pub const SENTINEL: &str = "_shoal_sentinel";
/// How often the wait looks at the sentinel.
const POLL: Duration = Duration::from_millis(200);
/// A wait longer than this is followed by another checksum pass before the cut-over.
const RECHECK_AFTER: Duration = Duration::from_secs(3600);

/// `ER_NO_SUCH_TABLE`.
const NO_SUCH_TABLE: u16 = 1146;

fn is_missing_table(error: &mysql_async::Error) -> bool {
    matches!(error, mysql_async::Error::Server(server) if server.code == NO_SUCH_TABLE)
}

impl Migration {
    fn sentinel(&self) -> String {
        self.qualified(SENTINEL)
    }

    /// Whether the sentinel has shoal's row columns (false: made by hand, table-only).
    async fn sentinel_has_rows(&self, connection: &mut mysql_async::Conn) -> Result<bool, Error> {
        let columns: Option<u64> = connection
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? \
                 AND TABLE_NAME = ? AND COLUMN_NAME IN ('migration_id', 'status')",
                (&self.schema, SENTINEL),
            )
            .await?;
        Ok(columns == Some(2))
    }

    /// Ensures the sentinel exists and holds this migration's row (`copying`).
    pub(super) async fn enter_sentinel(&mut self) -> Result<(), Error> {
        if !self.options.defer_cutover || self.intents.borrow().released {
            return Ok(());
        }
        let mut connection = self.connect().await?;
        connection
            .query_drop(format!(
                "CREATE TABLE IF NOT EXISTS {} (migration_id VARCHAR(255) NOT NULL PRIMARY KEY, \
                 table_name VARCHAR(64) NOT NULL, status VARCHAR(16) NOT NULL, \
                 updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) \
                 ON UPDATE CURRENT_TIMESTAMP(6)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
                self.sentinel()
            ))
            .await?;
        if self.sentinel_has_rows(&mut connection).await? {
            connection
                .exec_drop(
                    format!(
                        "INSERT INTO {} (migration_id, table_name, status) VALUES (?, ?, 'copying') \
                         ON DUPLICATE KEY UPDATE status = 'copying'",
                        self.sentinel()
                    ),
                    (self.options.id.as_str(), &self.table),
                )
                .await?;
        }
        Ok(())
    }

    /// `WaitingOnSentinelTable`: marks this migration `ready`, enters the state, and waits for its
    /// release, applying changes meanwhile. Returns whether the wait was long enough to checksum
    /// again.
    pub(super) async fn wait_on_sentinel(&mut self) -> Result<bool, Error> {
        let started = Instant::now();
        let mut connection = self.connect().await?;
        let rows = self.sentinel_has_rows(&mut connection).await?;
        shoal_worker::failpoint::hit("sentinel.before_ready", self.options.id.as_str()).await;
        if rows {
            let marked = connection
                .exec_drop(
                    format!(
                        "UPDATE {} SET status = 'ready' WHERE migration_id = ?",
                        self.sentinel()
                    ),
                    (self.options.id.as_str(),),
                )
                .await;
            match marked {
                Ok(()) => {}
                Err(error) if is_missing_table(&error) => {
                    info!(migration_id = %self.options.id, "the sentinel was dropped: released");
                    return Ok(false);
                }
                Err(error) => return Err(error.into()),
            }
        }
        self.advance(shoal_common::lifecycle::Event::AwaitSentinel)?;
        info!(
            migration_id = %self.options.id,
            "waiting on the sentinel: drop {} or run `shoal release {}`",
            self.sentinel(),
            self.options.id
        );
        loop {
            self.check_cancelled()?;
            self.pump_stream().await?;
            self.flush_ready(&mut connection).await?;
            self.duties().await?;
            if self.intents.borrow().released {
                if rows {
                    match connection
                        .exec_drop(
                            format!("DELETE FROM {} WHERE migration_id = ?", self.sentinel()),
                            (self.options.id.as_str(),),
                        )
                        .await
                    {
                        Ok(()) => {}
                        Err(error) if is_missing_table(&error) => {}
                        Err(error) => return Err(error.into()),
                    }
                }
                info!(migration_id = %self.options.id, "released by the operator");
                break;
            }
            if !catalog::table_exists(&mut connection, &self.schema, SENTINEL).await? {
                info!(migration_id = %self.options.id, "the sentinel was dropped: released");
                break;
            }
            if rows {
                let mine: Option<u8> = connection
                    .exec_first(
                        format!("SELECT 1 FROM {} WHERE migration_id = ?", self.sentinel()),
                        (self.options.id.as_str(),),
                    )
                    .await?;
                if mine.is_none() {
                    info!(migration_id = %self.options.id, "the sentinel row was removed: released");
                    break;
                }
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(started.elapsed() >= RECHECK_AFTER)
    }

    /// Removes this migration's row (after the cut-over or on failure).
    pub(super) async fn leave_sentinel(&mut self) {
        if !self.options.defer_cutover {
            return;
        }
        let Ok(mut connection) = self.pool.get_conn().await else {
            return;
        };
        if let Err(error) = connection
            .exec_drop(
                format!("DELETE FROM {} WHERE migration_id = ?", self.sentinel()),
                (self.options.id.as_str(),),
            )
            .await
        {
            // A dropped or hand-made sentinel has no row to remove.
            tracing::debug!(%error, "remove the sentinel row");
        }
    }
}
