//! Adaptive chunk sizing: the key span of the next copy chunk, from the server-side statement
//! time of recent chunks (design "Row copy" §4).
//!
//! # Rules
//! - Start at the configured size; aim at a target statement time (default 500 ms).
//! - Only chunks planned at the current size count: feedback from chunks planned at an older size
//!   is ignored (after a change, the chunks already in flight would otherwise move it twice).
//! - A chunk slower than 5× the target cuts the size to a tenth at once.
//! - Otherwise, once [`WINDOW`] chunks at the current size reported, the size moves by
//!   target / p90 of their times, growing at most 1.5× a step and shrinking at most to a tenth.
//! - Slow start: until a window's p90 first reaches half the target (or a chunk takes 5× it),
//!   growth may reach 10× a step. From 1,000 keys at 1.5× a step, a 1M-row table was copied
//!   mostly in chunks far under their target time, and chunks of a fixed byte budget were faster
//!   (`make bench`, three runs); the design's 1.5× (Spirit's) holds once the size is near its
//!   target, where a step too far costs a slow chunk.
//! - The size stays within `[floor, ceiling]` (10 and 100,000 keys by default, Spirit's bounds).
//!
//! Pure: the owner feeds it completions and asks for sizes; it performs no I/O.

use std::time::Duration;

/// Chunks at the current size needed before the size moves.
pub const WINDOW: usize = 4;
/// Largest growth in one step.
const MAX_GROWTH: f64 = 1.5;
/// Largest growth in one step during the slow start.
const SLOW_START_GROWTH: f64 = 10.0;
/// A chunk this many times slower than the target cuts the size at once.
const PANIC_FACTOR: u32 = 5;

/// How chunks are sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizingRules {
    /// Key span of the first chunks.
    pub initial: u64,
    /// Statement time to aim at; zero keeps the size fixed at `initial`.
    pub target: Duration,
    /// Smallest span.
    pub floor: u64,
    /// Largest span.
    pub ceiling: u64,
}

impl SizingRules {
    /// Fixed or adaptive sizing from `initial`, with the default bounds.
    pub fn new(initial: u64, target: Duration) -> Self {
        Self {
            initial,
            target,
            floor: 10,
            ceiling: 100_000,
        }
    }
}

/// The sizer of one migration (shared by every worker of the fleet through the owner).
#[derive(Debug, Clone)]
pub struct ChunkSizer {
    rules: SizingRules,
    size: u64,
    /// Statement times of chunks planned at `size`, since it was set.
    recent: Vec<Duration>,
    /// The slow start is over: a window reached half the target, or a chunk took 5× it.
    settled: bool,
}

impl ChunkSizer {
    /// A sizer starting at `rules.initial` (clamped to the bounds).
    pub fn new(rules: SizingRules) -> Self {
        let size = if rules.target.is_zero() {
            rules.initial.max(1)
        } else {
            rules.initial.clamp(rules.floor, rules.ceiling)
        };
        Self {
            rules,
            size,
            recent: Vec::with_capacity(WINDOW),
            settled: false,
        }
    }

    /// Key span of the next chunk.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Feeds back a completed chunk planned with key span `planned` that took `took` on the
    /// server. Returns the new size when it changed.
    pub fn observe(&mut self, planned: u64, took: Duration) -> Option<u64> {
        if self.rules.target.is_zero() || planned != self.size {
            return None;
        }
        let before = self.size;
        if took > self.rules.target * PANIC_FACTOR {
            self.settled = true;
            self.set(before / 10);
        } else {
            self.recent.push(took);
            if self.recent.len() < WINDOW {
                return None;
            }
            let p90 = percentile_90(&mut self.recent).max(Duration::from_micros(100));
            self.settled |= p90 * 2 >= self.rules.target;
            let growth = if self.settled {
                MAX_GROWTH
            } else {
                SLOW_START_GROWTH
            };
            let factor = (self.rules.target.as_secs_f64() / p90.as_secs_f64()).clamp(0.1, growth);
            self.set((before as f64 * factor).round() as u64);
        }
        (self.size != before).then_some(self.size)
    }

    fn set(&mut self, size: u64) {
        let size = size.clamp(self.rules.floor, self.rules.ceiling);
        // Only a change starts a new window; an unchanged size keeps collecting.
        if size != self.size {
            self.size = size;
            self.recent.clear();
        } else if self.recent.len() >= WINDOW {
            self.recent.clear();
        }
    }
}

/// Checksum ranges per checksum session: enough to keep every session busy to the end.
const RANGES_PER_SESSION: u64 = 4;

/// Keys per checksum range over a table of about `keys` keys (the key span of an integer key,
/// the estimated row count otherwise), compared by `sessions` sessions at once: about four ranges
/// per session, each 1,000 to 1,000,000 keys (checksum ranges are sized apart from copy chunks:
/// one statement per range and table, no fence).
pub fn checksum_span(keys: u64, sessions: usize) -> u64 {
    let ranges = (sessions.max(1) as u64).saturating_mul(RANGES_PER_SESSION);
    keys.div_ceil(ranges).clamp(1_000, 1_000_000)
}

/// The 90th percentile (nearest rank) of a non-empty sample.
fn percentile_90(sample: &mut [Duration]) -> Duration {
    sample.sort_unstable();
    let rank = (sample.len() * 9).div_ceil(10).max(1);
    sample[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn adaptive(initial: u64) -> ChunkSizer {
        ChunkSizer::new(SizingRules::new(initial, 500 * MS))
    }

    fn feed(sizer: &mut ChunkSizer, took: Duration) -> Option<u64> {
        let mut changed = None;
        for _ in 0..WINDOW {
            changed = sizer.observe(sizer.size(), took).or(changed);
        }
        changed
    }

    #[test]
    fn the_slow_start_grows_up_to_ten_times_a_step_until_chunks_reach_half_the_target() {
        let mut sizer = adaptive(1_000);
        assert_eq!(
            feed(&mut sizer, 10 * MS),
            Some(10_000),
            "50× under: capped at 10×"
        );
        assert_eq!(feed(&mut sizer, 100 * MS), Some(50_000), "5× under");
        // Half the target reached: the slow start is over, steps are 1.5× at most again.
        assert_eq!(feed(&mut sizer, 250 * MS), Some(75_000));
        assert_eq!(feed(&mut sizer, 10 * MS), Some(100_000), "ceiling");
        let mut sizer = adaptive(1_000);
        feed(&mut sizer, 10 * MS);
        assert_eq!(feed(&mut sizer, 249 * MS), Some(20_080), "still slow start");
    }

    #[test]
    fn after_the_slow_start_fast_chunks_grow_at_most_one_and_a_half_times_a_step() {
        let mut sizer = adaptive(1_000);
        assert_eq!(feed(&mut sizer, 400 * MS), Some(1_250));
        assert_eq!(feed(&mut sizer, 10 * MS), Some(1_875));
        assert_eq!(feed(&mut sizer, 10 * MS), Some(2_813));
        // A shrink ends it too.
        let mut sizer = adaptive(10_000);
        assert_eq!(feed(&mut sizer, 1_000 * MS), Some(5_000));
        assert_eq!(feed(&mut sizer, 10 * MS), Some(7_500));
        // And a very slow chunk.
        let mut sizer = adaptive(10_000);
        assert_eq!(sizer.observe(10_000, 3_000 * MS), Some(1_000));
        assert_eq!(feed(&mut sizer, 10 * MS), Some(1_500));
    }

    #[test]
    fn the_size_converges_on_the_target_time() {
        let mut sizer = adaptive(1_000);
        // A server that takes 0.1 ms per key: 5,000 keys hit 500 ms.
        for _ in 0..40 {
            let took = Duration::from_micros(100 * sizer.size());
            sizer.observe(sizer.size(), took);
        }
        assert!((4_900..=5_100).contains(&sizer.size()), "{}", sizer.size());
    }

    #[test]
    fn slow_chunks_shrink_by_their_p90() {
        let mut sizer = adaptive(10_000);
        assert_eq!(feed(&mut sizer, 1_000 * MS), Some(5_000));
    }

    #[test]
    fn a_very_slow_chunk_cuts_to_a_tenth_at_once() {
        let mut sizer = adaptive(10_000);
        assert_eq!(sizer.observe(10_000, 3_000 * MS), Some(1_000));
    }

    #[test]
    fn feedback_from_an_older_size_is_ignored() {
        let mut sizer = adaptive(1_000);
        feed(&mut sizer, 10 * MS);
        assert_eq!(sizer.size(), 10_000);
        // Chunks planned at 1,000 still in flight report: nothing moves, even a slow one.
        for _ in 0..10 {
            assert_eq!(sizer.observe(1_000, 10_000 * MS), None);
        }
        assert_eq!(sizer.size(), 10_000);
    }

    #[test]
    fn the_size_stays_within_its_bounds() {
        let mut sizer = adaptive(90_000);
        assert_eq!(feed(&mut sizer, MS), Some(100_000));
        assert_eq!(feed(&mut sizer, MS), None, "at the ceiling");
        let mut sizer = adaptive(50);
        assert_eq!(sizer.observe(50, 10_000 * MS), Some(10));
        assert_eq!(sizer.observe(10, 10_000 * MS), None, "at the floor");
        assert_eq!(ChunkSizer::new(SizingRules::new(5, 500 * MS)).size(), 10);
    }

    #[test]
    fn a_zero_target_keeps_the_size_fixed() {
        let mut sizer = ChunkSizer::new(SizingRules::new(1_000, Duration::ZERO));
        assert_eq!(feed(&mut sizer, MS), None);
        assert_eq!(sizer.observe(1_000, 100_000 * MS), None);
        assert_eq!(sizer.size(), 1_000);
    }

    #[test]
    fn checksum_ranges_keep_every_session_busy_within_bounds() {
        assert_eq!(checksum_span(1_000_000, 4), 62_500);
        assert_eq!(checksum_span(1_000_000, 0), 250_000);
        assert_eq!(checksum_span(100, 4), 1_000, "floor");
        assert_eq!(checksum_span(0, 4), 1_000, "empty table");
        assert_eq!(checksum_span(u64::MAX, 2), 1_000_000, "ceiling");
    }

    #[test]
    fn p90_is_the_nearest_rank() {
        let mut sample: Vec<Duration> = (1..=10).map(|n| n * MS).collect();
        assert_eq!(percentile_90(&mut sample), 9 * MS);
        assert_eq!(percentile_90(&mut [7 * MS]), 7 * MS);
    }
}
