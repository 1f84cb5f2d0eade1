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

/// The (type, size) of each event of a decompressed transaction payload, read from their v4
/// headers (`event_size` at bytes 9–12), and the bytes read. Errors when the sizes do not tile
/// the payload exactly (a truncated or corrupt payload must stop the reader, never be skipped).
pub fn event_headers(reader: &mut impl Read) -> Result<(Vec<(u8, u32)>, u64), String> {
    let mut headers = Vec::new();
    let mut total: u64 = 0;
    loop {
        let mut header = [0u8; HEADER];
        let mut filled = 0;
        while filled < HEADER {
            let read = reader
                .read(&mut header[filled..])
                .map_err(|error| error.to_string())?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        if filled == 0 {
            return Ok((headers, total));
        }
        if filled < HEADER {
            return Err(format!("a truncated event header at byte {total}"));
        }
        let size = u32::from_le_bytes([header[9], header[10], header[11], header[12]]);
        let body = u64::from(size)
            .checked_sub(HEADER as u64)
            .ok_or_else(|| format!("an event of {size} bytes at byte {total}"))?;
        let skipped = std::io::copy(&mut reader.take(body), &mut std::io::sink())
            .map_err(|error| error.to_string())?;
        if skipped != body {
            return Err(format!("a truncated event at byte {total}"));
        }
        headers.push((header[4], size));
        total += u64::from(size);
    }
}

/// The events of a compressed transaction (MySQL's TRANSACTION_PAYLOAD) still to come: the
/// stream hands them over one by one after the payload event, and each takes the payload's end
/// as its position (a restart inside the payload would replay it from its start).
#[derive(Debug, Default)]
pub struct Payload {
    /// The (type, size) of each event still to come, in order.
    remaining: std::collections::VecDeque<(u8, u32)>,
    /// The position after the payload.
    end: u64,
}

impl Payload {
    /// Reads the event headers of `compressed`, which ends at `end`, streaming (the payload is
    /// not held twice). A payload that does not decompress to its stated size, or whose events
    /// do not tile it, stops the reader: the stream itself would yield nothing for it.
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
        let mut reader = compressed
            .decompressed()
            .map_err(|error| corrupt(error.to_string()))?;
        let (headers, total) = event_headers(&mut reader).map_err(corrupt)?;
        let stated = compressed.uncompressed_size();
        if total != stated {
            return Err(corrupt(format!(
                "{total} bytes decompressed, {stated} stated"
            )));
        }
        self.remaining = headers.into();
        self.end = end;
        Ok(())
    }

    /// Events of the open payload still to come.
    pub fn remaining(&self) -> usize {
        self.remaining.len()
    }

    /// The payload's end if the next event is one of its own; an event that is not the one
    /// the payload holds next (the stream skipped some) is an error.
    pub fn take_one(&mut self, event_type: u8, event_size: u32) -> Result<Option<u64>, String> {
        let Some((expected_type, expected_size)) = self.remaining.pop_front() else {
            return Ok(None);
        };
        if (expected_type, expected_size) != (event_type, event_size) {
            return Err(format!(
                "the stream delivered an event of type {event_type} ({event_size} bytes) where \
                 the compressed transaction ending at {} holds one of type {expected_type} \
                 ({expected_size} bytes); refusing to lose changes",
                self.end
            ));
        }
        Ok(Some(self.end))
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

    fn event(kind: u8, size: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; size];
        bytes[4] = kind;
        let declared = u32::try_from(size).unwrap_or(u32::MAX).to_le_bytes();
        bytes[9..13].copy_from_slice(&declared);
        bytes
    }

    fn headers(payload: &[u8]) -> Result<(Vec<(u8, u32)>, u64), String> {
        event_headers(&mut &payload[..])
    }

    #[test]
    fn a_payload_that_does_not_tile_is_refused() {
        assert_eq!(headers(&[]), Ok((vec![], 0)));
        let mut payload = event(19, 40);
        payload.extend(event(16, 19));
        assert_eq!(headers(&payload), Ok((vec![(19, 40), (16, 19)], 59)));
        payload.pop();
        assert!(headers(&payload).is_err());
        assert!(headers(&event(2, 40)[..12]).is_err());
        let mut short = event(2, 19);
        short[9..13].copy_from_slice(&5u32.to_le_bytes());
        assert!(headers(&short).is_err());
    }

    proptest! {
        #[test]
        fn payloads_list_their_events(events in proptest::collection::vec((any::<u8>(), 19usize..300), 0..20)) {
            let payload: Vec<u8> = events.iter().flat_map(|(kind, size)| event(*kind, *size)).collect();
            let expected: Vec<(u8, u32)> = events.iter().map(|(kind, size)| (*kind, u32::try_from(*size).unwrap_or(0))).collect();
            prop_assert_eq!(headers(&payload), Ok((expected, payload.len() as u64)));
        }
    }
}
