//! A cached function runs its body on a miss, and not on a hit; entries
//! expire with their TTL; the stored entry is readable JSON.

use std::time::Duration;

use cache_runtime::{Cache, redis_cached};
use cache_tests::{Calls, RedisServer};
use redis::Commands;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: i64,
    name: String,
}

#[redis_cached(key = "user:{id}", ttl = 60, cache = cache)]
async fn get_user(cache: &Cache, calls: &Calls, id: i64) -> User {
    calls.bump();
    User {
        id,
        name: format!("user {id}"),
    }
}

#[tokio::test]
async fn the_second_call_is_a_hit() {
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();

    let first = get_user(&cache, &calls, 42).await;
    let second = get_user(&cache, &calls, 42).await;

    assert_eq!(
        first,
        User {
            id: 42,
            name: "user 42".into()
        }
    );
    assert_eq!(second, first);
    assert_eq!(calls.get(), 1, "the body ran once");
}

#[tokio::test]
async fn different_arguments_are_different_entries() {
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();

    assert_eq!(get_user(&cache, &calls, 1).await.id, 1);
    assert_eq!(get_user(&cache, &calls, 2).await.id, 2);
    assert_eq!(get_user(&cache, &calls, 1).await.id, 1);
    assert_eq!(calls.get(), 2);
}

#[tokio::test]
async fn the_entry_is_readable_json_under_the_rendered_key() {
    let server = RedisServer::start();
    let cache = server.cache();
    get_user(&cache, &Calls::default(), 42).await;

    let stored: String = server.client().get("user:42").unwrap();
    assert_eq!(stored, r#"{"v":1,"data":{"id":42,"name":"user 42"}}"#);
    let ttl_ms: i64 = server.client().pttl("user:42").unwrap();
    assert!(
        (53_000..=60_000).contains(&ttl_ms),
        "stored with the attribute's TTL, less at most 10% jitter: {ttl_ms} ms"
    );
}

#[tokio::test]
async fn the_prefix_namespaces_every_key() {
    let server = RedisServer::start();
    let cache = server.cache_builder().prefix("app:v2").build().unwrap();
    get_user(&cache, &Calls::default(), 7).await;

    assert_eq!(server.keys(), ["app:v2:user:7"]);
}

#[redis_cached(key = "short:{id}", ttl = 1, cache = cache)]
async fn short_lived(cache: &Cache, calls: &Calls, id: u32) -> u32 {
    calls.bump();
    id
}

#[tokio::test]
async fn entries_expire_with_their_ttl() {
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();

    short_lived(&cache, &calls, 1).await;
    short_lived(&cache, &calls, 1).await;
    assert_eq!(calls.get(), 1, "a hit within the TTL");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    short_lived(&cache, &calls, 1).await;
    assert_eq!(calls.get(), 2, "a miss once the TTL has passed");
}

#[redis_cached(key = "ms:{id}", ttl = "400ms", stale = "2m", cache = cache)]
async fn in_milliseconds(cache: &Cache, id: u32) -> u32 {
    id
}

#[tokio::test]
async fn a_duration_with_a_unit_sets_the_entrys_expiry_to_the_millisecond() {
    let server = RedisServer::start();
    let cache = server.cache();
    in_milliseconds(&cache, 1).await;

    // The TTL less at most 10% jitter, plus `stale`.
    let ttl_ms: i64 = server.client().pttl("ms:1").unwrap();
    assert!(
        (120_000 + 300..=120_000 + 400).contains(&ttl_ms),
        "{ttl_ms} ms"
    );
}

#[redis_cached(key = "default-ttl:{id}", cache = cache)]
async fn default_ttl(cache: &Cache, id: u32) -> u32 {
    id
}

#[tokio::test]
async fn without_ttl_the_cache_default_applies_and_nothing_is_stored_forever() {
    let server = RedisServer::start();
    let cache = server
        .cache_builder()
        .default_ttl(Duration::from_secs(120))
        .build()
        .unwrap();
    default_ttl(&cache, 3).await;

    let ttl_ms: i64 = server.client().pttl("default-ttl:3").unwrap();
    assert!((107_000..=120_000).contains(&ttl_ms), "{ttl_ms} ms");
}

#[redis_cached(key = "jitter:{id}", ttl = 100, cache = cache)]
async fn jittered(cache: &Cache, id: u32) -> u32 {
    id
}

#[tokio::test]
async fn keys_written_together_get_different_ttls_never_above_the_one_asked_for() {
    let server = RedisServer::start();
    let cache = server.cache();
    for id in 0..50 {
        jittered(&cache, id).await;
    }
    let mut client = server.client();
    let mut ttls: Vec<i64> = (0..50)
        .map(|id| client.pttl(format!("jitter:{id}")).unwrap())
        .collect();
    assert!(
        ttls.iter().all(|ttl| (89_000..=100_000).contains(ttl)),
        "{ttls:?}"
    );
    ttls.sort();
    ttls.dedup_by(|a, b| (*a - *b).abs() < 50);
    assert!(ttls.len() >= 20, "expiries are spread out: {ttls:?}");
}

#[tokio::test]
async fn jitter_can_be_turned_off() {
    let server = RedisServer::start();
    let cache = server.cache_builder().ttl_jitter(0.0).build().unwrap();
    jittered(&cache, 1).await;
    let ttl_ms: i64 = server.client().pttl("jitter:1").unwrap();
    assert!((99_000..=100_000).contains(&ttl_ms), "{ttl_ms} ms");
}
