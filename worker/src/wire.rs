//! Tasks between their domain form (`shoal_common::task`) and the wire (`shoal.v1.Task`).
//! Both the coordinator (encoding) and the worker (decoding) use these, so they cannot drift.

use std::time::Duration;

use shoal_common::chunk::{ChunkId, ChunkRange};
use shoal_common::ids::{FenceEpoch, LeaseEpoch, MigrationId, TaskId};
use shoal_common::key::{DateTime, Key, KeyPart};
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

fn part_to_proto(part: &KeyPart) -> v1::KeyPart {
    use v1::key_part::Value as Wire;
    let value = match part {
        KeyPart::Int(value) => Wire::Int(*value),
        KeyPart::UInt(value) => Wire::Uint(*value),
        KeyPart::Bytes(bytes) => Wire::Binary(bytes.clone()),
        KeyPart::Temporal(at) => Wire::Literal(at.to_string()),
        // Bounds come from probes on utf8mb4 sessions: character parts are UTF-8.
        KeyPart::Opaque(bytes) => Wire::Text(String::from_utf8_lossy(bytes).into_owned()),
    };
    v1::KeyPart { value: Some(value) }
}

fn part_from_proto(part: &v1::KeyPart, name: &'static str) -> Result<KeyPart, Error> {
    use v1::key_part::Value as Wire;
    Ok(match &part.value {
        Some(Wire::Int(value)) => KeyPart::Int(*value),
        Some(Wire::Uint(value)) => KeyPart::UInt(*value),
        Some(Wire::Binary(bytes)) => KeyPart::Bytes(bytes.clone()),
        Some(Wire::Literal(text)) => KeyPart::Temporal(
            DateTime::parse(text).ok_or_else(|| field(name, format!("bad datetime {text:?}")))?,
        ),
        Some(Wire::Text(text)) => KeyPart::Opaque(text.clone().into_bytes()),
        None => return Err(field(name, "a key part without a value")),
    })
}

fn bound_to_proto(bound: Option<&Key>, inclusive: bool) -> v1::KeyBound {
    v1::KeyBound {
        key: bound.map(|key| v1::Key {
            parts: key.0.iter().map(part_to_proto).collect(),
        }),
        inclusive,
    }
}

fn bound_from_proto(
    bound: Option<&v1::KeyBound>,
    name: &'static str,
    width: usize,
) -> Result<Option<Key>, Error> {
    let Some(key) = bound.and_then(|bound| bound.key.as_ref()) else {
        return Ok(None);
    };
    if key.parts.len() != width {
        return Err(field(
            name,
            format!("{} key parts for {width} key columns", key.parts.len()),
        ));
    }
    key.parts
        .iter()
        .map(|part| part_from_proto(part, name))
        .collect::<Result<Vec<_>, _>>()
        .map(|parts| Some(Key(parts)))
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
            lower: Some(bound_to_proto(spec.range.lower.as_ref(), true)),
            upper: Some(bound_to_proto(spec.range.upper.as_ref(), false)),
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
        key_columns: context.key_columns.clone(),
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
    let width = task.key_columns.len();
    if width == 0 {
        return Err(field("key_columns", "missing"));
    }
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
                    width,
                )?,
                upper: bound_from_proto(
                    range.and_then(|range| range.upper.as_ref()),
                    "range.upper",
                    width,
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
                key_columns: task.key_columns,
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
                    key_columns: vec!["id".into()],
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
        let key = |part: KeyPart| Some(Key(vec![part]));
        for range in [
            ChunkRange::ALL,
            ChunkRange {
                lower: None,
                upper: key(KeyPart::Int(-7)),
            },
            ChunkRange {
                lower: key(KeyPart::Int(i64::MIN)),
                upper: key(KeyPart::Int(i64::MAX)),
            },
            ChunkRange {
                lower: key(KeyPart::UInt(u64::MAX)),
                upper: None,
            },
            ChunkRange {
                lower: key(KeyPart::Bytes(vec![0, 255, 0])),
                upper: key(KeyPart::Opaque("Zoë 😀".as_bytes().to_vec())),
            },
            ChunkRange {
                lower: key(KeyPart::Temporal(
                    DateTime::parse("2026-11-23 09:13:41.000001").unwrap(),
                )),
                upper: None,
            },
        ] {
            let task = sample(range);
            assert_eq!(task_from_proto(task_to_proto(&task)).unwrap(), task);
        }
    }

    #[test]
    fn refuses_malformed_tasks() {
        let bounded = ChunkRange {
            lower: Some(Key::int(1)),
            upper: None,
        };
        let mut wire = task_to_proto(&sample(bounded));
        wire.key_columns.push("other".into());
        assert!(
            task_from_proto(wire).is_err(),
            "bound and key widths differ"
        );
        let mut wire = task_to_proto(&sample(ChunkRange::ALL));
        wire.key_columns.clear();
        assert!(task_from_proto(wire).is_err());
        let mut wire = task_to_proto(&sample(ChunkRange::ALL));
        wire.lease_ttl = None;
        assert!(task_from_proto(wire).is_err());
        let mut wire = task_to_proto(&sample(ChunkRange::ALL));
        wire.kind = 99;
        assert!(task_from_proto(wire).is_err());
    }
}
