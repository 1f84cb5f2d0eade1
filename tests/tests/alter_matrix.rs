//! ALTERs that must fail before cut-over: each names the problem, leaves the original table
//! intact and written to, and leaves none of shoal's tables behind.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use mysql_async::prelude::Queryable;
use shoal_tests::scenario::{finish_writer, seeded, shoal_run, start_writer, tables};
use shoal_tests::writer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_index_over_duplicates_fails_before_cut_over_naming_a_duplicate() {
    // `k` is `seq % 1000`: every value is held by 20 rows.
    let (database, ledger) = seeded("unique_dups", 20_000).await;
    let mut connection = database.connect().await.unwrap();
    let before: (String, String) = connection
        .query_first("SHOW CREATE TABLE orders")
        .await
        .unwrap()
        .unwrap();
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
    let actual = writer::read_table(&mut connection, "orders").await.unwrap();
    let differences = writer::differences(&expected, &actual);
    assert!(differences.is_empty(), "{differences:?}");
    let after: (String, String) = connection
        .query_first("SHOW CREATE TABLE orders")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after, before);
    assert_eq!(tables(&mut connection, &database.name).await, ["orders"]);
}
