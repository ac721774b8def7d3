//! A stored entry that no longer decodes (corrupt, another envelope version,
//! written for an older version of the struct, or not a string at all) is a
//! miss: the body runs, its value is returned, and it overwrites the entry.

use cache_runtime::{Cache, redis_cached};
use cache_tests::{Calls, RedisServer};
use redis::Commands;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    id: u32,
    name: String,
    /// Added in "version 2" of the struct: entries written before lack it.
    email: String,
}

#[redis_cached(key = "profile:{id}", ttl = 60, cache = cache)]
async fn profile(cache: &Cache, calls: &Calls, id: u32) -> Profile {
    calls.bump();
    Profile {
        id,
        name: "Ada".into(),
        email: "ada@example.com".into(),
    }
}

const FRESH: &str = r#"{"v":1,"data":{"id":1,"name":"Ada","email":"ada@example.com"}}"#;

async fn assert_recovers_from(server: &RedisServer, planted: &[u8]) {
    let cache = server.cache();
    let calls = Calls::default();
    let _: () = server.client().set("profile:1", planted).unwrap();

    let value = profile(&cache, &calls, 1).await;
    assert_eq!(value.email, "ada@example.com");
    assert_eq!(calls.get(), 1, "the undecodable entry was a miss");
    let stored: String = server.client().get("profile:1").unwrap();
    assert_eq!(stored, FRESH, "the entry was overwritten");

    profile(&cache, &calls, 1).await;
    assert_eq!(calls.get(), 1, "and is a hit from then on");
}

#[tokio::test]
async fn corrupt_bytes_are_a_miss_and_get_overwritten() {
    let server = RedisServer::start();
    assert_recovers_from(&server, b"\xff\xfe not json at all").await;
}

#[tokio::test]
async fn an_older_struct_layout_is_a_miss_and_gets_overwritten() {
    let server = RedisServer::start();
    assert_recovers_from(&server, br#"{"v":1,"data":{"id":1,"name":"Ada"}}"#).await;
}

#[tokio::test]
async fn another_envelope_version_is_a_miss_and_gets_overwritten() {
    let server = RedisServer::start();
    assert_recovers_from(
        &server,
        br#"{"v":2,"data":{"id":1,"name":"Ada","email":"ada@example.com"}}"#,
    )
    .await;
}

#[tokio::test]
async fn a_bare_value_without_envelope_is_a_miss() {
    let server = RedisServer::start();
    assert_recovers_from(
        &server,
        br#"{"id":1,"name":"Ada","email":"ada@example.com"}"#,
    )
    .await;
}

#[tokio::test]
async fn deeply_nested_json_is_a_miss_not_a_crash() {
    let server = RedisServer::start();
    let mut planted = "[".repeat(100_000);
    planted.push_str(&"]".repeat(100_000));
    assert_recovers_from(&server, planted.as_bytes()).await;
}

#[tokio::test]
async fn a_key_of_another_redis_type_is_a_miss_and_gets_overwritten() {
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();
    let _: () = server.client().rpush("profile:1", "a list").unwrap();

    // GET answers WRONGTYPE: the call still returns the body's value…
    assert_eq!(profile(&cache, &calls, 1).await.id, 1);
    // …and SET replaces the list with a string entry.
    let stored: String = server.client().get("profile:1").unwrap();
    assert_eq!(stored, FRESH);
    profile(&cache, &calls, 1).await;
    assert_eq!(calls.get(), 1);
}
