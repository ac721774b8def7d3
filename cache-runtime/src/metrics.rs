//! What each cached function counts, recorded through the `metrics` facade.
//!
//! The cache records into whatever recorder the application installs
//! (`metrics-exporter-prometheus`, a StatsD or OpenTelemetry bridge, …); with
//! none installed, every handle is a no-op and nothing is recorded.
//!
//! | kind | name | labels | counts |
//! |---|---|---|---|
//! | counter | `cache_hits_total` | `function`, `tier` | calls answered without running the body: `tier="redis"` from Redis, `"local"` from the local tier, `"stale"` with a stale value (`stale = …`) while a background refresh runs |
//! | counter | `cache_misses_total` | `function` | calls that found no usable entry (absent, expired, or no longer decodable) and ran the body, or waited for another caller's run |
//! | counter | `cache_errors_total` | `function` | failed Redis operations (unreachable, deadline passed, server error); a call whose lookup failed ran its body and counts here, not as a miss; a miss whose store then failed counts in both |
//! | counter | `cache_coalesced_total` | `function` | calls that waited for another caller's run of the body (in this process, or in another one holding the key's lease or its `lock`) |
//! | counter | `cache_refreshes_total` | `function` | background refreshes of stale values, and early refreshes (`early_refresh = true`) |
//! | counter | `cache_bypassed_total` | `function` | calls made inside [`bypass`](crate::bypass), which ran the body without the cache |
//! | counter | `cache_fail_safe_total` | `function` | calls answered with the last good value (`fail_safe = …`) because the body failed or passed its `soft_timeout`, or because a recent failure throttles it (`fail_safe_throttle`) |
//! | counter | `cache_evictions_total` | `function` | evictions by a `#[cache_evict]` function or a derived invalidator that succeeded |
//! | counter | `cache_eviction_errors_total` | `function` | evictions that failed (each one is retried in the background) |
//! | counter | `cache_oversized_total` | `function` | results not stored because they were over `max_value_size` |
//! | histogram | `cache_call_duration_seconds` | `function` | whole-call durations, the body included |
//!
//! `function` is the function's path, `crate::module::function`, as in its
//! keys. A function has only the series it can record: a `#[redis_cached]`
//! function all but the two eviction counters; a `#[cache_put]` function
//! and a derived `…_refresh` helper `cache_errors_total` and
//! `cache_oversized_total`; a `#[cache_evict]` function and a derived
//! `…_invalidate` helper the two eviction counters. [`LATENCY_BUCKETS`] suggests bucket bounds for an exporter that
//! needs them.
//!
//! **Install the recorder before the first cached call.** Each function takes
//! its handles from the recorder on its first call and keeps them, so that a
//! hit never builds labels or looks a metric up; handles taken while no
//! recorder was installed stay no-ops. This is the rule of every library that
//! caches `metrics` handles.
//!
//! There is no other way to read the counters: the facade is the one source.
//! A program that wants them in-process installs a recorder that keeps them
//! (`metrics-util`'s `DebuggingRecorder` does, and the tests use it).

use std::sync::{Once, OnceLock};
use std::time::Duration;

use ::metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_histogram, histogram,
};

/// Suggested upper bounds (inclusive) of `cache_call_duration_seconds`'s
/// buckets, in seconds: from a local-tier hit to a slow body. Give them to an
/// exporter that buckets histograms (for instance
/// `PrometheusBuilder::set_buckets_for_metric`).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// One cached function: its options and its metric handles. The macro creates
/// one per function, as a `static`.
pub struct CallSite {
    name: &'static str,
    pub(crate) options: CallOptions,
    handles: OnceLock<Handles>,
}

/// The attribute's options, fixed at compile time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallOptions {
    /// `ttl`, in milliseconds; 0 for the cache's default.
    pub(crate) ttl_millis: u64,
    /// `stale`, in milliseconds; 0 for none.
    pub(crate) stale_millis: u64,
    /// `fail_safe`, in milliseconds; 0 for none.
    pub(crate) fail_safe_millis: u64,
    /// `fail_safe_throttle`, in milliseconds; 0 for none.
    pub(crate) fail_safe_throttle_millis: u64,
    /// `soft_timeout`, in milliseconds; 0 for none.
    pub(crate) soft_timeout_millis: u64,
    pub(crate) early_refresh: bool,
    /// `format`; `None` for the cache's.
    pub(crate) format: Option<crate::codec::Format>,
    pub(crate) lock: bool,
    pub(crate) coalesce: bool,
    pub(crate) local: bool,
}

impl CallOptions {
    /// Whether entries carry when their value stops being fresh (`exp`), and
    /// lookups read it: with `stale`, `fail_safe` or `early_refresh`.
    pub(crate) fn reads_freshness(&self) -> bool {
        self.stale_millis > 0 || self.fail_safe_millis > 0 || self.early_refresh
    }
}

/// What a site's function does, which decides the metrics it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SiteKind {
    /// A `#[redis_cached]` function: hits, misses, errors, coalesced calls,
    /// refreshes, oversized results and durations.
    Cached,
    /// A `#[cache_put]` function or a derived `…_refresh` helper: errors
    /// and oversized results.
    Put,
    /// A `#[cache_evict]` function or a derived `…_invalidate` helper:
    /// evictions and eviction errors.
    Evict,
}

/// One function's handles, taken from the recorder once. Those its kind
/// never records are no-ops, so that a recorder shows no series that could
/// only ever read 0 (no `cache_hits_total` for an evicting function).
struct Handles {
    hits: Counter,
    local_hits: Counter,
    stale_hits: Counter,
    misses: Counter,
    errors: Counter,
    coalesced: Counter,
    refreshes: Counter,
    fail_safe: Counter,
    bypassed: Counter,
    evictions: Counter,
    eviction_errors: Counter,
    oversized: Counter,
    duration: Histogram,
}

impl Handles {
    fn new(function: &'static str, kind: SiteKind) -> Handles {
        static DESCRIBED: Once = Once::new();
        DESCRIBED.call_once(describe);
        let cached = kind == SiteKind::Cached;
        let stores = kind != SiteKind::Evict;
        let evicts = kind == SiteKind::Evict;
        let counter_if = |registered: bool, name: &'static str| {
            if registered {
                counter!(name, "function" => function)
            } else {
                Counter::noop()
            }
        };
        let hits = |tier: &'static str| {
            if cached {
                counter!("cache_hits_total", "function" => function, "tier" => tier)
            } else {
                Counter::noop()
            }
        };
        Handles {
            hits: hits("redis"),
            local_hits: hits("local"),
            stale_hits: hits("stale"),
            misses: counter_if(cached, "cache_misses_total"),
            errors: counter_if(stores, "cache_errors_total"),
            coalesced: counter_if(cached, "cache_coalesced_total"),
            refreshes: counter_if(cached, "cache_refreshes_total"),
            fail_safe: counter_if(cached, "cache_fail_safe_total"),
            bypassed: counter_if(cached, "cache_bypassed_total"),
            evictions: counter_if(evicts, "cache_evictions_total"),
            eviction_errors: counter_if(evicts, "cache_eviction_errors_total"),
            oversized: counter_if(stores, "cache_oversized_total"),
            duration: if cached {
                histogram!("cache_call_duration_seconds", "function" => function)
            } else {
                Histogram::noop()
            },
        }
    }
}

/// Describes every metric to the recorder installed at the first registration.
fn describe() {
    describe_counter!(
        "cache_hits_total",
        Unit::Count,
        "Calls answered without running the function, by tier: redis, local or stale."
    );
    describe_counter!(
        "cache_misses_total",
        Unit::Count,
        "Calls that found no usable entry and ran the function (or waited for another caller's run)."
    );
    describe_counter!(
        "cache_errors_total",
        Unit::Count,
        "Failed Redis operations (unreachable, deadline passed, server error)."
    );
    describe_counter!(
        "cache_coalesced_total",
        Unit::Count,
        "Calls that waited for another caller's run of the function."
    );
    describe_counter!(
        "cache_refreshes_total",
        Unit::Count,
        "Background refreshes of stale values, and early refreshes."
    );
    describe_counter!(
        "cache_fail_safe_total",
        Unit::Count,
        "Calls answered with the last good value because the function failed or was slow."
    );
    describe_counter!(
        "cache_bypassed_total",
        Unit::Count,
        "Calls made inside bypass(), which ran the function without the cache."
    );
    describe_counter!(
        "cache_evictions_total",
        Unit::Count,
        "Successful evictions by #[cache_evict] functions and derived invalidators."
    );
    describe_counter!(
        "cache_eviction_errors_total",
        Unit::Count,
        "Failed evictions, each retried in the background."
    );
    describe_counter!(
        "cache_oversized_total",
        Unit::Count,
        "Results not stored because they were over max_value_size."
    );
    describe_histogram!(
        "cache_call_duration_seconds",
        Unit::Seconds,
        "Duration of cached calls, the function's body included on a miss."
    );
}

impl CallSite {
    #[doc(hidden)]
    pub const fn new(name: &'static str) -> Self {
        CallSite {
            name,
            options: CallOptions {
                ttl_millis: 0,
                stale_millis: 0,
                fail_safe_millis: 0,
                fail_safe_throttle_millis: 0,
                soft_timeout_millis: 0,
                early_refresh: false,
                format: None,
                lock: false,
                coalesce: true,
                local: false,
            },
            handles: OnceLock::new(),
        }
    }

    #[doc(hidden)]
    pub const fn ttl_millis(mut self, millis: u64) -> Self {
        self.options.ttl_millis = millis;
        self
    }

    #[doc(hidden)]
    pub const fn stale_millis(mut self, millis: u64) -> Self {
        self.options.stale_millis = millis;
        self
    }

    #[doc(hidden)]
    pub const fn fail_safe_millis(mut self, millis: u64) -> Self {
        self.options.fail_safe_millis = millis;
        self
    }

    #[doc(hidden)]
    pub const fn fail_safe_throttle_millis(mut self, millis: u64) -> Self {
        self.options.fail_safe_throttle_millis = millis;
        self
    }

    #[doc(hidden)]
    pub const fn soft_timeout_millis(mut self, millis: u64) -> Self {
        self.options.soft_timeout_millis = millis;
        self
    }

    #[doc(hidden)]
    pub const fn early_refresh(mut self, early_refresh: bool) -> Self {
        self.options.early_refresh = early_refresh;
        self
    }

    #[doc(hidden)]
    pub const fn format(mut self, format: crate::codec::Format) -> Self {
        self.options.format = Some(format);
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

    /// Takes this function's handles from the recorder, on its first call:
    /// those a function of `kind` records. Every entry point registers its
    /// site before it records anything.
    #[inline]
    pub(crate) fn register(&'static self, kind: SiteKind) {
        self.handles.get_or_init(|| Handles::new(self.name, kind));
    }

    #[inline]
    fn handles(&self) -> &Handles {
        // Registered by its entry point; a cached function's if not.
        self.handles
            .get_or_init(|| Handles::new(self.name, SiteKind::Cached))
    }

    pub(crate) fn record_hit(&self) {
        self.handles().hits.increment(1);
    }

    pub(crate) fn record_local_hit(&self) {
        self.handles().local_hits.increment(1);
    }

    pub(crate) fn record_stale_hit(&self) {
        self.handles().stale_hits.increment(1);
    }

    pub(crate) fn record_coalesced(&self) {
        self.handles().coalesced.increment(1);
    }

    pub(crate) fn record_refresh(&self) {
        self.handles().refreshes.increment(1);
    }

    pub(crate) fn record_fail_safe(&self) {
        self.handles().fail_safe.increment(1);
    }

    pub(crate) fn record_bypass(&self) {
        self.handles().bypassed.increment(1);
    }

    pub(crate) fn record_eviction(&self) {
        self.handles().evictions.increment(1);
    }

    pub(crate) fn record_eviction_error(&self) {
        self.handles().eviction_errors.increment(1);
    }

    pub(crate) fn record_oversized(&self) {
        self.handles().oversized.increment(1);
    }

    pub(crate) fn record_miss(&self) {
        self.handles().misses.increment(1);
    }

    pub(crate) fn record_error(&self) {
        self.handles().errors.increment(1);
    }

    pub(crate) fn record_latency(&self, elapsed: Duration) {
        self.handles().duration.record(elapsed.as_secs_f64());
    }
}
