//! TLS, mutual TLS and the bearer token, end to end: a coordinator that requires client
//! certificates and a token refuses clients and workers without them and serves those with
//! them; a migration runs over it under the writer and ends exact; the status API answers over
//! HTTPS only with the token; and the DSN password appears in no log line, status answer,
//! metric or span of the whole run.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::Path;
use std::time::Duration;

use shoal_tests::mariadb::TEST_PASSWORD;
use shoal_tests::otlp::OtlpReceiver;
use shoal_tests::processes::{ShoalProcess, start_worker};
use shoal_tests::scenario::{ALTER, assert_migrated_exactly, finish_writer, seeded, start_writer};
use shoal_tests::servers;
use shoal_tests::system::free_port;
use shoal_tests::tls::{TestPki, https_get};
use shoal_tests::wait;

fn path(path: &Path) -> String {
    path.display().to_string()
}

/// Runs the `shoal` CLI with `args` and `env`; returns whether it exited 0, and its output.
async fn cli(args: &[&str], env: &[(&str, String)]) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    let mut process = ShoalProcess::spawn("shoal-cli", "shoal", &args, env).unwrap();
    let status = process.wait_exit(Duration::from_secs(120)).await.unwrap();
    (status.success(), process.logs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_and_the_token_gate_every_client_and_no_password_leaks() {
    let pki = TestPki::generate().unwrap();
    let token_file = pki.dir.path().join("token");
    std::fs::write(&token_file, "tls-test-token-7f3a\n").unwrap();
    let receiver = OtlpReceiver::start().await.unwrap();
    let (database, ledger) = seeded("tls", 20_000).await;
    assert!(
        database.dsn.contains(TEST_PASSWORD),
        "the DSN carries a password to leak"
    );
    let writer = start_writer(&database, ledger, 81).await;

    let port = free_port().unwrap();
    let http = format!("127.0.0.1:{}", free_port().unwrap());
    let url = format!("https://127.0.0.1:{port}");
    let mut coordinator_env = vec![("SHOAL_TARGET_LOCAL", database.dsn.clone())];
    coordinator_env.extend(receiver.env());
    let args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--http",
        &http,
        "--redis",
        &servers::shared().redis.url(),
        "--namespace",
        &servers::shared().redis_namespace("tls"),
        "--id",
        "coordinator-tls",
        "--worker-ttl",
        "3s",
        "--auth-token-file",
        &path(&token_file),
        "--tls-cert",
        &path(&pki.server.0),
        "--tls-key",
        &path(&pki.server.1),
        "--tls-client-ca",
        &path(&pki.ca),
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    let coordinator =
        ShoalProcess::spawn("coordinator", "shoal-coordinator", &args, &coordinator_env).unwrap();

    // Everything a client needs, as environment (flags work the same).
    let credentials = |cert: &(std::path::PathBuf, std::path::PathBuf), token: bool| {
        let mut env = vec![
            ("SHOAL_COORDINATOR", url.clone()),
            ("SHOAL_TLS_CA", path(&pki.ca)),
            ("SHOAL_TLS_CERT", path(&cert.0)),
            ("SHOAL_TLS_KEY", path(&cert.1)),
        ];
        if token {
            env.push(("SHOAL_AUTH_TOKEN_FILE", path(&token_file)));
        }
        env
    };
    let full = credentials(&pki.client, true);
    wait::until(
        "the coordinator to serve over TLS",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { cli(&["workers"], &full).await.0.then_some(()) },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}; log:\n{}", coordinator.logs()));

    // Refused: no client certificate, a certificate from another CA, plaintext, no token.
    let no_cert = vec![
        ("SHOAL_COORDINATOR", url.clone()),
        ("SHOAL_TLS_CA", path(&pki.ca)),
        ("SHOAL_AUTH_TOKEN_FILE", path(&token_file)),
    ];
    let plaintext = vec![
        ("SHOAL_COORDINATOR", format!("http://127.0.0.1:{port}")),
        ("SHOAL_AUTH_TOKEN_FILE", path(&token_file)),
    ];
    for (label, env) in [
        ("no client certificate", no_cert),
        (
            "a certificate from another CA",
            credentials(&pki.rogue, true),
        ),
        ("plaintext", plaintext),
    ] {
        let (ok, output) = cli(&["workers"], &env).await;
        assert!(!ok, "{label}: accepted:\n{output}");
        assert!(
            output.contains("hint: the connection to"),
            "{label}: {output}"
        );
    }
    let (ok, output) = cli(&["workers"], &credentials(&pki.client, false)).await;
    assert!(
        !ok && output.contains("missing or wrong bearer token"),
        "{output}"
    );

    // Workers: one with a certificate registers; one without never does.
    let mut worker_env = credentials(&pki.client, true);
    worker_env.push(("SHOAL_TARGET_LOCAL", database.dsn.clone()));
    worker_env.extend(receiver.env());
    let worker = start_worker("worker-tls", &url, 2, &worker_env).unwrap();
    let mut stranger_env = vec![
        ("SHOAL_TLS_CA", path(&pki.ca)),
        ("SHOAL_AUTH_TOKEN_FILE", path(&token_file)),
        ("SHOAL_TARGET_LOCAL", database.dsn.clone()),
    ];
    stranger_env.extend(receiver.env());
    let stranger = start_worker("worker-no-cert", &url, 2, &stranger_env).unwrap();

    let (ok, submitted) = cli(
        &[
            "submit",
            "--target",
            "local",
            "--alter",
            ALTER,
            "--no-instant",
        ],
        &full,
    )
    .await;
    assert!(ok, "{submitted}");
    let id = shoal_tests::scenario::submitted_id(&submitted);
    let (ok, watched) = cli(&["watch", &id], &full).await;
    assert!(ok, "{watched}\ncoordinator:\n{}", coordinator.logs());
    let (expected, _) = finish_writer(writer, 200).await;
    assert_migrated_exactly(&database, &expected).await;
    let (_, workers) = cli(&["workers", "--output", "json"], &full).await;
    assert!(workers.contains("worker-tls"), "{workers}");
    assert!(!workers.contains("worker-no-cert"), "{workers}");

    // The status API: HTTPS with the token only.
    let bearer = "Bearer tls-test-token-7f3a";
    let status_path = format!("/api/v1/migrations/{id}/status");
    let (code, status_json) = https_get(&http, &status_path, &pki.ca, &[("authorization", bearer)])
        .await
        .unwrap();
    assert_eq!(code, 200, "{status_json}");
    assert!(
        status_json.contains(&id) && status_json.contains("COMPLETED"),
        "{status_json}"
    );
    let (code, _) = https_get(&http, &status_path, &pki.ca, &[]).await.unwrap();
    assert_eq!(code, 401, "no token, no status");
    assert!(
        shoal_tests::processes::http_get(&http, &status_path)
            .await
            .is_err()
            || shoal_tests::processes::http_get(&http, &status_path)
                .await
                .is_ok_and(|(code, _)| code != 200),
        "plaintext is not served"
    );
    let (_, metrics) = https_get(&http, "/metrics", &pki.ca, &[("authorization", bearer)])
        .await
        .unwrap();
    let (_, status_text) = cli(&["status", &id, "--output", "json"], &full).await;

    // No password anywhere: logs, status answers, metrics, spans.
    let spans = wait::until(
        "spans from the coordinator and the worker",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let spans = receiver.spans();
            let services: std::collections::HashSet<&str> =
                spans.iter().map(|span| span.service.as_str()).collect();
            (services.contains("shoal-coordinator") && services.contains("shoal-worker"))
                .then_some(spans)
        },
    )
    .await
    .unwrap()
    .0;
    let stranger_log = stranger.logs();
    assert!(
        stranger_log.contains("register with coordinator; retrying")
            && !stranger_log.contains(" registered"),
        "a worker without a certificate never registers:\n{stranger_log}"
    );
    for (what, text) in [
        ("coordinator log", coordinator.logs()),
        ("worker log", worker.logs()),
        ("refused worker log", stranger_log),
        (
            "CLI output",
            format!("{submitted}{watched}{workers}{status_text}"),
        ),
        ("status JSON", status_json),
        ("metrics", metrics),
        ("spans", format!("{spans:?}")),
    ] {
        assert!(
            !text.contains(TEST_PASSWORD),
            "the DSN password appears in the {what}"
        );
    }
}
