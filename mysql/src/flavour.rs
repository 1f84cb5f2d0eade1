//! What differs by server flavour and version, each rule with the versions it holds for.
//! Statements here are constant text: values are bound by the caller.

/// `(major, minor, patch)` of a `VERSION()` string (`9.7.4`, `10.11.6-MariaDB-0+deb12u1`,
/// `8.0.36-28` for Percona), if it starts with one.
pub fn version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next().and_then(|part| part.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

/// The statement that reports the binlog's current file and position: MariaDB and MySQL
/// before 8.2 say `SHOW MASTER STATUS`; MySQL 8.2 renamed it `SHOW BINARY LOG STATUS` and 8.4
/// removed the old name.
pub fn binary_log_status(mariadb: bool, server_version: &str) -> &'static str {
    let renamed = !mariadb && version(server_version).is_none_or(|found| found >= (8, 2, 0));
    if renamed {
        "SHOW BINARY LOG STATUS"
    } else {
        "SHOW MASTER STATUS"
    }
}

/// The connections whose transactions block the one of connection `?` on a row lock, as
/// `trx_mysql_thread_id`s: MariaDB (and MySQL 5.7) list lock waits in
/// `information_schema.INNODB_LOCK_WAITS`; MySQL 8.0 moved them to
/// `performance_schema.data_lock_waits`.
pub fn lock_blockers_query(mariadb: bool) -> &'static str {
    if mariadb {
        "SELECT b.trx_mysql_thread_id FROM information_schema.INNODB_LOCK_WAITS w \
         JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id \
         JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id \
         WHERE r.trx_mysql_thread_id = ?"
    } else {
        "SELECT b.trx_mysql_thread_id FROM performance_schema.data_lock_waits w \
         JOIN information_schema.INNODB_TRX b ON b.trx_id = w.BLOCKING_ENGINE_TRANSACTION_ID \
         JOIN information_schema.INNODB_TRX r ON r.trx_id = w.REQUESTING_ENGINE_TRANSACTION_ID \
         WHERE r.trx_mysql_thread_id = ?"
    }
}

/// The process list to read sessions from (`ID`, `DB`, `COMMAND`, `TIME`, `STATE`, `INFO`):
/// `information_schema.PROCESSLIST` on MariaDB; on MySQL `performance_schema.processlist`
/// (the former fails with ERROR 3854 while any session's statement holds a 4-byte character).
pub fn processlist(mariadb: bool) -> &'static str {
    if mariadb {
        "information_schema.PROCESSLIST"
    } else {
        "performance_schema.processlist"
    }
}

/// `KILL [QUERY] <id>` for a connection id: as text, since MySQL (9.x) refuses placeholders in
/// KILL ("Dynamic parameters can only be used in DML statements", 6413). The id is a number
/// the server gave, never user text.
pub fn kill(connection_id: u64, query_only: bool) -> String {
    if query_only {
        format!("KILL QUERY {connection_id}")
    } else {
        format!("KILL {connection_id}")
    }
}

/// Why the server refused an `ALTER … ALGORITHM=INSTANT` that a copy can still run, by error
/// code; `None` for any other error (the ALTER itself is wrong: refuse). Both flavours: the
/// operation cannot be done instantly (1845, 1846). MySQL 8.0.29+: the table used up its
/// instant row versions ([`max_row_versions`]); a rebuild (shoal's copy) starts them over.
pub fn instant_refusal(code: u16, mariadb: bool, server_version: &str) -> Option<String> {
    match code {
        1845 | 1846 => Some("the operation cannot be done instantly".to_owned()),
        ROW_VERSIONS_EXHAUSTED if !mariadb => Some(format!(
            "the table reached MySQL's limit of {} instant row versions; the copy rebuilds it, \
             which starts the count over",
            max_row_versions(mariadb, server_version).unwrap_or(255)
        )),
        _ => None,
    }
}

/// Whether one session can rename the tables it holds under `LOCK TABLES … WRITE` (MySQL
/// 8.0.13+): the cut-over then locks, flushes and renames in that session. MariaDB (10.11)
/// refuses `RENAME TABLE` under `LOCK TABLES`: its cut-over queues the rename on a second
/// connection.
pub fn renames_under_lock_tables(mariadb: bool, server_version: &str) -> bool {
    !mariadb && version(server_version).is_some_and(|found| found >= (8, 0, 13))
}

/// The statement listing mounted filesystems and their free KiB (`Path`, `Available`):
/// MariaDB's `disks` plugin (`information_schema.DISKS`, which also needs the FILE privilege);
/// MySQL exposes no free space in SQL (`None`).
pub fn free_disk_query(mariadb: bool) -> Option<&'static str> {
    mariadb.then_some("SELECT Path, Available FROM information_schema.DISKS")
}

/// MySQL 8.0+ serves `information_schema.TABLES` statistics (`AUTO_INCREMENT` among them) from a
/// cache refreshed once a day by default: this session setting reads them fresh. MariaDB has no
/// such cache (nor the variable).
pub const FRESH_TABLE_STATISTICS: &str = "SET SESSION information_schema_stats_expiry = 0";

/// `ER_INNODB_MAX_ROW_VERSION` as MySQL 9.7 returns it.
pub const ROW_VERSIONS_EXHAUSTED: u16 = 4092;

/// MySQL's instant row versions per table (`INNODB_TABLES.TOTAL_ROW_VERSIONS`): none before
/// 8.0.29 (instant ADD COLUMN only at the end, no versions), 64 from 8.0.29, 255 from 9.1;
/// MariaDB has no such limit.
pub fn max_row_versions(mariadb: bool, server_version: &str) -> Option<u32> {
    if mariadb {
        return None;
    }
    match version(server_version)? {
        (major, minor, patch) if (major, minor, patch) < (8, 0, 29) => None,
        (major, minor, _) if (major, minor) < (9, 1) => Some(64),
        _ => Some(255),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_name_a_number() {
        assert_eq!(kill(42, false), "KILL 42");
        assert_eq!(kill(7, true), "KILL QUERY 7");
    }

    #[test]
    fn instant_refusals_a_copy_cures_are_told_from_other_errors() {
        assert!(instant_refusal(1845, true, "10.11.6-MariaDB").is_some());
        assert!(instant_refusal(1846, false, "9.7.4").is_some());
        assert!(
            instant_refusal(ROW_VERSIONS_EXHAUSTED, false, "9.7.4")
                .is_some_and(|reason| reason.contains("limit of 255 instant row versions"))
        );
        assert!(
            instant_refusal(ROW_VERSIONS_EXHAUSTED, false, "8.4.3")
                .is_some_and(|reason| reason.contains("limit of 64 "))
        );
        // A wrong ALTER (unknown column) is not a refusal of INSTANT.
        assert_eq!(instant_refusal(1054, false, "9.7.4"), None);
        assert_eq!(max_row_versions(true, "10.11.6-MariaDB"), None);
        assert_eq!(max_row_versions(false, "8.0.28"), None);
        assert_eq!(max_row_versions(false, "8.0.29"), Some(64));
        assert_eq!(max_row_versions(false, "8.4.3"), Some(64));
        assert_eq!(max_row_versions(false, "9.0.1"), Some(64));
        assert_eq!(max_row_versions(false, "9.1.0"), Some(255));
        assert_eq!(max_row_versions(false, "9.7.4"), Some(255));
    }

    #[test]
    fn one_session_renames_under_its_lock_from_mysql_8_0_13() {
        assert!(!renames_under_lock_tables(true, "10.11.6-MariaDB"));
        assert!(!renames_under_lock_tables(false, "8.0.12"));
        assert!(renames_under_lock_tables(false, "8.0.13"));
        assert!(renames_under_lock_tables(false, "9.7.4"));
        assert!(!renames_under_lock_tables(false, "garbage"));
    }

    #[test]
    fn versions_are_read_from_each_flavours_text() {
        assert_eq!(version("9.7.4"), Some((9, 7, 4)));
        assert_eq!(version("10.11.6-MariaDB-0+deb12u1-log"), Some((10, 11, 6)));
        assert_eq!(version("8.0.36-28"), Some((8, 0, 36)));
        assert_eq!(version("8.4"), Some((8, 4, 0)));
        assert_eq!(version("garbage"), None);
    }

    #[test]
    fn the_binlog_status_statement_follows_the_rename() {
        assert_eq!(
            binary_log_status(true, "10.11.6-MariaDB"),
            "SHOW MASTER STATUS"
        );
        assert_eq!(binary_log_status(false, "8.0.36"), "SHOW MASTER STATUS");
        assert_eq!(binary_log_status(false, "8.1.0"), "SHOW MASTER STATUS");
        assert_eq!(binary_log_status(false, "8.2.0"), "SHOW BINARY LOG STATUS");
        assert_eq!(binary_log_status(false, "8.4.3"), "SHOW BINARY LOG STATUS");
        assert_eq!(binary_log_status(false, "9.7.4"), "SHOW BINARY LOG STATUS");
        // An unreadable MySQL version: the current name.
        assert_eq!(binary_log_status(false, "x"), "SHOW BINARY LOG STATUS");
    }
}
