//! One test body, both servers: MariaDB 10.11 (the run's shared server) and MySQL 9.7 (a private
//! one per test, from Debian sid in a chroot). Each body moves rows under the writer and ends
//! with an exact comparison against the writer's ledger, or expects a refusal that leaves the
//! server as it was.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use mysql_async::prelude::Queryable;
use shoal_tests::mysql::MySql;
use shoal_tests::scenario::{
    ALTER, expect_success, finish_writer, shoal_run, show_create, start_writer, tables,
};
use shoal_tests::servers::{self, TestDatabase};
use shoal_tests::writer;

/// The servers a body runs on.
enum Server {
    /// The run's shared MariaDB.
    MariaDb,
    /// A private MySQL 9.7, owned by the test.
    MySql(MySql),
}

impl Server {
    fn both() -> Vec<Server> {
        vec![Server::MariaDb, Server::MySql(MySql::start().unwrap())]
    }

    fn name(&self) -> &'static str {
        match self {
            Server::MariaDb => "MariaDB",
            Server::MySql(_) => "MySQL",
        }
    }

    /// A fresh database on this server.
    async fn database(&self, label: &str) -> TestDatabase {
        match self {
            Server::MariaDb => servers::shared().database(label).await.unwrap(),
            Server::MySql(mysql) => {
                let name = servers::unique_name(label);
                mysql
                    .root_sql(&format!("CREATE DATABASE `{name}`"))
                    .unwrap();
                TestDatabase {
                    dsn: mysql.dsn(&name),
                    name,
                }
            }
        }
    }
}

/// A database on `server` holding `orders` with `rows` seeded rows, and its content.
async fn seeded(server: &Server, label: &str, rows: u64) -> (TestDatabase, writer::Ledger) {
    let database = server.database(label).await;
    let mut connection = database.connect().await.unwrap();
    writer::seed(&mut connection, "orders", rows).await.unwrap();
    let ledger = writer::read_table(&mut connection, "orders").await.unwrap();
    (database, ledger)
}

/// `orders` equals the ledger and is the only table left.
async fn assert_exact(server: &Server, database: &TestDatabase, expected: &writer::Ledger) {
    let mut connection = database.connect().await.unwrap();
    let actual = writer::read_table(&mut connection, "orders").await.unwrap();
    let differences = writer::differences(expected, &actual);
    assert!(
        differences.is_empty(),
        "{}: {} differences; first: {:?}",
        server.name(),
        differences.len(),
        &differences[..differences.len().min(5)]
    );
    assert_eq!(
        tables(&mut connection, &database.name).await,
        ["orders"],
        "{}",
        server.name()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_alter_under_the_writer_is_exact() {
    for server in Server::both() {
        let (database, ledger) = seeded(&server, "both_alter", 20_000).await;
        let writer = start_writer(&database, ledger, 61).await;
        let mut run = shoal_run(&database, ALTER, &[], "");
        let log = expect_success(&mut run).await;
        assert!(
            log.contains("0 range(s) repaired"),
            "{}:\n{log}",
            server.name()
        );
        let (expected, _) = finish_writer(writer, 200).await;
        assert_exact(&server, &database, &expected).await;
        let create = show_create(&database, "orders").await;
        assert!(
            create.contains("`note` varchar(32) NOT NULL DEFAULT 'n/a'")
                && create.contains("KEY `idx_c` (`c`)"),
            "{}: {create}",
            server.name()
        );
    }
}

/// Issue 22's first loss on both servers: a column named in another case keeps its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_named_in_another_case_keeps_its_data() {
    for server in Server::both() {
        let (database, ledger) = seeded(&server, "both_case", 20_000).await;
        let writer = start_writer(&database, ledger, 62).await;
        let mut run = shoal_run(
            &database,
            "ALTER TABLE orders MODIFY K BIGINT NOT NULL DEFAULT 0",
            &[],
            "",
        );
        expect_success(&mut run).await;
        let (expected, _) = finish_writer(writer, 200).await;
        assert_exact(&server, &database, &expected).await;
        let create = show_create(&database, "orders").await;
        assert!(create.contains("`K` bigint"), "{}: {create}", server.name());
    }
}

/// Issue 22's second loss on both servers: a duplicate under the UNIQUE key the ALTER adds,
/// moved in after the checksum, fails the migration naming it; the original stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_under_a_new_unique_key_fails_naming_it() {
    for server in Server::both() {
        let (database, ledger) = seeded(&server, "both_unique", 5_000).await;
        let mut connection = database.connect().await.unwrap();
        let before = show_create(&database, "orders").await;
        let mut run = shoal_run(
            &database,
            "ALTER TABLE orders ADD UNIQUE KEY uk_c (c)",
            &[],
            "cutover.before=1*sleep(3000)",
        );
        shoal_tests::scenario::wait_for_log(&run, "failpoint hit", Duration::from_secs(120)).await;
        // Row 4 takes row 2's text under a new key: the source now holds 'row-1' twice.
        connection
            .query_drop("UPDATE orders SET id = 1000001, c = 'row-1' WHERE id = 4")
            .await
            .unwrap();
        let status = run.wait_exit(Duration::from_secs(300)).await.unwrap();
        let logs = run.logs();
        assert!(!status.success(), "{}: exited 0:\n{logs}", server.name());
        assert!(
            logs.contains("'row-1'") && logs.contains("`uk_c`"),
            "{}: the value and the index are not named:\n{logs}",
            server.name()
        );
        let mut expected = ledger;
        let moved = expected.remove(&4).unwrap();
        expected.insert(
            1_000_001,
            writer::Row {
                c: "row-1".to_owned(),
                ..moved
            },
        );
        assert_exact(&server, &database, &expected).await;
        assert_eq!(
            show_create(&database, "orders").await,
            before,
            "{}",
            server.name()
        );
    }
}

/// Issue 22's injection on both servers: the text the server reads as two statements is
/// refused before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_statement_is_refused() {
    for server in Server::both() {
        let (database, ledger) = seeded(&server, "both_inject", 100).await;
        let mut connection = database.connect().await.unwrap();
        connection
            .query_drop("CREATE TABLE victim (id INT PRIMARY KEY)")
            .await
            .unwrap();
        let mut run = shoal_run(
            &database,
            "ALTER TABLE orders ADD COLUMN x INT DEFAULT (1--1); DROP TABLE victim; #",
            &[],
            "",
        );
        let status = run.wait_exit(Duration::from_secs(120)).await.unwrap();
        let logs = run.logs();
        assert!(!status.success(), "{}:\n{logs}", server.name());
        assert!(logs.contains("pass exactly one statement"), "{logs}");
        assert_eq!(
            tables(&mut connection, &database.name).await,
            ["orders", "victim"],
            "{}",
            server.name()
        );
        let actual = writer::read_table(&mut connection, "orders").await.unwrap();
        assert!(writer::differences(&ledger, &actual).is_empty());
    }
}
