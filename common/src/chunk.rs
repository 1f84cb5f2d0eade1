//! Chunks: primary-key ranges of the source table, planned lazily, tracked until drained.
//!
//! A chunk is a half-open range `[lower, upper)` of a single-column integer primary key, where an
//! absent bound is infinite. The first chunk is `(-∞, min)` and the last `[x, +∞)`, so keys
//! inserted below the minimum or above the maximum during the copy still belong to a chunk.
//!
//! # Invariants
//! - INV-P1: the planned chunks are contiguous and disjoint, in key order, and their union is the
//!   whole key space once planning ends (no key is left without a chunk, none is in two).
//! - INV-W1 (ledger side): a key counts as drained only when its chunk was marked drained; the
//!   low watermark only passes chunks that are drained, in order.
//!
//! # Design decisions
//! Integer keys are cut arithmetically from `MIN(pk)`/`MAX(pk)` read once: the plan never touches
//! the table again, and sparse key spaces simply give empty chunks. Chunks are planned lazily (a
//! window ahead of the fleet) so memory does not grow with the table; the ledger forgets chunks
//! below the watermark. Composite and non-integer keys (probed ranges) come later and will make
//! `ChunkRange` generic over the key type.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Position of a chunk in plan (and key) order; also the key of its `_<t>_fence` row.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ChunkId(pub u64);

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `[lower, upper)` over an integer key; `None` is -∞ (lower) or +∞ (upper).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRange {
    /// Inclusive lower bound; `None` = unbounded below.
    pub lower: Option<i64>,
    /// Exclusive upper bound; `None` = unbounded above.
    pub upper: Option<i64>,
}

impl ChunkRange {
    /// The whole key space.
    pub const ALL: ChunkRange = ChunkRange {
        lower: None,
        upper: None,
    };

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: i64) -> bool {
        self.lower.is_none_or(|lower| key >= lower) && self.upper.is_none_or(|upper| key < upper)
    }
}

impl fmt::Display for ChunkRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lower {
            Some(lower) => write!(f, "[{lower}, ")?,
            None => write!(f, "(-inf, ")?,
        }
        match self.upper {
            Some(upper) => write!(f, "{upper})"),
            None => write!(f, "+inf)"),
        }
    }
}

/// Where the lazy planner stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Cursor {
    /// Nothing planned yet.
    Start,
    /// The next chunk starts at this key.
    From(i64),
    /// The last chunk (up to +∞) was planned.
    Done,
}

/// Cuts an integer key space into chunks on demand. Serializable: a checkpoint records where
/// planning stood, so a resumed migration plans the same chunks from there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntChunkPlanner {
    /// `MIN(pk)` and `MAX(pk)` when planning started; `None` for an empty table.
    bounds: Option<(i64, i64)>,
    cursor: Cursor,
    /// Id of the next chunk.
    next_id: u64,
}

impl IntChunkPlanner {
    /// A planner for a table whose keys spanned `bounds` (`None`: empty) when the copy began.
    pub fn new(bounds: Option<(i64, i64)>) -> Self {
        Self {
            bounds,
            cursor: Cursor::Start,
            next_id: 0,
        }
    }

    /// Whether every chunk has been planned.
    pub fn is_done(&self) -> bool {
        self.cursor == Cursor::Done
    }

    /// The next chunk, of about `rows` keys, or `None` once the key space is covered.
    pub fn next_chunk(&mut self, rows: u64) -> Option<(ChunkId, ChunkRange)> {
        let step = i64::try_from(rows.max(1)).unwrap_or(i64::MAX);
        let range = match (self.cursor, self.bounds) {
            (Cursor::Done, _) => return None,
            (Cursor::Start, None) => {
                self.cursor = Cursor::Done;
                ChunkRange::ALL
            }
            (Cursor::Start, Some((min, _))) => {
                self.cursor = Cursor::From(min);
                ChunkRange {
                    lower: None,
                    upper: Some(min),
                }
            }
            (Cursor::From(lower), bounds) => {
                let max = bounds.map_or(lower, |(_, max)| max);
                match lower.checked_add(step) {
                    Some(upper) if upper <= max => {
                        self.cursor = Cursor::From(upper);
                        ChunkRange {
                            lower: Some(lower),
                            upper: Some(upper),
                        }
                    }
                    _ => {
                        self.cursor = Cursor::Done;
                        ChunkRange {
                            lower: Some(lower),
                            upper: None,
                        }
                    }
                }
            }
        };
        let id = ChunkId(self.next_id);
        self.next_id += 1;
        Some((id, range))
    }
}

/// Sort position of a lower bound (-∞ first).
fn position(bound: Option<i64>) -> i128 {
    bound.map_or(i128::MIN, i128::from)
}

/// Planned chunks not yet below the watermark, and which of them are drained.
///
/// "Drained" (INV-W1) means copied at the current fence epoch AND every deferred change for its
/// keys flushed; from then on changes to its keys are applied directly.
#[derive(Debug, Clone)]
pub struct ChunkLedger {
    /// Chunks at or above the watermark, by id: (range, drained?).
    chunks: BTreeMap<ChunkId, (ChunkRange, bool)>,
    /// Chunk id by the sort position of its lower bound, for key lookup.
    by_lower: BTreeMap<i128, ChunkId>,
    /// Every chunk below this id is drained and forgotten.
    watermark: ChunkId,
    /// Every key below this position is in a drained chunk (`i128::MIN`: none yet).
    drained_below: i128,
    /// Whether the chunk reaching +∞ is below the watermark (everything drained).
    top_drained: bool,
}

impl Default for ChunkLedger {
    fn default() -> Self {
        Self {
            chunks: BTreeMap::new(),
            by_lower: BTreeMap::new(),
            watermark: ChunkId(0),
            drained_below: i128::MIN,
            top_drained: false,
        }
    }
}

impl ChunkLedger {
    /// Records a newly planned chunk. Chunks must be recorded in plan order.
    pub fn plan(&mut self, id: ChunkId, range: ChunkRange) {
        debug_assert!(
            self.chunks
                .last_key_value()
                .is_none_or(|(last, (last_range, _))| *last < id
                    && last_range.upper == range.lower),
            "INV-P1: chunks are recorded contiguously in order"
        );
        self.by_lower.insert(position(range.lower), id);
        self.chunks.insert(id, (range, false));
    }

    /// Marks a chunk drained and advances the watermark over every drained prefix.
    /// Returns false if the chunk is unknown or already below the watermark.
    pub fn mark_drained(&mut self, id: ChunkId) -> bool {
        let Some((_, drained)) = self.chunks.get_mut(&id) else {
            return false;
        };
        *drained = true;
        while let Some(entry) = self.chunks.first_entry() {
            let (range, drained) = *entry.get();
            if !drained {
                break;
            }
            let id = *entry.key();
            entry.remove();
            self.by_lower.remove(&position(range.lower));
            self.watermark = ChunkId(id.0 + 1);
            match range.upper {
                Some(upper) => self.drained_below = i128::from(upper),
                None => self.top_drained = true,
            }
        }
        true
    }

    /// The first chunk id that is not yet drained: everything below it is (INV-W1).
    pub fn low_watermark(&self) -> ChunkId {
        self.watermark
    }

    /// The range of a chunk still tracked.
    pub fn range(&self, id: ChunkId) -> Option<ChunkRange> {
        self.chunks.get(&id).map(|(range, _)| *range)
    }

    /// The chunk holding `key`, if it is planned and not yet below the watermark.
    pub fn chunk_of(&self, key: i64) -> Option<ChunkId> {
        let (_, id) = self.by_lower.range(..=i128::from(key)).next_back()?;
        let (range, _) = self.chunks.get(id)?;
        range.contains(key).then_some(*id)
    }

    /// Whether a change to `key` may be applied now: its chunk is drained. Keys in chunks not
    /// yet planned, or planned but not drained, must be deferred.
    pub fn is_drained(&self, key: i64) -> bool {
        if self.top_drained || i128::from(key) < self.drained_below {
            return true;
        }
        self.chunk_of(key)
            .and_then(|id| self.chunks.get(&id))
            .is_some_and(|(_, drained)| *drained)
    }

    /// Chunks tracked (planned and at or above the watermark).
    pub fn tracked(&self) -> usize {
        self.chunks.len()
    }

    /// Whether every key is drained (the chunk reaching +∞ passed the watermark).
    pub fn all_drained(&self) -> bool {
        self.top_drained
    }
}

/// What a checkpoint records of the plan: the planner's cursor and every chunk at or above the
/// watermark with its drained flag (the drained set S of INV-W1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSnapshot {
    /// The planner, as far as it got.
    pub planner: IntChunkPlanner,
    /// Every chunk below this id is drained.
    pub watermark: ChunkId,
    /// Every key below this one is in a drained chunk (`None`: no chunk passed the watermark).
    pub drained_below: Option<i64>,
    /// Whether the chunk reaching +∞ passed the watermark.
    pub top_drained: bool,
    /// Chunks at or above the watermark: id, range, drained.
    pub chunks: Vec<(ChunkId, ChunkRange, bool)>,
}

impl PlanSnapshot {
    /// Records the plan and the ledger.
    pub fn capture(planner: &IntChunkPlanner, ledger: &ChunkLedger) -> Self {
        Self {
            planner: planner.clone(),
            watermark: ledger.watermark,
            drained_below: (ledger.drained_below != i128::MIN)
                .then(|| i64::try_from(ledger.drained_below).ok())
                .flatten(),
            top_drained: ledger.top_drained,
            chunks: ledger
                .chunks
                .iter()
                .map(|(id, (range, drained))| (*id, *range, *drained))
                .collect(),
        }
    }

    /// The planner and ledger again, and the chunks that were planned but not drained: a
    /// resumed migration copies those again (clearing their range first) under a new fence.
    pub fn restore(&self) -> (IntChunkPlanner, ChunkLedger, Vec<(ChunkId, ChunkRange)>) {
        let mut ledger = ChunkLedger {
            watermark: self.watermark,
            drained_below: self.drained_below.map_or(i128::MIN, i128::from),
            top_drained: self.top_drained,
            ..ChunkLedger::default()
        };
        let mut undrained = Vec::new();
        for &(id, range, drained) in &self.chunks {
            ledger.by_lower.insert(position(range.lower), id);
            ledger.chunks.insert(id, (range, drained));
            if !drained {
                undrained.push((id, range));
            }
        }
        (self.planner.clone(), ledger, undrained)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restored_plan_continues_where_the_snapshot_stood() {
        let mut planner = IntChunkPlanner::new(Some((1, 100)));
        let mut ledger = ChunkLedger::default();
        let mut planned = Vec::new();
        for _ in 0..5 {
            let (id, range) = planner.next_chunk(10).unwrap();
            ledger.plan(id, range);
            planned.push((id, range));
        }
        // Chunks 0, 1 and 3 drained: the watermark passes 0 and 1, chunk 3 is drained above it.
        for id in [0, 1, 3] {
            ledger.mark_drained(ChunkId(id));
        }
        let snapshot = PlanSnapshot::capture(&planner, &ledger);
        let text = serde_json::to_string(&snapshot).unwrap();
        let back: PlanSnapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back, snapshot);
        let (mut restored_planner, restored, undrained) = back.restore();
        assert_eq!(undrained, vec![planned[2], planned[4]]);
        assert_eq!(restored.low_watermark(), ChunkId(2));
        for key in -1_000..100 {
            assert_eq!(
                restored.is_drained(key),
                ledger.is_drained(key),
                "key {key} drained alike"
            );
        }
        assert_eq!(
            restored_planner.next_chunk(10),
            planner.clone().next_chunk(10),
            "planning continues with the next chunk"
        );
    }

    fn plan_all(bounds: Option<(i64, i64)>, rows: u64) -> Vec<ChunkRange> {
        let mut planner = IntChunkPlanner::new(bounds);
        let mut ranges = Vec::new();
        while let Some((id, range)) = planner.next_chunk(rows) {
            assert_eq!(id.0 as usize, ranges.len(), "ids follow plan order");
            ranges.push(range);
        }
        assert!(planner.is_done());
        ranges
    }

    /// INV-P1 over a set of keys: every key in exactly one chunk, chunks contiguous.
    fn assert_partition(ranges: &[ChunkRange], keys: &[i64]) {
        assert_eq!(ranges.first().unwrap().lower, None, "starts at -inf");
        assert_eq!(ranges.last().unwrap().upper, None, "ends at +inf");
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].upper, pair[1].lower, "contiguous");
            assert!(pair[0].upper.is_some());
        }
        for &key in keys {
            let holders = ranges.iter().filter(|range| range.contains(key)).count();
            assert_eq!(holders, 1, "key {key} in exactly one chunk");
        }
    }

    #[test]
    fn plans_below_min_arithmetic_middle_and_above_max() {
        let ranges = plan_all(Some((10, 35)), 10);
        assert_eq!(
            ranges,
            vec![
                ChunkRange {
                    lower: None,
                    upper: Some(10)
                },
                ChunkRange {
                    lower: Some(10),
                    upper: Some(20)
                },
                ChunkRange {
                    lower: Some(20),
                    upper: Some(30)
                },
                ChunkRange {
                    lower: Some(30),
                    upper: None
                },
            ]
        );
        assert_partition(&ranges, &[i64::MIN, -5, 9, 10, 19, 20, 35, 36, i64::MAX]);
    }

    #[test]
    fn empty_and_single_row_tables() {
        assert_eq!(plan_all(None, 1000), vec![ChunkRange::ALL]);
        let single = plan_all(Some((7, 7)), 1000);
        assert_partition(&single, &[6, 7, 8]);
        assert_eq!(single.len(), 2);
    }

    #[test]
    fn extremes_never_overflow() {
        for (bounds, rows) in [
            (Some((i64::MIN, i64::MAX)), u64::MAX),
            (Some((i64::MIN, i64::MAX)), 1 << 62),
            (Some((i64::MAX - 3, i64::MAX)), 2),
            (Some((i64::MIN, i64::MIN + 5)), 2),
        ] {
            let ranges = plan_all(bounds, rows);
            assert_partition(
                &ranges,
                &[i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX],
            );
        }
    }

    #[test]
    fn partition_holds_for_many_shapes() {
        for min in [-1_000, -7, 0, 1, 999] {
            for span in [0, 1, 2, 99, 1_000] {
                for rows in [1, 2, 3, 7, 100, 5_000] {
                    let ranges = plan_all(Some((min, min + span)), rows);
                    let keys: Vec<i64> = (min - 3..=min + span + 3).collect();
                    assert_partition(&ranges, &keys);
                }
            }
        }
    }

    #[test]
    fn ledger_defers_until_drained_and_advances_in_order() {
        let mut planner = IntChunkPlanner::new(Some((0, 29)));
        let mut ledger = ChunkLedger::default();
        let mut ids = Vec::new();
        // Plan only the first two chunks: (-inf,0) and [0,10).
        for _ in 0..2 {
            let (id, range) = planner.next_chunk(10).unwrap();
            ledger.plan(id, range);
            ids.push(id);
        }
        assert!(!ledger.is_drained(-5));
        assert!(!ledger.is_drained(5));
        assert!(!ledger.is_drained(25), "unplanned keys are not drained");
        assert_eq!(ledger.chunk_of(25), None);
        assert_eq!(ledger.chunk_of(5), Some(ids[1]));

        // Draining out of order: the watermark waits for chunk 0.
        assert!(ledger.mark_drained(ids[1]));
        assert!(ledger.is_drained(5));
        assert!(!ledger.is_drained(-5));
        assert_eq!(ledger.low_watermark(), ChunkId(0));
        assert!(ledger.mark_drained(ids[0]));
        assert_eq!(ledger.low_watermark(), ChunkId(2));
        assert_eq!(ledger.tracked(), 0, "drained prefix is forgotten");
        assert!(ledger.is_drained(i64::MIN) && ledger.is_drained(9));
        assert!(!ledger.is_drained(10));
        assert!(!ledger.mark_drained(ids[0]), "below the watermark");

        while let Some((id, range)) = planner.next_chunk(10) {
            ledger.plan(id, range);
            ids.push(id);
        }
        assert!(!ledger.all_drained());
        for id in ids.iter().skip(2).rev() {
            ledger.mark_drained(*id);
        }
        assert!(ledger.all_drained());
        assert!(ledger.is_drained(i64::MAX));
    }
}
