//! Every column type a table commonly has, migrated under a writer and compared with the writer's
//! own expectation. The writer changes rows (inserts, replaces, updates, deletes, key moves) all
//! through the copy, the checksum and the cut-over and after it, and after each statement reads
//! back, as the server renders it, the row it touched: that ledger is the expectation. At the
//! end the new table must equal it row for row, the checksum must have needed no repair (the
//! change path wrote the same bytes as the copy), and generated columns hold what the server
//! computes.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use shoal_tests::processes::ShoalProcess;
use shoal_tests::servers;
use shoal_tests::writer::SplitMix;

const CREATE: &str = "CREATE TABLE typed (
    id INT NOT NULL PRIMARY KEY,
    ts TIMESTAMP(6) NULL, dt DATETIME(3) NULL, d DATE NULL, tm TIME NULL,
    e ENUM('alpha','beta','gamma') NULL, st SET('x','y','z') NULL,
    amount DECIMAL(12,4) NULL, f DOUBLE NULL, j JSON NULL, b VARBINARY(16) NULL,
    txt TEXT CHARACTER SET utf8mb4 NULL, latin VARCHAR(20) CHARACTER SET latin1 NULL,
    u INT UNSIGNED NULL, big BIGINT NULL, bits BIT(5) NULL, yr YEAR NULL,
    blob_col MEDIUMBLOB NULL, wide DECIMAL(65,30) NULL, fl FLOAT NULL, g GEOMETRY NULL,
    gv INT AS (u % 7) VIRTUAL,
    gs VARCHAR(40) AS (CONCAT(COALESCE(e, '-'), '/', COALESCE(yr, 0))) STORED
) ENGINE=InnoDB";

/// The columns the writer writes (the generated ones are computed by the server).
const WRITTEN: &str = "id, ts, dt, d, tm, e, st, amount, f, j, b, txt, latin, u, big, bits, yr, blob_col, wide, fl, g";

/// Every column as compared (binary ones as hex, BIT as a number).
const COLUMNS: &str = "id, ts, dt, d, tm, e, st, amount, f, j, HEX(b), txt, latin, u, big, \
     bits + 0, yr, SHA2(blob_col, 256), LENGTH(blob_col), wide, fl, HEX(g), gv, gs";

/// MySQL 9's VECTOR (MariaDB 10.11 has none), added to the table there.
fn has_vector() -> bool {
    servers::flavour() == servers::Flavour::MySql
}

fn create() -> String {
    if has_vector() {
        CREATE.replacen(
            "g GEOMETRY NULL,",
            "g GEOMETRY NULL, vec VECTOR(4) NULL,",
            1,
        )
    } else {
        CREATE.to_owned()
    }
}

fn written() -> String {
    if has_vector() {
        format!("{WRITTEN}, vec")
    } else {
        WRITTEN.to_owned()
    }
}

fn compared() -> String {
    if has_vector() {
        COLUMNS.replacen("HEX(g),", "HEX(g), HEX(vec),", 1)
    } else {
        COLUMNS.to_owned()
    }
}

fn random_row(id: i64, random: &mut SplitMix) -> String {
    fn pick(random: &mut SplitMix, choices: &[&str]) -> String {
        let index = usize::try_from(random.below(choices.len() as u64)).unwrap();
        choices[index].to_owned()
    }
    let seconds = 1_000_000_000 + random.below(900_000_000);
    let micros = random.below(1_000_000);
    let datetime = format!(
        "'20{:02}-0{}-1{} 1{}:2{}:3{}.{:03}'",
        random.below(30),
        1 + random.below(9),
        random.below(9),
        random.below(9),
        random.below(9),
        random.below(9),
        random.below(1000)
    );
    let amount = format!(
        "{}.{:04}",
        random.below(100_000_000) as i64 - 50_000_000,
        random.below(10_000)
    );
    let values = vec![
        format!("FROM_UNIXTIME({seconds}.{micros:06})"),
        datetime,
        pick(
            random,
            &[
                "'1000-01-01'",
                "'2024-02-29'",
                "'9999-12-31'",
                "'1970-01-01'",
            ],
        ),
        pick(
            random,
            &["'00:00:00'", "'-838:59:59'", "'838:59:59'", "'12:34:56'"],
        ),
        pick(random, &["'alpha'", "'beta'", "'gamma'"]),
        pick(random, &["''", "'x'", "'x,z'", "'x,y,z'"]),
        amount,
        pick(random, &["0.1", "-1e300", "3.141592653589793", "1e-300"]),
        pick(
            random,
            &["'{\"a\": [1, 2, {\"b\": null}]}'", "'[]'", "'\"text\"'"],
        ),
        pick(
            random,
            &["X'00FF10'", "X''", "X'000000000000000000000000000000FF'"],
        ),
        pick(
            random,
            &[
                "'emoji 🐟🌊'",
                "''",
                "'tab\\tnewline\\n'",
                "REPEAT('long ', 2000)",
            ],
        ),
        pick(random, &["'café'", "'naïve'", "''"]),
        pick(random, &["0", "4294967295", "2147483648", "17"]),
        pick(
            random,
            &["-9223372036854775808", "9223372036854775807", "0"],
        ),
        pick(random, &["b'00000'", "b'11111'", "b'10101'"]),
        pick(random, &["1901", "2155", "2024"]),
        pick(
            random,
            &[
                "X''",
                "X'00'",
                "RANDOM_BYTES(1024)",
                "REPEAT(X'00FF', 20000)",
            ],
        ),
        pick(
            random,
            &[
                "'99999999999999999999999999999999999.999999999999999999999999999999'",
                "'-0.000000000000000000000000000001'",
                "0",
                "'12345.678901234567890123456789012345'",
            ],
        ),
        pick(random, &["1.5", "-3.4e38", "1.17549e-38", "0"]),
        pick(
            random,
            &[
                "ST_GeomFromText('POINT(1.5 -2)')",
                "ST_GeomFromText('LINESTRING(0 0, 1 1, 2 5)')",
                "ST_GeomFromText('POLYGON((0 0, 10 0, 10 10, 0 10, 0 0))', 3857)",
                "ST_GeomFromText('MULTIPOINT(1 1, 2 2)')",
            ],
        ),
    ];
    let mut values = values;
    if has_vector() {
        values.push(pick(
            random,
            &[
                "STRING_TO_VECTOR('[1.5, -2, 3e10, 0]')",
                "STRING_TO_VECTOR('[0, 0, 0, 0]')",
                "STRING_TO_VECTOR('[-1e-20, 7, 8, 9.25]')",
            ],
        ));
    }
    let values: Vec<String> = values
        .into_iter()
        .map(|value| {
            if random.below(6) == 0 {
                "NULL".to_owned()
            } else {
                value
            }
        })
        .collect();
    format!("({id}, {})", values.join(", "))
}

/// One row, every value as an SQL literal (whole, unlike `Debug`, which abbreviates bytes).
fn render(row: mysql_async::Row) -> String {
    row.unwrap()
        .iter()
        .map(|value| value.as_sql(false))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The rows of `typed` (or one row, with `id`) as the server renders them.
async fn read(connection: &mut mysql_async::Conn, id: Option<i64>) -> BTreeMap<i64, String> {
    let rows: Vec<mysql_async::Row> = match id {
        Some(id) => connection
            .exec(
                format!("SELECT {} FROM typed WHERE id = ?", compared()),
                (id,),
            )
            .await
            .unwrap(),
        // The binary protocol both ways, so that values are typed alike.
        None => connection
            .exec(format!("SELECT {} FROM typed", compared()), ())
            .await
            .unwrap(),
    };
    rows.into_iter()
        .map(|row| (row.get::<i64, _>(0).unwrap(), render(row)))
        .collect()
}

/// One random change; on success the ledger follows it (the writer is the only one).
async fn change(
    connection: &mut mysql_async::Conn,
    random: &mut SplitMix,
    rows: i64,
    ledger: &mut BTreeMap<i64, String>,
) -> bool {
    let id = i64::try_from(random.below(u64::try_from(rows * 2 + 200).unwrap())).unwrap() - 100;
    let (statement, touched) = match random.below(5) {
        0 => (
            format!(
                "REPLACE INTO typed ({}) VALUES {}",
                written(),
                random_row(id, random)
            ),
            vec![id],
        ),
        1 => (format!("DELETE FROM typed WHERE id = {id}"), vec![id]),
        2 => (
            format!("UPDATE typed SET id = {} WHERE id = {id}", id + 100_000),
            vec![id, id + 100_000],
        ),
        3 => (
            format!(
                "UPDATE typed SET e = NULL, st = NULL, j = NULL, txt = NULL, blob_col = NULL, \
                 wide = NULL, fl = NULL, u = NULL, g = NULL WHERE id = {id}"
            ),
            vec![id],
        ),
        _ => (
            format!(
                "UPDATE typed SET ts = FROM_UNIXTIME({}.5), e = 'gamma', st = 'y,z', amount = amount + 1, \
                 j = JSON_ARRAY({id}), txt = CONCAT(COALESCE(txt, ''), '✓'), bits = b'00011', \
                 wide = COALESCE(wide, 0) + 0.000000000000000000000000000001, yr = 2001, \
                 g = ST_GeomFromText('POINT(3 4)') WHERE id = {id}",
                1_500_000_000 + id
            ),
            vec![id],
        ),
    };
    if connection.query_drop(&statement).await.is_err() {
        return false;
    }
    for id in touched {
        ledger.remove(&id);
        ledger.extend(read(connection, Some(id)).await);
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_type_migrates_exactly_under_a_writer() {
    every_type_migrates_exactly("server").await;
}

/// The rows pass through the worker: each value read, then bound into the shadow's INSERT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_type_migrates_exactly_through_the_worker() {
    every_type_migrates_exactly("buffered").await;
}

/// Migrates `typed` with `--copy-mode <mode>` under the writer.
async fn every_type_migrates_exactly(mode: &str) {
    let database = servers::shared()
        .database(&format!("column_types_{mode}"))
        .await
        .unwrap();
    let mut connection = database.connect().await.unwrap();
    connection.query_drop(create()).await.unwrap();
    let mut random = SplitMix::new(99);
    let rows = 3_000;
    for start in (0..rows).step_by(500) {
        let values: Vec<String> = (start..start + 500)
            .map(|id| random_row(id * 2, &mut random))
            .collect();
        connection
            .query_drop(format!(
                "INSERT INTO typed ({}) VALUES {}",
                written(),
                values.join(", ")
            ))
            .await
            .unwrap();
    }
    let mut ledger = read(&mut connection, None).await;
    assert_eq!(ledger.len(), 3_000);

    let args: Vec<String> = [
        "run",
        "--alter",
        "ALTER TABLE typed ADD COLUMN extra INT NULL, ADD INDEX idx_amount (amount)",
        "--no-instant",
        "--threads",
        "1",
        "--chunk-rows",
        "50",
        "--copy-mode",
        mode,
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    let env = [
        ("SHOAL_DSN", database.dsn.clone()),
        (
            "SHOAL_FAILPOINTS",
            "checksum.before=1*sleep(3000)".to_owned(),
        ),
    ];
    let mut shoal = ShoalProcess::spawn("shoal-run", "shoal", &args, &env).unwrap();

    // Change rows through the copy, the checksum and the cut-over, then after it.
    let mut before_checksum = 0;
    while shoal.try_exit_status().unwrap().is_none() {
        if change(&mut connection, &mut random, rows, &mut ledger).await
            && !shoal.logs().contains("failpoint hit")
        {
            before_checksum += 1;
        }
    }
    assert!(
        before_checksum > 100,
        "only {before_checksum} changes during the copy"
    );
    let status = shoal.wait_exit(Duration::from_secs(120)).await.unwrap();
    assert!(
        status.success(),
        "shoal run failed ({status}):\n{}",
        shoal.logs()
    );
    let mut after = 0;
    while after < 100 {
        if change(&mut connection, &mut random, rows, &mut ledger).await {
            after += 1;
        }
    }
    assert!(
        shoal.logs().contains(" 0 range(s) repaired"),
        "the change path must write the same bytes as the copy (no repair needed):\n{}",
        shoal.logs()
    );
    let actual = read(&mut connection, None).await;
    assert_eq!(ledger.len(), actual.len(), "row count");
    let differing: Vec<(&String, Option<&String>)> = ledger
        .iter()
        .map(|(id, row)| (row, actual.get(id)))
        .filter(|(row, actual)| Some(*row) != *actual)
        .take(3)
        .collect();
    assert!(
        differing.is_empty(),
        "ledger and table differ: {differing:#?}"
    );
    let columns: Vec<String> = connection
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? \
             AND TABLE_NAME = 'typed' AND COLUMN_NAME = 'extra'",
            (&database.name,),
        )
        .await
        .unwrap();
    assert_eq!(columns, ["extra"], "the ALTER took effect");
    assert_eq!(
        shoal_tests::scenario::tables(&mut connection, &database.name).await,
        ["typed"],
        "shoal's tables are removed"
    );
}

/// The checksum's row hash on the real server tells apart rows that a naive encoding confuses:
/// a separator inside a value versus between values, NULL versus the strings 'NULL', 'N' and
/// '', NULL in one column versus the next, and two rows swapping same-length values (which
/// cancel out under `BIT_XOR(CRC32(…))`). Each pair must give different digests, in both the
/// single- and the double-evaluation forms, and each form must give the other's digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_row_hash_tells_apart_rows_a_naive_encoding_confuses() {
    use shoal_worker::checksum::{HashColumn, RowHash, digest_select};
    let database = servers::shared().database("row_hash").await.unwrap();
    let mut connection = database.connect().await.unwrap();
    connection
        .query_drop(
            "CREATE TABLE h (id INT NOT NULL PRIMARY KEY, a VARCHAR(10) NULL, \
             b VARCHAR(10) CHARACTER SET latin1 NULL, n INT NULL)",
        )
        .await
        .unwrap();
    // Pairs of (id, a, b, n) rows that must hash apart; the id is the same within a pair.
    type Row<'a> = (Option<&'a str>, Option<&'a str>, Option<i64>);
    let pairs: [[Row; 2]; 6] = [
        [
            (Some("x,y"), Some("z"), None),
            (Some("x"), Some("y,z"), None),
        ],
        [(None, Some("v"), None), (Some("NULL"), Some("v"), None)],
        [(None, Some("v"), None), (Some("N"), Some("v"), None)],
        [(None, Some("v"), None), (Some(""), Some("v"), None)],
        [(None, Some("v"), None), (Some("v"), None, None)],
        [(Some("1"), None, Some(1)), (Some("1"), Some("1"), None)],
    ];
    let columns = [
        ("id", false, false),
        ("a", true, true),
        ("b", true, true),
        ("n", false, true),
    ]
    .map(|(name, text, nullable)| HashColumn {
        name: name.to_owned(),
        text,
        nullable,
    });
    let version: String = connection
        .query_first("SELECT VERSION()")
        .await
        .unwrap()
        .unwrap();
    let detected = RowHash::detect(&mut connection, &version).await.unwrap();
    // MariaDB 10.8+ has CRC32C and evaluates a session variable once per row; MySQL gets SHA2.
    let (expected, forms) = match servers::flavour() {
        servers::Flavour::MariaDb => (
            RowHash::CrcProductOnce,
            vec![RowHash::CrcProductOnce, RowHash::CrcProduct, RowHash::Sha2],
        ),
        servers::Flavour::MySql => (RowHash::Sha2, vec![RowHash::Sha2]),
    };
    assert_eq!(detected, expected, "{version}");
    let digest = async |connection: &mut mysql_async::Conn,
                        row: (Option<&str>, Option<&str>, Option<i64>)| {
        connection.query_drop("DELETE FROM h").await.unwrap();
        connection
            .exec_drop("INSERT INTO h VALUES (1, ?, ?, ?)", row)
            .await
            .unwrap();
        let mut digests = Vec::new();
        for &hash in &forms {
            let digest: (u64, u64, u64) = connection
                .query_first(format!("SELECT {} FROM h", digest_select(hash, &columns)))
                .await
                .unwrap()
                .unwrap();
            digests.push(digest);
        }
        if digests.len() == 3 {
            assert_eq!(digests[0], digests[1], "both forms agree on {row:?}");
        }
        (digests[0], digests[digests.len() - 1])
    };
    for [left, right] in pairs {
        let (one, other) = (
            digest(&mut connection, left).await,
            digest(&mut connection, right).await,
        );
        assert_ne!(one, other, "{left:?} and {right:?} must hash apart");
    }
    // Two rows swapping same-length values: the XOR over both rows must change.
    let mut swap = async |hash: RowHash, first: &str, second: &str| -> (u64, u64, u64) {
        connection.query_drop("DELETE FROM h").await.unwrap();
        connection
            .exec_drop(
                "INSERT INTO h VALUES (1, ?, 'k', 1), (2, ?, 'k', 1)",
                (first, second),
            )
            .await
            .unwrap();
        connection
            .query_first(format!("SELECT {} FROM h", digest_select(hash, &columns)))
            .await
            .unwrap()
            .unwrap()
    };
    for hash in [expected, RowHash::Sha2] {
        let straight = swap(hash, "ab", "cd").await;
        let swapped = swap(hash, "cb", "ad").await;
        assert_ne!(
            straight, swapped,
            "{hash:?}: swapped same-length values must not cancel out"
        );
    }
}
