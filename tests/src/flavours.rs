//! One test body on both servers: MariaDB 10.11 (the run's shared server: these tests run in
//! the MariaDB pass of `make test`) and MySQL 9.7 (a private one per test, from Debian sid in a
//! chroot).

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // test helpers

use crate::mysql::MySql;
use crate::scenario::tables;
use crate::servers::{self, TestDatabase};
use crate::writer;

/// The servers a body runs on.
#[derive(Debug)]
pub enum Server {
    /// The run's shared MariaDB.
    MariaDb,
    /// A private MySQL 9.7, owned by the test.
    MySql(MySql),
}

impl Server {
    pub fn both() -> Vec<Server> {
        vec![Server::MariaDb, Server::MySql(MySql::start().unwrap())]
    }

    pub fn name(&self) -> &'static str {
        match self {
            Server::MariaDb => "MariaDB",
            Server::MySql(_) => "MySQL",
        }
    }

    /// A fresh database on this server.
    pub async fn database(&self, label: &str) -> TestDatabase {
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
pub async fn seeded(server: &Server, label: &str, rows: u64) -> (TestDatabase, writer::Ledger) {
    let database = server.database(label).await;
    let mut connection = database.connect().await.unwrap();
    writer::seed(&mut connection, "orders", rows).await.unwrap();
    let ledger = writer::read_table(&mut connection, "orders").await.unwrap();
    (database, ledger)
}

/// `orders` equals the ledger and is the only table left.
pub async fn assert_exact(server: &Server, database: &TestDatabase, expected: &writer::Ledger) {
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
