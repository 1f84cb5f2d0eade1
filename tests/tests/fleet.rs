//! A real fleet: one coordinator and two worker processes over gRPC on TCP, Redis for the
//! registry, and the registry's liveness rules observed from outside through `ListWorkers`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::BTreeSet;
use std::time::Duration;

use nix::sys::signal::Signal;
use shoal_proto::v1;
use shoal_tests::processes::{
    CoordinatorOptions, CoordinatorProcess, ShoalProcess, http_get, http_get_with, start_worker,
};
use shoal_tests::{servers, wait};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// Registration TTL used by these tests: short, so expiry is observable quickly.
const WORKER_TTL: Duration = Duration::from_millis(1_500);
/// How often the tests poll ListWorkers.
const POLL: Duration = Duration::from_millis(50);

async fn listed_workers(coordinator: &CoordinatorProcess) -> BTreeSet<String> {
    let mut client = coordinator.migration_client().await.unwrap();
    client
        .list_workers(v1::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers
        .into_iter()
        .map(|worker| worker.worker_id)
        .collect()
}

async fn start_coordinator(label: &str) -> CoordinatorProcess {
    let servers = servers::shared();
    let options = CoordinatorOptions {
        redis_url: Some(servers.redis.url()),
        namespace: servers.redis_namespace(label),
        worker_ttl: WORKER_TTL,
        env: Vec::new(),
        args: Vec::new(),
    };
    CoordinatorProcess::start("coordinator", &options)
        .await
        .unwrap()
}

#[tokio::test]
async fn workers_register_expire_on_sigkill_and_leave_on_sigterm() {
    let coordinator = start_coordinator("fleet_liveness").await;
    let mut worker_a = start_worker("worker-a", &coordinator.url, 2, &[]).unwrap();
    let mut worker_b = start_worker("worker-b", &coordinator.url, 3, &[]).unwrap();
    let both: BTreeSet<String> = ["worker-a".to_owned(), "worker-b".to_owned()].into();

    wait::until(
        "both workers listed",
        Duration::from_secs(20),
        POLL,
        || async { (listed_workers(&coordinator).await == both).then_some(()) },
    )
    .await
    .unwrap();
    let mut client = coordinator.migration_client().await.unwrap();
    let workers = client
        .list_workers(v1::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    let slots: Vec<u32> = workers.iter().map(|worker| worker.slots).collect();
    assert_eq!(slots, vec![2, 3], "registrations carry each worker's slots");
    assert!(
        workers
            .iter()
            .all(|worker| worker.pid != 0 && !worker.hostname.is_empty())
    );

    // Both stay listed until each has heartbeated later than its TTL after registering: only
    // heartbeats can have kept them alive that long.
    wait::until("heartbeats past the TTL", WORKER_TTL * 4, POLL, || {
        let mut client = client.clone();
        async move {
            let workers = client
                .list_workers(v1::ListWorkersRequest {})
                .await
                .ok()?
                .into_inner()
                .workers;
            let refreshed = |worker: &v1::WorkerInfo| {
                let registered = worker.registered_at?;
                let last = worker.last_heartbeat_at?;
                let lived_ms = (last.seconds - registered.seconds) * 1_000
                    + i64::from(last.nanos - registered.nanos) / 1_000_000;
                Some(lived_ms > i64::try_from(WORKER_TTL.as_millis()).ok()?)
            };
            (workers.len() == 2 && workers.iter().all(|worker| refreshed(worker) == Some(true)))
                .then_some(())
        }
    })
    .await
    .unwrap();
    assert_eq!(
        listed_workers(&coordinator).await,
        both,
        "heartbeats keep workers registered"
    );

    // SIGKILL: no goodbye; the registration must expire within the TTL plus one poll interval.
    worker_a.signal(Signal::SIGKILL).unwrap();
    let (_, gone_after) = wait::until(
        "worker-a to disappear after SIGKILL",
        WORKER_TTL * 4,
        POLL,
        || async {
            let listed = listed_workers(&coordinator).await;
            assert!(
                listed.contains("worker-b"),
                "worker-b must stay listed: {listed:?}"
            );
            (!listed.contains("worker-a")).then_some(())
        },
    )
    .await
    .unwrap();
    // Gone by the TTL, not by something much later (a 2-core machine running a test pass
    // delays the polls: 1.61 s was seen against 1.5 s + two polls).
    assert!(
        gone_after <= WORKER_TTL * 2 + POLL * 2,
        "worker-a disappeared after {gone_after:?}; allowed: twice the TTL {WORKER_TTL:?} + two polls"
    );
    let killed = worker_a.wait_exit(Duration::from_secs(5)).await.unwrap();
    assert!(!killed.success());

    // SIGTERM: graceful; the worker deregisters itself within 1 s and exits 0.
    worker_b.signal(Signal::SIGTERM).unwrap();
    let (_, left_after) = wait::until(
        "worker-b to deregister after SIGTERM",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async { listed_workers(&coordinator).await.is_empty().then_some(()) },
    )
    .await
    .unwrap();
    assert!(
        left_after <= Duration::from_secs(1),
        "worker-b deregistered after {left_after:?}; allowed: 1 s"
    );
    let status = worker_b.wait_exit(Duration::from_secs(5)).await.unwrap();
    assert!(status.success(), "SIGTERM is a clean exit, got {status}");
    assert!(worker_b.logs().contains("deregistered"));

    worker_b.assert_no_error_logs();
    coordinator.process.assert_no_error_logs();
}

#[tokio::test]
async fn a_worker_registers_again_when_redis_loses_its_registration() {
    let servers = servers::shared();
    let namespace = servers.redis_namespace("fleet_reregister");
    let options = CoordinatorOptions {
        redis_url: Some(servers.redis.url()),
        namespace: namespace.clone(),
        worker_ttl: WORKER_TTL,
        env: Vec::new(),
        args: Vec::new(),
    };
    let coordinator = CoordinatorProcess::start("coordinator", &options)
        .await
        .unwrap();
    let worker = start_worker("worker-r", &coordinator.url, 1, &[]).unwrap();
    wait::until("worker-r listed", Duration::from_secs(20), POLL, || async {
        listed_workers(&coordinator)
            .await
            .contains("worker-r")
            .then_some(())
    })
    .await
    .unwrap();

    // Simulate Redis losing everything of this fleet.
    let client = redis::Client::open(servers.redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{namespace}:*"))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the registry lives under the namespace");
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(listed_workers(&coordinator).await.is_empty());

    // The next heartbeat is refused and the worker registers again, within one TTL.
    wait::until(
        "worker-r to register again",
        WORKER_TTL * 2,
        POLL,
        || async {
            listed_workers(&coordinator)
                .await
                .contains("worker-r")
                .then_some(())
        },
    )
    .await
    .unwrap();
    assert!(
        worker
            .logs()
            .contains("registration lost; registering again")
    );
    worker.assert_no_error_logs();
}

#[tokio::test]
async fn coordinator_serves_health_and_drains_on_sigterm() {
    let mut coordinator = start_coordinator("fleet_health").await;
    let channel = tonic::transport::Endpoint::from_shared(coordinator.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["shoal.v1.MigrationService", "shoal.v1.WorkService"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service}");
    }

    // A worker's open long poll must not hold up shutdown.
    let mut work = coordinator.work_client().await.unwrap();
    let poll = tokio::spawn(async move {
        work.acquire_task(v1::AcquireTaskRequest {
            worker_id: "poller".to_owned(),
            wait: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
        })
        .await
    });
    let held = wait::until(
        "the long poll to be open",
        Duration::from_secs(10),
        POLL,
        || async {
            coordinator
                .process
                .logs()
                .contains("long poll for a task")
                .then_some(())
        },
    )
    .await;
    if let Err(error) = held {
        panic!("{error}:\n{}", coordinator.process.logs());
    }
    coordinator.process.signal(Signal::SIGTERM).unwrap();
    let status = coordinator
        .process
        .wait_exit(Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        status.success(),
        "coordinator exits 0 on SIGTERM, got {status}"
    );
    let polled = poll.await.unwrap().unwrap().into_inner();
    assert!(polled.task.is_none(), "no task exists, the poll ends empty");
    coordinator.process.assert_no_error_logs();
}

#[tokio::test]
async fn work_service_refuses_bad_ids_and_unknown_tasks() {
    let coordinator = start_coordinator("fleet_refusals").await;
    let mut work = coordinator.work_client().await.unwrap();
    let refused = work
        .register_worker(v1::RegisterWorkerRequest {
            worker_id: "bad:id".to_owned(),
            hostname: "h".to_owned(),
            pid: 1,
            slots: 1,
            version: "t".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("worker_id"),
        "{}",
        refused.message()
    );

    let stale = work
        .complete_task(v1::CompleteTaskRequest {
            worker_id: "w".to_owned(),
            task_id: "t-1".to_owned(),
            lease_epoch: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        stale.code(),
        tonic::Code::NotFound,
        "INV-L1: no lease, no report applied"
    );
    coordinator.process.assert_no_error_logs();
}

#[tokio::test]
async fn a_coordinator_with_a_token_refuses_every_client_without_it() {
    let servers = servers::shared();
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("token");
    let token = "t0ken-for-the-fleet-test";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let token_path = token_file.display().to_string();
    let options = CoordinatorOptions {
        redis_url: Some(servers.redis.url()),
        namespace: servers.redis_namespace("fleet_token"),
        worker_ttl: WORKER_TTL,
        env: Vec::new(),
        args: vec!["--auth-token-file".to_owned(), token_path.clone()],
    };
    let coordinator = CoordinatorProcess::start("coordinator", &options)
        .await
        .unwrap();

    // gRPC without the token: refused, naming the fix; health checks stay open for probes.
    let refused = coordinator
        .migration_client()
        .await
        .unwrap()
        .list_workers(v1::ListWorkersRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(
        refused.message().contains("--auth-token-file"),
        "{refused:?}"
    );
    let refused = coordinator
        .work_client()
        .await
        .unwrap()
        .deregister_worker(v1::DeregisterWorkerRequest {
            worker_id: "w".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let channel = tonic::transport::Endpoint::from_shared(coordinator.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "shoal.v1.WorkService".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);
    // With the token: accepted.
    let bearer = shoal_proto::auth::BearerToken::new(shoal_proto::auth::Token::new(token));
    let mut client =
        v1::migration_service_client::MigrationServiceClient::with_interceptor(channel, bearer);
    client
        .list_workers(v1::ListWorkersRequest {})
        .await
        .unwrap();

    // A worker without the token cannot register; one with it can.
    let without = start_worker("worker-without", &coordinator.url, 1, &[]).unwrap();
    let with = start_worker(
        "worker-with",
        &coordinator.url,
        1,
        &[("SHOAL_AUTH_TOKEN_FILE", token_path.clone())],
    )
    .unwrap();
    wait::until(
        "worker-with to register",
        Duration::from_secs(20),
        POLL,
        || {
            let mut client = client.clone();
            async move {
                let workers = client
                    .list_workers(v1::ListWorkersRequest {})
                    .await
                    .ok()?
                    .into_inner()
                    .workers;
                workers
                    .iter()
                    .any(|worker| worker.worker_id == "worker-with")
                    .then_some(workers)
            }
        },
    )
    .await
    .unwrap();
    shoal_tests::scenario::wait_for_log(&without, "Unauthenticated", Duration::from_secs(10)).await;
    let workers = client
        .list_workers(v1::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert_eq!(
        workers.len(),
        1,
        "only the worker with the token: {workers:?}"
    );

    // The CLI: refused without the token (exit 1, the reason on stderr), accepted with it.
    let list = |extra: Vec<String>| {
        let mut args = vec!["--coordinator".to_owned(), coordinator.url.clone()];
        args.extend(extra);
        args.push("list".to_owned());
        ShoalProcess::spawn("shoal-list", "shoal", &args, &[]).unwrap()
    };
    let mut cli = list(Vec::new());
    let status = cli.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert_eq!(status.code(), Some(1), "{}", cli.logs());
    assert!(cli.logs().contains("bearer token"), "{}", cli.logs());
    let mut cli = list(vec!["--auth-token-file".to_owned(), token_path.clone()]);
    let status = cli.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert!(status.success(), "{}", cli.logs());
    assert!(cli.logs().contains("0 migration(s)"), "{}", cli.logs());

    // The status API: 401 without the token, 200 with it; /metrics stays open.
    let path = "/api/v1/migrations/statuses";
    let (code, _) = http_get(&coordinator.http_address, path).await.unwrap();
    assert_eq!(code, 401);
    let wrong = [("Authorization", "Bearer not-the-token")];
    let (code, _) = http_get_with(&coordinator.http_address, path, &wrong)
        .await
        .unwrap();
    assert_eq!(code, 401);
    let header = format!("Bearer {token}");
    let right = [("Authorization", header.as_str())];
    let (code, body) = http_get_with(&coordinator.http_address, path, &right)
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, _) = http_get(&coordinator.http_address, "/metrics")
        .await
        .unwrap();
    assert_eq!(code, 200);

    // The token is a secret: no process logged it.
    for process in [&coordinator.process, &without, &with] {
        assert!(
            !process.logs().contains(token),
            "{} logged the token",
            process.name
        );
    }
    coordinator.process.assert_no_error_logs();
}

/// A coordinator asked to listen beyond loopback with neither a bearer token nor client
/// certificates refuses to start, naming the open endpoint and the fixes; with
/// `--allow-unauthenticated` it starts and warns.
#[tokio::test]
async fn a_coordinator_open_beyond_loopback_needs_auth_or_the_explicit_flag() {
    let args = |extra: &[&str]| -> Vec<String> {
        ["--listen", "0.0.0.0:0", "--worker-ttl", "2s"]
            .iter()
            .chain(extra)
            .map(|arg| (*arg).to_owned())
            .collect()
    };
    let mut refused =
        ShoalProcess::spawn("coordinator-open", "shoal-coordinator", &args(&[]), &[]).unwrap();
    let status = refused.wait_exit(Duration::from_secs(30)).await.unwrap();
    let logs = refused.logs();
    assert!(!status.success(), "started open:\n{logs}");
    assert!(
        logs.contains("gRPC on 0.0.0.0:0")
            && logs.contains("--auth-token-file")
            && logs.contains("--allow-unauthenticated"),
        "{logs}"
    );

    // Allowed: it starts, warns, and every listing says so (the JSON status API on loopback, the
    // CLI's list over gRPC reaching the open port through loopback).
    let grpc = format!("0.0.0.0:{}", shoal_tests::system::free_port().unwrap());
    let http = format!("127.0.0.1:{}", shoal_tests::system::free_port().unwrap());
    let mut allowed = ShoalProcess::spawn(
        "coordinator-allowed",
        "shoal-coordinator",
        &[
            "--listen",
            &grpc,
            "--http",
            &http,
            "--allow-unauthenticated",
        ]
        .map(str::to_owned),
        &[],
    )
    .unwrap();
    let (body, _) = wait::until("the status API", Duration::from_secs(30), POLL, || async {
        http_get(&http, "/api/v1/migrations/statuses")
            .await
            .ok()
            .map(|(_, body)| body)
    })
    .await
    .unwrap_or_else(|error| panic!("{error}:\n{}", allowed.logs()));
    let document: serde_json::Value = serde_json::from_str(&body).unwrap();
    let warnings = document["warnings"].as_array().cloned().unwrap_or_default();
    assert!(
        warnings.len() == 1
            && warnings[0]
                .as_str()
                .is_some_and(|warning| warning.contains(&format!("gRPC on {grpc}"))
                    && warning.contains("--allow-unauthenticated")),
        "{body}"
    );
    assert!(
        allowed.logs().contains("listening without authentication"),
        "{}",
        allowed.logs()
    );
    let url = grpc.replace("0.0.0.0", "http://127.0.0.1");
    let mut list = ShoalProcess::spawn(
        "list-open",
        "shoal",
        &["--coordinator", &url, "list"].map(str::to_owned),
        &[],
    )
    .unwrap();
    assert!(
        list.wait_exit(Duration::from_secs(30))
            .await
            .unwrap()
            .success()
    );
    assert!(
        list.logs().contains("warning: gRPC on 0.0.0.0:")
            && list.logs().contains("without authentication"),
        "{}",
        list.logs()
    );
    assert!(
        allowed.try_exit_status().unwrap().is_none(),
        "{}",
        allowed.logs()
    );
    allowed.signal(Signal::SIGTERM).unwrap();
    allowed.wait_exit(Duration::from_secs(30)).await.unwrap();
}
