//! The change buffer: the last row image (or delete) per primary key, read from the binlog.
//!
//! # Invariants
//! - INV-C2: no event is discarded. A change whose key's chunk is not drained stays buffered
//!   (deferred) until that chunk drains; only then is it released for flushing.
//! - Within the buffer, a later event for a key replaces the earlier one (last image wins), so
//!   flushing is idempotent and batches are key-disjoint by construction.
//!
//! # Design decisions
//! Events are never applied early: a chunk copy in flight may have read a row before its delete,
//! and applying the delete first would let the copy resurrect it (Spirit #746/#1080). Nor are they
//! dropped "because the copy will see them": the binlog can deliver a change before the copy's
//! snapshot makes it visible. The buffer is generic over the row type so it stays pure.

use std::collections::BTreeMap;

/// What the binlog says about one key, last event wins.
#[derive(Debug, Clone, PartialEq)]
pub enum Change<Row> {
    /// The row's full image after the change (insert or update).
    Upsert(Row),
    /// The row was deleted (or its key moved away).
    Delete,
}

/// Buffered changes by primary key.
#[derive(Debug, Clone)]
pub struct ChangeBuffer<Row> {
    entries: BTreeMap<i64, Change<Row>>,
}

impl<Row> Default for ChangeBuffer<Row> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
        }
    }
}

impl<Row> ChangeBuffer<Row> {
    /// Records an insert or an update that kept its key.
    pub fn upsert(&mut self, key: i64, row: Row) {
        self.entries.insert(key, Change::Upsert(row));
    }

    /// Records a delete.
    pub fn delete(&mut self, key: i64) {
        self.entries.insert(key, Change::Delete);
    }

    /// Records an update; one that changed the key is a delete of the old key and an upsert of
    /// the new one, each filed under its own key (and so its own chunk).
    pub fn update(&mut self, old_key: i64, new_key: i64, row: Row) {
        if old_key != new_key {
            self.delete(old_key);
        }
        self.upsert(new_key, row);
    }

    /// Buffered keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes and returns, in key order, every change whose key `may_apply` admits (its chunk
    /// is drained); the rest stay deferred (INV-C2).
    pub fn take_ready(
        &mut self,
        mut may_apply: impl FnMut(i64) -> bool,
    ) -> Vec<(i64, Change<Row>)> {
        let ready_keys: Vec<i64> = self
            .entries
            .keys()
            .copied()
            .filter(|key| may_apply(*key))
            .collect();
        ready_keys
            .into_iter()
            .filter_map(|key| self.entries.remove(&key).map(|change| (key, change)))
            .collect()
    }

    /// Removes and returns the changes for keys in `[lower, upper)` (bounds optional), in key
    /// order: the deferred changes of one chunk when it completes.
    pub fn take_range(
        &mut self,
        lower: Option<i64>,
        upper: Option<i64>,
    ) -> Vec<(i64, Change<Row>)> {
        let keys: Vec<i64> = match (lower, upper) {
            (Some(lower), Some(upper)) if lower >= upper => Vec::new(),
            (Some(lower), Some(upper)) => {
                self.entries.range(lower..upper).map(|(k, _)| *k).collect()
            }
            (Some(lower), None) => self.entries.range(lower..).map(|(k, _)| *k).collect(),
            (None, Some(upper)) => self.entries.range(..upper).map(|(k, _)| *k).collect(),
            (None, None) => self.entries.keys().copied().collect(),
        };
        keys.into_iter()
            .filter_map(|key| self.entries.remove(&key).map(|change| (key, change)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_image_wins_and_deletes_are_kept() {
        let mut buffer = ChangeBuffer::default();
        buffer.upsert(1, "a");
        buffer.upsert(1, "b");
        buffer.delete(2);
        buffer.upsert(3, "c");
        buffer.delete(3);
        let all = buffer.take_range(None, None);
        assert_eq!(
            all,
            vec![
                (1, Change::Upsert("b")),
                (2, Change::Delete),
                (3, Change::Delete)
            ]
        );
        assert!(buffer.is_empty());
    }

    #[test]
    fn key_move_is_delete_plus_upsert() {
        let mut buffer = ChangeBuffer::default();
        buffer.upsert(5, "old");
        buffer.update(5, 500, "moved");
        assert_eq!(
            buffer.take_range(None, None),
            vec![(5, Change::Delete), (500, Change::Upsert("moved"))]
        );
        buffer.update(7, 7, "same key");
        assert_eq!(
            buffer.take_range(None, None),
            vec![(7, Change::Upsert("same key"))]
        );
    }

    #[test]
    fn deferred_changes_stay_until_their_chunk_drains() {
        let mut buffer = ChangeBuffer::default();
        for key in [-3, 1, 10, 25] {
            buffer.upsert(key, key);
        }
        let ready = buffer.take_ready(|key| key < 10);
        assert_eq!(
            ready,
            vec![(-3, Change::Upsert(-3)), (1, Change::Upsert(1))]
        );
        assert_eq!(buffer.len(), 2, "nothing discarded");
        assert_eq!(
            buffer.take_range(Some(10), Some(20)),
            vec![(10, Change::Upsert(10))]
        );
        assert_eq!(buffer.take_range(Some(20), Some(20)), vec![]);
        assert_eq!(
            buffer.take_range(Some(20), None),
            vec![(25, Change::Upsert(25))]
        );
    }
}
