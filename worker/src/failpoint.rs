//! Named failpoints for deterministic fault tests.
//!
//! Configured by `SHOAL_FAILPOINTS`, read once: `name=action[;name=action…]` where action is
//! `sleep(MS)` (every hit) or `N*sleep(MS)` (the first N hits only). Each active hit logs
//! `failpoint hit` with its name at WARN, so a test can wait for the process to reach it. Unset
//! (production), a hit is one map lookup.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One configured failpoint.
#[derive(Debug)]
struct Action {
    sleep: Duration,
    /// Hits left; `u64::MAX` = unlimited.
    remaining: AtomicU64,
}

fn parse(spec: &str) -> HashMap<String, Action> {
    let mut actions = HashMap::new();
    for entry in spec
        .split(';')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let Some((name, action)) = entry.split_once('=') else {
            continue;
        };
        let (count, action) = match action.split_once('*') {
            Some((count, rest)) => (count.trim().parse::<u64>().ok(), rest),
            None => (Some(u64::MAX), action),
        };
        let millis = action
            .trim()
            .strip_prefix("sleep(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|ms| ms.parse::<u64>().ok());
        if let (Some(count), Some(millis)) = (count, millis) {
            actions.insert(
                name.trim().to_owned(),
                Action {
                    sleep: Duration::from_millis(millis),
                    remaining: AtomicU64::new(count),
                },
            );
        }
    }
    actions
}

fn configured() -> &'static HashMap<String, Action> {
    static ACTIONS: OnceLock<HashMap<String, Action>> = OnceLock::new();
    ACTIONS.get_or_init(|| parse(&std::env::var("SHOAL_FAILPOINTS").unwrap_or_default()))
}

/// Runs the action configured for `name`, if any; `context` (e.g. the chunk range) is logged.
pub async fn hit(name: &str, context: &str) {
    if let Some(sleep) = take(name, context) {
        tokio::time::sleep(sleep).await;
    }
}

/// Counts a hit of `name` and returns its configured sleep, without sleeping: for failpoints
/// whose delay is spent elsewhere (e.g. `DO SLEEP` on a MySQL session).
pub fn take(name: &str, context: &str) -> Option<Duration> {
    let action = configured().get(name)?;
    let left =
        action
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
                0 => None,
                u64::MAX => Some(u64::MAX),
                n => Some(n - 1),
            });
    if left.is_err() {
        return None;
    }
    tracing::warn!(failpoint = name, context, sleep = ?action.sleep, "failpoint hit");
    Some(action.sleep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counts_and_sleeps_and_skips_garbage() {
        let actions = parse("copy.after_read=1*sleep(5000); other=sleep(10);bad;x=explode");
        assert_eq!(actions.len(), 2);
        let first = &actions["copy.after_read"];
        assert_eq!(first.sleep, Duration::from_millis(5_000));
        assert_eq!(first.remaining.load(Ordering::SeqCst), 1);
        assert_eq!(actions["other"].remaining.load(Ordering::SeqCst), u64::MAX);
    }
}
