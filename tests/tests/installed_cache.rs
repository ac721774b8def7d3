//! `Cache::install` sets the default cache, prefix and all, before the first call.

use cache_runtime::{Cache, redis_cached};
use cache_tests::{Calls, RedisServer};

#[redis_cached(key = "item:{id}", ttl = 60)]
async fn item(calls: &Calls, id: u32) -> u32 {
    calls.bump();
    id
}

#[tokio::test]
async fn an_installed_cache_is_the_default() {
    let server = RedisServer::start();
    let installed = Cache::builder()
        .url(server.url())
        .prefix("shop:v3")
        .build()
        .unwrap()
        .install()
        .unwrap();
    assert!(std::ptr::eq(installed, Cache::global()));

    let calls = Calls::default();
    item(&calls, 5).await;
    item(&calls, 5).await;
    assert_eq!(calls.get(), 1);
    assert_eq!(server.keys(), ["shop:v3:item:5"]);
}
