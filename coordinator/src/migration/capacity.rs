//! Preflight capacity checks: free disk for a second copy of the table plus the binlog the copy
//! writes, and binlog retention against the migration's estimated duration.
//!
//! Free disk is read from `information_schema.DISKS` (MariaDB's `disks` plugin, which also needs
//! the FILE privilege); where it is missing (MySQL 8 has no equivalent: untested here) the check
//! says so and the run goes on. A short retention is a warning, or a refusal with `--strict`: a
//! binlog purged under a running migration forces it to start over.

use std::time::Duration;

use mysql_async::prelude::Queryable;

use super::Error;

/// Conservative copy rate for the duration estimate (the benchmark machine copies about five
/// times faster; throttling and load slow real runs down).
const ESTIMATE_ROWS_PER_SECOND: u64 = 20_000;
/// The shadow table may be larger than the source (new columns and indexes).
const SHADOW_GROWTH_PERCENT: u64 = 110;

/// What the table occupies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// `DATA_LENGTH`: also about what the copy writes to the binlog (full row images).
    pub data_bytes: u64,
    /// `INDEX_LENGTH`.
    pub index_bytes: u64,
}

/// A mounted filesystem as `information_schema.DISKS` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Mount point.
    pub path: String,
    /// Bytes available.
    pub available: u64,
}

/// A capacity concern: `refuse` ones stop the migration, the others are warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concern {
    /// Stable code (`free_disk`, `free_disk_unknown`, `binlog_retention`).
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
    /// Whether the migration must not start.
    pub refuse: bool,
}

/// The mount holding `directory`: the longest mount point that is `directory` or one of its
/// parents.
pub fn mount_of<'a>(mounts: &'a [Mount], directory: &str) -> Option<&'a Mount> {
    let directory = directory.trim_end_matches('/');
    mounts
        .iter()
        .filter(|mount| {
            let path = mount.path.trim_end_matches('/');
            path.is_empty()
                || directory == path
                || directory
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|mount| mount.path.trim_end_matches('/').len())
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// Whether the copy (shadow table on the data mount, row images on the binlog mount) fits.
pub fn disk_concern(footprint: Footprint, data: &Mount, binlog: &Mount) -> Option<Concern> {
    let shadow = (footprint.data_bytes + footprint.index_bytes) * SHADOW_GROWTH_PERCENT / 100;
    let images = footprint.data_bytes;
    let needs: Vec<(&Mount, u64)> = if data.path == binlog.path {
        vec![(data, shadow + images)]
    } else {
        vec![(data, shadow), (binlog, images)]
    };
    needs
        .into_iter()
        .find(|(mount, need)| mount.available < *need)
        .map(|(mount, need)| Concern {
            code: "free_disk",
            message: format!(
                "not enough free disk: the copy needs about {} on {} (a second copy of the table, \
                 {} of data and indexes, plus its row images in the binlog) and {} is free",
                gib(need),
                mount.path,
                gib(footprint.data_bytes + footprint.index_bytes),
                gib(mount.available)
            ),
            fix: format!("free at least {} there first", gib(need - mount.available)),
            refuse: true,
        })
}

/// The estimated duration of copying `rows` rows (conservative).
pub fn estimated_duration(rows: u64) -> Duration {
    Duration::from_secs(rows.div_ceil(ESTIMATE_ROWS_PER_SECOND))
}

/// Whether binlogs kept for `retention_seconds` (0: forever) outlive a migration of `estimate`.
pub fn retention_concern(
    retention_seconds: u64,
    estimate: Duration,
    strict: bool,
) -> Option<Concern> {
    (retention_seconds > 0 && Duration::from_secs(retention_seconds) < estimate).then(|| Concern {
        code: "binlog_retention",
        message: format!(
            "binlogs are kept {retention_seconds} s (binlog_expire_logs_seconds), shorter than \
             this migration's estimated {} s: a binlog purged while it runs forces it to start \
             over",
            estimate.as_secs()
        ),
        fix: format!(
            "raise binlog_expire_logs_seconds above {} (SET GLOBAL and my.cnf){}",
            estimate.as_secs() * 2,
            if strict {
                ""
            } else {
                "; --strict refuses to start instead of warning"
            }
        ),
        refuse: strict,
    })
}

/// `ER_UNKNOWN_TABLE` (no DISKS plugin) and `ER_UNKNOWN_SYSTEM_VARIABLE`.
const UNKNOWN: [u16; 3] = [1109, 1193, 1146];

fn unknown(error: &mysql_async::Error) -> bool {
    matches!(error, mysql_async::Error::Server(server) if UNKNOWN.contains(&server.code))
}

/// Runs both checks for `schema`.`table` of about `rows` rows.
pub async fn check(
    connection: &mut impl Queryable,
    schema: &str,
    table: &str,
    rows: u64,
    strict: bool,
    mariadb: bool,
) -> Result<Vec<Concern>, Error> {
    let mut concerns = Vec::new();
    let (data_bytes, index_bytes): (u64, u64) = connection
        .exec_first(
            "SELECT COALESCE(DATA_LENGTH, 0), COALESCE(INDEX_LENGTH, 0) FROM \
             information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (schema, table),
        )
        .await?
        .unwrap_or((0, 0));
    let footprint = Footprint {
        data_bytes,
        index_bytes,
    };
    let mounts: Result<Vec<(String, u64)>, _> = match shoal_mysql::flavour::free_disk_query(mariadb)
    {
        Some(query) => connection.query(query).await,
        None => Ok(Vec::new()),
    };
    let mounts: Vec<Mount> = match mounts {
        Ok(rows) => rows
            .into_iter()
            .map(|(path, kib)| Mount {
                path,
                available: kib * 1024,
            })
            .collect(),
        Err(error) if unknown(&error) => Vec::new(),
        Err(error) => return Err(error.into()),
    };
    let (datadir, binlog_base): (String, Option<String>) = connection
        .query_first("SELECT @@datadir, @@log_bin_basename")
        .await?
        .unwrap_or_default();
    let binlog_dir = match binlog_base {
        Some(base) if base.starts_with('/') => base
            .rsplit_once('/')
            .map_or(datadir.clone(), |(dir, _)| dir.to_owned()),
        _ => datadir.clone(),
    };
    match (mount_of(&mounts, &datadir), mount_of(&mounts, &binlog_dir)) {
        (Some(data), Some(binlog)) => concerns.extend(disk_concern(footprint, data, binlog)),
        _ => concerns.push(Concern {
            code: "free_disk_unknown",
            message: format!(
                "free disk not checked ({}); the copy needs about {} free beside the table on \
                 the datadir's filesystem ({datadir}), and its row images room in the binlog's \
                 ({binlog_dir})",
                if mariadb {
                    "information_schema.DISKS is not available"
                } else {
                    "MySQL exposes no free space in SQL"
                },
                gib((data_bytes + index_bytes) * SHADOW_GROWTH_PERCENT / 100 + data_bytes)
            ),
            fix: if mariadb {
                "INSTALL SONAME 'disks' and GRANT FILE to shoal's account".to_owned()
            } else {
                "check the free space of those filesystems on the server host".to_owned()
            },
            refuse: false,
        }),
    }
    let retention: Result<Option<u64>, _> = connection
        .query_first("SELECT @@GLOBAL.binlog_expire_logs_seconds")
        .await;
    let retention = match retention {
        Ok(seconds) => seconds.unwrap_or(0),
        // Older servers: days only.
        Err(error) if unknown(&error) => {
            let days: Option<f64> = connection
                .query_first("SELECT @@GLOBAL.expire_logs_days")
                .await?;
            (days.unwrap_or(0.0) * 86_400.0) as u64
        }
        Err(error) => return Err(error.into()),
    };
    concerns.extend(retention_concern(
        retention,
        estimated_duration(rows),
        strict,
    ));
    Ok(concerns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(path: &str, gib: u64) -> Mount {
        Mount {
            path: path.to_owned(),
            available: gib << 30,
        }
    }

    #[test]
    fn the_deepest_mount_holding_a_directory_wins() {
        let mounts = [
            mount("/", 1),
            mount("/var", 2),
            mount("/var/lib/mysql", 3),
            mount("/var/lib/mysqlx", 4),
        ];
        assert_eq!(
            mount_of(&mounts, "/var/lib/mysql/").unwrap().path,
            "/var/lib/mysql"
        );
        assert_eq!(
            mount_of(&mounts, "/var/lib/mysql/binlog").unwrap().path,
            "/var/lib/mysql"
        );
        assert_eq!(mount_of(&mounts, "/var/log").unwrap().path, "/var");
        assert_eq!(mount_of(&mounts, "/srv").unwrap().path, "/");
        assert!(mount_of(&[mount("/var", 1)], "/srv").is_none());
    }

    #[test]
    fn the_copy_needs_a_second_table_and_its_row_images() {
        let footprint = Footprint {
            data_bytes: 10 << 30,
            index_bytes: 2 << 30,
        };
        // Same filesystem: 13.2 GiB of shadow table + 10 GiB of binlog.
        assert!(disk_concern(footprint, &mount("/data", 24), &mount("/data", 24)).is_none());
        let short = disk_concern(footprint, &mount("/data", 20), &mount("/data", 20)).unwrap();
        assert!(short.refuse);
        assert!(
            short.message.contains("about 23.20 GiB on /data"),
            "{}",
            short.message
        );
        assert!(short.fix.contains("3.20 GiB"), "{}", short.fix);
        // Separate binlog filesystem: each needs its own part.
        assert!(disk_concern(footprint, &mount("/data", 14), &mount("/binlog", 11)).is_none());
        let binlog = disk_concern(footprint, &mount("/data", 14), &mount("/binlog", 9)).unwrap();
        assert!(binlog.message.contains("on /binlog"), "{}", binlog.message);
    }

    #[test]
    fn short_retention_warns_or_refuses_with_strict() {
        let estimate = estimated_duration(1_000_000);
        assert_eq!(estimate, Duration::from_secs(50));
        assert!(
            retention_concern(0, estimate, true).is_none(),
            "0 keeps binlogs forever"
        );
        assert!(retention_concern(3_600, estimate, true).is_none());
        let warning = retention_concern(30, estimate, false).unwrap();
        assert!(!warning.refuse && warning.fix.contains("--strict"));
        assert!(retention_concern(30, estimate, true).unwrap().refuse);
    }
}
