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

/// `_<t>_hb`: the replica-lag heartbeat row (row 1, written on the primary, read on each
/// replica) and the latency probe's row (row 2).
pub fn heartbeat(table: &str) -> String {
    format!("_{table}_hb")
}

/// `<t>_shoal_swap`: the shadow table's name during the cut-over rename. It sorts after `t`, so
/// the RENAME (which takes its metadata locks in name order) queues on `t` before anything else.
pub fn swap(table: &str) -> String {
    format!("{table}_shoal_swap")
}

/// `<t>_shoal_old`: the original table's name right after the cut-over rename (sorts after `t`
/// for the same reason); it becomes `_<t>_old` at once.
pub fn swapped_out(table: &str) -> String {
    format!("{table}_shoal_old")
}

/// Longest user-level lock name MySQL 8 accepts.
pub const MAX_LOCK_NAME: usize = 64;

/// The advisory lock that keeps two migrations off one table: `shoal/<schema>.<t>`, or, when that
/// is longer than MySQL allows, `shoal/<FNV-1a of it>/<its first characters>` (stable across
/// processes and versions, unlike std's hasher).
pub fn advisory_lock(schema: &str, table: &str) -> String {
    let full = format!("shoal/{schema}.{table}");
    if full.chars().count() <= MAX_LOCK_NAME {
        return full;
    }
    let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let head: String = format!("{schema}.{table}")
        .chars()
        .take(MAX_LOCK_NAME - 23)
        .collect();
    format!("shoal/{hash:016x}/{head}")
}

/// Every helper table name of `table`.
pub fn all(table: &str) -> [String; 7] {
    [
        shadow(table),
        old(table),
        checkpoint(table),
        fence(table),
        heartbeat(table),
        swap(table),
        swapped_out(table),
    ]
}

/// Whether every helper table name of `table` fits MySQL's limit.
pub fn fits(table: &str) -> bool {
    all(table)
        .iter()
        .all(|name| name.chars().count() <= MAX_TABLE_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advisory_lock_names_fit_and_stay_distinct() {
        assert_eq!(advisory_lock("shop", "orders"), "shoal/shop.orders");
        let long = advisory_lock(&"s".repeat(64), &"t".repeat(64));
        assert_eq!(long.chars().count(), MAX_LOCK_NAME);
        assert!(long.starts_with("shoal/"));
        let other = advisory_lock(&"s".repeat(64), &format!("{}u", "t".repeat(63)));
        assert_ne!(long, other, "same prefix, different tables");
        assert_eq!(
            long,
            advisory_lock(&"s".repeat(64), &"t".repeat(64)),
            "stable"
        );
        let unicode = advisory_lock(&"名".repeat(60), "t");
        assert_eq!(unicode.chars().count(), MAX_LOCK_NAME);
    }

    #[test]
    fn helper_names_and_length_limit() {
        assert_eq!(shadow("orders"), "_orders_new");
        assert_eq!(old("orders"), "_orders_old");
        assert_eq!(checkpoint("orders"), "_orders_chkpnt");
        assert_eq!(fence("orders"), "_orders_fence");
        assert_eq!(heartbeat("orders"), "_orders_hb");
        assert_eq!(swap("orders"), "orders_shoal_swap");
        assert_eq!(swapped_out("orders"), "orders_shoal_old");
        // MariaDB compares metadata-lock keys as NUL-terminated names: `t` sorts first.
        assert!("orders\0" < "orders_shoal_old\0" && "orders_shoal_old\0" < "orders_shoal_swap\0");
        assert!(fits(&"t".repeat(53)));
        assert!(
            !fits(&"t".repeat(54)),
            "<t>_shoal_swap would exceed 64 characters"
        );
    }
}
