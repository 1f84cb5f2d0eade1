//! Binlog event types, each handled or fatal by an explicit list (INV-C2: no change of the
//! table is skipped).
//!
//! Numbers are MySQL's (`binlog_event.h`, up to 9.7) and MariaDB's (`log_event.h`, 10.11): the
//! two agree below 160, MariaDB's own start at 160. An event type not listed here, one from
//! a server shoal does not support, or one that means events were lost stops the migration.

use std::io::Read;

use mysql_async::binlog::events::TransactionPayloadEvent;

/// What the change reader does with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClass {
    /// A statement: DDL, `BEGIN`/`COMMIT`, or a statement-format change (`QUERY`, and
    /// `EXECUTE_LOAD_QUERY`, which carries the `LOAD DATA` statement).
    Query,
    /// A table map (`TABLE_MAP`).
    TableMap,
    /// Row changes: write, update, delete (v1 and v2), MySQL's partial JSON update.
    Rows,
    /// The commit of a transaction (`XID`).
    Xid,
    /// The next binlog file (`ROTATE`).
    Rotate,
    /// A GTID: the start of a transaction group (MySQL's GTID, anonymous GTID and tagged GTID;
    /// MariaDB's GTID).
    Gtid,
    /// MySQL's `TRANSACTION_PAYLOAD` (8.0.20+, `binlog_transaction_compression`): a whole
    /// transaction's events, compressed; they follow it in the stream.
    Payload,
    /// MySQL's `XA_PREPARE_LOG`: the end of a prepared XA transaction's events, whose outcome
    /// (`XA COMMIT` or `XA ROLLBACK`) comes later.
    XaPrepare,
    /// Carries no row change and needs no decoding: heartbeats, format descriptions, statement
    /// context (`INTVAR`, `RAND`, `USER_VAR`), rows-query annotations, GTID lists, checkpoints.
    NoChanges,
    /// Stops the migration: the reason, for the operator.
    Fatal(&'static str),
}

/// The class of event type `type_raw`.
pub fn classify(type_raw: u8) -> EventClass {
    use EventClass::{
        Fatal, Gtid, NoChanges, Payload, Query, Rotate, Rows, TableMap, XaPrepare, Xid,
    };
    match type_raw {
        2 | 18 => Query,
        19 => TableMap,
        23..=25 | 30..=32 | 39 => Rows,
        16 => Xid,
        4 => Rotate,
        33 | 34 | 42 | 162 => Gtid,
        40 => Payload,
        38 => XaPrepare,
        // STOP, INTVAR, RAND, USER_VAR, FORMAT_DESCRIPTION, BEGIN_LOAD_QUERY (the file's data; its
        // statement follows as EXECUTE_LOAD_QUERY), HEARTBEAT, IGNORABLE, ROWS_QUERY,
        // PREVIOUS_GTIDS, TRANSACTION_CONTEXT, VIEW_CHANGE, HEARTBEAT_V2; MariaDB's ANNOTATE_ROWS,
        // BINLOG_CHECKPOINT, GTID_LIST, START_ENCRYPTION.
        3 | 5 | 13 | 14 | 15 | 17 | 27 | 28 | 29 | 35 | 36 | 37 | 41 | 160 | 161 | 163 | 164 => {
            NoChanges
        }
        26 => Fatal(
            "an INCIDENT event: the server lost binlog events (the log has a gap); shoal cannot \
             know what changed — run the migration again",
        ),
        1 | 6..=12 => Fatal("an event of a pre-5.0 server"),
        20..=22 => Fatal("a pre-GA rows event (MySQL 5.1.0–5.1.15)"),
        165..=171 => Fatal(
            "a MariaDB compressed event (log_bin_compress=ON); shoal cannot decode it: set \
             log_bin_compress=OFF for the migration",
        ),
        _ => Fatal("an event type shoal does not know"),
    }
}

/// Length of an event's common header (v4).
const HEADER: usize = 19;

/// The number of events in a decompressed transaction payload: each starts with a v4 header
/// whose `event_size` (bytes 9–12) gives its length. Errors when the sizes do not tile the
/// payload exactly (a truncated or corrupt payload must stop the reader, never be skipped).
pub fn payload_event_count(payload: &[u8]) -> Result<usize, String> {
    let mut at = 0;
    let mut count = 0;
    while at < payload.len() {
        let size = payload
            .get(at + 9..at + 13)
            .map(|bytes| u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
            .ok_or_else(|| format!("a truncated event header at byte {at} of the payload"))?;
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size < HEADER || size > payload.len() - at {
            return Err(format!(
                "an event of {size} bytes at byte {at} of a {}-byte payload",
                payload.len()
            ));
        }
        at += size;
        count += 1;
    }
    Ok(count)
}

/// The events of a compressed transaction (MySQL's TRANSACTION_PAYLOAD) still to come: the
/// stream hands them over one by one after the payload event, and each takes the payload's end
/// as its position (a restart inside the payload would replay it from its start).
#[derive(Debug, Default)]
pub struct Payload {
    /// Events still to come.
    remaining: usize,
    /// The position after the payload.
    end: u64,
}

impl Payload {
    /// Counts the events of `compressed`, which ends at `end`. A payload that does not
    /// decompress to its stated size, or whose events do not tile it, stops the reader (the
    /// stream itself would yield nothing for it).
    pub fn open(
        &mut self,
        compressed: &TransactionPayloadEvent<'_>,
        end: u64,
    ) -> Result<(), String> {
        let corrupt = |reason: String| {
            format!(
                "a compressed transaction ending at {end} cannot be read ({reason}); refusing to \
                 lose changes"
            )
        };
        let mut bytes = Vec::new();
        compressed
            .decompressed()
            .and_then(|mut reader| reader.read_to_end(&mut bytes))
            .map_err(|error| corrupt(error.to_string()))?;
        let stated = compressed.uncompressed_size();
        if stated != 0 && u64::try_from(bytes.len()).ok() != Some(stated) {
            return Err(corrupt(format!(
                "{} bytes decompressed, {stated} stated",
                bytes.len()
            )));
        }
        self.remaining = payload_event_count(&bytes).map_err(corrupt)?;
        self.end = end;
        Ok(())
    }

    /// Events of the open payload still to come.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// The payload's end if the next event is one of its own.
    pub fn take_one(&mut self) -> Option<u64> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        Some(self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_type_has_a_decision_and_losses_are_fatal() {
        for raw in 0..=u8::MAX {
            let _ = classify(raw);
        }
        assert!(matches!(classify(26), EventClass::Fatal(reason) if reason.contains("gap")));
        assert!(matches!(classify(0), EventClass::Fatal(_)));
        assert!(matches!(classify(43), EventClass::Fatal(_)));
        assert!(matches!(classify(172), EventClass::Fatal(_)));
        assert!(
            matches!(classify(166), EventClass::Fatal(reason) if reason.contains("log_bin_compress"))
        );
        assert_eq!(classify(40), EventClass::Payload);
        assert_eq!(classify(42), EventClass::Gtid);
        assert_eq!(classify(38), EventClass::XaPrepare);
        for rows in [23, 24, 25, 30, 31, 32, 39] {
            assert_eq!(classify(rows), EventClass::Rows, "{rows}");
        }
    }

    fn event(size: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; size];
        let declared = u32::try_from(size).unwrap_or(u32::MAX).to_le_bytes();
        bytes[9..13].copy_from_slice(&declared);
        bytes
    }

    #[test]
    fn a_payload_that_does_not_tile_is_refused() {
        assert_eq!(payload_event_count(&[]), Ok(0));
        let mut payload = event(40);
        payload.extend(event(19));
        assert_eq!(payload_event_count(&payload), Ok(2));
        payload.pop();
        assert!(payload_event_count(&payload).is_err());
        assert!(payload_event_count(&event(40)[..12]).is_err());
        let mut short = event(19);
        short[9..13].copy_from_slice(&5u32.to_le_bytes());
        assert!(payload_event_count(&short).is_err());
    }

    proptest! {
        #[test]
        fn payloads_count_their_events(sizes in proptest::collection::vec(19usize..300, 0..20)) {
            let payload: Vec<u8> = sizes.iter().flat_map(|size| event(*size)).collect();
            prop_assert_eq!(payload_event_count(&payload), Ok(sizes.len()));
        }
    }
}
