//! `REDIS_CLUSTER_URLS` alone puts the default cache in cluster mode.
//! One test per binary: it sets the environment.

use cache_runtime::{Cache, redis_cached};
use cache_tests::{Calls, RedisCluster};

#[redis_cached(key = "env:{id}", ttl = 60)]
async fn from_env(calls: &Calls, id: u32) -> u32 {
    calls.bump();
    id
}

#[tokio::test]
async fn redis_cluster_urls_selects_cluster_mode() {
    let cluster = RedisCluster::start(3);
    // SAFETY: single-test binary; nothing else reads the environment yet.
    unsafe { std::env::set_var("REDIS_CLUSTER_URLS", cluster.seed_urls().join(", ")) };
    let calls = Calls::default();
    for id in 0..10 {
        from_env(&calls, id).await;
        from_env(&calls, id).await;
    }
    assert!(Cache::global().is_cluster());
    assert_eq!(calls.get(), 10, "every second call was a hit");
    assert_eq!(cluster.keys().len(), 10);
}
