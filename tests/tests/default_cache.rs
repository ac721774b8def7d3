//! Zero configuration: without `cache = …`, functions use the process-wide
//! default cache, created from `REDIS_URL` on the first call. Its connection
//! belongs to no caller's runtime, so it outlives the runtime that made the
//! first call (every `#[tokio::test]` has its own runtime).
//!
//! One test per binary: the default cache is per process.

use cache_runtime::{AlreadyInstalled, Cache, redis_cached};
use cache_tests::{Calls, RedisServer, current_thread_runtime, one_worker_runtime};

#[redis_cached(key = "zero:{id}", ttl = 60)]
async fn zero_config(calls: &Calls, id: u32) -> u32 {
    calls.bump();
    id + 1
}

#[test]
fn the_default_cache_reads_redis_url_and_outlives_the_first_runtime() {
    let server = RedisServer::start();
    // SAFETY: set before any other thread of this test binary reads the
    // environment; this binary has a single test.
    unsafe { std::env::set_var("REDIS_URL", server.url()) };
    let calls = Calls::default();

    let first_runtime = current_thread_runtime();
    assert_eq!(first_runtime.block_on(zero_config(&calls, 1)), 2);
    drop(first_runtime);

    let second_runtime = one_worker_runtime();
    assert_eq!(second_runtime.block_on(zero_config(&calls, 1)), 2);
    assert_eq!(calls.get(), 1, "the second runtime's call was a hit");
    let stored: String = redis::Commands::get(&mut server.client(), "zero:1").unwrap();
    assert_eq!(stored, r#"{"v":1,"data":2}"#);

    let late = Cache::builder().url(server.url()).build().unwrap();
    assert_eq!(late.install().unwrap_err(), AlreadyInstalled);
}
