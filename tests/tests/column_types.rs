//! Changes captured from the binlog are written exactly as the copy writes them, for the column
//! types a table commonly has. Rows are changed all through the copy (so every change goes
//! through the binlog path), the writer stops before the checksum, and then: the checksum needs
//! no repair (the change path wrote the same bytes as the copy), and the kept old table equals
//! the new one column by column, compared by the server.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

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
    u INT UNSIGNED NULL, big BIGINT NULL, bits BIT(5) NULL, yr YEAR NULL
) ENGINE=InnoDB";

const COLUMNS: &str =
    "id, ts, dt, d, tm, e, st, amount, f, j, HEX(b), txt, latin, u, big, bits + 0, yr";

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
    ];
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_changes_of_many_column_types_are_written_exactly() {
    let database = servers::shared().database("column_types").await.unwrap();
    let mut connection = database.connect().await.unwrap();
    connection.query_drop(CREATE).await.unwrap();
    let mut random = SplitMix::new(99);
    let rows = 3_000;
    for start in (0..rows).step_by(500) {
        let values: Vec<String> = (start..start + 500)
            .map(|id| random_row(id * 2, &mut random))
            .collect();
        connection
            .query_drop(format!("INSERT INTO typed VALUES {}", values.join(", ")))
            .await
            .unwrap();
    }

    let args: Vec<String> = [
        "run",
        "--alter",
        "ALTER TABLE typed ADD COLUMN extra INT NULL, ADD INDEX idx_amount (amount)",
        "--no-instant",
        "--threads",
        "1",
        "--chunk-rows",
        "50",
        "--keep-old-table",
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

    // Change rows (updates, deletes, inserts, key moves) until the copy is done.
    let mut changes = 0;
    while !shoal.logs().contains("failpoint hit") {
        assert!(
            shoal.try_exit_status().unwrap().is_none(),
            "shoal ended early:\n{}",
            shoal.logs()
        );
        let id = (random.below(rows as u64 * 2 + 200) as i64) - 100;
        let statement = match random.below(4) {
            0 => format!("REPLACE INTO typed VALUES {}", random_row(id, &mut random)),
            1 => format!("DELETE FROM typed WHERE id = {id}"),
            2 => format!("UPDATE typed SET id = {} WHERE id = {id}", id + 100_000),
            _ => format!(
                "UPDATE typed SET ts = FROM_UNIXTIME({}.5), e = 'gamma', st = 'y,z', amount = amount + 1, \
                 j = JSON_ARRAY({id}), txt = CONCAT(COALESCE(txt, ''), '✓'), bits = b'00011' WHERE id = {id}",
                1_500_000_000 + id
            ),
        };
        if connection.query_drop(&statement).await.is_ok() {
            changes += 1;
        }
    }
    assert!(changes > 100, "only {changes} changes during the copy");
    let status = shoal.wait_exit(Duration::from_secs(120)).await.unwrap();
    assert!(
        status.success(),
        "shoal run failed ({status}):\n{}",
        shoal.logs()
    );
    assert!(
        shoal.logs().contains(" 0 range(s) repaired"),
        "the change path must write the same bytes as the copy (no repair needed):\n{}",
        shoal.logs()
    );
    let old: Vec<mysql_async::Row> = connection
        .query(format!("SELECT {COLUMNS} FROM _typed_old ORDER BY id"))
        .await
        .unwrap();
    let new: Vec<mysql_async::Row> = connection
        .query(format!("SELECT {COLUMNS} FROM typed ORDER BY id"))
        .await
        .unwrap();
    let render = |rows: &[mysql_async::Row]| -> Vec<String> {
        rows.iter()
            .map(|row| format!("{:?}", row.clone().unwrap()))
            .collect()
    };
    let (old, new) = (render(&old), render(&new));
    assert_eq!(old.len(), new.len());
    let differing: Vec<(&String, &String)> = old
        .iter()
        .zip(&new)
        .filter(|(a, b)| a != b)
        .take(3)
        .collect();
    assert!(differing.is_empty(), "old and new differ: {differing:#?}");
    let unchanged_count: Option<i64> = connection
        .query_first("SELECT COUNT(*) FROM typed WHERE extra IS NOT NULL")
        .await
        .unwrap();
    assert_eq!(unchanged_count, Some(0));
}
