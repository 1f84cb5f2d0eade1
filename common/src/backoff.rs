//! Capped, jittered exponential back-off for retrying retryable errors.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Delay before retry number `attempt` (0-based): `base * 2^attempt`, capped at `cap`, then
/// scaled into `[50%, 100%]` of that by `jitter` (a uniform value in `[0, 1)`), so that many
/// clients failing together do not retry in lockstep.
pub fn delay(attempt: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exponential = base.saturating_mul(2u32.saturating_pow(attempt.min(31)));
    let capped = exponential.min(cap);
    let jitter = jitter.clamp(0.0, 1.0);
    capped.mul_f64(0.5 + jitter / 2.0)
}

/// A jitter value in `[0, 1)` from the clock's nanoseconds: not random, but enough to keep
/// processes and chunks that fail together out of lockstep. (The one clock read here; [`delay`]
/// stays pure.)
pub fn clock_jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    f64::from(nanos % 1_000) / 1_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_with_bounded_jitter() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(2);
        assert_eq!(delay(0, base, cap, 1.0), Duration::from_millis(100));
        assert_eq!(delay(0, base, cap, 0.0), Duration::from_millis(50));
        assert_eq!(delay(3, base, cap, 0.0), Duration::from_millis(400));
        assert_eq!(delay(10, base, cap, 0.0), Duration::from_secs(1));
        assert_eq!(delay(u32::MAX, base, cap, 0.99), cap.mul_f64(0.995));
        for attempt in 0..40 {
            assert!(delay(attempt, base, cap, 0.999) <= cap);
        }
    }
}
