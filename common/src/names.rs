//! Names of the tables shoal creates beside the migrated table `t`.
//!
//! MySQL limits table names to 64 characters; a name that would not fit is refused up front
//! (by the caller) rather than truncated, since truncation could collide with a user's table.

/// Longest table name MySQL and MariaDB accept.
pub const MAX_TABLE_NAME: usize = 64;

/// `_<t>_new`: the shadow table with the new schema.
pub fn shadow(table: &str) -> String {
    format!("_{table}_new")
}

/// `_<t>_old`: the sentry during cut-over, then the old table (unless dropped).
pub fn old(table: &str) -> String {
    format!("_{table}_old")
}

/// `_<t>_chkpnt`: the checkpoint table.
pub fn checkpoint(table: &str) -> String {
    format!("_{table}_chkpnt")
}

/// `_<t>_fence`: one row per chunk holding its fence epoch (INV-F1).
pub fn fence(table: &str) -> String {
    format!("_{table}_fence")
}

/// Whether every helper table name of `table` fits MySQL's limit.
pub fn fits(table: &str) -> bool {
    [shadow(table), old(table), checkpoint(table), fence(table)]
        .iter()
        .all(|name| name.chars().count() <= MAX_TABLE_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_names_and_length_limit() {
        assert_eq!(shadow("orders"), "_orders_new");
        assert_eq!(old("orders"), "_orders_old");
        assert_eq!(checkpoint("orders"), "_orders_chkpnt");
        assert_eq!(fence("orders"), "_orders_fence");
        assert!(fits(&"t".repeat(56)));
        assert!(
            !fits(&"t".repeat(57)),
            "_<t>_chkpnt would exceed 64 characters"
        );
    }
}
