//! Reads what the cache records through the `metrics` facade, for the test
//! binaries that check its counters.
//!
//! A recorder is process-wide and a function takes its handles on its first
//! call, so [`install`] must run before the first call of any function whose
//! counters a test reads, in every test of the binary that calls it. The tests
//! of one binary run in parallel and share the recorder: each reads the
//! counters of its own functions only.

#![allow(dead_code, reason = "each test binary reads only some of the counters")]

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// Installs `DebuggingRecorder` as this binary's recorder, once.
pub fn install() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("no other recorder in this binary");
        snapshotter
    })
}

/// One function's metrics, as the recorder holds them now.
#[derive(Debug, Default)]
pub struct FunctionMetrics {
    /// `cache_hits_total{tier="redis"}`.
    pub hits: u64,
    /// `cache_hits_total{tier="local"}`.
    pub local_hits: u64,
    /// `cache_hits_total{tier="stale"}`.
    pub stale_hits: u64,
    pub misses: u64,
    pub errors: u64,
    pub coalesced: u64,
    pub refreshes: u64,
    pub fail_safe: u64,
    pub bypassed: u64,
    pub evictions: u64,
    pub eviction_errors: u64,
    pub oversized: u64,
    /// The samples of `cache_call_duration_seconds`, in seconds.
    pub durations: Vec<f64>,
}

/// One series: its name, and its `function` and `tier` labels.
type Series = (String, Option<String>, Option<String>);

/// Every value recorded so far. A snapshot drains the recorder (counters
/// restart at 0, histograms empty), and the tests of a binary take theirs in
/// parallel: each one adds what it drained here, for all of them.
static TOTALS: Mutex<BTreeMap<Series, Total>> = Mutex::new(BTreeMap::new());

enum Total {
    Counter(u64),
    Samples(Vec<f64>),
}

/// The metrics labelled `function = function`, counted since [`install`];
/// zero if it recorded nothing.
pub fn of(function: &str) -> FunctionMetrics {
    let mut totals = TOTALS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for (key, _, _, value) in install().snapshot().into_vec() {
        let key = key.key();
        let label = |name: &str| {
            key.labels()
                .find(|label| label.key() == name)
                .map(|label| label.value().to_owned())
        };
        let series = (key.name().to_owned(), label("function"), label("tier"));
        match (
            totals.entry(series).or_insert_with(|| match value {
                DebugValue::Histogram(_) => Total::Samples(Vec::new()),
                _ => Total::Counter(0),
            }),
            value,
        ) {
            (Total::Counter(total), DebugValue::Counter(count)) => *total += count,
            (Total::Samples(total), DebugValue::Histogram(samples)) => {
                total.extend(samples.into_iter().map(|s| s.into_inner()));
            }
            (_, value) => panic!("{} changed kind: {value:?}", key.name()),
        }
    }

    let mut metrics = FunctionMetrics::default();
    for ((name, of_function, tier), total) in totals.iter() {
        if of_function.as_deref() != Some(function) {
            continue;
        }
        let counter = match (name.as_str(), tier.as_deref()) {
            ("cache_hits_total", Some("redis")) => &mut metrics.hits,
            ("cache_hits_total", Some("local")) => &mut metrics.local_hits,
            ("cache_hits_total", Some("stale")) => &mut metrics.stale_hits,
            ("cache_misses_total", None) => &mut metrics.misses,
            ("cache_errors_total", None) => &mut metrics.errors,
            ("cache_coalesced_total", None) => &mut metrics.coalesced,
            ("cache_refreshes_total", None) => &mut metrics.refreshes,
            ("cache_fail_safe_total", None) => &mut metrics.fail_safe,
            ("cache_bypassed_total", None) => &mut metrics.bypassed,
            ("cache_evictions_total", None) => &mut metrics.evictions,
            ("cache_eviction_errors_total", None) => &mut metrics.eviction_errors,
            ("cache_oversized_total", None) => &mut metrics.oversized,
            ("cache_call_duration_seconds", None) => {
                if let Total::Samples(samples) = total {
                    metrics.durations.clone_from(samples);
                }
                continue;
            }
            (name, tier) => panic!("unexpected metric {name} (tier {tier:?})"),
        };
        if let Total::Counter(count) = total {
            *counter = *count;
        }
    }
    metrics
}
