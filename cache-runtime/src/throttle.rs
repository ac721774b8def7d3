//! The fail-safe throttle: which keys' bodies failed recently, so that calls
//! answer with the last good value instead of running them again
//! (`fail_safe_throttle = …`).
//!
//! Kept in each process, not in Redis: a database that is down is then tried
//! at most once per throttle period by each process, whatever the number of
//! callers, and nothing is written to Redis for it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At this many keys, a new throttle first drops the ones that ended.
const PRUNE_ABOVE: usize = 1024;

/// The keys whose bodies failed, and until when each is throttled.
#[derive(Default)]
pub(crate) struct Throttles {
    until: Mutex<Until>,
}

#[derive(Default)]
struct Until {
    keys: HashMap<String, Instant>,
    /// How many keys make the next prune due: twice as many as the last
    /// prune left, so that pruning costs each throttle O(1) on average even
    /// when every key is live (thousands of keys failing in an outage).
    prune_at: usize,
}

impl Throttles {
    /// `key`'s body failed: its calls get the last good value for `period`.
    pub(crate) fn throttle(&self, key: &str, period: Duration) {
        let now = Instant::now();
        let mut until = crate::sync::lock(&self.until);
        if until.keys.len() >= until.prune_at.max(PRUNE_ABOVE) {
            until.keys.retain(|_, end| *end > now);
            until.prune_at = until.keys.len() * 2;
        }
        until.keys.insert(key.to_owned(), now + period);
    }

    /// Whether `key`'s body failed less than its throttle period ago.
    pub(crate) fn throttled(&self, key: &str) -> bool {
        let until = crate::sync::lock(&self.until);
        until.keys.get(key).is_some_and(|end| *end > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_ends_after_its_period_and_covers_its_key_only() {
        let throttles = Throttles::default();
        throttles.throttle("a", Duration::from_millis(50));
        assert!(throttles.throttled("a"));
        assert!(!throttles.throttled("b"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!throttles.throttled("a"));
    }

    #[test]
    fn ended_throttles_are_pruned() {
        let throttles = Throttles::default();
        for key in 0..PRUNE_ABOVE {
            throttles.throttle(&key.to_string(), Duration::ZERO);
        }
        throttles.throttle("live", Duration::from_secs(60));
        assert_eq!(crate::sync::lock(&throttles.until).keys.len(), 1);
    }
}
