//! The JSON status API for dashboards: `GET /api/v1/migrations/statuses` and
//! `GET /api/v1/migrations/{id}/status`, camelCase fields. It renders the same status the gRPC
//! API returns (`registry::status`), so the two cannot disagree. `GET /metrics` serves the
//! Prometheus metrics on the same listener.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::Serialize;
use shoal_common::ids::MigrationId;
use shoal_proto::auth::Token;
use shoal_proto::v1;

use crate::owners::Owners;

/// One transition, as JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TransitionJson {
    from: String,
    to: String,
    at: Option<String>,
    message: String,
}

/// Progress, as JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ProgressJson {
    summary: String,
    rows_copied: u64,
    rows_estimated: u64,
    percent: f64,
    chunks_done: u64,
    chunks_in_flight: u64,
    changes_buffered: u64,
    applier_lag_seconds: i64,
    workers: u32,
    rows_per_second: f64,
    eta_seconds: Option<i64>,
    binlog_file: String,
    binlog_position: u64,
}

/// One migration's status, as JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusJson {
    migration_id: String,
    state: String,
    outcome: String,
    paused: bool,
    throttled: String,
    healthy: bool,
    message: String,
    state_entered_at: Option<String>,
    last_updated_at: Option<String>,
    metadata: BTreeMap<String, String>,
    last_transitions: Vec<TransitionJson>,
    progress: Option<ProgressJson>,
}

/// Every migration, as JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusesJson {
    /// What the coordinator warns of about itself (e.g. no authentication).
    warnings: Vec<String>,
    total: usize,
    counts_by_state: BTreeMap<String, usize>,
    migrations: Vec<StatusJson>,
}

fn state_name(state: i32) -> String {
    v1::State::try_from(state)
        .map(|state| state.as_str_name().trim_start_matches("STATE_").to_owned())
        .unwrap_or_else(|_| "UNKNOWN".to_owned())
}

fn timestamp(stamp: Option<&prost_types::Timestamp>) -> Option<String> {
    stamp.map(ToString::to_string)
}

/// The JSON form of a gRPC status.
pub fn to_json(status: &v1::MigrationStatus) -> StatusJson {
    StatusJson {
        migration_id: status.migration_id.clone(),
        state: state_name(status.state),
        outcome: v1::Outcome::try_from(status.outcome)
            .map(|outcome| {
                outcome
                    .as_str_name()
                    .trim_start_matches("OUTCOME_")
                    .to_owned()
            })
            .unwrap_or_else(|_| "UNKNOWN".to_owned()),
        paused: status.paused,
        throttled: status.throttled.clone(),
        healthy: status.healthy,
        message: status.message.clone(),
        state_entered_at: timestamp(status.state_entered_at.as_ref()),
        last_updated_at: timestamp(status.last_updated_at.as_ref()),
        metadata: status.metadata.clone().into_iter().collect(),
        last_transitions: status
            .last_transitions
            .iter()
            .map(|transition| TransitionJson {
                from: state_name(transition.from),
                to: state_name(transition.to),
                at: timestamp(transition.at.as_ref()),
                message: transition.message.clone(),
            })
            .collect(),
        progress: status.progress.as_ref().map(|progress| ProgressJson {
            summary: progress.summary.clone(),
            rows_copied: progress.rows_copied,
            rows_estimated: progress.rows_estimated,
            percent: progress.percent,
            chunks_done: progress.chunks_done,
            chunks_in_flight: progress.chunks_leased,
            changes_buffered: progress.applier_lag_events,
            applier_lag_seconds: progress.applier_lag.as_ref().map_or(0, |lag| lag.seconds),
            workers: progress.workers,
            rows_per_second: progress.rows_per_second,
            eta_seconds: progress.eta.as_ref().map(|eta| eta.seconds),
            binlog_file: progress.binlog_file.clone(),
            binlog_position: progress.binlog_position,
        }),
    }
}

async fn statuses(State((owners, warnings)): State<(Owners, Arc<[String]>)>) -> Response {
    let migrations: Vec<StatusJson> = match owners.statuses().await {
        Ok(statuses) => statuses.iter().map(to_json).collect(),
        Err(status) => return unavailable(&status),
    };
    let mut counts_by_state = BTreeMap::new();
    for migration in &migrations {
        *counts_by_state.entry(migration.state.clone()).or_insert(0) += 1;
    }
    Json(StatusesJson {
        warnings: warnings.to_vec(),
        total: migrations.len(),
        counts_by_state,
        migrations,
    })
    .into_response()
}

fn unavailable(status: &tonic::Status) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "error": status.message() })),
    )
        .into_response()
}

async fn one_status(State(owners): State<Owners>, Path(id): Path<String>) -> Response {
    let found = match MigrationId::parse(id.clone()) {
        Ok(parsed) => match owners.status_of(&parsed).await {
            Ok(found) => found,
            Err(status) => return unavailable(&status),
        },
        Err(_) => None,
    };
    match found {
        Some(status) => Json(to_json(&status)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("migration {id:?} not found") })),
        )
            .into_response(),
    }
}

/// `GET /metrics`: the Prometheus text exposition, gauges refreshed from live progress first.
async fn metrics(State(owners): State<Owners>) -> Response {
    owners.observe_metrics();
    let body = shoal_common::telemetry::install_metrics().render();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Refuses a status-API request without the bearer token (when the coordinator has one).
async fn require_token(
    State(token): State<Option<Token>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .map(|value| value.as_bytes());
    match &token {
        Some(token) if !token.matches(presented) => (
            StatusCode::UNAUTHORIZED,
            [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
            Json(serde_json::json!({ "error": "missing or wrong bearer token" })),
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

/// The status API's routes over the migrations' statuses (behind the token when there is one),
/// and `/metrics` (open: counts and ids only; restrict it on the network).
pub fn router(owners: Owners, token: Option<Token>, warnings: Arc<[String]>) -> Router {
    let list = Router::new()
        .route("/api/v1/migrations/statuses", get(statuses))
        .with_state((owners.clone(), warnings));
    let status_api = Router::new()
        .route("/api/v1/migrations/{id}/status", get(one_status))
        .with_state(owners.clone())
        .merge(list)
        .layer(axum::middleware::from_fn_with_state(token, require_token));
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(owners)
        .merge(status_api)
}
