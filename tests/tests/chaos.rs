//! A short fault campaign in `make test` (the long one is `make chaos`): one seeded run with at
//! least five faults across the fleet, Redis and MySQL connections, under the writer, ending
//! with the migration completed, the table equal to the writer's ledger and nothing left behind.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use shoal_tests::chaos;
use shoal_tests::redis_server::RedisServer;
use shoal_tests::servers;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_seeded_campaign_loses_nothing() {
    // A private Redis: the campaign restarts it.
    let scratch = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start(&scratch.path().join("redis")).unwrap();
    let database = servers::shared().database("chaos_short").await.unwrap();
    let report = chaos::run_once(
        &database,
        &mut redis,
        200_000,
        5,
        0x5eed_0001,
        &chaos::Plan {
            classes: &chaos::Fault::SHARED_SERVER,
            shoal_dsn: None,
            late: None,
        },
    )
    .await
    .unwrap();
    chaos::summarize(std::slice::from_ref(&report));
    assert_eq!(
        report.faults.len(),
        5,
        "every fault was injected: {report:#?}"
    );
    assert!(report.survived(), "{report:#?}");
}
