//! `connection_on_current_runtime(true)`: the connection is driven on the
//! runtime that built the cache; without a runtime, `build` says so; and
//! when that runtime is gone, calls still run (uncached).

use std::time::{Duration, Instant};

use cache_runtime::{Cache, ConfigError, redis_cached};
use cache_tests::{Calls, RedisServer, eventually};

#[redis_cached(key = "placed:{id}", ttl = 60, cache = cache)]
async fn placed(cache: &Cache, calls: &Calls, id: u32) -> u32 {
    calls.bump();
    id * 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_runs_on_the_runtime_that_built_the_cache() {
    let server = RedisServer::start();
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();
    let cache = server
        .cache_builder()
        .connection_on_current_runtime(true)
        .build()
        .unwrap();
    let connected = eventually(Duration::from_secs(5), || async { cache.is_connected() }).await;
    assert!(connected.is_some(), "the cache never connected");
    assert!(
        metrics.num_alive_tasks() >= tasks_before + 2,
        "the supervisor and redis-rs's connection task run here: {} tasks, {tasks_before} before",
        metrics.num_alive_tasks()
    );

    let calls = Calls::default();
    assert_eq!(placed(&cache, &calls, 21).await, 42);
    assert_eq!(placed(&cache, &calls, 21).await, 42);
    assert_eq!(calls.get(), 1, "the second call is a hit");
}

#[test]
fn outside_a_runtime_build_says_it_needs_one() {
    let error = Cache::builder()
        .url("redis://127.0.0.1:6379")
        .connection_on_current_runtime(true)
        .build()
        .unwrap_err();
    assert_eq!(error, ConfigError::NoRuntime);
    assert!(
        error.to_string().contains("inside a Tokio runtime"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_its_runtime_is_gone_calls_still_run_uncached() {
    let server = RedisServer::start();
    let builder = server.cache_builder().deadline(Duration::from_millis(200));
    // Built on a runtime of its own, which then shuts down.
    let cache = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let cache = runtime.block_on(async {
            let cache = builder.connection_on_current_runtime(true).build().unwrap();
            let connected =
                eventually(Duration::from_secs(5), || async { cache.is_connected() }).await;
            assert!(connected.is_some(), "the cache never connected");
            cache
        });
        drop(runtime);
        cache
    })
    .join()
    .unwrap();

    let calls = Calls::default();
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(placed(&cache, &calls, 5).await, 10);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a call waited {:?} for a connection that is gone",
            started.elapsed()
        );
    }
    assert_eq!(calls.get(), 3, "every call ran its body, uncached");
}
