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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_name_a_number() {
        assert_eq!(kill(42, false), "KILL 42");
        assert_eq!(kill(7, true), "KILL QUERY 7");
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
