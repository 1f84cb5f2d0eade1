//! Tasks between their domain form (`shoal_common::task`) and the wire (`shoal.v1.Task`).
//! Both the coordinator (encoding) and the worker (decoding) use these, so they cannot drift.

use std::time::Duration;

use shoal_common::chunk::{ChunkId, ChunkRange};
use shoal_common::ids::{FenceEpoch, LeaseEpoch, MigrationId, TaskId};
use shoal_common::names;
use shoal_common::task::{CopyContext, CopyMode, LeasedTask, TaskKind, TaskSpec};
use shoal_proto::v1;

/// Why a wire task cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field is missing or out of range.
    #[error("task field {field}: {reason}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

fn field(field: &'static str, reason: impl ToString) -> Error {
    Error::Field {
        field,
        reason: reason.to_string(),
    }
}

/// Protobuf duration from std.
pub fn duration_to_proto(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

/// Std duration from protobuf; negative is `None`.
pub fn duration_from_proto(duration: &prost_types::Duration) -> Option<Duration> {
    Some(Duration::new(
        u64::try_from(duration.seconds).ok()?,
        u32::try_from(duration.nanos).ok()?,
    ))
}

fn bound_to_proto(bound: Option<i64>, inclusive: bool) -> v1::KeyBound {
    v1::KeyBound {
        key: bound.map(|value| v1::Key {
            parts: vec![v1::KeyPart {
                value: Some(v1::key_part::Value::Int(value)),
            }],
        }),
        inclusive,
    }
}

fn bound_from_proto(
    bound: Option<&v1::KeyBound>,
    name: &'static str,
) -> Result<Option<i64>, Error> {
    let Some(key) = bound.and_then(|bound| bound.key.as_ref()) else {
        return Ok(None);
    };
    match key.parts.as_slice() {
        [
            v1::KeyPart {
                value: Some(v1::key_part::Value::Int(value)),
            },
        ] => Ok(Some(*value)),
        _ => Err(field(name, "only single-column integer keys are supported")),
    }
}

/// The wire form of a leased task.
pub fn task_to_proto(task: &LeasedTask) -> v1::Task {
    let spec = &task.spec;
    let context = &spec.context;
    v1::Task {
        task_id: spec.task_id.to_string(),
        migration_id: spec.migration_id.to_string(),
        kind: match spec.kind {
            TaskKind::Copy => v1::TaskKind::Copy as i32,
        },
        chunk_id: spec.chunk.0,
        range: Some(v1::KeyRange {
            lower: Some(bound_to_proto(spec.range.lower, true)),
            upper: Some(bound_to_proto(spec.range.upper, false)),
        }),
        lease_epoch: task.lease_epoch.0,
        fence_epoch: spec.fence_epoch.0,
        lease_expires_at: None,
        source: Some(v1::TableRef {
            target: context.target.clone(),
            schema: context.schema.clone(),
            table: context.source_table.clone(),
        }),
        shadow_table: context.shadow_table.clone(),
        source_columns: context.source_columns.clone(),
        shadow_columns: context.shadow_columns.clone(),
        key_columns: vec![context.key_column.clone()],
        batch_rows: context.batch_rows,
        copy_mode: match context.copy_mode {
            CopyMode::Buffered => v1::CopyMode::Buffered as u32,
            CopyMode::Server => v1::CopyMode::Server as u32,
        },
        barrier_id: 0,
        trace_context: spec.trace_context.iter().cloned().collect(),
        lease_ttl: Some(duration_to_proto(task.lease_ttl)),
    }
}

/// The domain form of a wire task, validated.
pub fn task_from_proto(task: v1::Task) -> Result<LeasedTask, Error> {
    let kind = match v1::TaskKind::try_from(task.kind) {
        Ok(v1::TaskKind::Copy) => TaskKind::Copy,
        _ => {
            return Err(field(
                "kind",
                format!("unsupported task kind {}", task.kind),
            ));
        }
    };
    let source = task.source.ok_or_else(|| field("source", "missing"))?;
    let range = task.range.as_ref();
    let [key_column] = task.key_columns.as_slice() else {
        return Err(field("key_columns", "exactly one key column is supported"));
    };
    let copy_mode = match i32::try_from(task.copy_mode)
        .ok()
        .and_then(|mode| v1::CopyMode::try_from(mode).ok())
    {
        Some(v1::CopyMode::Server) => CopyMode::Server,
        Some(v1::CopyMode::Buffered) => CopyMode::Buffered,
        Some(v1::CopyMode::Unspecified) => CopyMode::default(),
        None => return Err(field("copy_mode", task.copy_mode)),
    };
    let lease_ttl = task
        .lease_ttl
        .as_ref()
        .and_then(duration_from_proto)
        .filter(|ttl| !ttl.is_zero())
        .ok_or_else(|| field("lease_ttl", "missing or not positive"))?;
    if task.source_columns.len() != task.shadow_columns.len() || task.source_columns.is_empty() {
        return Err(field(
            "shadow_columns",
            "must pair one to one with source_columns",
        ));
    }
    Ok(LeasedTask {
        spec: TaskSpec {
            task_id: TaskId::parse(task.task_id).map_err(|error| field("task_id", error))?,
            migration_id: MigrationId::parse(task.migration_id)
                .map_err(|error| field("migration_id", error))?,
            kind,
            chunk: ChunkId(task.chunk_id),
            range: ChunkRange {
                lower: bound_from_proto(
                    range.and_then(|range| range.lower.as_ref()),
                    "range.lower",
                )?,
                upper: bound_from_proto(
                    range.and_then(|range| range.upper.as_ref()),
                    "range.upper",
                )?,
            },
            fence_epoch: FenceEpoch(task.fence_epoch),
            context: CopyContext {
                fence_table: names::fence(&source.table),
                target: source.target,
                schema: source.schema,
                source_table: source.table,
                shadow_table: task.shadow_table,
                source_columns: task.source_columns,
                shadow_columns: task.shadow_columns,
                key_column: key_column.clone(),
                copy_mode,
                batch_rows: task.batch_rows,
            },
            trace_context: {
                let mut pairs: Vec<(String, String)> = task.trace_context.into_iter().collect();
                pairs.sort();
                pairs
            },
        },
        lease_epoch: LeaseEpoch(task.lease_epoch),
        lease_ttl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(range: ChunkRange) -> LeasedTask {
        LeasedTask {
            spec: TaskSpec {
                task_id: TaskId::parse("m1-c3-1").unwrap(),
                migration_id: MigrationId::parse("m1").unwrap(),
                kind: TaskKind::Copy,
                chunk: ChunkId(3),
                range,
                fence_epoch: FenceEpoch(2),
                context: CopyContext {
                    target: "local".into(),
                    schema: "shop".into(),
                    source_table: "orders".into(),
                    shadow_table: "_orders_new".into(),
                    fence_table: "_orders_fence".into(),
                    source_columns: vec!["id".into(), "note".into()],
                    shadow_columns: vec!["id".into(), "note".into()],
                    key_column: "id".into(),
                    copy_mode: CopyMode::Server,
                    batch_rows: 500,
                },
                trace_context: vec![("traceparent".into(), "00-1-2-01".into())],
            },
            lease_epoch: LeaseEpoch(4),
            lease_ttl: Duration::from_secs(10),
        }
    }

    #[test]
    fn round_trips_bounded_and_unbounded_ranges() {
        for range in [
            ChunkRange::ALL,
            ChunkRange {
                lower: None,
                upper: Some(-7),
            },
            ChunkRange {
                lower: Some(i64::MIN),
                upper: Some(i64::MAX),
            },
            ChunkRange {
                lower: Some(100),
                upper: None,
            },
        ] {
            let task = sample(range);
            assert_eq!(task_from_proto(task_to_proto(&task)).unwrap(), task);
        }
    }

    #[test]
    fn refuses_malformed_tasks() {
        let mut wire = task_to_proto(&sample(ChunkRange::ALL));
        wire.key_columns.push("other".into());
        assert!(task_from_proto(wire).is_err());
        let mut wire = task_to_proto(&sample(ChunkRange::ALL));
        wire.lease_ttl = None;
        assert!(task_from_proto(wire).is_err());
        let mut wire = task_to_proto(&sample(ChunkRange::ALL));
        wire.kind = 99;
        assert!(task_from_proto(wire).is_err());
    }
}
