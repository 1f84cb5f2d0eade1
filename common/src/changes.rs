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
//!
//! Keys equal under a collation (`'a'`, `'A'`) are distinct entries here (INV-K1), yet one flush
//! stays right: row images carry the key as stored, and the key is unique, so of all spellings of
//! one key only the one stored last can end as an upsert; every other spelling's last event is a
//! delete, and deletes are applied before upserts.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::chunk::ChunkRange;
use crate::key::Key;

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
    entries: BTreeMap<Key, Change<Row>>,
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
    pub fn upsert(&mut self, key: Key, row: Row) {
        self.entries.insert(key, Change::Upsert(row));
    }

    /// Records a delete.
    pub fn delete(&mut self, key: Key) {
        self.entries.insert(key, Change::Delete);
    }

    /// Records an update; one that changed the key is a delete of the old key and an upsert of
    /// the new one, each filed under its own key (and so its own chunk).
    pub fn update(&mut self, old_key: Key, new_key: Key, row: Row) {
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

    fn take(&mut self, keys: Vec<Key>) -> Vec<(Key, Change<Row>)> {
        keys.into_iter()
            .filter_map(|key| self.entries.remove(&key).map(|change| (key, change)))
            .collect()
    }

    /// Removes and returns, in key order, every change whose key `may_apply` admits (its chunk
    /// is drained); the rest stay deferred (INV-C2).
    pub fn take_ready(
        &mut self,
        mut may_apply: impl FnMut(&Key) -> bool,
    ) -> Vec<(Key, Change<Row>)> {
        let ready: Vec<Key> = self
            .entries
            .keys()
            .filter(|key| may_apply(key))
            .cloned()
            .collect();
        self.take(ready)
    }

    /// Puts back changes taken for a write that failed, unless a newer change of the same key
    /// arrived meanwhile (it wins: changes are last images).
    pub fn restore(&mut self, changes: Vec<(Key, Change<Row>)>) {
        for (key, change) in changes {
            self.entries.entry(key).or_insert(change);
        }
    }

    /// Removes and returns, in key order, the changes for keys in `range`: the deferred
    /// changes of one chunk when it completes. Ordered key shapes only (INV-K1).
    pub fn take_range(&mut self, range: &ChunkRange) -> Vec<(Key, Change<Row>)> {
        if let (Some(lower), Some(upper)) = (&range.lower, &range.upper)
            && lower >= upper
        {
            return Vec::new();
        }
        let lower = range
            .lower
            .as_ref()
            .map_or(Bound::Unbounded, Bound::Included);
        let upper = range
            .upper
            .as_ref()
            .map_or(Bound::Unbounded, Bound::Excluded);
        let keys: Vec<Key> = self
            .entries
            .range::<Key, _>((lower, upper))
            .map(|(key, _)| key.clone())
            .collect();
        self.take(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(value: i64) -> Key {
        Key::int(value)
    }

    #[test]
    fn last_image_wins_and_deletes_are_kept() {
        let mut buffer = ChangeBuffer::default();
        buffer.upsert(k(1), "a");
        buffer.delete(k(2));
        buffer.upsert(k(3), "c");
        buffer.upsert(k(1), "b");
        buffer.delete(k(3));
        let all = buffer.take_range(&ChunkRange::ALL);
        assert_eq!(
            all,
            vec![
                (k(1), Change::Upsert("b")),
                (k(2), Change::Delete),
                (k(3), Change::Delete)
            ]
        );
        assert!(buffer.is_empty());
    }

    #[test]
    fn key_move_is_delete_plus_upsert() {
        let mut buffer = ChangeBuffer::default();
        buffer.upsert(k(5), "old");
        buffer.update(k(5), k(500), "moved");
        assert_eq!(
            buffer.take_range(&ChunkRange::ALL),
            vec![(k(5), Change::Delete), (k(500), Change::Upsert("moved"))]
        );
        buffer.update(k(7), k(7), "same key");
        assert_eq!(
            buffer.take_range(&ChunkRange::ALL),
            vec![(k(7), Change::Upsert("same key"))]
        );
    }

    #[test]
    fn deferred_changes_stay_until_their_chunk_drains() {
        let mut buffer = ChangeBuffer::default();
        for key in [-3, 1, 10, 25] {
            buffer.upsert(k(key), key);
        }
        let ready = buffer.take_ready(|key| *key < k(10));
        assert_eq!(
            ready,
            vec![(k(-3), Change::Upsert(-3)), (k(1), Change::Upsert(1))]
        );
        assert_eq!(buffer.len(), 2, "nothing discarded");
        assert_eq!(
            buffer.take_range(&ChunkRange::ints(Some(10), Some(20))),
            vec![(k(10), Change::Upsert(10))]
        );
        assert_eq!(
            buffer.take_range(&ChunkRange::ints(Some(20), Some(20))),
            vec![]
        );
        assert_eq!(
            buffer.take_range(&ChunkRange::ints(Some(20), None)),
            vec![(k(25), Change::Upsert(25))]
        );
    }
}
