//! What is stored depends on the return type: `Ok` but not `Err`, `Some` but
//! not `None` (unless `cache_none = true`), and any plain value.

use cache_runtime::{Cache, redis_cached};
use cache_tests::{Calls, RedisServer};
use redis::Commands;

#[redis_cached(key = "result:{id}", ttl = 60, cache = cache)]
async fn fallible(cache: &Cache, calls: &Calls, id: u32, fail: bool) -> Result<u32, String> {
    calls.bump();
    if fail {
        return Err(format!("no {id}"));
    }
    Ok(id * 10)
}

#[tokio::test]
async fn err_is_not_cached_and_ok_is() {
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();

    assert_eq!(fallible(&cache, &calls, 1, true).await, Err("no 1".into()));
    assert!(!server.exists("result:1"), "Err stored");
    assert_eq!(fallible(&cache, &calls, 1, true).await, Err("no 1".into()));
    assert_eq!(calls.get(), 2, "an Err is recomputed every time");

    assert_eq!(fallible(&cache, &calls, 1, false).await, Ok(10));
    // `fail` is not in the key: the stored Ok answers even a call that would fail.
    assert_eq!(fallible(&cache, &calls, 1, true).await, Ok(10));
    assert_eq!(calls.get(), 3);
}

#[redis_cached(key = "option:{id}", ttl = 60, cache = cache)]
async fn lookup(cache: &Cache, calls: &Calls, id: u32) -> Option<String> {
    calls.bump();
    id.is_multiple_of(2).then(|| format!("even {id}"))
}

#[tokio::test]
async fn none_is_not_cached_and_some_is() {
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();

    assert_eq!(lookup(&cache, &calls, 1).await, None);
    assert_eq!(lookup(&cache, &calls, 1).await, None);
    assert_eq!(calls.get(), 2, "None is recomputed every time");
    assert!(!server.exists("option:1"));

    assert_eq!(lookup(&cache, &calls, 2).await.as_deref(), Some("even 2"));
    assert_eq!(lookup(&cache, &calls, 2).await.as_deref(), Some("even 2"));
    assert_eq!(calls.get(), 3);
}

#[redis_cached(key = "option-none:{id}", ttl = 60, cache_none = true, cache = cache)]
async fn lookup_caching_none(cache: &Cache, calls: &Calls, id: u32) -> Option<String> {
    calls.bump();
    id.is_multiple_of(2).then(|| format!("even {id}"))
}

#[tokio::test]
async fn cache_none_caches_none_too() {
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();

    assert_eq!(lookup_caching_none(&cache, &calls, 1).await, None);
    assert_eq!(lookup_caching_none(&cache, &calls, 1).await, None);
    assert_eq!(calls.get(), 1, "None was served from the cache");
    let stored: String = server.client().get("option-none:1").unwrap();
    assert_eq!(stored, r#"{"v":1,"data":null}"#);

    assert_eq!(
        lookup_caching_none(&cache, &calls, 2).await.as_deref(),
        Some("even 2")
    );
    assert_eq!(
        lookup_caching_none(&cache, &calls, 2).await.as_deref(),
        Some("even 2")
    );
    assert_eq!(calls.get(), 2);
}

#[redis_cached(key = "nested:{id}", ttl = 60, cache = cache)]
async fn nested(cache: &Cache, calls: &Calls, id: u32) -> Result<Option<u32>, String> {
    calls.bump();
    Ok((id > 0).then_some(id))
}

#[tokio::test]
async fn ok_none_is_an_ok_value_and_is_cached() {
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();

    assert_eq!(nested(&cache, &calls, 0).await, Ok(None));
    assert_eq!(nested(&cache, &calls, 0).await, Ok(None));
    assert_eq!(
        calls.get(),
        1,
        "for Result, every Ok is stored, Ok(None) included"
    );
}

#[redis_cached(key = "plain:{id}", ttl = 60, cache = cache)]
async fn plain(cache: &Cache, calls: &Calls, id: u32) -> Vec<u32> {
    calls.bump();
    vec![id; 3]
}

#[tokio::test]
async fn plain_values_are_always_cached() {
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();

    assert_eq!(plain(&cache, &calls, 4).await, [4, 4, 4]);
    assert_eq!(plain(&cache, &calls, 4).await, [4, 4, 4]);
    assert_eq!(calls.get(), 1);
}
