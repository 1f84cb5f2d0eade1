//! Refusals: each bad input gets its own error naming the problem and the fix, and leaves the
//! server as it was — the same tables, each with the same `SHOW CREATE TABLE` and the same
//! `CHECKSUM TABLE`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use mysql_async::prelude::Queryable;
use shoal_tests::mariadb::MariaDb;
use shoal_tests::processes::ShoalProcess;
use shoal_tests::scenario::{
    ALTER, assert_migrated_exactly, expect_success, finish_writer, shoal_cli, shoal_run,
    start_fleet_coordinator, start_writer, tables, wait_for_log,
};
use shoal_tests::servers::{self, TestDatabase};

/// Every table of the database with its definition and checksum.
async fn snapshot(database: &TestDatabase) -> Vec<(String, String, Option<i64>)> {
    let mut connection = database.connect().await.unwrap();
    let tables = tables(&mut connection, &database.name).await;
    let mut found = Vec::new();
    for table in tables {
        let quoted = format!("`{}`", table.replace('`', "``"));
        // A view's row has more columns; its definition is the second either way.
        let create: mysql_async::Row = connection
            .query_first(format!("SHOW CREATE TABLE {quoted}"))
            .await
            .unwrap()
            .unwrap();
        let checksum: (String, Option<i64>) = connection
            .query_first(format!("CHECKSUM TABLE {quoted}"))
            .await
            .unwrap()
            .unwrap();
        found.push((table, create.get(1).unwrap(), checksum.1));
    }
    found
}

/// Sets the database up with `setup`, runs `shoal run --alter <alter>` and expects it to fail
/// with `expected` in its output and nothing changed.
async fn refused(label: &str, setup: &[&str], alter: &str, expected: &str) {
    let database = servers::shared().database(label).await.unwrap();
    refused_in(&database, label, setup, alter, expected).await;
}

/// [`refused`] in an existing database.
async fn refused_in(
    database: &TestDatabase,
    label: &str,
    setup: &[&str],
    alter: &str,
    expected: &str,
) {
    refused_with(database, label, setup, alter, &[], expected).await;
}

/// [`refused_in`] with `extra` flags for `shoal run`.
async fn refused_with(
    database: &TestDatabase,
    label: &str,
    setup: &[&str],
    alter: &str,
    extra: &[&str],
    expected: &str,
) {
    let mut connection = database.connect().await.unwrap();
    for statement in setup {
        connection
            .query_drop(shoal_tests::scenario::portable(statement))
            .await
            .unwrap();
    }
    let before = snapshot(database).await;
    let mut shoal = shoal_run(database, alter, extra, "");
    let status = shoal.wait_exit(Duration::from_secs(120)).await.unwrap();
    let logs = shoal.logs();
    assert!(!status.success(), "{label}: shoal accepted it:\n{logs}");
    assert!(
        logs.contains(expected),
        "{label}: the error does not say {expected:?}:\n{logs}"
    );
    assert_eq!(
        snapshot(database).await,
        before,
        "{label}: the refusal changed the schema or the data:\n{logs}"
    );
}

const TABLE: &str = "CREATE TABLE t (id INT NOT NULL PRIMARY KEY, a INT NULL)";
const ROWS: &str = "INSERT INTO t (id, a) SELECT seq, seq % 7 FROM seq_1_to_200";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_a_primary_key_is_refused() {
    refused(
        "no_pk",
        &["CREATE TABLE t (id INT NOT NULL, a INT)", ROWS],
        "ALTER TABLE t ADD COLUMN x INT",
        "has no primary key; shoal needs one",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_key_of_an_unsupported_type_is_refused() {
    refused(
        "double_pk",
        &[
            "CREATE TABLE t (id DOUBLE NOT NULL PRIMARY KEY, a INT)",
            ROWS,
        ],
        "ALTER TABLE t ADD COLUMN x INT",
        "includes `id` of type double",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_keys_on_or_to_the_table_are_refused() {
    refused(
        "fk_child",
        &[
            "CREATE TABLE p (id INT NOT NULL PRIMARY KEY)",
            "INSERT INTO p SELECT seq FROM seq_1_to_10",
            "CREATE TABLE t (id INT NOT NULL PRIMARY KEY, a INT NULL, CONSTRAINT fk_p FOREIGN KEY (a) REFERENCES p (id))",
            "INSERT INTO t SELECT seq, 1 + seq % 7 FROM seq_1_to_200",
        ],
        "ALTER TABLE t ADD COLUMN x INT",
        "has foreign key `fk_p` referencing",
    )
    .await;
    refused(
        "fk_parent",
        &[
            TABLE,
            ROWS,
            "CREATE TABLE c (id INT NOT NULL PRIMARY KEY, t_id INT, CONSTRAINT fk_t FOREIGN KEY (t_id) REFERENCES t (id))",
            "INSERT INTO c SELECT seq, seq FROM seq_1_to_50",
        ],
        "ALTER TABLE t ADD COLUMN x INT",
        "is referenced by foreign key `fk_t`",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_with_a_trigger_is_refused() {
    refused(
        "trigger",
        &[
            TABLE,
            ROWS,
            "CREATE TRIGGER t_bump BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1",
        ],
        "ALTER TABLE t ADD COLUMN x INT",
        "has trigger `t_bump`",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_shoal_cannot_run_are_refused() {
    let too_long = format!("ALTER TABLE t{} ADD x INT", "x".repeat(64));
    for (label, alter, expected) in [
        (
            "missing",
            "ALTER TABLE nope ADD COLUMN x INT",
            "does not exist; check the schema and the ALTER",
        ),
        ("not_alter", "DROP TABLE t", "not an ALTER TABLE statement"),
        (
            "two",
            "ALTER TABLE t ADD COLUMN x INT; DROP TABLE t",
            "pass exactly one statement",
        ),
        (
            "unparsable",
            "ALTER TABLE t ADD COLUMN (",
            "the server refused the ALTER",
        ),
        (
            "key_change",
            "ALTER TABLE t DROP PRIMARY KEY, ADD PRIMARY KEY (id, a)",
            "primary key",
        ),
        (
            "other_schema",
            "ALTER TABLE elsewhere.t ADD COLUMN x INT",
            "names schema `elsewhere`",
        ),
        (
            "emoji_name",
            "ALTER TABLE `cake🍰` ADD COLUMN x INT",
            "table name `cake🍰` holds U+1F370, outside the Basic Multilingual Plane",
        ),
        (
            "trailing_space",
            "ALTER TABLE `t ` ADD COLUMN x INT",
            "table name `t ` ends with a space",
        ),
        (
            "too_long",
            too_long.as_str(),
            "is 65 characters long; the servers allow 64",
        ),
        (
            "remove_partitioning",
            "ALTER TABLE t REMOVE PARTITIONING",
            "shoal does not change partitioning yet",
        ),
        (
            "partition_by",
            "ALTER TABLE t PARTITION BY HASH (id) PARTITIONS 2",
            "shoal does not change partitioning yet",
        ),
    ] {
        refused(label, &[TABLE, ROWS], alter, expected).await;
    }
}

/// A view is named as one, with what to do instead (it once read "has no primary key"); on
/// MariaDB a system-versioned table is refused (a copy would lose its history).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_or_a_versioned_table_is_refused_by_what_it_is() {
    refused(
        "view",
        &[TABLE, ROWS, "CREATE VIEW v AS SELECT id, a FROM t"],
        "ALTER TABLE v ADD COLUMN x INT",
        "is a view, not a table: a view has no rows of its own to copy",
    )
    .await;
    if servers::flavour() == servers::Flavour::MariaDb {
        refused(
            "versioned",
            &[
                "CREATE TABLE h (id INT NOT NULL PRIMARY KEY, a INT) WITH SYSTEM VERSIONING",
                "INSERT INTO h VALUES (1, 1)",
                "UPDATE h SET a = 2",
            ],
            "ALTER TABLE h ADD COLUMN x INT",
            "is system-versioned: a copy would keep only its current rows and lose its history",
        )
        .await;
    }
}

/// A password holding characters a URL reserves, written raw in the DSN, is refused with the
/// fix (percent-encoding), never shown; encoded, it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_password_with_url_characters_gets_the_percent_encoding_hint() {
    let database = servers::shared().database("raw_password").await.unwrap();
    let mut connection = database.connect().await.unwrap();
    for statement in [TABLE, ROWS] {
        connection
            .query_drop(shoal_tests::scenario::portable(statement))
            .await
            .unwrap();
    }
    let password = "p@ss:w/rd%";
    let user = format!("raw_{}", &database.name[database.name.len() - 8..]);
    shoal_tests::scenario::as_documented_account(&database, &user, password).await;
    let opts = mysql_async::Opts::from_url(&database.dsn).unwrap();
    let address = format!("127.0.0.1:{}", opts.tcp_port());
    let raw = TestDatabase {
        name: database.name.clone(),
        dsn: format!("mysql://{user}:{password}@{address}/{}", database.name),
    };
    let mut shoal = shoal_run(&raw, "ALTER TABLE t ADD COLUMN x INT", &[], "");
    let status = shoal.wait_exit(Duration::from_secs(60)).await.unwrap();
    let logs = shoal.logs();
    assert!(!status.success(), "{logs}");
    assert!(
        logs.contains("percent-encode them (@ as %40, : as %3A, / as %2F"),
        "{logs}"
    );
    assert!(!logs.contains("w/rd"), "the password was shown:\n{logs}");
    let encoded = TestDatabase {
        name: database.name.clone(),
        dsn: format!(
            "mysql://{user}:p%40ss%3Aw%2Frd%25@{address}/{}",
            database.name
        ),
    };
    let mut shoal = shoal_run(&encoded, "ALTER TABLE t ADD COLUMN x INT", &[], "");
    expect_success(&mut shoal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_schema_is_refused_and_not_created() {
    let database = servers::shared().database("schema_probe").await.unwrap();
    let missing = format!("{}_missing", database.name);
    let dsn = database
        .dsn
        .replace(&format!("/{}", database.name), &format!("/{missing}"));
    let absent = TestDatabase {
        name: missing.clone(),
        dsn,
    };
    let mut shoal = shoal_run(&absent, "ALTER TABLE t ADD COLUMN x INT", &[], "");
    let status = shoal.wait_exit(Duration::from_secs(60)).await.unwrap();
    let logs = shoal.logs();
    assert!(!status.success(), "{logs}");
    assert!(
        logs.contains(&format!("schema `{missing}` does not exist on the server")),
        "{logs}"
    );
    let mut connection = database.connect().await.unwrap();
    let found: Vec<String> = connection
        .exec(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (&missing,),
        )
        .await
        .unwrap();
    assert!(found.is_empty(), "the schema was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alter_of_another_table_than_the_one_named_is_refused() {
    let database = servers::shared().database("other_table").await.unwrap();
    let mut connection = database.connect().await.unwrap();
    connection.query_drop(TABLE).await.unwrap();
    connection
        .query_drop(shoal_tests::scenario::portable(ROWS))
        .await
        .unwrap();
    connection
        .query_drop("CREATE TABLE u (id INT NOT NULL PRIMARY KEY)")
        .await
        .unwrap();
    let before = snapshot(&database).await;
    let env = vec![("SHOAL_TARGET_LOCAL", database.dsn.clone())];
    let coordinator = start_fleet_coordinator("other_table", env).await;
    let refused = coordinator
        .migration_client()
        .await
        .unwrap()
        .submit_migration(shoal_proto::v1::SubmitMigrationRequest {
            spec: Some(shoal_proto::v1::MigrationSpec {
                table: Some(shoal_proto::v1::TableRef {
                    target: "local".to_owned(),
                    schema: String::new(),
                    table: "u".to_owned(),
                }),
                alter_statement: "ALTER TABLE t ADD COLUMN x INT".to_owned(),
                options: None,
            }),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused
            .message()
            .contains("the ALTER alters table `t` but the request names table `u`"),
        "{refused:?}"
    );
    assert_eq!(snapshot(&database).await, before, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_and_overlong_names_are_refused() {
    refused(
        "leftover",
        &[TABLE, ROWS, "CREATE TABLE _t_new (id INT PRIMARY KEY)"],
        "ALTER TABLE t ADD COLUMN x INT",
        "already exists (left by an earlier run?)",
    )
    .await;
    let long = "t".repeat(60);
    refused(
        "long_name",
        &[&format!(
            "CREATE TABLE {long} (id INT NOT NULL PRIMARY KEY)"
        )],
        &format!("ALTER TABLE {long} ADD COLUMN x INT"),
        "is too long for shoal's helper tables",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_migration_of_a_table_is_refused_while_the_first_runs() {
    let database = servers::shared().database("second").await.unwrap();
    let mut connection = database.connect().await.unwrap();
    connection.query_drop(TABLE).await.unwrap();
    connection
        .query_drop(shoal_tests::scenario::portable(ROWS))
        .await
        .unwrap();
    let alter = "ALTER TABLE t ADD COLUMN x INT";
    let mut first = shoal_run(&database, alter, &[], "checksum.before=1*sleep(8000)");
    wait_for_log(&first, "failpoint hit", Duration::from_secs(60)).await;
    // The first sleeps before its checksum: nothing changes until it wakes.
    let before = snapshot(&database).await;
    let mut second = shoal_run(&database, alter, &[], "");
    let status = second.wait_exit(Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        snapshot(&database).await,
        before,
        "the refused second migration changed nothing"
    );
    assert!(
        !status.success(),
        "a second migration ran:\n{}",
        second.logs()
    );
    assert!(
        second.logs().contains("another migration of `"),
        "the refusal does not name the running migration:\n{}",
        second.logs()
    );
    expect_success(&mut first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_over_the_per_server_cap_is_refused_until_a_slot_frees() {
    let first_db = servers::shared().database("cap_first").await.unwrap();
    let second_db = servers::shared().database("cap_second").await.unwrap();
    for database in [&first_db, &second_db] {
        let mut connection = database.connect().await.unwrap();
        connection.query_drop(TABLE).await.unwrap();
        connection
            .query_drop(shoal_tests::scenario::portable(ROWS))
            .await
            .unwrap();
    }
    let alter = "ALTER TABLE t ADD COLUMN x INT";
    let cap = ["--max-concurrent-migrations", "1"];
    let mut first = shoal_run(&first_db, alter, &cap, "checksum.before=1*sleep(8000)");
    wait_for_log(&first, "failpoint hit", Duration::from_secs(60)).await;
    let before = snapshot(&second_db).await;
    let mut second = shoal_run(&second_db, alter, &cap, "");
    let status = second.wait_exit(Duration::from_secs(60)).await.unwrap();
    let logs = second.logs();
    assert!(
        !status.success(),
        "a second migration ran over the cap:\n{logs}"
    );
    assert!(
        logs.contains("this server already runs 1 shoal migration(s), the cap"),
        "{logs}"
    );
    assert_eq!(
        snapshot(&second_db).await,
        before,
        "the refusal changed nothing"
    );
    expect_success(&mut first).await;
    // The slot is free again.
    let mut third = shoal_run(&second_db, alter, &cap, "");
    expect_success(&mut third).await;
}

/// Binlog events written since `from` (file, position) that name `database`.
async fn binlog_events_naming(database: &TestDatabase, from: &(String, u64)) -> Vec<String> {
    let mut connection = database.connect().await.unwrap();
    // MySQL adds a third column (`Encrypted`): the name is the first on both.
    let rows: Vec<mysql_async::Row> = connection.query("SHOW BINARY LOGS").await.unwrap();
    let logs: Vec<String> = rows.iter().filter_map(|row| row.get(0)).collect();
    let mut found = Vec::new();
    for file in logs.iter().filter(|file| **file >= from.0) {
        let start = if *file == from.0 { from.1 } else { 4 };
        let events: Vec<mysql_async::Row> = connection
            .query(format!("SHOW BINLOG EVENTS IN '{file}' FROM {start}"))
            .await
            .unwrap();
        for event in events {
            let info: String = event.get("Info").unwrap_or_default();
            if info.contains(&database.name) {
                found.push(info);
            }
        }
    }
    found
}

async fn binlog_position(database: &TestDatabase) -> (String, u64) {
    let mut connection = database.connect().await.unwrap();
    let status: mysql_async::Row = connection
        .query_first(shoal_tests::scenario::binlog_status())
        .await
        .unwrap()
        .unwrap();
    (status.get(0).unwrap(), status.get(1).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_prints_the_plan_and_changes_nothing() {
    let database = servers::shared().database("plan").await.unwrap();
    let mut connection = database.connect().await.unwrap();
    for statement in [TABLE, ROWS, "CREATE TABLE no_key (id INT NOT NULL, a INT)"] {
        connection
            .query_drop(shoal_tests::scenario::portable(statement))
            .await
            .unwrap();
    }
    let before = snapshot(&database).await;
    let position = binlog_position(&database).await;
    let alter =
        "ALTER TABLE t ADD COLUMN x INT NOT NULL DEFAULT 7, DROP COLUMN a, ADD INDEX ix (x)";
    let args: Vec<String> = ["plan", "--alter", alter].map(str::to_owned).to_vec();
    let env = [("SHOAL_DSN", database.dsn.clone())];
    let mut local = ShoalProcess::spawn("shoal-plan", "shoal", &args, &env).unwrap();
    let status = local.wait_exit(Duration::from_secs(120)).await.unwrap();
    let printed = local.logs();
    assert!(status.success(), "{printed}");
    let printed = shoal_tests::scenario::without_int_widths(&printed);
    for expected in [
        "CREATE TABLE `t` (",
        "`x` int NOT NULL DEFAULT ", // MySQL quotes the 7, MariaDB does not
        "id <- id",
        "x <- (its default, or generated by the server)",
        "WARNING  column_dropped: column `a` of",
        "INFO     copy_path: ALGORITHM=INSTANT is tried first",
        "INFO     secondary_indexes: the copy runs without the secondary indexes `ix` of the new table",
        "estimated rows 200, first-pass chunks 1",
    ] {
        assert!(printed.contains(expected), "no {expected:?} in:\n{printed}");
    }

    // The same through a coordinator (PlanMigration), and a refusal.
    let env = vec![("SHOAL_TARGET_LOCAL", database.dsn.clone())];
    let coordinator = start_fleet_coordinator("plan", env).await;
    let printed = shoal_cli(
        &coordinator.url,
        &[
            "--output", "json", "plan", "--target", "local", "--alter", alter,
        ],
    )
    .await;
    let json: serde_json::Value =
        serde_json::from_str(&printed[printed.find('{').unwrap()..printed.rfind('}').unwrap() + 1])
            .unwrap();
    assert_eq!(json["estimated_rows"], 200, "{json}");
    assert_eq!(json["columns"][1]["new_column"], "x", "{json}");
    assert_eq!(json["columns"][1]["source_column"], "", "{json}");
    let refused_args: Vec<String> = [
        "--coordinator",
        &coordinator.url,
        "plan",
        "--target",
        "local",
        "--alter",
        "ALTER TABLE no_key ADD COLUMN x INT",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut refusal = ShoalProcess::spawn("shoal-plan", "shoal", &refused_args, &[]).unwrap();
    let status = refusal.wait_exit(Duration::from_secs(120)).await.unwrap();
    let printed = refusal.logs();
    assert!(!status.success(), "{printed}");
    assert!(
        printed.contains("REFUSAL  refused: table") && printed.contains("has no primary key"),
        "{printed}"
    );

    assert_eq!(
        snapshot(&database).await,
        before,
        "the plan changed nothing"
    );
    let written = binlog_events_naming(&database, &position).await;
    assert!(
        written.is_empty(),
        "the plan wrote to the binlog: {written:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_without_binlog_privileges_is_refused_naming_them() {
    let database = servers::shared().database("no_binlog_grant").await.unwrap();
    let mut connection = database.connect().await.unwrap();
    // An account with every privilege on the schema and none on *.* (no binlog access).
    let user = database.name.clone();
    connection
        .query_drop(format!(
            "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY 'limited-test-password'"
        ))
        .await
        .unwrap();
    connection
        .query_drop(format!(
            "GRANT ALL PRIVILEGES ON `{user}`.* TO '{user}'@'127.0.0.1'"
        ))
        .await
        .unwrap();
    let limited = TestDatabase {
        name: database.name.clone(),
        dsn: format!(
            "mysql://{user}:limited-test-password@127.0.0.1:{}/{user}",
            servers::shared().mariadb.port
        ),
    };
    refused_in(
        &limited,
        "no_binlog_grant",
        &[TABLE, ROWS],
        "ALTER TABLE t ADD COLUMN x INT",
        &format!(
            "the account '{user}'@'127.0.0.1' lacks privileges shoal needs: REPLICATION SLAVE, \
             BINLOG MONITOR, PROCESS; grant them"
        ),
    )
    .await;
    connection
        .query_drop(format!("DROP USER '{user}'@'127.0.0.1'"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_settings_shoal_cannot_read_are_each_refused() {
    // A private server: these are global settings every test's migrations depend on.
    let dir = tempfile::tempdir().unwrap();
    let server = MariaDb::start(&dir.path().join("binlog_on")).unwrap();
    server.info.root_sql("CREATE DATABASE settings").unwrap();
    let database = TestDatabase {
        name: "settings".to_owned(),
        dsn: server.info.dsn("settings"),
    };
    let alter = "ALTER TABLE t ADD COLUMN x INT";
    let mut setup: &[&str] = &[TABLE, ROWS];
    for (label, global, expected) in [
        (
            "statement",
            "SET GLOBAL binlog_format = 'STATEMENT'",
            "binlog_format is STATEMENT; shoal needs ROW",
        ),
        (
            "minimal",
            "SET GLOBAL binlog_format = 'ROW'; SET GLOBAL binlog_row_image = 'MINIMAL'",
            "binlog_row_image is MINIMAL; shoal needs FULL",
        ),
        (
            "compressed",
            "SET GLOBAL binlog_row_image = 'FULL'; SET GLOBAL log_bin_compress = ON",
            "log_bin_compress=ON: compressed binlog events cannot be decoded",
        ),
    ] {
        server.info.root_sql(global).unwrap();
        refused_in(&database, label, setup, alter, expected).await;
        setup = &[];
    }
    drop(server);

    let off = MariaDb::start_with(&dir.path().join("binlog_off"), "skip-log-bin\n").unwrap();
    off.info.root_sql("CREATE DATABASE settings").unwrap();
    let database = TestDatabase {
        name: "settings".to_owned(),
        dsn: off.info.dsn("settings"),
    };
    refused_in(
        &database,
        "log_bin_off",
        &[TABLE, ROWS],
        alter,
        "the binary log is off (log_bin=OFF)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_clauses_shoal_cannot_run_exactly_are_refused() {
    for (label, alter, expected) in [
        (
            "rename_column",
            "ALTER TABLE t RENAME COLUMN a TO b",
            "RENAME COLUMN is not supported",
        ),
        (
            "change_column",
            "ALTER TABLE t CHANGE a b INT",
            "CHANGE COLUMN is not supported when it renames (`a` to `b`)",
        ),
        (
            "rename_table",
            "ALTER TABLE t RENAME TO t2",
            "RENAME TO is not supported: rename the table with RENAME TABLE after the migration",
        ),
        (
            "algorithm",
            "ALTER TABLE t ADD COLUMN x INT, ALGORITHM=INPLACE",
            "ALGORITHM= / LOCK= is not supported",
        ),
        (
            "lock",
            "ALTER TABLE t ADD COLUMN x INT, LOCK=NONE",
            "ALGORITHM= / LOCK= is not supported",
        ),
        (
            "drop_and_add",
            "ALTER TABLE t DROP COLUMN a, ADD COLUMN a VARCHAR(8)",
            "the ALTER drops column `a` and adds it again",
        ),
    ] {
        refused(label, &[TABLE, ROWS], alter, expected).await;
    }
}

/// A small tmpfs mounted for one test (unmounted when dropped), where this machine allows it.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(path: &std::path::Path, size: &str) -> Option<Self> {
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|status| status.success());
        mounted.then(|| Self(path.to_owned()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_enough_free_disk_for_a_second_copy_and_its_binlog_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    // Declared before the server: dropped (unmounted) after it stops.
    let Some(_disk) = SmallDisk::mount(&disk, "512m") else {
        eprintln!("SKIPPED: this machine does not let the test mount a small tmpfs");
        return;
    };
    let server = MariaDb::start_with(
        &disk.join("server"),
        "innodb_log_file_size=16M\ninnodb_buffer_pool_size=64M\nplugin_load_add=disks\n",
    )
    .unwrap();
    server.info.root_sql("CREATE DATABASE disk").unwrap();
    let database = TestDatabase {
        name: "disk".to_owned(),
        dsn: server.info.dsn("disk"),
    };
    let batches: Vec<String> = (0..5)
        .map(|batch| {
            format!(
                "INSERT INTO t (id, a, pad) SELECT seq, seq % 7, REPEAT('x', 1000) \
                 FROM seq_{}_to_{}",
                batch * 30_000 + 1,
                (batch + 1) * 30_000
            )
        })
        .collect();
    let mut setup = vec![
        "CREATE TABLE t (id INT NOT NULL PRIMARY KEY, a INT NULL, pad VARCHAR(1000) NOT NULL)",
    ];
    setup.extend(batches.iter().map(String::as_str));
    setup.push("ANALYZE TABLE t");
    refused_in(
        &database,
        "free_disk",
        &setup,
        "ALTER TABLE t ADD COLUMN x INT",
        "not enough free disk: the copy needs about",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binlog_retention_shorter_than_the_estimate_warns_or_refuses_with_strict() {
    let dir = tempfile::tempdir().unwrap();
    let server = MariaDb::start_with(
        &dir.path().join("server"),
        // With the DISKS plugin: the free-disk check runs and passes.
        "binlog_expire_logs_seconds=1\nplugin_load_add=disks\n",
    )
    .unwrap();
    let (database, ledger) = shoal_tests::scenario::seeded_on(&server, "retention", 60_000).await;
    let mut connection = database.connect().await.unwrap();
    connection.query_drop("ANALYZE TABLE orders").await.unwrap();
    refused_with(
        &database,
        "retention",
        &[],
        ALTER,
        &["--strict"],
        "binlogs are kept 1 s (binlog_expire_logs_seconds), shorter than this migration's \
         estimated",
    )
    .await;
    let writer = start_writer(&database, ledger, 91).await;
    let mut run = shoal_run(&database, ALTER, &[], "");
    let log = expect_success(&mut run).await;
    assert!(
        log.contains("binlogs are kept 1 s") && log.contains("--strict refuses to start"),
        "the run warns:\n{log}"
    );
    assert!(
        !log.contains("free disk not checked"),
        "DISKS was read:\n{log}"
    );
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
}

/// Exactly the documented grants (per flavour) are enough for `shoal plan` and for a migration
/// under writers; without `CREATE TEMPORARY TABLES` the plan is refused naming that grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_grants_suffice_and_a_missing_one_is_named() {
    let (database, ledger) = shoal_tests::scenario::seeded("documented_grants", 5_000).await;
    let user = format!("doc_{}", &database.name[database.name.len() - 8..]);
    let limited =
        shoal_tests::scenario::as_documented_account(&database, &user, "documented-pw").await;
    let alter = ALTER;
    let plan = |dsn: &str| {
        let args: Vec<String> = ["plan", "--alter", alter].map(str::to_owned).to_vec();
        ShoalProcess::spawn(
            "shoal-plan",
            "shoal",
            &args,
            &[("SHOAL_DSN", dsn.to_owned())],
        )
        .unwrap()
    };
    let mut planned = plan(&limited.dsn);
    let status = planned.wait_exit(Duration::from_secs(120)).await.unwrap();
    assert!(status.success(), "{}", planned.logs());

    let writer = start_writer(&database, ledger, 43).await;
    let mut run = shoal_run(&limited, alter, &[], "");
    expect_success(&mut run).await;
    let (expected, _) = finish_writer(writer, 100).await;
    assert_migrated_exactly(&database, &expected).await;

    let mut connection = database.connect().await.unwrap();
    connection
        .query_drop(format!(
            "REVOKE CREATE TEMPORARY TABLES ON `{}`.* FROM '{user}'@'127.0.0.1'",
            database.name
        ))
        .await
        .unwrap();
    let before = snapshot(&database).await;
    let mut refused = plan(&limited.dsn);
    let status = refused.wait_exit(Duration::from_secs(120)).await.unwrap();
    let logs = refused.logs();
    assert!(!status.success(), "{logs}");
    assert!(
        logs.contains("shoal plan needs CREATE TEMPORARY TABLES on")
            && logs.contains("GRANT CREATE TEMPORARY TABLES ON"),
        "{logs}"
    );
    assert_eq!(snapshot(&database).await, before, "{logs}");
}

/// The free-disk check on the shared server of each flavour, through the database layer's rule:
/// MariaDB without the `disks` plugin and MySQL (no free space in SQL) both say it was not
/// checked, why, and which filesystems to look at; the run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchecked_free_disk_is_named_with_its_reason_on_each_server() {
    let (database, ledger) = shoal_tests::scenario::seeded("free_disk_unknown", 5_000).await;
    let writer = start_writer(&database, ledger, 47).await;
    let mut run = shoal_run(&database, ALTER, &[], "");
    let log = expect_success(&mut run).await;
    let reason = match servers::flavour() {
        servers::Flavour::MariaDb => {
            "free disk not checked (information_schema.DISKS is not available)"
        }
        servers::Flavour::MySql => "free disk not checked (MySQL exposes no free space in SQL)",
    };
    assert!(
        log.contains(reason) && log.contains("the datadir's filesystem ("),
        "{log}"
    );
    let (expected, _) = finish_writer(writer, 100).await;
    assert_migrated_exactly(&database, &expected).await;
}
