//! The cache records under the documented names, labels and units, into the
//! recorder the application installs.

use cache_runtime::{Cache, redis_cached};
use cache_tests::RedisServer;
use metrics::{Key, Label, Unit};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};

#[redis_cached(key = "recorded:{id}", ttl = 60, cache = cache)]
async fn recorded(cache: &Cache, id: u32) -> u32 {
    id
}

#[test]
fn a_miss_then_a_hit_are_recorded_with_the_function_and_tier_labels() {
    let server = RedisServer::start();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // This thread's recorder; the current-thread runtime polls the calls here.
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let cache = server.cache();
                assert_eq!(recorded(&cache, 1).await, 1);
                assert_eq!(recorded(&cache, 1).await, 1);
            });
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
        "cache_evictions_total",
        "cache_eviction_errors_total",
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
}
