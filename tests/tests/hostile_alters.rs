//! Hostile ALTER texts and names through every entry point (`shoal run`, `shoal plan`, the Plan
//! and Submit RPCs): a second statement, an executable comment, a comment swallowing shoal's own
//! clause, a schema name that would rewrite a URL, a hostile statement in a checkpoint. On a
//! private server of the run's flavour (MariaDB or MySQL: the file runs in both passes) with the
//! general log in `mysql.general_log`, so the test sees every statement the server received: none
//! but shoal's own. The tables, their definitions, the triggers and the checksums are compared
//! before and after, and a writer keeps changing the table the ALTERs name.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use shoal_common::sql::quote_identifier;
use shoal_tests::mariadb::MariaDb;
use shoal_tests::mysql::MySql;
use shoal_tests::processes::{CoordinatorOptions, CoordinatorProcess, ShoalProcess};
use shoal_tests::redis_server::RedisServer;
use shoal_tests::scenario::{show_create, tables};
use shoal_tests::servers::{self, TestDatabase};
use shoal_tests::writer::SplitMix;
use tokio_util::sync::CancellationToken;

const SETUP: [&str; 5] = [
    "CREATE TABLE t (id INT NOT NULL PRIMARY KEY, a INT NULL, b INT NOT NULL DEFAULT 0)",
    "INSERT INTO t (id, a, b) SELECT seq, seq % 7, seq FROM seq_1_to_500",
    "CREATE TABLE victim (id INT PRIMARY KEY)",
    "INSERT INTO victim VALUES (1), (2)",
    "CREATE TRIGGER victim_guard BEFORE INSERT ON victim FOR EACH ROW SET NEW.id = NEW.id",
];

/// A private server of this run's flavour, writing its general log to `mysql.general_log`.
enum Private {
    MariaDb(MariaDb),
    MySql(MySql),
}

impl Private {
    fn root_sql(&self, sql: &str) -> anyhow::Result<String> {
        match self {
            Private::MariaDb(server) => server.info.root_sql(sql),
            Private::MySql(server) => server.root_sql(sql),
        }
    }

    fn dsn(&self, database: &str) -> String {
        match self {
            Private::MariaDb(server) => server.info.dsn(database),
            Private::MySql(server) => server.dsn(database),
        }
    }
}

/// A private server of this run's flavour whose general log records every statement, with
/// database `hostile` set up with [`SETUP`].
async fn server_with_general_log(dir: &Path) -> (Private, TestDatabase) {
    let server = match servers::flavour() {
        servers::Flavour::MariaDb => {
            Private::MariaDb(MariaDb::start_with(&dir.join("server"), "").unwrap())
        }
        servers::Flavour::MySql => Private::MySql(MySql::start().unwrap()),
    };
    server
        .root_sql("SET GLOBAL log_output = 'TABLE'; SET GLOBAL general_log = 'ON'")
        .unwrap();
    server.root_sql("CREATE DATABASE hostile").unwrap();
    let database = TestDatabase {
        name: "hostile".to_owned(),
        dsn: server.dsn("hostile"),
    };
    let mut connection = database.connect().await.unwrap();
    for statement in SETUP {
        connection
            .query_drop(shoal_tests::scenario::portable(statement))
            .await
            .unwrap();
    }
    (server, database)
}

/// Every statement the server received so far, one per line.
async fn general_log(database: &TestDatabase) -> String {
    let mut connection = database.connect().await.unwrap();
    let statements: Vec<String> = connection
        .query(
            "SELECT CONVERT(argument USING utf8mb4) FROM mysql.general_log \
             WHERE command_type IN ('Query', 'Execute', 'Prepare')",
        )
        .await
        .unwrap();
    statements.join("\n")
}

/// What a refusal must leave as it was: the tables, their definitions, the triggers, and the
/// checksum of each table but `t` (a writer may be changing `t`: its rows are checked against
/// the writer's ledger).
async fn state(database: &TestDatabase) -> (Vec<String>, Vec<String>, Vec<String>, Vec<i64>) {
    let mut connection = database.connect().await.unwrap();
    let names = tables(&mut connection, &database.name).await;
    let mut definitions = Vec::new();
    let mut checksums = Vec::new();
    for name in &names {
        definitions.push(show_create(database, name).await);
        if name != "t" {
            let checksum: Option<(String, Option<i64>)> = connection
                .query_first(format!("CHECKSUM TABLE {}", quote_identifier(name)))
                .await
                .unwrap();
            checksums.push(checksum.and_then(|(_, sum)| sum).unwrap_or(-1));
        }
    }
    let triggers: Vec<String> = connection
        .exec(
            "SELECT CONCAT(TRIGGER_NAME, ' ', EVENT_OBJECT_TABLE, ' ', ACTION_STATEMENT) \
             FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY TRIGGER_NAME",
            (&database.name,),
        )
        .await
        .unwrap();
    (names, definitions, triggers, checksums)
}

/// Rows of `t` as (id, a, b).
type Rows = BTreeMap<i32, (Option<i32>, i32)>;

async fn rows_of_t(database: &TestDatabase) -> Rows {
    let mut connection = database.connect().await.unwrap();
    let rows: Vec<(i32, Option<i32>, i32)> = connection
        .query("SELECT id, a, b FROM t ORDER BY id")
        .await
        .unwrap();
    rows.into_iter().map(|(id, a, b)| (id, (a, b))).collect()
}

/// A writer on `t` for the length of a test.
struct WriterOnT {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Rows>,
}

impl WriterOnT {
    async fn start(database: &TestDatabase) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(write_t(
            database.clone(),
            rows_of_t(database).await,
            stop.clone(),
        ));
        Self { stop, task }
    }

    /// Stops it and checks that `t` holds exactly what it wrote.
    async fn finish(self, database: &TestDatabase) {
        self.stop.cancel();
        let expected = self.task.await.unwrap();
        assert_eq!(rows_of_t(database).await, expected, "the writer's rows");
    }
}

/// Updates and inserts rows of `t` until `stop`, keeping what `t` must then hold.
async fn write_t(database: TestDatabase, mut expected: Rows, stop: CancellationToken) -> Rows {
    let mut connection = database.connect().await.unwrap();
    let mut random = SplitMix::new(7);
    let mut next_id = expected.keys().max().copied().unwrap_or(0) + 1;
    while !stop.is_cancelled() {
        if random.below(10) == 0 {
            connection
                .exec_drop("INSERT INTO t (id, a, b) VALUES (?, NULL, 0)", (next_id,))
                .await
                .unwrap();
            expected.insert(next_id, (None, 0));
            next_id += 1;
        } else {
            let id = 1 + i32::try_from(random.below(500)).unwrap();
            connection
                .exec_drop("UPDATE t SET b = b + 1 WHERE id = ?", (id,))
                .await
                .unwrap();
            if let Some((_, b)) = expected.get_mut(&id) {
                *b += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    expected
}

/// `shoal --coordinator <url> <command> --target local <extra…> --alter <alter>` (the Plan or
/// Submit RPC) must be refused with `expected` in its output.
async fn rpc_refused(url: &str, command: &str, extra: &[&str], alter: &str, expected: &str) {
    let mut args: Vec<String> = ["--coordinator", url, command, "--target", "local"]
        .map(str::to_owned)
        .to_vec();
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    args.extend(["--alter".to_owned(), alter.to_owned()]);
    let process = ShoalProcess::spawn("shoal-cli", "shoal", &args, &[]).unwrap();
    exits_refused(
        process,
        &format!("{command} RPC {extra:?} {alter}"),
        expected,
    )
    .await;
}

async fn exits_refused(mut process: ShoalProcess, what: &str, expected: &str) {
    let status = process.wait_exit(Duration::from_secs(120)).await.unwrap();
    let logs = process.logs();
    assert!(!status.success(), "{what}: accepted:\n{logs}");
    assert!(
        logs.contains(expected),
        "{what}: no {expected:?} in:\n{logs}"
    );
}

fn coordinator_options(database: &TestDatabase) -> CoordinatorOptions {
    let servers = servers::shared();
    CoordinatorOptions {
        redis_url: Some(servers.redis.url()),
        namespace: servers.redis_namespace("hostile"),
        worker_ttl: Duration::from_secs(3),
        env: vec![("SHOAL_TARGET_LOCAL", database.dsn.clone())],
        args: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_alters_are_refused_at_every_entry_point_and_never_reach_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, database) = server_with_general_log(dir.path()).await;
    let before = state(&database).await;
    let writer = WriterOnT::start(&database).await;
    let coordinator = CoordinatorProcess::start("coordinator", &coordinator_options(&database))
        .await
        .unwrap();
    let cases = [
        // The server reads `--1` as minus minus one, not as a comment.
        (
            "ALTER TABLE t ADD COLUMN x INT DEFAULT (1--1); DROP TABLE victim; #",
            "pass exactly one statement",
        ),
        (
            "ALTER TABLE t ADD COLUMN x INT /*!, RENAME TO t_renamed */",
            "executable comment",
        ),
        (
            "ALTER TABLE t /*!100000 CHANGE a a_renamed INT NULL */",
            "executable comment",
        ),
        (
            "ALTER TABLE t ADD COLUMN x INT /*M!100000 , DROP COLUMN b */",
            "executable comment",
        ),
        (
            "ALTER TABLE t DROP COLUMN b, ADD COLUMN (b INT NOT NULL DEFAULT 0)",
            "drops column `b` and adds it again",
        ),
    ];
    for (alter, expected) in cases {
        let local_env = [("SHOAL_DSN", database.dsn.clone())];
        for command in ["run", "plan"] {
            let args: Vec<String> = [command, "--alter", alter, "--no-instant"]
                .iter()
                .filter(|arg| command == "run" || **arg != "--no-instant")
                .map(|arg| (*arg).to_owned())
                .collect();
            let process = ShoalProcess::spawn("shoal", "shoal", &args, &local_env).unwrap();
            exits_refused(process, &format!("shoal {command} {alter}"), expected).await;
        }
        for command in ["plan", "submit"] {
            rpc_refused(&coordinator.url, command, &[], alter, expected).await;
        }
    }
    assert_eq!(state(&database).await, before, "the server is as it was");
    let log = general_log(&database).await;
    for fragment in [
        "victim;",
        "DROP TABLE victim",
        "t_renamed",
        "a_renamed",
        "DROP COLUMN b",
    ] {
        assert!(
            !log.contains(fragment),
            "the server received {fragment:?}:\n{log}"
        );
    }
    coordinator.process.assert_no_error_logs();
    // The second line of defence, for text the vetting would let through: the prepared
    // protocol, on which shoal sends every user text, cannot carry a second statement.
    let mut connection = database.connect().await.unwrap();
    let second = connection
        .exec_drop("ALTER TABLE t ADD COLUMN x INT; DROP TABLE victim", ())
        .await;
    assert!(second.is_err(), "a prepared statement ran two statements");
    assert_eq!(state(&database).await, before, "the server is as it was");
    writer.finish(&database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailing_comment_cannot_swallow_the_instant_guard() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, database) = server_with_general_log(dir.path()).await;
    let mut connection = database.connect().await.unwrap();
    let expected: Vec<(i32, Option<i32>, i32)> = connection
        .query("SELECT id, a, b FROM t ORDER BY id")
        .await
        .unwrap();
    // INT -> BIGINT cannot run INSTANT on MariaDB: the server must refuse the INSTANT attempt,
    // not run its own blocking copy because the guard was commented out.
    for (label, alter) in [
        ("dash", "ALTER TABLE t MODIFY a BIGINT NULL -- widen"),
        (
            "hash",
            "ALTER TABLE t MODIFY b BIGINT NOT NULL DEFAULT 0 # widen",
        ),
    ] {
        let args: Vec<String> = ["run", "--alter", alter].map(str::to_owned).to_vec();
        let env = [("SHOAL_DSN", database.dsn.clone())];
        let mut run = ShoalProcess::spawn("shoal-run", "shoal", &args, &env).unwrap();
        let status = run.wait_exit(Duration::from_secs(300)).await.unwrap();
        let logs = run.logs();
        assert!(status.success(), "{label}:\n{logs}");
        assert!(
            logs.contains("INSTANT refused (the operation cannot be done instantly); copying"),
            "{label}:\n{logs}"
        );
        assert!(!logs.contains("no copy needed"), "{label}:\n{logs}");
    }
    let rows: Vec<(i32, Option<i32>, i32)> = connection
        .query("SELECT id, a, b FROM t ORDER BY id")
        .await
        .unwrap();
    assert_eq!(rows, expected);
    let create = show_create(&database, "t").await;
    assert!(create.contains("`a` bigint DEFAULT NULL"), "{}", create);
    assert!(
        // MySQL quotes the default.
        create.contains("`b` bigint NOT NULL DEFAULT 0")
            || create.contains("`b` bigint NOT NULL DEFAULT '0'"),
        "{}",
        create
    );
    let log = general_log(&database).await;
    assert!(
        !log.contains("widen, ALGORITHM=INSTANT"),
        "the guard was commented out:\n{log}"
    );
    assert!(log.contains("ALGORITHM=INSTANT, MODIFY a BIGINT"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_name_never_becomes_part_of_the_connection_url() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, database) = server_with_general_log(dir.path()).await;
    let before = state(&database).await;
    let writer = WriterOnT::start(&database).await;
    // A socket that would receive the target's credentials if the name reached the URL.
    let socket = dir.path().join("trap.sock");
    let trap = tokio::net::UnixListener::bind(&socket).unwrap();
    let coordinator = CoordinatorProcess::start("coordinator", &coordinator_options(&database))
        .await
        .unwrap();
    let hostile = format!("hostile?socket={}", socket.display());
    for schema in [hostile.as_str(), "hostile#", "hostile?require_ssl=false"] {
        for command in ["plan", "submit"] {
            rpc_refused(
                &coordinator.url,
                command,
                &["--schema", schema],
                "ALTER TABLE t ADD COLUMN x INT",
                &format!("schema `{schema}` does not exist"),
            )
            .await;
        }
    }
    let accepted = tokio::time::timeout(Duration::from_millis(200), trap.accept()).await;
    assert!(accepted.is_err(), "a connection reached the trap socket");
    assert_eq!(state(&database).await, before);
    writer.finish(&database).await;
    let logs = coordinator.process.logs();
    assert!(
        !logs.contains(shoal_tests::mariadb::TEST_PASSWORD),
        "{logs}"
    );
}

/// The resume entry point: a coordinator rebuilding its fleet's migrations from their MySQL
/// checkpoints (after Redis lost everything) finds a checkpoint holding a hostile statement (as
/// an older version could have written, or anyone who can write the table): the statement is
/// vetted like any other and never reaches the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_statement_in_a_checkpoint_is_refused_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, database) = server_with_general_log(dir.path()).await;
    let redis = RedisServer::start(&dir.path().join("redis")).unwrap();
    let namespace = "hostile_resume";
    let hostile = "ALTER TABLE t ADD COLUMN x INT DEFAULT (1--1); DROP TABLE victim; #";
    let detail = serde_json::json!({
        "migration_id": "t-0badc0de",
        "state": "CopyRows",
        "spec": {"target": "local", "threads": 1, "chunk_rows": 1000, "copy_mode": "Server",
                 "keep_old_table": false, "defer_cutover": false},
        "intents": {"paused": false, "threads": 1, "released": false},
        "source": {"server_id": 1, "hostname": "db"},
        "plan": null,
        "cutover": "NotStarted",
        "owner": "an-older-coordinator",
        "fleet": namespace,
        "owner_connections": [],
        "rows_copied": 0
    });
    let mut connection = database.connect().await.unwrap();
    connection
        .query_drop(
            "CREATE TABLE _t_chkpnt (id INT NOT NULL PRIMARY KEY, \
             copier_watermark BIGINT UNSIGNED NOT NULL, checksum_watermark BIGINT UNSIGNED NOT NULL, \
             binlog_name VARCHAR(255) NOT NULL, binlog_pos BIGINT UNSIGNED NOT NULL, \
             statement TEXT NOT NULL, owner_epoch BIGINT UNSIGNED NOT NULL, detail LONGTEXT NOT NULL, \
             updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) DEFAULT CHARSET=utf8mb4",
        )
        .await
        .unwrap();
    connection
        .exec_drop(
            "INSERT INTO _t_chkpnt (id, copier_watermark, checksum_watermark, binlog_name, \
             binlog_pos, statement, owner_epoch, detail) VALUES (1, 0, 0, 'mariadb-bin.000001', 4, ?, 1, ?)",
            (hostile, detail.to_string()),
        )
        .await
        .unwrap();
    let before = state(&database).await;
    let writer = WriterOnT::start(&database).await;
    let options = CoordinatorOptions {
        redis_url: Some(redis.info.url()),
        namespace: namespace.to_owned(),
        worker_ttl: Duration::from_secs(3),
        env: vec![("SHOAL_TARGET_LOCAL", database.dsn.clone())],
        args: Vec::new(),
    };
    let coordinator = CoordinatorProcess::start("coordinator", &options)
        .await
        .unwrap();
    // Redis loses everything: the coordinator rebuilds from the checkpoints it finds.
    let client = redis::Client::open(redis.info.url()).unwrap();
    let mut redis_connection = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("FLUSHALL")
        .query_async(&mut redis_connection)
        .await
        .unwrap();
    shoal_tests::scenario::wait_for_log(
        &coordinator.process,
        "pass exactly one statement",
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(state(&database).await, before, "the server is as it was");
    writer.finish(&database).await;
    let log = general_log(&database).await;
    let sent: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("victim") && !line.contains("INSERT INTO _t_chkpnt"))
        // The test's own setup and state reads.
        .filter(|line| {
            ![
                "CREATE TABLE victim",
                "INSERT INTO victim",
                "CREATE TRIGGER victim_guard",
                "SHOW CREATE TABLE `victim`",
                "CHECKSUM TABLE `victim`",
            ]
            .iter()
            .any(|own| line.starts_with(own))
        })
        .collect();
    assert!(sent.is_empty(), "the server received: {sent:?}");
}
