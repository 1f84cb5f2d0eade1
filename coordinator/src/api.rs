//! The gRPC services a coordinator serves, and the one place where internal errors become
//! `tonic::Status`.

pub mod migration_service;
pub mod work_service;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_common::ids;
use shoal_common::registry::WorkerRecord;
use shoal_proto::v1;
use tonic::Status;

use crate::store;

/// Maps a store error to the status a client sees. Retryable failures are `UNAVAILABLE`, so
/// clients retry exactly those.
pub fn store_status(error: &store::Error) -> Status {
    if error.is_retryable() {
        Status::unavailable(error.to_string())
    } else {
        Status::internal(error.to_string())
    }
}

/// Maps an invalid id from a request to `INVALID_ARGUMENT`, naming the field.
pub fn id_status(field: &str, error: &ids::Error) -> Status {
    Status::invalid_argument(format!("{field}: {error}"))
}

/// Milliseconds since the Unix epoch, for display timestamps.
pub fn unix_millis_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A protobuf timestamp from Unix milliseconds.
pub fn timestamp_from_millis(unix_ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(unix_ms / 1_000).unwrap_or(i64::MAX),
        nanos: i32::try_from((unix_ms % 1_000) * 1_000_000).unwrap_or(0),
    }
}

/// A protobuf duration from a std one (saturating).
pub fn proto_duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

/// A std duration from a protobuf one; negative or absent becomes `None`.
pub fn std_duration(duration: Option<&prost_types::Duration>) -> Option<Duration> {
    let duration = duration?;
    let seconds = u64::try_from(duration.seconds).ok()?;
    let nanos = u32::try_from(duration.nanos).ok()?;
    Some(Duration::new(seconds, nanos))
}

/// The wire form of a registration.
pub fn worker_info(record: &WorkerRecord) -> v1::WorkerInfo {
    v1::WorkerInfo {
        worker_id: record.worker_id.to_string(),
        hostname: record.hostname.clone(),
        pid: record.pid,
        slots: record.slots,
        busy_slots: record.busy_slots,
        version: record.version.clone(),
        registered_at: Some(timestamp_from_millis(record.registered_at_ms)),
        last_heartbeat_at: Some(timestamp_from_millis(record.last_heartbeat_at_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip_and_reject_negative() {
        let wire = proto_duration(Duration::from_millis(1_500));
        assert_eq!(
            std_duration(Some(&wire)),
            Some(Duration::from_millis(1_500))
        );
        let negative = prost_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        assert_eq!(std_duration(Some(&negative)), None);
        assert_eq!(std_duration(None), None);
    }

    #[test]
    fn timestamps_split_millis() {
        let stamp = timestamp_from_millis(1_700_000_000_123);
        assert_eq!(stamp.seconds, 1_700_000_000);
        assert_eq!(stamp.nanos, 123_000_000);
    }

    #[test]
    fn retryable_store_errors_are_unavailable() {
        let unavailable = store_status(&store::Error::Unavailable("down".into()));
        assert_eq!(unavailable.code(), tonic::Code::Unavailable);
        let backend = store_status(&store::Error::Backend("WRONGTYPE".into()));
        assert_eq!(backend.code(), tonic::Code::Internal);
    }
}
