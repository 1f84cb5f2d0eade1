//! The harness gives tests a real MariaDB with the row binlog on, and a real Redis.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use mysql_async::prelude::Queryable;
use shoal_coordinator::store::conformance;
use shoal_coordinator::store::redis::{RedisWorkerRegistry, connect};
use shoal_tests::servers;

#[tokio::test]
async fn private_mariadb_has_the_row_binlog_with_full_images() {
    let database = servers::shared().database("binlog_settings").await.unwrap();
    let mut connection = database.connect().await.unwrap();
    let row: Option<(i64, String, String, i64)> = connection
        .query_first("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@server_id")
        .await
        .unwrap();
    let (log_bin, format, image, server_id) = row.expect("one row");
    assert_eq!(log_bin, 1, "log_bin must be ON");
    assert_eq!(format, "ROW");
    assert_eq!(image, "FULL");
    assert_ne!(server_id, 0, "the binlog needs a server id");
    // Writes really reach the binlog.
    connection
        .query_drop("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    let before: Option<(String, u64)> = connection
        .query_first(shoal_tests::scenario::binlog_status())
        .await
        .unwrap()
        .map(|row: mysql_async::Row| (row.get(0).unwrap(), row.get(1).unwrap()));
    connection
        .exec_drop("INSERT INTO t VALUES (?, ?)", (1, 2))
        .await
        .unwrap();
    let after: Option<(String, u64)> = connection
        .query_first(shoal_tests::scenario::binlog_status())
        .await
        .unwrap()
        .map(|row: mysql_async::Row| (row.get(0).unwrap(), row.get(1).unwrap()));
    let (before, after) = (
        before.expect("binlog status"),
        after.expect("binlog status"),
    );
    assert!(
        after > before,
        "an insert advances the binlog: {before:?} -> {after:?}"
    );
}

#[tokio::test]
async fn each_test_gets_its_own_database() {
    let servers = servers::shared();
    let first = servers.database("isolation").await.unwrap();
    let second = servers.database("isolation").await.unwrap();
    assert_ne!(first.name, second.name);
    let mut connection = first.connect().await.unwrap();
    let current: Option<String> = connection.query_first("SELECT DATABASE()").await.unwrap();
    assert_eq!(current.as_deref(), Some(first.name.as_str()));
}

#[tokio::test]
async fn redis_worker_registry_conforms() {
    let servers = servers::shared();
    let connection = connect(&servers.redis.url()).await.unwrap();
    let registry = RedisWorkerRegistry::new(connection, servers.redis_namespace("conformance"));
    conformance::worker_registry(&registry, |wait| tokio::time::sleep(wait)).await;
}

#[tokio::test]
async fn redis_has_no_persistence() {
    let servers = servers::shared();
    let client = redis::Client::open(servers.redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let save: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(save, vec!["save".to_owned(), String::new()]);
    let appendonly: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(appendonly, vec!["appendonly".to_owned(), "no".to_owned()]);
}

#[tokio::test]
async fn redis_task_store_conforms() {
    let servers = servers::shared();
    let connection = connect(&servers.redis.url()).await.unwrap();
    let namespace = servers.redis_namespace("task_conformance");
    let store =
        shoal_coordinator::store::redis_tasks::RedisTaskStore::new(connection, namespace.clone());
    conformance::task_store(&store, |wait| tokio::time::sleep(wait)).await;
    let url = servers.redis.url();
    conformance::task_store_owner_fence(&store, |migration, owner| async move {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let () = redis::cmd("SET")
            .arg(format!("{namespace}:m:{migration}:owner"))
            .arg(owner)
            .query_async(&mut connection)
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn redis_migration_store_conforms() {
    let servers = servers::shared();
    let connection = connect(&servers.redis.url()).await.unwrap();
    let store = shoal_coordinator::store::redis_migrations::RedisMigrationStore::new(
        connection,
        servers.redis_namespace("migration_conformance"),
    );
    conformance::migration_store(&store, |wait| tokio::time::sleep(wait)).await;
}
