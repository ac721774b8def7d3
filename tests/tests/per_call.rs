//! Per-call control: caching decided by the value (`cache_if`), a TTL taken
//! from the value (`ttl_from`), and `bypass`.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, Outcome, bypass, cache_evict, cache_put, redis_cached, track_outcome};
use cache_tests::{Calls, RedisServer};
use redis::Commands;
use serde::{Deserialize, Serialize};

#[allow(
    clippy::ptr_arg,
    reason = "`cache_if` takes a `fn(&T)` of the stored type"
)]
fn is_not_empty(hits: &Vec<u32>) -> bool {
    !hits.is_empty()
}

/// A search whose empty result is not worth caching.
#[redis_cached(key = "search:{query}", cache_if = is_not_empty, cache = cache)]
async fn search(cache: &Cache, calls: &Calls, query: &str) -> Result<Vec<u32>, String> {
    calls.bump();
    Ok(query
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(u32::from)
        .collect())
}

#[tokio::test]
async fn cache_if_stores_only_the_values_it_accepts() {
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();

    assert_eq!(search(&cache, &calls, "none").await, Ok(vec![]));
    assert!(
        !server.exists("search:none"),
        "an empty result is not stored"
    );
    assert_eq!(search(&cache, &calls, "none").await, Ok(vec![]));
    assert_eq!(calls.get(), 2, "so the next call runs the body again");

    assert_eq!(search(&cache, &calls, "a1").await, Ok(vec![49]));
    assert!(server.exists("search:a1"));
    let (_, outcome) = track_outcome(search(&cache, &calls, "a1")).await;
    assert_eq!(outcome, Some(Outcome::Hit));
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    name: String,
}

fn has_a_name(profile: &Profile) -> bool {
    !profile.name.is_empty()
}

#[redis_cached(key = "profile:{id}", ttl = 60, cache_if = has_a_name, cache = cache)]
async fn profile(cache: &Cache, name: &AtomicName, id: u32) -> Profile {
    name.get()
}

/// Writes a profile through; one without a name is not cached, and must
/// not leave the old one behind either.
#[cache_put(key = "profile:{id}", ttl = 60, cache_if = has_a_name, cache = cache)]
async fn save_profile(cache: &Cache, name: &AtomicName, id: u32, new_name: &str) -> Profile {
    name.set(new_name);
    name.get()
}

/// The "database": a name, as its length in a counter (enough here).
#[derive(Default)]
struct AtomicName(AtomicU64);

impl AtomicName {
    fn get(&self) -> Profile {
        Profile {
            name: "x".repeat(self.0.load(Ordering::SeqCst) as usize),
        }
    }

    fn set(&self, name: &str) {
        self.0.store(name.len() as u64, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_write_through_that_cache_if_declines_evicts_the_old_entry() {
    let server = RedisServer::start();
    let cache = server.cache();
    let name = AtomicName::default();
    name.set("ada");
    assert_eq!(profile(&cache, &name, 1).await.name, "xxx");
    assert!(server.exists("profile:1"));

    save_profile(&cache, &name, 1, "").await;
    assert!(!server.exists("profile:1"), "the old profile is gone");
    assert_eq!(profile(&cache, &name, 1).await.name, "");
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Token {
    value: String,
    expires_in_ms: u64,
}

fn token_lifetime(token: &Token) -> Duration {
    Duration::from_millis(token.expires_in_ms)
}

#[redis_cached(key = "token:{id}", ttl = 60, ttl_from = token_lifetime, cache = cache)]
async fn token(cache: &Cache, id: u32, expires_in_ms: u64) -> Result<Token, String> {
    Ok(Token {
        value: format!("t{id}"),
        expires_in_ms,
    })
}

#[tokio::test]
async fn ttl_from_sets_the_ttl_from_the_value_bounded_by_ttl() {
    let server = RedisServer::start();
    let cache = server.cache_builder().ttl_jitter(0.0).build().unwrap();

    token(&cache, 1, 5_000).await.unwrap();
    let pttl: i64 = server.client().pttl("token:1").unwrap();
    assert!(
        (4_000..=5_000).contains(&pttl),
        "the token's lifetime: {pttl} ms"
    );

    token(&cache, 2, 3_600_000).await.unwrap();
    let pttl: i64 = server.client().pttl("token:2").unwrap();
    assert!(
        (59_000..=60_000).contains(&pttl),
        "at most `ttl`: {pttl} ms"
    );

    token(&cache, 3, 0).await.unwrap();
    assert!(
        !server.exists("token:3"),
        "a token already expired is not stored"
    );
}

#[redis_cached(key = "balance:{account}", ttl = 60, cache = cache)]
async fn balance(cache: &Cache, ledger: &AtomicU64, account: u32) -> u64 {
    ledger.load(Ordering::SeqCst)
}

#[cache_evict(key = "balance:{account}", cache = cache)]
async fn forget_balance(cache: &Cache, account: u32) {}

#[tokio::test]
async fn bypass_neither_reads_nor_stores_but_still_evicts() {
    support::install();
    let server = RedisServer::start();
    let cache = server.cache();
    let ledger = AtomicU64::new(10);
    assert_eq!(balance(&cache, &ledger, 1).await, 10);

    ledger.store(20, Ordering::SeqCst);
    let (exact, outcome) = bypass(track_outcome(balance(&cache, &ledger, 1))).await;
    assert_eq!((exact, outcome), (20, Some(Outcome::Bypassed)), "not read");
    assert_eq!(balance(&cache, &ledger, 1).await, 10, "not stored either");
    assert_eq!(support::of("per_call::balance").bypassed, 1);

    bypass(forget_balance(&cache, 1)).await;
    assert!(
        !server.exists("balance:1"),
        "an eviction inside still happens"
    );
    assert_eq!(balance(&cache, &ledger, 1).await, 20);
}
