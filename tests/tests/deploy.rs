//! The parts of `deploy/` that can run here (Docker cannot): the compose demo's seed SQL on the
//! private MariaDB, and its ALTER through shoal's parser. The manifests themselves are
//! validated by `scripts/validate-deploy.sh` in `make test`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use mysql_async::prelude::Queryable;
use shoal_tests::servers;

fn repository_file(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap()
}

#[tokio::test]
async fn the_compose_demo_seeds_a_table_shoal_can_migrate() {
    let database = servers::shared().database("deploy_seed").await.unwrap();
    let mut connection = database.connect().await.unwrap();
    let seed = repository_file("deploy/compose/seed.sql");
    connection.query_drop(&seed).await.unwrap();
    let (rows, keys): (u64, u64) = connection
        .query_first("SELECT COUNT(*), COUNT(DISTINCT k) FROM orders")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((rows, keys), (100_000, 1_000));

    // The demo job's ALTER, as compose.yaml passes it to `shoal submit`.
    let compose = repository_file("deploy/compose/compose.yaml");
    let alter = compose
        .split("--alter '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap();
    let parsed = shoal_coordinator::migration::alter::parse(alter).unwrap();
    assert_eq!(parsed.table, "orders");
}
