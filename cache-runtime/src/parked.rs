//! Parked evictions: the evictions that failed, kept until a background
//! retry applies them. While any is parked, the cache skips its lookups and
//! its local copies, so this process never serves an entry whose eviction it
//! failed to apply.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::change::Target;
use crate::sync::lock;

/// The most evictions kept parked; past it the oldest are dropped (and
/// logged): their entries then live until their TTL.
const MAX_PARKED: usize = 10_000;

/// The evictions waiting for Redis.
#[derive(Default)]
pub(crate) struct Parked {
    targets: Mutex<Vec<Target>>,
    /// Whether `targets` is non-empty: read by every lookup, so an atomic.
    any: AtomicBool,
    /// Whether a retry task is running.
    retrying: AtomicBool,
}

impl Parked {
    /// Whether lookups must be skipped.
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Parks `targets`. Returns whether a retry task must be started.
    pub(crate) fn park(&self, targets: Vec<Target>) -> bool {
        {
            let mut waiting = lock(&self.targets);
            for target in targets {
                if !waiting.contains(&target) {
                    waiting.push(target);
                }
            }
            if waiting.len() > MAX_PARKED {
                let dropped = waiting.len() - MAX_PARKED;
                waiting.drain(..dropped);
                tracing::error!(
                    target: "cache_runtime",
                    "{dropped} failed eviction(s) dropped: more than {MAX_PARKED} wait for Redis; their entries live until their TTL"
                );
            }
            self.any.store(true, Ordering::Release);
        }
        !self.retrying.swap(true, Ordering::AcqRel)
    }

    /// What to retry now.
    pub(crate) fn batch(&self) -> Vec<Target> {
        lock(&self.targets).clone()
    }

    /// `batch` was applied: forgets it. Returns whether nothing is parked
    /// any more, in which case lookups resume and the retry task ends.
    pub(crate) fn applied(&self, batch: &[Target]) -> bool {
        let mut waiting = lock(&self.targets);
        waiting.retain(|target| !batch.contains(target));
        let done = waiting.is_empty();
        if done {
            self.any.store(false, Ordering::Release);
            self.retrying.store(false, Ordering::Release);
        }
        done
    }

    /// No retry task could be started: the next failure tries again.
    pub(crate) fn stopped(&self) {
        self.retrying.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_resume_once_everything_parked_is_applied() {
        let parked = Parked::default();
        let key = |k: &str| Target::Key(k.to_owned());
        assert!(!parked.any());
        assert!(parked.park(vec![key("a")]), "the first starts a task");
        assert!(!parked.park(vec![key("b"), key("a")]), "one task at a time");
        assert!(parked.any());
        let batch = parked.batch();
        assert_eq!(batch, [key("a"), key("b")]);
        parked.park(vec![key("c")]);
        assert!(!parked.applied(&batch), "`c` still waits");
        assert!(parked.any());
        assert!(parked.applied(&[key("c")]));
        assert!(!parked.any());
        assert!(parked.park(vec![key("d")]), "the next starts a task");
    }
}
