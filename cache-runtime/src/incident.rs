//! Rate-limited logging of cache incidents.
//!
//! When Redis is down, every cached call fails its lookup; logging each one
//! would flood the logs exactly when they matter. Each kind of incident is
//! logged at most once per interval, with the number of similar incidents
//! suppressed since the last line. Nothing logged here contains a password:
//! the only URL ever formatted is the redacted one.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The kinds of incident, each rate-limited on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Incident {
    /// Connecting or reconnecting failed.
    Connect = 0,
    /// A lookup (GET) failed.
    Lookup = 1,
    /// A store (SET) failed.
    Store = 2,
    /// A stored value could not be decoded.
    Decode = 3,
    /// A value could not be encoded.
    Encode = 4,
    /// An eviction failed.
    Evict = 5,
    /// A value was over `max_value_size`.
    TooLarge = 6,
    /// An invalidation message could not be published.
    Announce = 7,
    /// The local tier's listener (tracking or the invalidation channel)
    /// could not start, or was lost.
    #[cfg_attr(not(feature = "local"), allow(dead_code))]
    Listen = 8,
    /// Redis refused to track the local tier's keys (`CLIENT TRACKING`).
    #[cfg_attr(not(feature = "local"), allow(dead_code))]
    Tracking = 9,
    /// A call was answered with its last good value (`fail_safe`).
    FailSafe = 10,
}

const KINDS: usize = 11;

pub(crate) struct Incidents {
    interval: Duration,
    origin: Instant,
    /// Per kind: when the last line was logged, in ms since `origin`, plus one
    /// (0 means never).
    last_logged: [AtomicU64; KINDS],
    suppressed: [AtomicU64; KINDS],
}

impl Incidents {
    pub(crate) fn new(interval: Duration) -> Self {
        Incidents {
            interval,
            origin: Instant::now(),
            last_logged: [const { AtomicU64::new(0) }; KINDS],
            suppressed: [const { AtomicU64::new(0) }; KINDS],
        }
    }

    /// Logs `message` at WARN unless a line of this kind was logged less than
    /// an interval ago, in which case it only counts it.
    pub(crate) fn warn(&self, kind: Incident, message: impl FnOnce() -> String) {
        let index = kind as usize;
        let now = crate::units::millis(self.origin.elapsed()) + 1;
        let last = self.last_logged[index].load(Relaxed);
        let interval = crate::units::millis(self.interval);
        let due = last == 0 || now.saturating_sub(last) >= interval;
        if !due
            || self.last_logged[index]
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_err()
        {
            self.suppressed[index].fetch_add(1, Relaxed);
            return;
        }
        let suppressed = self.suppressed[index].swap(0, Relaxed);
        if suppressed == 0 {
            tracing::warn!(target: "cache_runtime", "{}", message());
        } else {
            tracing::warn!(
                target: "cache_runtime",
                "{} ({suppressed} similar incidents not logged)",
                message()
            );
        }
    }

    /// Logs a recovery at INFO; never rate-limited, since it follows a failure.
    pub(crate) fn recovered(&self, message: impl FnOnce() -> String) {
        tracing::info!(target: "cache_runtime", "{}", message());
    }
}
