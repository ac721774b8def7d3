//! Per-function counters that a program can read.
//!
//! Every `#[redis_cached]` function owns one static [`CallSite`]. It registers
//! itself in a process-wide list on its first call, so [`snapshot`] lists the
//! functions that have run at least once.
//!
//! What is counted:
//! - `hits`: calls answered from Redis without running the body;
//! - `local_hits`: calls answered from the local tier; not counted in `hits`;
//! - `stale_hits`: calls answered with a stale value (`stale = …`) while a
//!   background refresh runs; not counted in `hits`;
//! - `coalesced`: calls that waited for another caller's run of the body
//!   (in this process, or in another one holding the `lock`);
//! - `misses`: calls that found no usable entry (absent, expired, or no longer
//!   decodable) and ran the body, or waited for another caller's run;
//! - `refreshes`: background refreshes of stale values;
//! - `evictions`, `eviction_errors`: evictions by `#[cache_evict]` functions
//!   and derived invalidators that succeeded, and that failed;
//! - `oversized`: results not stored because they were over `max_value_size`;
//! - `errors`: failed Redis operations (unreachable, deadline passed, server
//!   error). A call whose lookup failed ran its body and counts here, not as a
//!   miss; a miss whose store then failed counts in both.
//! - `latency`: a histogram of whole-call durations, body included.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (inclusive) of the latency histogram's buckets, in seconds.
/// The last, implicit bucket is `+Inf`.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];
const BUCKET_NANOS: [u64; 14] = {
    let mut nanos = [0u64; 14];
    let mut i = 0;
    while i < 14 {
        nanos[i] = (LATENCY_BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    nanos
};

/// One cached function: its options and its counters. The macro creates one
/// per function, as a `static`.
pub struct CallSite {
    name: &'static str,
    pub(crate) options: CallOptions,
    registered: AtomicBool,
    hits: AtomicU64,
    local_hits: AtomicU64,
    stale_hits: AtomicU64,
    coalesced: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    refreshes: AtomicU64,
    evictions: AtomicU64,
    eviction_errors: AtomicU64,
    oversized: AtomicU64,
    latency_buckets: [AtomicU64; 15],
    latency_sum_nanos: AtomicU64,
}

/// The attribute's options, fixed at compile time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallOptions {
    /// `ttl`, in seconds; 0 for the cache's default.
    pub(crate) ttl_secs: u64,
    /// `stale`, in seconds; 0 for none.
    pub(crate) stale_secs: u64,
    pub(crate) lock: bool,
    pub(crate) coalesce: bool,
    pub(crate) local: bool,
}

static REGISTRY: Mutex<Vec<&'static CallSite>> = Mutex::new(Vec::new());

impl CallSite {
    #[doc(hidden)]
    pub const fn new(name: &'static str) -> Self {
        CallSite {
            name,
            options: CallOptions {
                ttl_secs: 0,
                stale_secs: 0,
                lock: false,
                coalesce: true,
                local: false,
            },
            registered: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            local_hits: AtomicU64::new(0),
            stale_hits: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            eviction_errors: AtomicU64::new(0),
            oversized: AtomicU64::new(0),
            latency_buckets: [const { AtomicU64::new(0) }; 15],
            latency_sum_nanos: AtomicU64::new(0),
        }
    }

    #[doc(hidden)]
    pub const fn ttl_secs(mut self, seconds: u64) -> Self {
        self.options.ttl_secs = seconds;
        self
    }

    #[doc(hidden)]
    pub const fn stale_secs(mut self, seconds: u64) -> Self {
        self.options.stale_secs = seconds;
        self
    }

    #[doc(hidden)]
    pub const fn lock(mut self, lock: bool) -> Self {
        self.options.lock = lock;
        self
    }

    #[doc(hidden)]
    pub const fn coalesce(mut self, coalesce: bool) -> Self {
        self.options.coalesce = coalesce;
        self
    }

    #[doc(hidden)]
    pub const fn local(mut self, local: bool) -> Self {
        self.options.local = local;
        self
    }

    /// The function's path, as `crate::module::function`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    #[inline]
    pub(crate) fn register(&'static self) {
        if !self.registered.load(Relaxed) && !self.registered.swap(true, Relaxed) {
            crate::sync::lock(&REGISTRY).push(self);
        }
    }

    pub(crate) fn record_hit(&self) {
        self.hits.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_local_hit(&self) {
        self.local_hits.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_stale_hit(&self) {
        self.stale_hits.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_coalesced(&self) {
        self.coalesced.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_refresh(&self) {
        self.refreshes.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_eviction(&self) {
        self.evictions.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_eviction_error(&self) {
        self.eviction_errors.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_oversized(&self) {
        self.oversized.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_miss(&self) {
        self.misses.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    pub(crate) fn record_latency(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_NANOS.partition_point(|&bound| bound < nanos);
        self.latency_buckets[bucket].fetch_add(1, Relaxed);
        self.latency_sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// A copy of this function's counters.
    pub fn metrics(&self) -> FunctionMetrics {
        let mut buckets = [0u64; 15];
        for (out, counter) in buckets.iter_mut().zip(&self.latency_buckets) {
            *out = counter.load(Relaxed);
        }
        FunctionMetrics {
            function: self.name,
            hits: self.hits.load(Relaxed),
            local_hits: self.local_hits.load(Relaxed),
            stale_hits: self.stale_hits.load(Relaxed),
            coalesced: self.coalesced.load(Relaxed),
            misses: self.misses.load(Relaxed),
            errors: self.errors.load(Relaxed),
            refreshes: self.refreshes.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
            eviction_errors: self.eviction_errors.load(Relaxed),
            oversized: self.oversized.load(Relaxed),
            latency: LatencyHistogram {
                buckets,
                sum: Duration::from_nanos(self.latency_sum_nanos.load(Relaxed)),
            },
        }
    }
}

/// A point-in-time copy of one function's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionMetrics {
    /// The function's path, as `crate::module::function`.
    pub function: &'static str,
    /// Calls answered from Redis without running the body.
    pub hits: u64,
    /// Calls answered from the local tier; not counted in `hits`.
    pub local_hits: u64,
    /// Calls answered with a stale value while a background refresh runs; not counted in `hits`.
    pub stale_hits: u64,
    /// Calls that waited for another caller's run of the body, in this process or (with `lock`) in another.
    pub coalesced: u64,
    /// Calls that found no usable entry and ran the body, or waited for another caller's run.
    pub misses: u64,
    /// Failed Redis operations: unreachable, deadline passed, server error.
    pub errors: u64,
    /// Background refreshes of stale values.
    pub refreshes: u64,
    /// Successful evictions by `#[cache_evict]` and derived invalidators.
    pub evictions: u64,
    /// Failed evictions (each retried in the background).
    pub eviction_errors: u64,
    /// Results not stored because they were over `max_value_size`.
    pub oversized: u64,
    /// Whole-call durations, body included.
    pub latency: LatencyHistogram,
}

/// Call durations, bucketed by [`LATENCY_BUCKETS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Calls per bucket (not cumulative); the last entry counts calls slower
    /// than the last bound.
    pub buckets: [u64; 15],
    /// The sum of all call durations.
    pub sum: Duration,
}

impl LatencyHistogram {
    /// The number of calls measured.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// The counters of every cached function that has been called at least once.
pub fn snapshot() -> Vec<FunctionMetrics> {
    let sites = crate::sync::lock(&REGISTRY).clone();
    sites.into_iter().map(CallSite::metrics).collect()
}

/// The counters of one function, by its path (`crate::module::function`),
/// or `None` if it has not been called yet.
pub fn function(name: &str) -> Option<FunctionMetrics> {
    snapshot().into_iter().find(|m| m.function == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lands_in_the_right_bucket() {
        static SITE: CallSite = CallSite::new("metrics::tests::site");
        SITE.register();
        SITE.record_latency(Duration::from_micros(40));
        SITE.record_latency(Duration::from_micros(50));
        SITE.record_latency(Duration::from_millis(3));
        SITE.record_latency(Duration::from_secs(5));
        let m = function("metrics::tests::site").unwrap();
        assert_eq!(m.latency.buckets[0], 2, "<= 50 µs");
        assert_eq!(m.latency.buckets[6], 1, "<= 5 ms");
        assert_eq!(m.latency.buckets[14], 1, "+Inf");
        assert_eq!(m.latency.count(), 4);
    }
}
