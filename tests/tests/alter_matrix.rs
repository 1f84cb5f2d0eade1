//! The ALTER matrix under the writer. Each ALTER that must complete does, with the table equal to
//! the writer's ledger and the new definition in place; each that must fail before cut-over names
//! the problem, leaves the original table intact, exact and written to, and leaves none of
//! shoal's tables behind. (ALTERs refused before anything runs are in `preflight.rs`.)

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use mysql_async::prelude::Queryable;
use shoal_tests::scenario::{
    expect_success, finish_writer, seeded, shoal_run, show_create, start_writer, tables,
};
use shoal_tests::servers::{self, TestDatabase};
use shoal_tests::writer;

/// The table equals the writer's ledger and only `orders` is left.
async fn assert_exact(database: &TestDatabase, expected: &writer::Ledger) {
    let mut connection = database.connect().await.unwrap();
    let actual = writer::read_table(&mut connection, "orders").await.unwrap();
    let differences = writer::differences(expected, &actual);
    assert!(
        differences.is_empty(),
        "{} differences; first: {:?}",
        differences.len(),
        &differences[..differences.len().min(5)]
    );
    assert_eq!(tables(&mut connection, &database.name).await, ["orders"]);
}

/// Seeds `orders`, runs `setup`, runs `alter` under the writer and expects it to complete
/// exactly with each of `present` in the new definition and none of `absent`.
async fn completes(
    label: &str,
    setup: &[&str],
    alter: &str,
    present: &[&str],
    absent: &[&str],
) -> TestDatabase {
    let (database, _) = seeded(label, 20_000).await;
    let mut connection = database.connect().await.unwrap();
    for statement in setup {
        connection
            .query_drop(shoal_tests::scenario::portable(statement))
            .await
            .unwrap();
    }
    let ledger = writer::read_table(&mut connection, "orders").await.unwrap();
    let writer = start_writer(&database, ledger, 51).await;
    let mut run = shoal_run(&database, alter, &[], "");
    expect_success(&mut run).await;
    let (expected, _) = finish_writer(writer, 200).await;
    assert_exact(&database, &expected).await;
    let create = show_create(&database, "orders").await;
    for fragment in present {
        assert!(
            create.contains(fragment),
            "{label}: no {fragment:?} in\n{create}"
        );
    }
    for fragment in absent {
        assert!(
            !create.contains(fragment),
            "{label}: {fragment:?} left in\n{create}"
        );
    }
    database
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_column() {
    completes(
        "m_add_column",
        &[],
        "ALTER TABLE orders ADD COLUMN note VARCHAR(32) NOT NULL DEFAULT 'n/a'",
        &["`note` varchar(32) NOT NULL DEFAULT 'n/a'"],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_column() {
    completes(
        "m_drop_column",
        &[
            "ALTER TABLE orders ADD COLUMN extra INT NULL",
            "UPDATE orders SET extra = id",
        ],
        "ALTER TABLE orders DROP COLUMN extra",
        &[],
        &["`extra`"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widen_a_column_and_its_type() {
    completes(
        "m_widen",
        &[],
        "ALTER TABLE orders MODIFY c VARCHAR(200) NOT NULL, MODIFY k BIGINT NOT NULL",
        &["`c` varchar(200) NOT NULL", "`k` bigint NOT NULL"],
        &[],
    )
    .await;
}

/// `CHANGE c c …` names the column twice: a redefinition, as MODIFY (a rename is refused in
/// `preflight.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_naming_the_column_twice_redefines_it() {
    completes(
        "m_change_same",
        &[],
        "ALTER TABLE orders CHANGE c c VARCHAR(200) NOT NULL, CHANGE COLUMN K k BIGINT NOT NULL",
        &["`c` varchar(200) NOT NULL", "`k` bigint NOT NULL"],
        &[],
    )
    .await;
}

/// Column names compare as the server compares them: an ALTER naming `K`, `I` or `Ü` modifies
/// `k`, `i` and `ü`, whose data must be carried (byte-for-byte matching once zeroed them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_named_in_another_case_keep_their_data() {
    let database = completes(
        "m_name_case",
        &[
            "ALTER TABLE orders ADD COLUMN i INT NOT NULL DEFAULT 0, \
             ADD COLUMN `ü` INT NOT NULL DEFAULT 0",
            "UPDATE orders SET i = id % 1000 + 1, `ü` = id % 1000 + 6",
        ],
        "ALTER TABLE orders MODIFY K BIGINT NOT NULL DEFAULT 0, MODIFY I BIGINT NOT NULL DEFAULT 0, \
         MODIFY `Ü` BIGINT NOT NULL DEFAULT 0",
        // MySQL quotes the default ('0'), MariaDB does not.
        &[
            "`K` bigint NOT NULL DEFAULT ",
            "`I` bigint NOT NULL DEFAULT ",
            "`Ü` bigint NOT NULL DEFAULT ",
        ],
        &[],
    )
    .await;
    // The writer's own inserts take the defaults (0); every other row keeps its pair of values
    // (a key moved by the writer keeps them too).
    let mut connection = database.connect().await.unwrap();
    let (kept, wrong): (i64, i64) = connection
        .query_first(
            "SELECT SUM(i <> 0 AND `ü` = i + 5), SUM(NOT (i = 0 AND `ü` = 0) AND `ü` <> i + 5) \
             FROM orders",
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(wrong, 0, "rows with values neither copied nor defaulted");
    assert!(
        kept > 15_000,
        "only {kept} of 20,000 seeded rows kept i and ü"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrow_types_when_the_data_fits() {
    // The writer's `k` stays below 1,000 and its `c` within 10 characters.
    completes(
        "m_narrow",
        &[],
        "ALTER TABLE orders MODIFY k SMALLINT NOT NULL, MODIFY c VARCHAR(16) NOT NULL",
        &["`k` smallint NOT NULL", "`c` varchar(16) NOT NULL"],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_a_column_charset() {
    completes(
        "m_column_charset",
        &[],
        "ALTER TABLE orders MODIFY c VARCHAR(64) CHARACTER SET latin1 NOT NULL",
        &["`c` varchar(64) CHARACTER SET latin1"],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_drop_secondary_indexes_and_a_unique_index_on_unique_data() {
    completes(
        "m_indexes",
        &[],
        "ALTER TABLE orders DROP INDEX kk, ADD INDEX kc (k, c), ADD UNIQUE INDEX uk_uk (u, k)",
        &["KEY `kc` (`k`,`c`)", "UNIQUE KEY `uk_uk` (`u`,`k`)"],
        &["KEY `kk`"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_columns_are_recomputed_by_the_server_not_copied() {
    let database = completes(
        "m_generated",
        &["ALTER TABLE orders ADD COLUMN kv INT AS (k * 2) VIRTUAL, \
           ADD COLUMN ks VARCHAR(80) AS (CONCAT(c, '!')) STORED"],
        "ALTER TABLE orders ADD COLUMN note INT NULL",
        // The expressions print differently (MySQL: `((`k` * 2))`, `_utf8mb4'!'`); the values
        // are checked below.
        &[
            "`kv` int GENERATED ALWAYS AS (",
            "`ks` varchar(80) GENERATED ALWAYS AS (",
        ],
        &[],
    )
    .await;
    let mut connection = database.connect().await.unwrap();
    let wrong: Option<i64> = connection
        .query_first("SELECT COUNT(*) FROM orders WHERE kv <> k * 2 OR ks <> CONCAT(c, '!')")
        .await
        .unwrap();
    assert_eq!(wrong, Some(0), "generated values match their expressions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_rebuild() {
    completes(
        "m_engine",
        &[],
        "ALTER TABLE orders ENGINE=InnoDB",
        &["ENGINE=InnoDB"],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_the_table_charset_and_collation() {
    completes(
        "m_table_charset",
        &[],
        "ALTER TABLE orders CONVERT TO CHARACTER SET latin1 COLLATE latin1_bin",
        &["DEFAULT CHARSET=latin1 COLLATE=latin1_bin"],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auto_increment_counter_is_carried_to_the_new_table() {
    // The counter stands far above the largest key: copying rows alone would bring it back.
    completes(
        "m_auto_increment",
        &[
            "ALTER TABLE orders MODIFY id BIGINT NOT NULL AUTO_INCREMENT",
            "ALTER TABLE orders AUTO_INCREMENT = 5000000",
        ],
        "ALTER TABLE orders ADD COLUMN note INT NULL",
        &["AUTO_INCREMENT=5000000"],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowing_below_the_data_fails_before_cut_over_naming_the_column_and_range() {
    let (database, ledger) = seeded("m_narrow_fails", 20_000).await;
    let before = show_create(&database, "orders").await;
    let writer = start_writer(&database, ledger, 52).await;
    let mut run = shoal_run(
        &database,
        "ALTER TABLE orders MODIFY k TINYINT NOT NULL",
        &[],
        "",
    );
    let status = run.wait_exit(Duration::from_secs(300)).await.unwrap();
    let logs = run.logs();
    assert!(!status.success(), "the migration completed:\n{logs}");
    assert!(
        logs.contains("raised warning 1264: Out of range value for column 'k'"),
        "the error names the column and the chunk's key range:\n{logs}"
    );
    let (expected, _) = finish_writer(writer, 200).await;
    assert_exact(&database, &expected).await;
    assert_eq!(show_create(&database, "orders").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_index_over_duplicates_fails_before_cut_over_naming_a_duplicate() {
    // `k` is `seq % 1000`: every value is held by 20 rows.
    let (database, ledger) = seeded("unique_dups", 20_000).await;
    let mut connection = database.connect().await.unwrap();
    let before = show_create(&database, "orders").await;
    let writer = start_writer(&database, ledger, 41).await;
    let mut run = shoal_run(
        &database,
        "ALTER TABLE orders ADD UNIQUE INDEX uk_k (k)",
        &[],
        "",
    );
    let status = run.wait_exit(Duration::from_secs(300)).await.unwrap();
    let logs = run.logs();
    assert!(!status.success(), "the migration completed:\n{logs}");
    let prefix = "the ALTER adds UNIQUE index `uk_k` on (`k`), but ";
    let message = &logs[logs
        .find(prefix)
        .unwrap_or_else(|| panic!("no duplicate named:\n{logs}"))..];
    assert!(
        message.contains("remove the duplicates or drop UNIQUE from the ALTER"),
        "{message}"
    );
    // The value it names is held by more than one row.
    let value: i64 = message
        .split_once("hold the value (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(value, _)| value.parse().ok())
        .unwrap_or_else(|| panic!("no value in {message}"));
    let holders: Option<i64> = connection
        .exec_first("SELECT COUNT(*) FROM orders WHERE k = ?", (value,))
        .await
        .unwrap();
    assert!(holders.unwrap() > 1, "k = {value} is held by {holders:?}");
    // The application goes on writing the original table, which is exact and unchanged in
    // shape; none of shoal's tables is left.
    let (expected, _) = finish_writer(writer, 200).await;
    assert_exact(&database, &expected).await;
    assert_eq!(show_create(&database, "orders").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowing_names_the_first_row_that_does_not_fit() {
    // One value in 5,000 does not fit TINYINT, in the middle of a chunk; both copy modes.
    for mode in ["server", "buffered"] {
        let database = servers::shared()
            .database(&format!("m_narrow_row_{mode}"))
            .await
            .unwrap();
        let mut connection = database.connect().await.unwrap();
        connection
            .query_drop(shoal_tests::scenario::portable(
                "CREATE TABLE t (id INT NOT NULL PRIMARY KEY, a INT NOT NULL); \
                 INSERT INTO t SELECT seq, seq % 100 FROM seq_1_to_5000; \
                 UPDATE t SET a = 1000 WHERE id = 3456",
            ))
            .await
            .unwrap();
        let mut run = shoal_run(
            &database,
            "ALTER TABLE t MODIFY a TINYINT NOT NULL",
            &[
                "--copy-mode",
                mode,
                "--chunk-rows",
                "1000",
                "--target-chunk-time",
                "0",
            ],
            "",
        );
        let status = run.wait_exit(Duration::from_secs(120)).await.unwrap();
        let logs = run.logs();
        assert!(!status.success(), "{mode}: completed:\n{logs}");
        assert!(
            logs.contains("Out of range value for column 'a'")
                && logs.contains("(the first such row: `id` = 3456)"),
            "{mode}: the error names the row:\n{logs}"
        );
        assert_eq!(tables(&mut connection, &database.name).await, ["t"]);
    }
}

/// A schema whose default character set is latin1, and an ALTER holding text latin1 cannot
/// hold: shoal's own tables are utf8mb4, so the checkpoint keeps the statement (its first
/// insert once failed, was taken for lost ownership, and left shoal's tables behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latin1_schema_and_an_alter_with_other_text() {
    let database = servers::shared().database("m_latin1").await.unwrap();
    let mut connection = database.connect().await.unwrap();
    connection
        .query_drop(format!(
            "ALTER DATABASE `{}` CHARACTER SET latin1",
            database.name
        ))
        .await
        .unwrap();
    writer::seed(&mut connection, "orders", 20_000)
        .await
        .unwrap();
    let ledger = writer::read_table(&mut connection, "orders").await.unwrap();
    let writer = start_writer(&database, ledger, 53).await;
    let mut run = shoal_run(
        &database,
        "ALTER TABLE orders ADD COLUMN note INT NULL COMMENT '名前 — ü'",
        &[],
        "",
    );
    expect_success(&mut run).await;
    let (expected, _) = finish_writer(writer, 200).await;
    assert_exact(&database, &expected).await;
    let create = show_create(&database, "orders").await;
    assert!(create.contains("COMMENT '名前 — ü'"), "{create}");
    assert!(create.contains("CHARSET=latin1"), "{create}");
}
