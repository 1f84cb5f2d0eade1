//! One test body, both servers (`shoal_tests::flavours`): MariaDB 10.11 and MySQL 9.7. Each body
//! moves rows under the writer and ends with an exact comparison against the writer's ledger,
//! or expects a refusal that leaves the server as it was. MySQL-only behaviour is in
//! `mysql_only.rs`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use mysql_async::prelude::Queryable;
use shoal_tests::flavours::{Server, assert_exact, seeded};
use shoal_tests::scenario::{
    ALTER, expect_success, finish_writer, shoal_run, show_create, start_writer, tables,
};
use shoal_tests::servers::TestDatabase;
use shoal_tests::writer;

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
        // MySQL renames under the lock in one session; MariaDB queues it on a second one.
        let sessions = match server {
            Server::MariaDb => "sessions=2",
            Server::MySql(_) => "sessions=1",
        };
        assert!(log.contains(sessions), "{}:\n{log}", server.name());
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

/// The document a writer stores for `x`: typed scalars inside (DECIMAL, UNSIGNED, DOUBLE,
/// DATETIME, strings, an array with a boolean and a null), some rows a scalar document alone.
const DOCUMENT: &str = "IF(? % 7 = 0, JSON_EXTRACT(JSON_ARRAY(CAST(? AS DECIMAL(12,3))), '$[0]'), \
     JSON_OBJECT('n', ?, 'd', CAST(? AS DECIMAL(10,2)), 'f', ? * 1.5e0, 'u', CAST(? AS UNSIGNED), \
     's', CONCAT('v', ?), 'dt', CAST(? AS DATETIME(3)), 'a', JSON_ARRAY(?, 2.5e0, NULL, TRUE, 'x')))";

/// The parameters of [`DOCUMENT`] for `x`.
fn document_params(x: i64) -> Vec<mysql_async::Value> {
    let decimal = format!("{}.{:02}", x / 100, x % 100);
    let datetime = format!("2026-01-02 03:04:{:02}.{:03}", x % 60, x % 1000);
    vec![
        x.into(),
        decimal.clone().into(),
        x.into(),
        decimal.into(),
        x.into(),
        x.into(),
        x.into(),
        datetime.into(),
        x.into(),
    ]
}

/// What a comparison of `docs` reads for each row: the text, and the type and text at every path
/// the writers fill (a DECIMAL turned into a DOUBLE has the same text; its type differs).
fn document_projection(table: &str) -> String {
    let mut parts = vec!["id".to_owned(), "n".to_owned(), "JSON_TYPE(doc)".to_owned()];
    for path in [
        "$", "$.n", "$.d", "$.f", "$.u", "$.s", "$.dt", "$.a[0]", "$.a[1]", "$.a[2]", "$.a[3]",
    ] {
        parts.push(format!("JSON_TYPE(JSON_EXTRACT(doc, '{path}'))"));
        parts.push(format!("CAST(JSON_EXTRACT(doc, '{path}') AS CHAR)"));
    }
    format!("SELECT {} FROM {table} ORDER BY id", parts.join(", "))
}

/// One writer: updates, inserts and deletes rows of `docs`, each in a transaction that writes the
/// same document into `docs_ledger`. On MySQL, `session` compresses its transactions or tags its
/// GTIDs. Returns its commits.
async fn document_writer(
    database: TestDatabase,
    session: &'static str,
    seed: i64,
    stop: tokio_util::sync::CancellationToken,
) -> u64 {
    let mut connection = database.connect().await.unwrap();
    if !session.is_empty() {
        connection.query_drop(session).await.unwrap();
    }
    let mut commits = 0;
    let mut x = seed;
    while !stop.is_cancelled() {
        x = (x * 1_103_515_245 + 12_345) % 2_147_483_648;
        let id = x % 12_000 + 1;
        let mut transaction = connection
            .start_transaction(mysql_async::TxOpts::default())
            .await
            .unwrap();
        for table in ["docs", "docs_ledger"] {
            if x % 5 == 0 {
                transaction
                    .exec_drop(format!("DELETE FROM {table} WHERE id = ?"), (id,))
                    .await
                    .unwrap();
            } else {
                let mut params = vec![mysql_async::Value::from(id), x.into()];
                params.extend(document_params(x));
                transaction
                    .exec_drop(
                        format!("REPLACE INTO {table} (id, n, doc) VALUES (?, ?, {DOCUMENT})"),
                        params,
                    )
                    .await
                    .unwrap();
            }
        }
        transaction.commit().await.unwrap();
        commits += 1;
    }
    commits
}

/// Asserts that `actual` and `expected` (two queries) read the same rows, value by value;
/// returns how many.
async fn same_rows(
    connection: &mut mysql_async::Conn,
    actual: &str,
    expected: &str,
    server: &str,
) -> usize {
    let mut read = async |sql: &str| -> Vec<Vec<mysql_async::Value>> {
        let rows: Vec<mysql_async::Row> = connection.query(sql).await.unwrap();
        rows.into_iter().map(mysql_async::Row::unwrap).collect()
    };
    let actual = read(actual).await;
    let expected = read(expected).await;
    assert_eq!(actual.len(), expected.len(), "{server}: row counts");
    let differing: Vec<_> = actual
        .iter()
        .zip(&expected)
        .filter(|(actual, expected)| actual != expected)
        .take(3)
        .collect();
    assert!(
        differing.is_empty(),
        "{server}: rows differ from the ledger: {differing:?}"
    );
    actual.len()
}

/// JSON documents with typed values, written under three writers while shoal copies them; on
/// MySQL two writers compress their transactions (TRANSACTION_PAYLOAD events) and one tags its
/// GTIDs. The new table's documents equal the writers' ledger in text and in type at every path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_json_documents_under_compressing_writers_are_exact() {
    for server in Server::both() {
        let database = server.database("both_json").await;
        let mut connection = database.connect().await.unwrap();
        for table in ["docs", "docs_ledger"] {
            connection
                .query_drop(format!(
                    "CREATE TABLE {table} (id BIGINT PRIMARY KEY, n BIGINT NOT NULL, doc JSON NULL)"
                ))
                .await
                .unwrap();
        }
        for id in (1..=10_000i64).step_by(250) {
            let mut transaction = connection
                .start_transaction(mysql_async::TxOpts::default())
                .await
                .unwrap();
            for id in id..id + 250 {
                let mut params = vec![mysql_async::Value::from(id), id.into()];
                params.extend(document_params(id));
                transaction
                    .exec_drop(
                        format!("INSERT INTO docs (id, n, doc) VALUES (?, ?, {DOCUMENT})"),
                        params,
                    )
                    .await
                    .unwrap();
            }
            transaction
                .exec_drop(
                    "INSERT INTO docs_ledger SELECT * FROM docs WHERE id BETWEEN ? AND ?",
                    (id, id + 249),
                )
                .await
                .unwrap();
            transaction.commit().await.unwrap();
        }
        let sessions: [&'static str; 3] = match server {
            Server::MariaDb => ["", "", ""],
            Server::MySql(_) => [
                "SET SESSION binlog_transaction_compression = ON",
                "SET SESSION binlog_transaction_compression = ON",
                "SET SESSION gtid_next = 'AUTOMATIC:shoal'",
            ],
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let writers: Vec<_> = sessions
            .iter()
            .zip([11, 23, 37])
            .map(|(session, seed)| {
                tokio::spawn(document_writer(
                    database.clone(),
                    session,
                    seed,
                    stop.clone(),
                ))
            })
            .collect();
        let mut run = shoal_run(
            &database,
            "ALTER TABLE docs ADD COLUMN extra INT NULL",
            &["--chunk-rows", "500", "--target-chunk-time", "0"],
            "copy.after_read=sleep(100)",
        );
        let log = expect_success(&mut run).await;
        if let Server::MySql(_) = server {
            assert!(
                log.contains("a compressed transaction (TRANSACTION_PAYLOAD) opened"),
                "no compressed transaction reached the reader:\n{log}"
            );
        }
        // The writers keep going into the new table for a while.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.cancel();
        let mut commits = 0;
        for writer in writers {
            commits += writer.await.unwrap();
        }
        assert!(commits > 50, "{}: {commits} commits", server.name());
        let rows = same_rows(
            &mut connection,
            &document_projection("docs"),
            &document_projection("docs_ledger"),
            server.name(),
        )
        .await;
        assert!(rows > 5_000, "{}: {rows} documents", server.name());
        let typed: Option<String> = connection
            .query_first(
                "SELECT JSON_TYPE(JSON_EXTRACT(doc, '$.d')) FROM docs \
                 WHERE JSON_TYPE(doc) = 'OBJECT' ORDER BY id LIMIT 1",
            )
            .await
            .unwrap();
        if let Server::MySql(_) = server {
            assert_eq!(
                typed.as_deref(),
                Some("DECIMAL"),
                "the writers' types are kept"
            );
        }
        assert!(show_create(&database, "docs").await.contains("`extra` int"));
        assert_eq!(
            tables(&mut connection, &database.name).await,
            ["docs", "docs_ledger"],
            "{}",
            server.name()
        );
    }
}

/// Prepares XA transaction `xid` updating row 2 on `connection`.
async fn prepare_xa(connection: &mut mysql_async::Conn, xid: &str) {
    for statement in [
        format!("XA START '{xid}'"),
        "UPDATE orders SET c = 'xa' WHERE id = 2".to_owned(),
        format!("XA END '{xid}'"),
        format!("XA PREPARE '{xid}'"),
    ] {
        connection.query_drop(statement).await.unwrap();
    }
}

/// Waits for `run` to fail with `expected` in its log.
async fn expect_refusal(
    server: &Server,
    run: &mut shoal_tests::processes::ShoalProcess,
    expected: &str,
) {
    let status = run.wait_exit(Duration::from_secs(120)).await.unwrap();
    let logs = run.logs();
    assert!(!status.success(), "{}: exited 0:\n{logs}", server.name());
    assert!(
        logs.contains(expected),
        "{}: no {expected:?} in:\n{logs}",
        server.name()
    );
}

/// An XA transaction prepared before shoal starts logged its rows already; its `XA COMMIT`
/// would come with none. shoal refuses, naming the fix, and leaves the server as it was; one
/// prepared while shoal runs is refused by the change stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_xa_transaction_is_refused() {
    for server in Server::both() {
        let (database, ledger) = seeded(&server, "both_xa", 1_000).await;
        let mut xa = database.connect().await.unwrap();
        prepare_xa(&mut xa, "shoal-test").await;
        let mut run = shoal_run(&database, ALTER, &[], "");
        expect_refusal(&server, &mut run, "prepared XA transaction(s)").await;
        xa.query_drop("XA ROLLBACK 'shoal-test'").await.unwrap();
        assert_exact(&server, &database, &ledger).await;

        // One prepared while shoal runs reaches the stream, which refuses it.
        let mut run = shoal_run(&database, ALTER, &[], "cutover.before=1*sleep(4000)");
        shoal_tests::scenario::wait_for_log(&run, "failpoint hit", Duration::from_secs(120)).await;
        prepare_xa(&mut xa, "shoal-test-2").await;
        expect_refusal(&server, &mut run, "an XA transaction changed").await;
        xa.query_drop("XA ROLLBACK 'shoal-test-2'").await.unwrap();
        assert_exact(&server, &database, &ledger).await;
    }
}

/// A session whose statement holds a 4-byte character runs through the whole migration: the
/// cut-over's process-list probe must still read the list (MySQL's
/// `information_schema.PROCESSLIST` fails with 3854 then; shoal reads `performance_schema`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_with_a_four_byte_character_does_not_stop_the_cut_over() {
    for server in Server::both() {
        let (database, ledger) = seeded(&server, "both_emoji", 20_000).await;
        let mut sleeper = database.connect().await.unwrap();
        let sleeper_id = sleeper.id();
        let sleeping = tokio::spawn(async move {
            let _: Result<Vec<mysql_async::Row>, _> =
                sleeper.query("SELECT SLEEP(600), '😀'").await;
        });
        let writer = start_writer(&database, ledger, 73).await;
        let mut run = shoal_run(&database, ALTER, &[], "");
        let log = expect_success(&mut run).await;
        assert!(
            !sleeping.is_finished(),
            "{}: the sleeper ended early",
            server.name()
        );
        let (expected, _) = finish_writer(writer, 200).await;
        let mut admin = database.connect().await.unwrap();
        admin
            .query_drop(format!("KILL {sleeper_id}"))
            .await
            .unwrap();
        let _ = sleeping.await;
        assert!(log.contains("completed"), "{}:\n{log}", server.name());
        assert_exact(&server, &database, &expected).await;
    }
}

/// One of three writers of `big`: deletes, upserts, updates (one row or a range) and key moves,
/// each in a transaction that runs the same statement on `big_ledger`; a statement the server
/// refuses (a moved key taken, a deadlock between the writers) rolls both back. Returns its
/// commits.
async fn ledgered_writer(
    database: TestDatabase,
    seed: i64,
    stop: tokio_util::sync::CancellationToken,
    committed: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> u64 {
    let mut connection = database.connect().await.unwrap();
    let mut commits = 0;
    let mut x = seed;
    while !stop.is_cancelled() {
        x = (x * 1_103_515_245 + 12_345) % 2_147_483_648;
        let id = x % 120_000 + 1;
        let (statement, params): (&str, Vec<mysql_async::Value>) = match x % 10 {
            0 | 1 => ("DELETE FROM {t} WHERE id = ?", vec![id.into()]),
            2..=5 => (
                "REPLACE INTO {t} (id, k, c, d) VALUES (?, ?, ?, ?)",
                vec![
                    id.into(),
                    (x % 1_000).into(),
                    format!("w{seed}-{x}").into(),
                    format!("{}.{:02}", x % 100_000, x % 100).into(),
                ],
            ),
            6 | 7 => (
                "UPDATE {t} SET k = k + 1, c = CONCAT(LEFT(c, 40), '+') WHERE id = ?",
                vec![id.into()],
            ),
            8 => (
                "UPDATE {t} SET id = ? WHERE id = ?",
                vec![(id + 200_000).into(), id.into()],
            ),
            _ => (
                "UPDATE {t} SET d = d + 0.01 WHERE id BETWEEN ? AND ?",
                vec![id.into(), (id + 20).into()],
            ),
        };
        let mut transaction = connection
            .start_transaction(mysql_async::TxOpts::default())
            .await
            .unwrap();
        let mut refused = false;
        for table in ["big", "big_ledger"] {
            if let Err(error) = transaction
                .exec_drop(statement.replace("{t}", table), params.clone())
                .await
            {
                assert!(
                    matches!(&error, mysql_async::Error::Server(server)
                        if matches!(server.code, 1062 | 1205 | 1213)),
                    "writer {seed}: {error}"
                );
                refused = true;
                break;
            }
        }
        if refused {
            // A deadlock already rolled back; the rollback then finds nothing to undo.
            let _ = transaction.rollback().await;
        } else {
            transaction.commit().await.unwrap();
            commits += 1;
            committed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    commits
}

/// A table of 100,000 rows under three writers through the whole migration and after it: the
/// new table equals the ledger the writers kept in their own transactions, value by value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_rows_under_three_writers_are_exact() {
    for server in Server::both() {
        let database = server.database("both_100k").await;
        let mut connection = database.connect().await.unwrap();
        for table in ["big", "big_ledger"] {
            connection
                .query_drop(format!(
                    "CREATE TABLE {table} (id BIGINT NOT NULL PRIMARY KEY, k INT NOT NULL, \
                     c VARCHAR(64) NOT NULL, d DECIMAL(12,2) NOT NULL) ENGINE=InnoDB"
                ))
                .await
                .unwrap();
        }
        for offset in [0, 50_000] {
            connection
                .query_drop(format!(
                    "INSERT INTO big SELECT seq + {offset}, (seq + {offset}) % 1000, \
                     CONCAT('row', seq + {offset}), (seq + {offset}) / 4 FROM {}",
                    shoal_tests::scenario::numbers(50_000)
                ))
                .await
                .unwrap();
        }
        connection
            .query_drop("INSERT INTO big_ledger SELECT * FROM big")
            .await
            .unwrap();
        let committed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let writers: Vec<_> = [3, 5, 7]
            .into_iter()
            .map(|seed| {
                tokio::spawn(ledgered_writer(
                    database.clone(),
                    seed,
                    stop.clone(),
                    std::sync::Arc::clone(&committed),
                ))
            })
            .collect();
        let mut run = shoal_run(
            &database,
            "ALTER TABLE big ADD COLUMN note VARCHAR(16) NOT NULL DEFAULT 'n/a', ADD INDEX idx_k (k)",
            &[],
            "",
        );
        let log = expect_success(&mut run).await;
        // The writers go on into the new table for a hundred more commits.
        let at_exit = committed.load(std::sync::atomic::Ordering::Relaxed);
        shoal_tests::wait::until(
            "a hundred commits into the new table",
            Duration::from_secs(60),
            Duration::from_millis(20),
            || async {
                (committed.load(std::sync::atomic::Ordering::Relaxed) >= at_exit + 100)
                    .then_some(())
            },
        )
        .await
        .unwrap();
        stop.cancel();
        let mut commits = 0;
        for writer in writers {
            commits += writer.await.unwrap();
        }
        assert!(commits > 300, "{}: {commits} commits", server.name());
        let read = |table: &str| format!("SELECT id, k, c, d FROM {table} ORDER BY id");
        let rows = same_rows(
            &mut connection,
            &read("big"),
            &read("big_ledger"),
            server.name(),
        )
        .await;
        assert!(rows > 90_000, "{}: {rows} rows\n{log}", server.name());
        assert!(
            show_create(&database, "big")
                .await
                .contains("`note` varchar(16)")
        );
        assert_eq!(
            tables(&mut connection, &database.name).await,
            ["big", "big_ledger"],
            "{}",
            server.name()
        );
    }
}
