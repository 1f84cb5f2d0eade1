//! What operators see: one OpenTelemetry trace per migration across the coordinator and the
//! workers (received over real OTLP/gRPC), the Prometheus metrics of coordinator and workers,
//! `shoal watch` on a pseudo-terminal and in a pipe, and `shoal status --output json` against
//! the HTTP status API. Every migration here runs under the writer and ends with an exact
//! comparison.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shoal_tests::otlp::{OtlpReceiver, ReceivedSpan};
use shoal_tests::processes::{ShoalProcess, bin_dir, http_get, start_worker};
use shoal_tests::scenario::{
    assert_migrated_exactly, finish_writer, seeded, start_fleet_coordinator, start_writer, submit,
    watch_to_completion,
};
use shoal_tests::system::free_port;
use shoal_tests::wait;

/// One sample of the Prometheus text format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format (the subset the exporter writes: no escapes in labels
/// other than the ones our label values never contain).
fn parse_metrics(text: &str) -> (BTreeSet<String>, Vec<Sample>) {
    let mut typed = BTreeSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split_whitespace().next().unwrap().to_owned());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.trim_end_matches('}');
                let parsed = labels
                    .split("\",")
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (key, value) = pair.split_once('=').unwrap();
                        (
                            key.to_owned(),
                            value.trim_matches('"').trim_end_matches('"').to_owned(),
                        )
                    })
                    .collect();
                (name.to_owned(), parsed)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    (typed, samples)
}

/// The value of `name` whose labels include every pair of `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(value))
        })
        .map(|sample| sample.value)
}

async fn scrape(address: &str) -> (BTreeSet<String>, Vec<Sample>) {
    let (code, body) = http_get(address, "/metrics").await.unwrap();
    assert_eq!(code, 200, "{body}");
    parse_metrics(&body)
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|span| span.name == name).collect();
    assert_eq!(found.len(), 1, "exactly one {name} span: {found:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_migration_is_one_trace_and_its_metrics_can_be_scraped() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let (database, ledger) = seeded("observability_trace", 100_000).await;
    let mut env = vec![("SHOAL_TARGET_LOCAL", database.dsn.clone())];
    env.extend(receiver.env());
    let coordinator = start_fleet_coordinator("observability_trace", env.clone()).await;
    let mut metrics_addresses = Vec::new();
    let mut workers = Vec::new();
    for name in ["worker-1", "worker-2"] {
        let address = format!("127.0.0.1:{}", free_port().unwrap());
        let mut worker_env = env.clone();
        worker_env.push(("SHOAL_HTTP", address.clone()));
        workers.push(start_worker(name, &coordinator.url, 2, &worker_env).unwrap());
        metrics_addresses.push(address);
    }
    let writer = start_writer(&database, ledger, 41).await;
    let id = submit(&coordinator.url, &["--threads", "4"]).await;

    // Live metrics while the copy runs.
    wait::until(
        "rows copied to show in /metrics",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            let (_, samples) = scrape(&coordinator.http_address).await;
            (value(&samples, "shoal_rows_copied", &[("migration", &id)])? > 0.0).then_some(())
        },
    )
    .await
    .unwrap();
    watch_to_completion(&coordinator, &id).await;
    let status = coordinator.status(&id).await.unwrap();
    let progress = status.progress.clone().unwrap();

    // Every documented coordinator metric is exported, and the figures match the status.
    let (typed, samples) = scrape(&coordinator.http_address).await;
    for (name, _) in shoal_coordinator::metrics::METRICS {
        assert!(
            typed.contains(name),
            "{name} missing from /metrics: {typed:?}"
        );
    }
    let of = |name: &str| value(&samples, name, &[("migration", &id)]);
    assert_eq!(
        value(
            &samples,
            "shoal_migration_state",
            &[("migration", &id), ("state", "close")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "shoal_migration_state",
            &[("migration", &id), ("state", "copy_rows")]
        ),
        Some(0.0)
    );
    assert_eq!(of("shoal_migration_running"), Some(0.0));
    assert_eq!(of("shoal_rows_copied"), Some(progress.rows_copied as f64));
    assert_eq!(
        value(
            &samples,
            "shoal_chunks_total",
            &[("migration", &id), ("outcome", "done")]
        ),
        Some(progress.chunks_done as f64),
        "one done chunk per drained chunk"
    );
    assert_eq!(
        value(
            &samples,
            "shoal_chunk_duration_seconds_count",
            &[("migration", &id)]
        ),
        Some(progress.chunks_done as f64)
    );
    assert!(
        of("shoal_changes_applied_total").unwrap() > 0.0,
        "the writer ran"
    );
    assert!(of("shoal_checksum_passes").unwrap() >= 1.0);
    assert!(of("shoal_cutover_lock_seconds").unwrap() > 0.0);
    assert!(of("shoal_binlog_file_number").unwrap() >= 1.0);

    // Each worker exports its own figures; together they copied every chunk.
    let mut done_by_workers = 0.0;
    for address in &metrics_addresses {
        let (typed, samples) = scrape(address).await;
        for (name, _) in shoal_worker::metrics::METRICS {
            assert!(
                typed.contains(name),
                "{name} missing from worker /metrics: {typed:?}"
            );
        }
        let done = value(
            &samples,
            "shoal_worker_chunks_total",
            &[("outcome", "done")],
        )
        .unwrap();
        assert!(done > 0.0, "both workers copied chunks");
        done_by_workers += done;
        assert_eq!(value(&samples, "shoal_worker_busy_slots", &[]), Some(0.0));
    }
    assert!(done_by_workers >= progress.chunks_done as f64);

    // One trace: the root span, its phases, and the workers' chunk spans inside the copy phase.
    let trace = wait::until(
        "the migration's spans to arrive",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let spans = receiver.spans();
            let root = spans.iter().find(|span| {
                span.name == "migration" && span.attributes.get("migration.id") == Some(&id)
            })?;
            let trace: Vec<ReceivedSpan> = spans
                .iter()
                .filter(|span| span.trace_id == root.trace_id)
                .cloned()
                .collect();
            let copies = trace
                .iter()
                .filter(|span| span.name == "chunk.copy")
                .count();
            (copies as u64 >= progress.chunks_done).then_some(trace)
        },
    )
    .await
    .unwrap()
    .0;
    let root = one(&trace, "migration");
    assert!(root.parent_span_id.is_empty(), "the root has no parent");
    assert_eq!(root.service, "shoal-coordinator");
    assert_eq!(root.attributes["outcome"], "completed");
    assert_eq!(root.attributes["db.collection.name"], "orders");
    assert_eq!(root.attributes["statement.digest"].len(), 16);
    for phase in [
        "phase.initial",
        "phase.copy_rows",
        "phase.apply_changeset",
        "phase.checksum",
        "phase.cut_over",
        "phase.close",
    ] {
        let span = one(&trace, phase);
        assert_eq!(
            span.parent_span_id, root.span_id,
            "{phase} is a child of the root"
        );
        assert_eq!(span.service, "shoal-coordinator");
    }
    let copy_phase = one(&trace, "phase.copy_rows");
    let checksum_phase = one(&trace, "phase.checksum");
    let cutover = one(&trace, "cutover");
    assert_eq!(
        cutover.parent_span_id,
        one(&trace, "phase.cut_over").span_id
    );
    let checksums: Vec<&ReceivedSpan> = trace
        .iter()
        .filter(|span| span.name == "chunk.checksum")
        .collect();
    assert!(!checksums.is_empty());
    assert!(
        checksums
            .iter()
            .all(|span| span.parent_span_id == checksum_phase.span_id)
    );
    let phase_ids: BTreeSet<&str> = trace
        .iter()
        .filter(|span| span.name.starts_with("phase."))
        .map(|span| span.span_id.as_str())
        .collect();
    let flushes: Vec<&ReceivedSpan> = trace
        .iter()
        .filter(|span| span.name == "binlog.flush")
        .collect();
    assert!(!flushes.is_empty(), "the writer's changes were flushed");
    assert!(
        flushes
            .iter()
            .all(|span| phase_ids.contains(span.parent_span_id.as_str()))
    );
    let copies: Vec<&ReceivedSpan> = trace
        .iter()
        .filter(|span| span.name == "chunk.copy")
        .collect();
    let mut worker_instances = BTreeSet::new();
    for span in &copies {
        assert_eq!(span.service, "shoal-worker", "{span:?}");
        assert_eq!(
            span.parent_span_id, copy_phase.span_id,
            "a chunk.copy span's parent is the copy phase: {span:?}"
        );
        assert_eq!(span.attributes["migration.id"], id);
        worker_instances.insert(span.instance.clone());
    }
    assert!(
        worker_instances.len() >= 2,
        "chunk spans from two worker processes: {worker_instances:?}"
    );
    // No span of this migration landed outside its trace.
    let strays: Vec<ReceivedSpan> = receiver
        .spans()
        .into_iter()
        .filter(|span| span.attributes.get("migration.id") == Some(&id))
        .filter(|span| span.trace_id != root.trace_id)
        .collect();
    assert!(strays.is_empty(), "spans outside the trace: {strays:#?}");

    let (expected, _stats) = finish_writer(writer, 200).await;
    for worker in &workers {
        worker.assert_no_error_logs();
    }
    coordinator.process.assert_no_error_logs();
    assert_migrated_exactly(&database, &expected).await;
}

/// Runs `shoal watch ID` on a pseudo-terminal (util-linux `script`); returns its exit code and
/// everything it drew.
async fn watch_on_a_terminal(coordinator_url: &str, id: &str) -> (Option<i32>, String) {
    let shoal = bin_dir().unwrap().join("shoal");
    let command = format!(
        "stty cols 120 rows 40; exec '{}' --coordinator '{coordinator_url}' watch '{id}'",
        shoal.display()
    );
    let output = tokio::process::Command::new("script")
        .args([
            "--quiet",
            "--return",
            "--flush",
            "--command",
            &command,
            "/dev/null",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_draws_a_bar_on_a_terminal_and_status_json_matches_the_http_api() {
    let (database, ledger) = seeded("observability_watch", 50_000).await;
    let env = vec![("SHOAL_TARGET_LOCAL", database.dsn.clone())];
    let coordinator = start_fleet_coordinator("observability_watch", env.clone()).await;
    // This worker logs JSON lines (--log-format json through its environment).
    let mut worker_env = env.clone();
    worker_env.push(("SHOAL_LOG_FORMAT", "json".to_owned()));
    let worker = start_worker("worker", &coordinator.url, 2, &worker_env).unwrap();
    let writer = start_writer(&database, ledger, 43).await;
    let id = submit(&coordinator.url, &["--threads", "2"]).await;

    // Both watchers follow the same migration from its start to its end.
    let piped_args = vec![
        "--coordinator".to_owned(),
        coordinator.url.clone(),
        "watch".to_owned(),
        id.clone(),
    ];
    let mut piped = ShoalProcess::spawn("shoal-watch-piped", "shoal", &piped_args, &[]).unwrap();
    let (code, drawn) = watch_on_a_terminal(&coordinator.url, &id).await;
    assert_eq!(code, Some(0), "shoal watch exits 0 on completion:\n{drawn}");
    assert!(drawn.contains("100%"), "the bar reaches 100%:\n{drawn}");
    assert!(drawn.contains("=>"), "a bar is drawn:\n{drawn}");
    let first_percent = drawn.find('%').unwrap();
    assert!(
        drawn[..first_percent].ends_with(" 0"),
        "the bar starts empty, not full:\n{drawn}"
    );
    assert!(
        drawn.contains('\r') || drawn.contains('\u{1b}'),
        "a terminal gets a redrawn bar:\n{drawn}"
    );
    assert!(drawn.contains("completed"), "{drawn}");
    let status = piped.wait_exit(Duration::from_secs(60)).await.unwrap();
    assert!(status.success(), "{}", piped.logs());
    let plain = piped.logs();
    assert!(plain.contains("OUTCOME_COMPLETED"), "{plain}");
    assert!(
        !plain.chars().any(|c| c.is_control() && c != '\n'),
        "piped output has no control characters: {plain:?}"
    );

    // `shoal status --output json` says what `GET /api/v1/migrations/{id}/status` says.
    let args = vec![
        "--coordinator".to_owned(),
        coordinator.url.clone(),
        "status".to_owned(),
        id.clone(),
        "--output".to_owned(),
        "json".to_owned(),
    ];
    let mut cli = ShoalProcess::spawn("shoal-status", "shoal", &args, &[]).unwrap();
    assert!(
        cli.wait_exit(Duration::from_secs(30))
            .await
            .unwrap()
            .success()
    );
    let mut from_cli: serde_json::Value = serde_json::from_str(&cli.logs()).unwrap();
    let (code, body) = http_get(
        &coordinator.http_address,
        &format!("/api/v1/migrations/{id}/status"),
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let mut from_http: serde_json::Value = serde_json::from_str(&body).unwrap();
    // The only field that differs is when each answer was rendered.
    for document in [&mut from_cli, &mut from_http] {
        assert!(document["lastUpdatedAt"].is_string());
        document["lastUpdatedAt"] = serde_json::Value::Null;
    }
    assert_eq!(from_cli, from_http);
    assert_eq!(from_cli["outcome"], "COMPLETED");
    assert!(from_cli["progress"]["rowsCopied"].as_u64().unwrap() > 0);

    let (expected, _stats) = finish_writer(writer, 200).await;
    worker.assert_no_error_logs();
    coordinator.process.assert_no_error_logs();
    let logged = worker.logs();
    let lines: Vec<&str> = logged.lines().collect();
    assert!(lines.len() > 2, "{logged}");
    for line in lines {
        let json: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("not a JSON log line ({error}): {line}"));
        assert!(
            json["timestamp"].is_string() && json["level"].is_string(),
            "{line}"
        );
    }
    assert_migrated_exactly(&database, &expected).await;
}

/// `shoal run --output json` prints JSON lines on stdout: progress objects, then one result
/// whose counts match the table; a refused ALTER ends with a `refused` result naming why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_json_output_prints_progress_and_one_result() {
    let (database, ledger) = seeded("run_json", 20_000).await;
    let writer = start_writer(&database, ledger, 41).await;
    let mut run = shoal_tests::scenario::shoal_run(
        &database,
        shoal_tests::scenario::ALTER,
        &["--output", "json", "--chunk-rows", "1000"],
        // Twenty chunks on two threads: about four seconds of copy, two progress ticks.
        "copy.server_sleep=sleep(400)",
    );
    let log = shoal_tests::scenario::expect_success(&mut run).await;
    let (expected, _) = finish_writer(writer, 100).await;
    assert_migrated_exactly(&database, &expected).await;
    let objects = json_lines(&log);
    let (result, progress) = objects.split_last().expect("no JSON line");
    assert!(
        progress.iter().all(|object| object["type"] == "progress")
            && progress
                .iter()
                .any(|object| object["state"] == "CopyRows" && object["rows_estimated"] != 0),
        "{log}"
    );
    assert_eq!(result["type"], "result", "{log}");
    assert_eq!(result["outcome"], "completed", "{log}");
    assert_eq!(result["path"], "copy", "{log}");
    assert!(result["error"].is_null(), "{log}");
    assert_eq!(result["checksum_passes"], 1, "{log}");
    assert!(
        result["rows_copied"].as_u64().unwrap_or(0) >= 20_000,
        "{log}"
    );

    let mut refused = shoal_tests::scenario::shoal_run(
        &database,
        "ALTER TABLE orders ADD COLUMN x INT; DROP TABLE orders",
        &["--output", "json"],
        "",
    );
    let status = refused.wait_exit(Duration::from_secs(60)).await.unwrap();
    let log = refused.logs();
    assert!(!status.success(), "{log}");
    let objects = json_lines(&log);
    assert!(
        objects.len() == 1
            && objects[0]["outcome"] == "refused"
            && objects[0]["error"]
                .as_str()
                .is_some_and(|error| error.contains("pass exactly one statement")),
        "{log}"
    );
}

/// The lines of `log` that are JSON objects with a `type`.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|object| object.get("type").is_some())
        .collect()
}
