//! Chunks: primary-key ranges of the source table, planned lazily, tracked until drained.
//!
//! A chunk is a half-open range `[lower, upper)` of the primary key, where an absent bound is
//! infinite. The first chunk is `(-∞, min)` and the last `[x, +∞)`, so keys inserted below the
//! minimum or above the maximum during the copy still belong to a chunk.
//!
//! # Invariants
//! - INV-P1: the planned chunks are contiguous and disjoint, in key order, and their union is the
//!   whole key space once planning ends (no key is left without a chunk, none is in two).
//! - INV-W1 (ledger side): a key counts as drained only when its chunk was marked drained; the
//!   low watermark only passes chunks that are drained, in order.
//!
//! # Design decisions
//! A single integer key whose span is dense ([`dense`]) is cut arithmetically from
//! `MIN(pk)`/`MAX(pk)` read once: the plan never touches the table again, and small gaps simply
//! give empty chunks. Every other key (and a sparse integer key) is
//! cut by probing the server's key order (`… WHERE key >= ? ORDER BY key LIMIT 1 OFFSET n`): the
//! planner is a pure state machine that asks for a probe ([`Step::Probe`]) and is told its answer
//! ([`ChunkPlanner::probed`]), so the bounds are always the server's own values, in the server's
//! own order (INV-K1). Chunks are planned lazily (a window ahead of the fleet) so memory does not
//! grow with the table; the ledger forgets chunks below the watermark.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::key::{Key, KeyPart};

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

/// `[lower, upper)` over the primary key; `None` is -∞ (lower) or +∞ (upper).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRange {
    /// Inclusive lower bound; `None` = unbounded below.
    pub lower: Option<Key>,
    /// Exclusive upper bound; `None` = unbounded above.
    pub upper: Option<Key>,
}

impl ChunkRange {
    /// The whole key space.
    pub const ALL: ChunkRange = ChunkRange {
        lower: None,
        upper: None,
    };

    /// Whether `key` lies in the range. Meaningful only for ordered key shapes (INV-K1).
    pub fn contains(&self, key: &Key) -> bool {
        self.lower.as_ref().is_none_or(|lower| key >= lower)
            && self.upper.as_ref().is_none_or(|upper| key < upper)
    }
}

#[cfg(test)]
impl ChunkRange {
    /// A range over a single signed integer key (unit tests).
    pub(crate) fn ints(lower: Option<i64>, upper: Option<i64>) -> Self {
        Self {
            lower: lower.map(Key::int),
            upper: upper.map(Key::int),
        }
    }
}

impl fmt::Display for ChunkRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.lower {
            Some(lower) => write!(f, "[{lower}, ")?,
            None => write!(f, "(-inf, ")?,
        }
        match &self.upper {
            Some(upper) => write!(f, "{upper})"),
            None => write!(f, "+inf)"),
        }
    }
}

/// Where a planner stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Cursor<K> {
    /// Nothing planned yet.
    Start,
    /// The next chunk starts at this key.
    From(K),
    /// The last chunk (up to +∞) was planned.
    Done,
}

/// Cuts a single integer key space into chunks arithmetically. Keys are held as `i128` so that
/// signed and unsigned 64-bit columns share one planner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntChunkPlanner {
    /// `MIN(pk)` and `MAX(pk)` when planning started; `None` for an empty table.
    bounds: Option<(i128, i128)>,
    /// Whether the column is unsigned (bounds become [`KeyPart::UInt`]).
    unsigned: bool,
    cursor: Cursor<i128>,
}

impl IntChunkPlanner {
    /// A planner for a table whose keys spanned `bounds` (`None`: empty) when the copy began.
    pub fn new(bounds: Option<(i128, i128)>, unsigned: bool) -> Self {
        Self {
            bounds,
            unsigned,
            cursor: Cursor::Start,
        }
    }

    fn key(&self, value: i128) -> Key {
        let part = if self.unsigned {
            KeyPart::UInt(u64::try_from(value).unwrap_or(u64::MAX))
        } else {
            KeyPart::Int(i64::try_from(value).unwrap_or(i64::MAX))
        };
        Key(vec![part])
    }

    fn next_range(&mut self, rows: u64) -> Option<ChunkRange> {
        let step = i128::from(rows.max(1));
        let range = match (&self.cursor, self.bounds) {
            (Cursor::Done, _) => return None,
            (Cursor::Start, None) => {
                self.cursor = Cursor::Done;
                ChunkRange::ALL
            }
            (Cursor::Start, Some((min, _))) => {
                self.cursor = Cursor::From(min);
                ChunkRange {
                    lower: None,
                    upper: Some(self.key(min)),
                }
            }
            (&Cursor::From(lower), bounds) => {
                let max = bounds.map_or(lower, |(_, max)| max);
                // Both fit 65 bits, so the sum cannot overflow an i128.
                let upper = lower + step;
                if upper <= max {
                    self.cursor = Cursor::From(upper);
                    ChunkRange {
                        lower: Some(self.key(lower)),
                        upper: Some(self.key(upper)),
                    }
                } else {
                    self.cursor = Cursor::Done;
                    ChunkRange {
                        lower: Some(self.key(lower)),
                        upper: None,
                    }
                }
            }
        };
        Some(range)
    }
}

/// Whether an integer key spanning `span` keys over about `rows` rows is dense enough to cut
/// arithmetically: at most four keys per row (a stale estimate counts as at least 1,000 rows).
/// Sparser key spaces (huge gaps, keys at both extremes) are probed instead, so that no run of
/// empty chunks walks the gaps.
pub fn dense(span: u128, rows: u64) -> bool {
    span <= u128::from(rows.max(1_000)) * 4
}

/// Cuts any key space into chunks by asking the server where the next chunk ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbePlanner {
    cursor: Cursor<Key>,
}

/// A question for the server: the key `offset` rows into the key order from `from` (inclusive;
/// `None`: from the first key), or none if the table holds fewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Where to start counting.
    pub from: Option<Key>,
    /// Rows to skip.
    pub offset: u64,
}

/// What a planner does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The next chunk.
    Chunk(ChunkId, ChunkRange),
    /// The planner needs the server's answer to this probe first ([`ChunkPlanner::probed`]).
    Probe(Probe),
    /// Every chunk is planned.
    Done,
}

/// The lazy planner of a migration's chunks. Serializable: a checkpoint records where planning
/// stood, so a resumed migration plans the same chunks from there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkPlanner {
    how: How,
    /// Id of the next chunk.
    next_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum How {
    Arithmetic(IntChunkPlanner),
    Probing(ProbePlanner),
}

impl ChunkPlanner {
    /// A planner cutting a single integer key arithmetically within `bounds`.
    pub fn arithmetic(bounds: Option<(i128, i128)>, unsigned: bool) -> Self {
        Self {
            how: How::Arithmetic(IntChunkPlanner::new(bounds, unsigned)),
            next_id: 0,
        }
    }

    /// A planner probing the server's key order.
    pub fn probing() -> Self {
        Self {
            how: How::Probing(ProbePlanner {
                cursor: Cursor::Start,
            }),
            next_id: 0,
        }
    }

    /// Keys between the bounds of an arithmetic planner (`None` when probing, 0 when empty).
    pub fn key_span(&self) -> Option<u64> {
        match &self.how {
            How::Arithmetic(planner) => Some(planner.bounds.map_or(0, |(min, max)| {
                u64::try_from(max - min + 1).unwrap_or(u64::MAX)
            })),
            How::Probing(_) => None,
        }
    }

    /// Whether every chunk has been planned.
    pub fn is_done(&self) -> bool {
        match &self.how {
            How::Arithmetic(planner) => planner.cursor == Cursor::Done,
            How::Probing(planner) => planner.cursor == Cursor::Done,
        }
    }

    fn chunk(&mut self, range: ChunkRange) -> Step {
        let id = ChunkId(self.next_id);
        self.next_id += 1;
        Step::Chunk(id, range)
    }

    /// The next step towards a chunk of about `rows` keys.
    pub fn next(&mut self, rows: u64) -> Step {
        match &mut self.how {
            How::Arithmetic(planner) => match planner.next_range(rows) {
                Some(range) => self.chunk(range),
                None => Step::Done,
            },
            How::Probing(planner) => match &planner.cursor {
                Cursor::Done => Step::Done,
                Cursor::Start => Step::Probe(Probe {
                    from: None,
                    offset: 0,
                }),
                Cursor::From(lower) => Step::Probe(Probe {
                    from: Some(lower.clone()),
                    offset: rows.max(1),
                }),
            },
        }
    }

    /// The chunk `probe` (just returned by [`Self::next`]) delimits, given the server's answer.
    pub fn probed(&mut self, probe: Probe, found: Option<Key>) -> Step {
        let How::Probing(planner) = &mut self.how else {
            return Step::Done;
        };
        let range = match (probe.from, found) {
            // The first key: the chunk below it, or the whole (empty) key space.
            (None, Some(min)) => {
                planner.cursor = Cursor::From(min.clone());
                ChunkRange {
                    lower: None,
                    upper: Some(min),
                }
            }
            (None, None) => {
                planner.cursor = Cursor::Done;
                ChunkRange::ALL
            }
            // `offset` is at least 1, so the key found lies strictly above `lower`.
            (Some(lower), Some(upper)) => {
                planner.cursor = Cursor::From(upper.clone());
                ChunkRange {
                    lower: Some(lower),
                    upper: Some(upper),
                }
            }
            (Some(lower), _) => {
                planner.cursor = Cursor::Done;
                ChunkRange {
                    lower: Some(lower),
                    upper: None,
                }
            }
        };
        self.chunk(range)
    }
}

/// Planned chunks not yet below the watermark, and which of them are drained.
///
/// "Drained" (INV-W1) means copied at the current fence epoch AND every deferred change for its
/// keys flushed; from then on changes to its keys are applied directly.
#[derive(Debug, Clone, Default)]
pub struct ChunkLedger {
    /// Chunks at or above the watermark, by id: (range, drained?).
    chunks: BTreeMap<ChunkId, (ChunkRange, bool)>,
    /// Chunk id by its lower bound (`None`, -∞, sorts first), for key lookup.
    by_lower: BTreeMap<Option<Key>, ChunkId>,
    /// Every chunk below this id is drained and forgotten.
    watermark: ChunkId,
    /// Every key below this one is in a drained chunk (`None`: no chunk passed the watermark).
    drained_below: Option<Key>,
    /// Whether the chunk reaching +∞ is below the watermark (everything drained).
    top_drained: bool,
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
        self.by_lower.insert(range.lower.clone(), id);
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
            if !entry.get().1 {
                break;
            }
            let id = *entry.key();
            let (range, _) = entry.remove();
            self.by_lower.remove(&range.lower);
            self.watermark = ChunkId(id.0 + 1);
            match range.upper {
                Some(upper) => self.drained_below = Some(upper),
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
    pub fn range(&self, id: ChunkId) -> Option<&ChunkRange> {
        self.chunks.get(&id).map(|(range, _)| range)
    }

    /// The chunk holding `key`, if it is planned and not yet below the watermark.
    pub fn chunk_of(&self, key: &Key) -> Option<ChunkId> {
        let (_, id) = self.by_lower.range(..=Some(key.clone())).next_back()?;
        let (range, _) = self.chunks.get(id)?;
        range.contains(key).then_some(*id)
    }

    /// Whether a change to `key` may be applied now: its chunk is drained. Keys in chunks not
    /// yet planned, or planned but not drained, must be deferred. Ordered key shapes only
    /// (INV-K1); for the others only [`Self::all_drained`] says anything.
    pub fn is_drained(&self, key: &Key) -> bool {
        if self.top_drained || self.drained_below.as_ref().is_some_and(|below| key < below) {
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
    pub planner: ChunkPlanner,
    /// Every chunk below this id is drained.
    pub watermark: ChunkId,
    /// Every key below this one is in a drained chunk (`None`: no chunk passed the watermark).
    pub drained_below: Option<Key>,
    /// Whether the chunk reaching +∞ passed the watermark.
    pub top_drained: bool,
    /// Chunks at or above the watermark: id, range, drained.
    pub chunks: Vec<(ChunkId, ChunkRange, bool)>,
}

impl PlanSnapshot {
    /// Records the plan and the ledger.
    pub fn capture(planner: &ChunkPlanner, ledger: &ChunkLedger) -> Self {
        Self {
            planner: planner.clone(),
            watermark: ledger.watermark,
            drained_below: ledger.drained_below.clone(),
            top_drained: ledger.top_drained,
            chunks: ledger
                .chunks
                .iter()
                .map(|(id, (range, drained))| (*id, range.clone(), *drained))
                .collect(),
        }
    }

    /// The planner and ledger again, and the chunks that were planned but not drained: a
    /// resumed migration copies those again (clearing their range first) under a new fence.
    pub fn restore(&self) -> (ChunkPlanner, ChunkLedger, Vec<(ChunkId, ChunkRange)>) {
        let mut ledger = ChunkLedger {
            watermark: self.watermark,
            drained_below: self.drained_below.clone(),
            top_drained: self.top_drained,
            ..ChunkLedger::default()
        };
        let mut undrained = Vec::new();
        for (id, range, drained) in &self.chunks {
            ledger.by_lower.insert(range.lower.clone(), *id);
            ledger.chunks.insert(*id, (range.clone(), *drained));
            if !drained {
                undrained.push((*id, range.clone()));
            }
        }
        (self.planner.clone(), ledger, undrained)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(value: i64) -> Key {
        Key::int(value)
    }

    fn range(lower: Option<i64>, upper: Option<i64>) -> ChunkRange {
        ChunkRange::ints(lower, upper)
    }

    /// Plans every chunk, answering probes from `keys` (sorted) as the server would.
    fn plan_with(mut planner: ChunkPlanner, rows: u64, keys: &[Key]) -> Vec<ChunkRange> {
        let mut ranges = Vec::new();
        let mut last_id = None;
        loop {
            let step = match planner.next(rows) {
                Step::Probe(probe) => {
                    let start = probe
                        .from
                        .as_ref()
                        .map_or(0, |from| keys.partition_point(|key| key < from));
                    let found = keys
                        .get(start + usize::try_from(probe.offset).unwrap())
                        .cloned();
                    planner.probed(probe, found)
                }
                step => step,
            };
            match step {
                Step::Chunk(id, range) => {
                    if let Some(last) = last_id {
                        assert_eq!(id.0, last + 1, "ids follow plan order");
                    }
                    last_id = Some(id.0);
                    ranges.push(range);
                }
                Step::Done => break,
                Step::Probe(_) => panic!("probed() answers with a chunk"),
            }
        }
        assert!(planner.is_done());
        ranges
    }

    fn plan_all(bounds: Option<(i64, i64)>, rows: u64) -> Vec<ChunkRange> {
        let bounds = bounds.map(|(min, max)| (i128::from(min), i128::from(max)));
        plan_with(ChunkPlanner::arithmetic(bounds, false), rows, &[])
    }

    /// INV-P1 over a set of keys: every key in exactly one chunk, chunks contiguous.
    fn assert_partition(ranges: &[ChunkRange], keys: &[Key]) {
        assert_eq!(ranges.first().unwrap().lower, None, "starts at -inf");
        assert_eq!(ranges.last().unwrap().upper, None, "ends at +inf");
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].upper, pair[1].lower, "contiguous");
            assert!(pair[0].upper.is_some());
        }
        for key in keys {
            let holders = ranges.iter().filter(|range| range.contains(key)).count();
            assert_eq!(holders, 1, "key {key} in exactly one chunk");
        }
    }

    fn ints(keys: &[i64]) -> Vec<Key> {
        keys.iter().copied().map(k).collect()
    }

    #[test]
    fn a_restored_plan_continues_where_the_snapshot_stood() {
        let mut planner = ChunkPlanner::arithmetic(Some((1, 100)), false);
        let mut ledger = ChunkLedger::default();
        let mut planned = Vec::new();
        for _ in 0..5 {
            let Step::Chunk(id, range) = planner.next(10) else {
                panic!("arithmetic planners never probe")
            };
            ledger.plan(id, range.clone());
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
        assert_eq!(undrained, vec![planned[2].clone(), planned[4].clone()]);
        assert_eq!(restored.low_watermark(), ChunkId(2));
        for key in -1_000..100 {
            assert_eq!(
                restored.is_drained(&k(key)),
                ledger.is_drained(&k(key)),
                "key {key} drained alike"
            );
        }
        assert_eq!(
            restored_planner.next(10),
            planner.clone().next(10),
            "planning continues with the next chunk"
        );
    }

    #[test]
    fn plans_below_min_arithmetic_middle_and_above_max() {
        let ranges = plan_all(Some((10, 35)), 10);
        assert_eq!(
            ranges,
            vec![
                range(None, Some(10)),
                range(Some(10), Some(20)),
                range(Some(20), Some(30)),
                range(Some(30), None),
            ]
        );
        assert_partition(
            &ranges,
            &ints(&[i64::MIN, -5, 9, 10, 19, 20, 35, 36, i64::MAX]),
        );
    }

    #[test]
    fn empty_and_single_row_tables() {
        assert_eq!(plan_all(None, 1000), vec![ChunkRange::ALL]);
        let single = plan_all(Some((7, 7)), 1000);
        assert_partition(&single, &ints(&[6, 7, 8]));
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
                &ints(&[i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX]),
            );
        }
    }

    #[test]
    fn unsigned_keys_above_the_signed_range_are_planned() {
        let top = i128::from(u64::MAX);
        let planner = ChunkPlanner::arithmetic(Some((top - 25, top)), true);
        let ranges = plan_with(planner, 10, &[]);
        let keys: Vec<Key> = [
            0,
            1 << 63,
            u64::MAX - 26,
            u64::MAX - 25,
            u64::MAX - 1,
            u64::MAX,
        ]
        .into_iter()
        .map(|value| Key(vec![KeyPart::UInt(value)]))
        .collect();
        assert_partition(&ranges, &keys);
        assert_eq!(ranges.len(), 4);
    }

    #[test]
    fn partition_holds_for_many_shapes() {
        for min in [-1_000, -7, 0, 1, 999] {
            for span in [0, 1, 2, 99, 1_000] {
                for rows in [1, 2, 3, 7, 100, 5_000] {
                    let ranges = plan_all(Some((min, min + span)), rows);
                    let keys: Vec<i64> = (min - 3..=min + span + 3).collect();
                    assert_partition(&ranges, &ints(&keys));
                }
            }
        }
    }

    #[test]
    fn only_dense_integer_keys_are_cut_arithmetically() {
        assert!(dense(1_000_000, 1_000_000));
        assert!(dense(3_900, 0), "a stale estimate counts as 1,000 rows");
        assert!(!dense(4_001, 1_000));
        assert!(!dense(u128::from(u64::MAX), 2_000), "keys at both extremes");
    }

    #[test]
    fn probing_cuts_composite_keys_at_the_servers_keys() {
        let table: Vec<Key> = (0..7)
            .flat_map(|a| {
                (0..3).map(move |b| Key(vec![KeyPart::Int(a), KeyPart::Bytes(vec![b; 3])]))
            })
            .collect();
        for rows in [1, 2, 5, 20, 21, 100] {
            let ranges = plan_with(ChunkPlanner::probing(), rows, &table);
            let mut probes = table.clone();
            probes.push(Key(vec![KeyPart::Int(-1), KeyPart::Bytes(vec![])]));
            probes.push(Key(vec![KeyPart::Int(3), KeyPart::Bytes(vec![0, 9])]));
            probes.push(Key(vec![KeyPart::Int(99), KeyPart::Bytes(vec![])]));
            assert_partition(&ranges, &probes);
            for range in &ranges[1..] {
                let rows_in = table.iter().filter(|key| range.contains(key)).count() as u64;
                assert!(rows_in <= rows, "{range} holds {rows_in} > {rows} rows");
            }
            assert_eq!(ranges.len() as u64, 2 + (table.len() as u64 - 1) / rows);
        }
        assert_eq!(
            plan_with(ChunkPlanner::probing(), 10, &[]),
            vec![ChunkRange::ALL]
        );
    }

    #[test]
    fn a_probing_planner_resumes_from_its_snapshot() {
        let table = ints(&[3, 5, 8, 13, 21, 34, 55]);
        let mut planner = ChunkPlanner::probing();
        let Step::Probe(first) = planner.next(2) else {
            panic!("probing planners probe")
        };
        assert_eq!(
            planner.probed(first, Some(k(3))),
            Step::Chunk(ChunkId(0), range(None, Some(3)))
        );
        let text = serde_json::to_string(&planner).unwrap();
        let back: ChunkPlanner = serde_json::from_str(&text).unwrap();
        assert_eq!(back, planner);
        let rest = plan_with(back, 2, &table);
        assert_eq!(rest[0], range(Some(3), Some(8)));
        assert_eq!(rest.last().unwrap(), &range(Some(55), None));
    }

    #[test]
    fn ledger_defers_until_drained_and_advances_in_order() {
        let mut planner = ChunkPlanner::arithmetic(Some((0, 29)), false);
        let mut ledger = ChunkLedger::default();
        let mut ids = Vec::new();
        let plan_one = |planner: &mut ChunkPlanner, ledger: &mut ChunkLedger| match planner.next(10)
        {
            Step::Chunk(id, range) => {
                ledger.plan(id, range);
                Some(id)
            }
            _ => None,
        };
        // Plan only the first two chunks: (-inf,0) and [0,10).
        for _ in 0..2 {
            ids.push(plan_one(&mut planner, &mut ledger).unwrap());
        }
        assert!(!ledger.is_drained(&k(-5)));
        assert!(!ledger.is_drained(&k(5)));
        assert!(!ledger.is_drained(&k(25)), "unplanned keys are not drained");
        assert_eq!(ledger.chunk_of(&k(25)), None);
        assert_eq!(ledger.chunk_of(&k(5)), Some(ids[1]));

        // Draining out of order: the watermark waits for chunk 0.
        assert!(ledger.mark_drained(ids[1]));
        assert!(ledger.is_drained(&k(5)));
        assert!(!ledger.is_drained(&k(-5)));
        assert_eq!(ledger.low_watermark(), ChunkId(0));
        assert!(ledger.mark_drained(ids[0]));
        assert_eq!(ledger.low_watermark(), ChunkId(2));
        assert_eq!(ledger.tracked(), 0, "drained prefix is forgotten");
        assert!(ledger.is_drained(&k(i64::MIN)) && ledger.is_drained(&k(9)));
        assert!(!ledger.is_drained(&k(10)));
        assert!(!ledger.mark_drained(ids[0]), "below the watermark");

        while let Some(id) = plan_one(&mut planner, &mut ledger) {
            ids.push(id);
        }
        assert!(!ledger.all_drained());
        for id in ids.iter().skip(2).rev() {
            ledger.mark_drained(*id);
        }
        assert!(ledger.all_drained());
        assert!(ledger.is_drained(&k(i64::MAX)));
    }
}
