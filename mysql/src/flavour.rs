//! What differs by server flavour and version, each rule with the versions it holds for.

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

#[cfg(test)]
mod tests {
    use super::*;

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
