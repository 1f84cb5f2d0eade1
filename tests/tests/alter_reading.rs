//! shoal's reading of an `ALTER TABLE` text, proven against the server's: generated texts
//! (comments of every form, `--` that is and is not a comment, string literals in both quotes
//! with both escapes, hostile and unicode names, double-quoted names, second statements,
//! executable comments, truncations) are read by shoal (`alter::parse`) and run by the server
//! with the prepared protocol on scratch temporary tables. The two must agree on the statement
//! count, the table, the columns dropped and the `AUTO_INCREMENT` option; the text shoal applies
//! to its shadow table (the changes after the table name, spliced behind another name) must
//! leave a copy defined exactly as the server's own run left the original. On the server under
//! test (MariaDB and MySQL: the test runs in both passes).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::BTreeSet;
use std::sync::Mutex;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use shoal_common::sql::{quote_identifier, quote_qualified};
use shoal_coordinator::migration::alter::{self, AlterStatement};
use shoal_tests::alter_texts::{Case, Variant, Written, case_strategy};
use shoal_tests::servers;

/// Generated texts per server (the acceptance asks for at least 10,000).
const CASES: u32 = 10_000;

/// The server's reading: its columns and its definition.
async fn columns(connection: &mut Conn, schema: &str, table: &str) -> BTreeSet<String> {
    let rows: Vec<mysql_async::Row> = connection
        .query(format!(
            "SHOW COLUMNS FROM {}",
            quote_qualified(schema, table)
        ))
        .await
        .unwrap();
    rows.into_iter()
        .map(|row| row.get::<String, _>(0).unwrap().to_lowercase())
        .collect()
}

async fn definition(connection: &mut Conn, schema: &str, table: &str) -> String {
    let row: (String, String) = connection
        .query_first(format!(
            "SHOW CREATE TABLE {}",
            quote_qualified(schema, table)
        ))
        .await
        .unwrap()
        .unwrap();
    row.1
}

const COPY: &str = "shoal copy";
/// The scratch table's `AUTO_INCREMENT` counter: no generated value (at most 999) equals it.
const COUNTER: u32 = 5000;

async fn check(connection: &mut Conn, schema: &str, case: &Case) -> Result<(), TestCaseError> {
    let written = case.render(schema);
    let text = written.text.clone();
    let table = &case.table.name;
    let columns_sql: Vec<String> = case
        .columns
        .iter()
        .map(|column| format!("{} INT NULL", quote_identifier(&column.name)))
        .collect();
    let create = |name: &str| {
        format!(
            "CREATE TEMPORARY TABLE {} (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, {}) \
             ENGINE=InnoDB AUTO_INCREMENT={COUNTER}",
            quote_identifier(name),
            columns_sql.join(", ")
        )
    };
    let setup = [
        // Whatever an earlier case left (a panic skips its cleanup).
        format!(
            "DROP TEMPORARY TABLE IF EXISTS {}, {}, victim",
            quote_identifier(table),
            quote_identifier(COPY)
        ),
        create(table),
        create(COPY),
        "CREATE TEMPORARY TABLE victim (id INT)".to_owned(),
    ];
    for statement in &setup {
        connection.query_drop(statement).await.unwrap();
    }
    let before = columns(connection, schema, table).await;
    let shoal = alter::parse(&text);
    let server = connection.exec_drop(text.as_str(), ()).await;
    let outcome = compare(connection, schema, case, &written, &before, &shoal, &server).await;
    connection
        .query_drop(format!(
            "DROP TEMPORARY TABLE IF EXISTS {}, {}, victim",
            quote_identifier(table),
            quote_identifier(COPY)
        ))
        .await
        .unwrap();
    outcome.map_err(|why| {
        TestCaseError::fail(format!(
            "{why}\ntext: {text:?}\nshoal: {shoal:?}\nserver: {server:?}"
        ))
    })
}

async fn compare(
    connection: &mut Conn,
    schema: &str,
    case: &Case,
    written: &Written,
    before: &BTreeSet<String>,
    shoal: &Result<AlterStatement, alter::Error>,
    server: &Result<(), mysql_async::Error>,
) -> Result<(), String> {
    let table = &case.table.name;
    match (&case.variant, shoal, server) {
        (Variant::Second, Err(alter::Error::MultipleStatements), Err(_)) => {
            let victim: Option<i64> = connection
                .query_first("SELECT COUNT(*) FROM victim")
                .await
                .map_err(|error| format!("the second statement ran: {error}"))?;
            victim
                .map(|_| ())
                .ok_or_else(|| "victim unreadable".to_owned())
        }
        (Variant::Second, _, _) => {
            Err("a second statement: shoal must refuse it, the server must too".to_owned())
        }
        (Variant::Executable(_), Err(alter::Error::ExecutableComment), _) => Ok(()),
        (Variant::Executable(_), _, _) => Err("shoal missed an executable comment".to_owned()),
        (Variant::DoubleQuoted, Err(_), Err(_)) => Ok(()),
        (Variant::DoubleQuoted, _, _) => {
            Err("a double-quoted name is a string to both, never a table".to_owned())
        }
        (Variant::Plain, _, Err(error)) => Err(format!(
            "the server refused a generated statement (a generator bug?): {error}"
        )),
        // A statement without changes is a no-op to the server; shoal refuses it as such.
        (Variant::Truncated(_), Err(alter::Error::Empty(_)), Ok(())) => Ok(()),
        (Variant::Plain | Variant::Truncated(_), Err(error), Ok(())) => {
            Err(format!("shoal refused what the server ran: {error}"))
        }
        (Variant::Truncated(_), Err(_), Err(_)) => Ok(()),
        (Variant::Plain | Variant::Truncated(_), Ok(read), Ok(())) => {
            same_reading(connection, schema, case, written, before, read).await
        }
        (Variant::Truncated(_), Ok(read), Err(_)) => {
            // The server refused the text: the one shoal would run on its shadow must fail too.
            match connection
                .exec_drop(read.applied_to(schema, COPY), ())
                .await
            {
                Ok(()) => Err(format!(
                    "the server refused the text but ran shoal's rewrite for table {table:?}"
                )),
                Err(_) => Ok(()),
            }
        }
    }
}

async fn same_reading(
    connection: &mut Conn,
    schema: &str,
    case: &Case,
    written: &Written,
    before: &BTreeSet<String>,
    read: &AlterStatement,
) -> Result<(), String> {
    let table = &case.table.name;
    if &read.table != table {
        return Err(format!("shoal read table {:?}, not {table:?}", read.table));
    }
    let expected_schema = case.qualified.then(|| schema.to_owned());
    if read.schema != expected_schema {
        return Err(format!("shoal read schema {:?}", read.schema));
    }
    let after = columns(connection, schema, table).await;
    let server_dropped: BTreeSet<String> = before.difference(&after).cloned().collect();
    let shoal_dropped: BTreeSet<String> = read
        .dropped_columns
        .iter()
        .map(|column| column.to_lowercase())
        .collect();
    if shoal_dropped != server_dropped {
        return Err(format!(
            "dropped columns: shoal read {shoal_dropped:?}, the server dropped {server_dropped:?}"
        ));
    }
    let original = definition(connection, schema, table).await;
    // Any value the statement sets replaces the counter the table was made with (a value of 1
    // is not shown at all).
    let server_sets = !original.contains(&format!("AUTO_INCREMENT={COUNTER}"));
    if read.sets_auto_increment != server_sets {
        return Err(format!(
            "AUTO_INCREMENT option: shoal read {}, the server's definition: {original}",
            read.sets_auto_increment
        ));
    }
    if let Variant::Plain = case.variant
        && (written.dropped != server_dropped || written.sets_auto_increment != server_sets)
    {
        return Err("the server's reading differs from the generator's".to_owned());
    }
    connection
        .exec_drop(read.applied_to(schema, COPY), ())
        .await
        .map_err(|error| format!("shoal's rewrite failed where the text ran: {error}"))?;
    let copy = definition(connection, schema, COPY).await.replacen(
        &quote_identifier(COPY),
        &quote_identifier(table),
        1,
    );
    if copy != original {
        return Err(format!(
            "shoal's rewrite defines another table:\n{copy}\nthe text's:\n{original}"
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shoal_reads_generated_alter_texts_as_the_server_does() {
    let database = servers::shared().database("alter_reading").await.unwrap();
    let mut connection = database.connect().await.unwrap();
    for statement in shoal_worker::session::session_setup(std::time::Duration::from_secs(5)) {
        connection.query_drop(statement).await.unwrap();
    }
    let connection = Mutex::new(connection);
    let handle = tokio::runtime::Handle::current();
    let schema = database.name.clone();
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let result = tokio::task::block_in_place(|| {
        runner
            .run(&case_strategy(), |case| {
                let mut connection = connection
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                handle.block_on(check(&mut connection, &schema, &case))
            })
            .map_err(|failure| failure.to_string())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
