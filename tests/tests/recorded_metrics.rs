//! The cache records under the documented names, labels and units, into the
//! recorder the application installs.

use std::collections::BTreeSet;

use cache_runtime::{Cache, cache_evict, cache_put, redis_cached};
use cache_tests::RedisServer;
use metrics::{Key, Label, Unit};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};

#[redis_cached(key = "recorded:{id}", ttl = 60, cache = cache)]
async fn recorded(cache: &Cache, id: u32) -> u32 {
    id
}

// The second check's own functions: a function keeps the handles of the
// recorder of its first call, and each check installs its own.
#[redis_cached(key = "kinds:{id}", ttl = 60, cache = cache)]
async fn read(cache: &Cache, id: u32) -> u32 {
    id
}

#[cache_put(key = "kinds:{id}", ttl = 60, cache = cache)]
async fn stored(cache: &Cache, id: u32) -> u32 {
    id
}

#[cache_evict(key = "kinds:{id}", cache = cache)]
async fn evicted(cache: &Cache, id: u32) {
    let _ = id;
}

/// Runs `calls` on a cache on a server of its own, with a recorder of its
/// own installed on this thread, whose current-thread runtime polls the
/// calls here; returns what the recorder holds.
fn recording(calls: impl AsyncFnOnce(&Cache)) -> Snapshotter {
    let server = RedisServer::start();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let cache = server.cache();
                calls(&cache).await;
            });
    });
    snapshotter
}

#[test]
fn a_miss_then_a_hit_are_recorded_with_the_function_and_tier_labels() {
    let snapshotter = recording(async |cache| {
        assert_eq!(recorded(cache, 1).await, 1);
        assert_eq!(recorded(cache, 1).await, 1);
    });

    let snapshot = snapshotter.snapshot().into_hashmap();
    let function = || Label::new("function", "recorded_metrics::recorded");
    let get = |kind, name: &'static str, labels: Vec<Label>| {
        let key = CompositeKey::new(kind, Key::from_parts(name, labels));
        snapshot
            .get(&key)
            .unwrap_or_else(|| panic!("no {key:?} in {snapshot:#?}"))
    };
    let counter = |name, labels| match get(MetricKind::Counter, name, labels) {
        (Some(Unit::Count), Some(_), DebugValue::Counter(count)) => *count,
        other => panic!("{name} is not a described counter: {other:?}"),
    };
    let tier = |tier| vec![function(), Label::new("tier", tier)];

    assert_eq!(counter("cache_misses_total", vec![function()]), 1);
    assert_eq!(counter("cache_hits_total", tier("redis")), 1);
    assert_eq!(counter("cache_hits_total", tier("local")), 0);
    assert_eq!(counter("cache_hits_total", tier("stale")), 0);
    for name in [
        "cache_errors_total",
        "cache_coalesced_total",
        "cache_refreshes_total",
        "cache_fail_safe_total",
        "cache_bypassed_total",
        "cache_oversized_total",
    ] {
        assert_eq!(counter(name, vec![function()]), 0, "{name}");
    }
    match get(
        MetricKind::Histogram,
        "cache_call_duration_seconds",
        vec![function()],
    ) {
        (Some(Unit::Seconds), Some(_), DebugValue::Histogram(samples)) => {
            assert_eq!(samples.len(), 2, "one sample per call: {samples:?}");
            assert!(
                samples
                    .iter()
                    .all(|s| s.into_inner() > 0.0 && s.into_inner() < 5.0)
            );
        }
        other => panic!("not a described histogram in seconds: {other:?}"),
    }

    each_kind_of_function_has_only_the_series_it_records();
}

/// Each kind of function shows the series it can record, and no series that
/// could only ever read 0.
///
/// Not a test of its own: the metrics are described once per process, to
/// the recorder of the first call, so two tests with a recorder each would
/// race for the descriptions that the test above checks.
fn each_kind_of_function_has_only_the_series_it_records() {
    let snapshotter = recording(async |cache| {
        assert_eq!(stored(cache, 2).await, 2);
        assert_eq!(read(cache, 2).await, 2);
        evicted(cache, 2).await;
        read_invalidate(cache, 2).await.unwrap();
    });

    let snapshot = snapshotter.snapshot().into_vec();
    let series_of = |function: &str| -> BTreeSet<String> {
        snapshot
            .iter()
            .map(|(key, _, _, _)| key.key())
            .filter(|key| {
                key.labels()
                    .any(|label| label.key() == "function" && label.value() == function)
            })
            .map(|key| {
                let tier = key
                    .labels()
                    .find(|label| label.key() == "tier")
                    .map(|label| format!("{{tier={}}}", label.value()));
                format!("{}{}", key.name(), tier.unwrap_or_default())
            })
            .collect()
    };
    let set = |names: &[&str]| {
        names
            .iter()
            .map(ToString::to_string)
            .collect::<BTreeSet<_>>()
    };

    assert_eq!(
        series_of("recorded_metrics::read"),
        set(&[
            "cache_call_duration_seconds",
            "cache_coalesced_total",
            "cache_bypassed_total",
            "cache_errors_total",
            "cache_fail_safe_total",
            "cache_hits_total{tier=local}",
            "cache_hits_total{tier=redis}",
            "cache_hits_total{tier=stale}",
            "cache_misses_total",
            "cache_oversized_total",
            "cache_refreshes_total",
        ])
    );
    assert_eq!(
        series_of("recorded_metrics::stored"),
        set(&["cache_errors_total", "cache_oversized_total"])
    );
    let evicting = set(&["cache_eviction_errors_total", "cache_evictions_total"]);
    assert_eq!(series_of("recorded_metrics::evicted"), evicting);
    assert_eq!(series_of("recorded_metrics::read_invalidate"), evicting);
}
