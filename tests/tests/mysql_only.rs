//! MySQL-only behaviour, each test saying why it has no MariaDB counterpart. Each starts a
//! private MySQL 9.7 and ends with the server as it was, or an exact comparison.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use mysql_async::prelude::Queryable;
use shoal_tests::flavours::{Server, assert_exact, seeded};
use shoal_tests::mysql::MySql;
use shoal_tests::processes::ShoalProcess;
use shoal_tests::scenario::{
    ALTER, expect_success, finish_writer, shoal_run, show_create, start_writer,
};
use shoal_tests::servers::TestDatabase;
use shoal_tests::writer;

/// MySQL only (MariaDB has no partial JSON logging): with `binlog_row_value_options=PARTIAL_JSON`
/// updates of a JSON column log a diff, not the document; shoal refuses before touching
/// anything and names the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_json_logging_is_refused_on_mysql() {
    let server = Server::MySql(MySql::start().unwrap());
    let (database, ledger) = seeded(&server, "partial_json", 100).await;
    let mut connection = database.connect().await.unwrap();
    connection
        .query_drop("SET GLOBAL binlog_row_value_options = 'PARTIAL_JSON'")
        .await
        .unwrap();
    let before = show_create(&database, "orders").await;
    let mut run = shoal_run(&database, ALTER, &[], "");
    let status = run.wait_exit(Duration::from_secs(120)).await.unwrap();
    let logs = run.logs();
    assert!(!status.success(), "exited 0:\n{logs}");
    assert!(
        logs.contains("SET GLOBAL binlog_row_value_options=''"),
        "the fix is not named:\n{logs}"
    );
    assert_eq!(show_create(&database, "orders").await, before);
    assert_exact(&server, &database, &ledger).await;
}

/// MySQL only: the private MariaDB has no TLS set up (10.11 generates no certificates). With
/// `require_secure_transport=ON` a plain DSN is refused naming the fix; with `ssl_ca` (the server
/// given a certificate naming 127.0.0.1) the migration runs exact under the writer, whose own
/// sessions use TLS without verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_only_servers_are_reached_with_the_dsns_tls_options_on_mysql() {
    let mysql = MySql::start().unwrap();
    let pki = shoal_tests::tls::TestPki::generate().unwrap();
    mysql
        .install_tls(&pki.ca, &pki.server.0, &pki.server.1)
        .unwrap();
    let server = Server::MySql(mysql);
    let plain = server.database("tls_only").await;
    let mut connection = plain.connect().await.unwrap();
    writer::seed(&mut connection, "orders", 10_000)
        .await
        .unwrap();
    let ledger = writer::read_table(&mut connection, "orders").await.unwrap();
    connection
        .query_drop("SET GLOBAL require_secure_transport = ON")
        .await
        .unwrap();
    drop(connection);

    let mut refused = shoal_run(&plain, ALTER, &[], "");
    let status = refused.wait_exit(Duration::from_secs(120)).await.unwrap();
    let logs = refused.logs();
    assert!(!status.success(), "a plain DSN got through:\n{logs}");
    assert!(
        logs.contains("add ssl_ca="),
        "the fix is not named:\n{logs}"
    );

    let encrypted = TestDatabase {
        dsn: format!("{}?require_ssl=true&verify_ca=false", plain.dsn),
        name: plain.name.clone(),
    };
    let writer = start_writer(&encrypted, ledger, 71).await;
    let verified = TestDatabase {
        dsn: format!("{}?ssl_ca={}", plain.dsn, pki.ca.display()),
        name: plain.name.clone(),
    };
    let mut run = shoal_run(&verified, ALTER, &[], "");
    expect_success(&mut run).await;
    let (expected, _) = finish_writer(writer, 200).await;
    assert_exact(&server, &encrypted, &expected).await;
}

/// MySQL only (MariaDB lists lock waits in `information_schema`, which `PROCESS` opens): an
/// account with the documented grants but no `SELECT` on `performance_schema.data_lock_waits`
/// is refused before anything is touched, naming the grant (found by `make chaos
/// SERVER=mysql`: a takeover failed without it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_that_cannot_read_lock_waits_is_refused_on_mysql() {
    let mysql = MySql::start().unwrap();
    let server = Server::MySql(mysql);
    let (database, ledger) = seeded(&server, "lock_waits", 100).await;
    let Server::MySql(mysql) = &server else {
        unreachable!()
    };
    mysql
        .root_sql(&format!(
            "CREATE USER 'limited'@'127.0.0.1' IDENTIFIED BY 'limited-password'; \
             GRANT REPLICATION SLAVE, REPLICATION CLIENT, PROCESS ON *.* TO 'limited'@'127.0.0.1'; \
             GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, LOCK TABLES ON `{}`.* \
             TO 'limited'@'127.0.0.1'",
            database.name
        ))
        .unwrap();
    mysql.prime_login("limited", "limited-password").unwrap();
    let limited = TestDatabase {
        dsn: format!(
            "mysql://limited:limited-password@127.0.0.1:{}/{}",
            mysql.port, database.name
        ),
        name: database.name.clone(),
    };
    let mut run = shoal_run(&limited, ALTER, &[], "");
    let status = run.wait_exit(Duration::from_secs(120)).await.unwrap();
    let logs = run.logs();
    assert!(!status.success(), "exited 0:\n{logs}");
    assert!(
        logs.contains("GRANT SELECT ON performance_schema.data_lock_waits"),
        "the grant is not named:\n{logs}"
    );
    assert_exact(&server, &database, &ledger).await;
}

/// MySQL only: the run's MariaDB is shared by the other tests and never idle. On an otherwise
/// idle MySQL a migration waits more than a minute on the sentinel and completes, its change
/// stream never lost. (It passes too with `@source_heartbeat_period` left unset: run here; the
/// server is not silent while shoal writes its own heartbeat row.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_keeps_the_stream_alive_through_a_long_sentinel_wait_on_mysql() {
    let server = Server::MySql(MySql::start().unwrap());
    let (database, ledger) = seeded(&server, "idle_sentinel", 1_000).await;
    let mut connection = database.connect().await.unwrap();
    connection
        .query_drop("CREATE TABLE _shoal_sentinel (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let mut run = shoal_run(&database, ALTER, &["--defer-cutover"], "");
    shoal_tests::scenario::wait_for_log(&run, "waiting on the sentinel", Duration::from_secs(120))
        .await;
    // The wait itself is what is tested: more than a minute with no write on the server.
    tokio::time::sleep(Duration::from_secs(65)).await;
    assert!(run.try_exit_status().unwrap().is_none(), "still waiting");
    connection
        .query_drop("DROP TABLE _shoal_sentinel")
        .await
        .unwrap();
    let log = expect_success(&mut run).await;
    assert!(
        !log.contains("change stream lost"),
        "the stream was lost (silent?) and restarted:\n{log}"
    );
    assert_exact(&server, &database, &ledger).await;
    assert!(show_create(&database, "orders").await.contains("`note`"));
}

/// MySQL only (MariaDB 10.11 has neither setting): with `binlog_row_metadata=MINIMAL` (MySQL's
/// default; the test servers log FULL) the table maps carry no column names, and with
/// `sql_require_primary_key=ON` every table shoal creates must have a primary key. The
/// migration runs exact under the writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_row_metadata_and_required_primary_keys_on_mysql() {
    let server = Server::MySql(MySql::start().unwrap());
    let (database, ledger) = seeded(&server, "minimal_metadata", 20_000).await;
    let mut connection = database.connect().await.unwrap();
    for setting in [
        "SET GLOBAL binlog_row_metadata = 'MINIMAL'",
        "SET GLOBAL sql_require_primary_key = ON",
    ] {
        connection.query_drop(setting).await.unwrap();
    }
    drop(connection);
    let writer = start_writer(&database, ledger, 73).await;
    let mut run = shoal_run(&database, ALTER, &[], "");
    expect_success(&mut run).await;
    let (expected, _) = finish_writer(writer, 200).await;
    assert_exact(&server, &database, &expected).await;
}

/// MySQL only (`caching_sha2_password` is MySQL's; MariaDB's test account uses
/// `mysql_native_password`): an account that never logged in (not in the server's
/// authentication cache) reaches the server over TCP without TLS, through the full
/// authentication with the server's RSA key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_never_logged_in_reaches_the_server_without_tls_on_mysql() {
    let mysql = MySql::start().unwrap();
    let server = Server::MySql(mysql);
    let (database, ledger) = seeded(&server, "sha2_full_auth", 5_000).await;
    let Server::MySql(mysql) = &server else {
        unreachable!()
    };
    mysql
        .root_sql(
            "CREATE USER 'fresh'@'127.0.0.1' IDENTIFIED WITH caching_sha2_password BY \
             'fresh-password'; GRANT ALL PRIVILEGES ON *.* TO 'fresh'@'127.0.0.1'",
        )
        .unwrap();
    let fresh = TestDatabase {
        dsn: format!(
            "mysql://fresh:fresh-password@127.0.0.1:{}/{}",
            mysql.port, database.name
        ),
        name: database.name.clone(),
    };
    let writer = start_writer(&database, ledger, 74).await;
    let mut run = shoal_run(&fresh, ALTER, &[], "");
    expect_success(&mut run).await;
    let (expected, _) = finish_writer(writer, 200).await;
    assert_exact(&server, &database, &expected).await;
}

/// MySQL only (MariaDB has no row-version limit): a table that used up its instant row
/// versions (255 on 9.7) cannot take another instant ADD COLUMN; shoal copies instead, says
/// why, and the rebuilt table starts its count over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_out_of_instant_row_versions_is_copied_on_mysql() {
    let server = Server::MySql(MySql::start().unwrap());
    let (database, ledger) = seeded(&server, "row_versions", 5_000).await;
    let mut connection = database.connect().await.unwrap();
    for round in 0..255 {
        let change = if round % 2 == 0 {
            "ADD COLUMN pad INT NULL"
        } else {
            "DROP COLUMN pad"
        };
        connection
            .query_drop(format!("ALTER TABLE orders {change}, ALGORITHM=INSTANT"))
            .await
            .unwrap();
    }
    let versions = async |connection: &mut mysql_async::Conn| -> Option<u32> {
        connection
            .exec_first(
                "SELECT TOTAL_ROW_VERSIONS FROM information_schema.INNODB_TABLES WHERE NAME = ?",
                (format!("{}/orders", database.name),),
            )
            .await
            .unwrap()
    };
    assert_eq!(versions(&mut connection).await, Some(255));
    // The pad column of the last round stays: the ALTER below adds another.
    let writer = start_writer(&database, ledger, 75).await;
    let args: Vec<String> = [
        "run",
        "--alter",
        "ALTER TABLE orders ADD COLUMN note VARCHAR(32) NOT NULL DEFAULT 'n/a'",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    let env = [("SHOAL_DSN", database.dsn.clone())];
    let mut run = ShoalProcess::spawn("shoal-run", "shoal", &args, &env).unwrap();
    let log = expect_success(&mut run).await;
    assert!(
        log.contains(
            "INSTANT refused (the table reached MySQL's limit of 255 instant row versions"
        ),
        "{log}"
    );
    assert!(log.contains("completed by copy"), "{log}");
    let (expected, _) = finish_writer(writer, 200).await;
    let mut connection = database.connect().await.unwrap();
    assert_eq!(versions(&mut connection).await, Some(0));
    assert!(
        show_create(&database, "orders")
            .await
            .contains("`note` varchar(32)")
    );
    assert_exact(&server, &database, &expected).await;
}
