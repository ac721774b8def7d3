//! Changing what is cached: `#[cache_evict]`, `#[cache_put]`, the helpers
//! derived from each `#[redis_cached]` function, tags, prefixes, failures,
//! and evictions deferred until a transaction commits.

mod support;

use std::sync::Arc;
use std::time::Duration;

use cache_runtime::{
    Cache, CacheError, Outcome, cache_evict, cache_put, deferred, redis_cached, track_outcome,
};
use cache_tests::{Calls, RedisServer, eventually};
use redis::Commands;

#[redis_cached(key = "user:{id}", ttl = 60, tag = "users", cache = cache)]
async fn get_user(cache: &Cache, calls: &Calls, id: u32) -> String {
    calls.bump();
    format!("user {id} v{}", calls.get())
}

#[cache_evict(key = "user:{id}", cache = cache)]
async fn rename_user(cache: &Cache, id: u32, fail: bool) -> Result<(), String> {
    if fail {
        Err("the database said no".into())
    } else {
        Ok(())
    }
}

#[cache_evict(key = "user:{id}", before = true, cache = cache)]
async fn rename_user_evicting_first(cache: &Cache, id: u32) {
    let _ = id;
}

#[cache_evict(key = "user:{a}", key = "user:{b}", cache = cache)]
async fn merge_users(cache: &Cache, a: u32, b: u32) -> u32 {
    a + b
}

#[cache_evict(tag = "users", cache = cache)]
async fn import_users(cache: &Cache) -> Result<usize, String> {
    Ok(2)
}

#[cache_put(key = "user:{id}", ttl = 60, tag = "users", cache = cache)]
async fn save_user(cache: &Cache, id: u32, name: &str) -> Result<String, String> {
    Ok(format!("user {id} {name}"))
}

#[tokio::test]
async fn cache_evict_deletes_the_key_after_a_successful_body_only() {
    support::install();
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();
    get_user(&cache, &calls, 1).await;
    assert!(server.exists("user:1"));

    rename_user(&cache, 1, true).await.unwrap_err();
    assert!(server.exists("user:1"), "an Err evicts nothing");

    rename_user(&cache, 1, false).await.unwrap();
    assert!(!server.exists("user:1"));
    assert_eq!(
        get_user(&cache, &calls, 1).await,
        "user 1 v2",
        "the next read is fresh"
    );
}

#[tokio::test]
async fn cache_evict_can_evict_before_the_body_and_several_keys() {
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();
    for id in [1, 2, 3] {
        get_user(&cache, &calls, id).await;
    }
    rename_user_evicting_first(&cache, 1).await;
    assert!(!server.exists("user:1"));
    assert_eq!(merge_users(&cache, 2, 3).await, 5);
    assert!(!server.exists("user:2") && !server.exists("user:3"));
}

#[tokio::test]
async fn cache_put_writes_through() {
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();
    get_user(&cache, &calls, 4).await;
    save_user(&cache, 4, "Ada").await.unwrap();
    assert_eq!(
        get_user(&cache, &calls, 4).await,
        "user 4 Ada",
        "read back the written value"
    );
    assert_eq!(calls.get(), 1);
}

#[tokio::test]
async fn the_derived_helpers_invalidate_and_refresh_exactly_the_key() {
    support::install();
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();
    get_user(&cache, &calls, 5).await;
    get_user(&cache, &calls, 6).await;

    // Takes only what the key and the cache expression need: no `calls`.
    get_user_invalidate(&cache, 5).await.unwrap();
    assert!(!server.exists("user:5"));
    assert!(server.exists("user:6"), "only its own key");

    let refreshed = get_user_refresh(&cache, &calls, 6).await;
    assert_eq!(refreshed, "user 6 v3");
    assert_eq!(
        get_user(&cache, &calls, 6).await,
        "user 6 v3",
        "stored by the refresh"
    );
}

#[tokio::test]
async fn a_tag_evicts_every_entry_stored_with_it() {
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();
    for id in 0..1200 {
        get_user(&cache, &calls, id).await;
    }
    save_user(&cache, 5000, "put").await.unwrap();
    let members: usize = server.client().scard("#tag:users").unwrap();
    assert_eq!(members, 1201);
    let tag_ttl: i64 = server.client().pttl("#tag:users").unwrap();
    assert!(
        tag_ttl > 50_000,
        "the tag set outlives its members: {tag_ttl}"
    );

    assert_eq!(import_users(&cache).await, Ok(2));
    let keys = server.keys();
    assert!(
        keys.is_empty(),
        "left behind: {:?}",
        &keys[..keys.len().min(5)]
    );
}

#[tokio::test]
async fn a_prefix_evicts_by_scanning_in_batches() {
    let server = RedisServer::start();
    let cache = server.cache_builder().prefix("app").build().unwrap();
    let calls = Calls::default();
    for id in 0..1500 {
        get_user(&cache, &calls, id).await;
    }
    let _: () = server.client().set("app:other", "kept").unwrap();
    let _: () = server.client().set("user:1", "outside the prefix").unwrap();

    assert_eq!(cache.invalidate_prefix("user:").await.unwrap(), 1500);
    assert_eq!(server.keys(), ["app:#tag:users", "app:other", "user:1"]);
}

#[tokio::test]
async fn evictions_inside_deferred_wait_for_the_commit_and_vanish_on_rollback() {
    support::install();
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();
    get_user(&cache, &calls, 7).await;
    get_user(&cache, &calls, 8).await;

    // "Rolled back": the evictions are dropped.
    let (result, evictions) = deferred(async {
        rename_user(&cache, 7, false).await?;
        get_user_invalidate(&cache, 8)
            .await
            .map_err(|e| e.to_string())?;
        Err::<(), String>("rollback".into())
    })
    .await;
    assert!(result.is_err());
    assert_eq!(evictions.len(), 2);
    drop(evictions);
    assert!(server.exists("user:7") && server.exists("user:8"));

    // "Committed": nothing is evicted until apply.
    let (result, evictions) = deferred(async { rename_user(&cache, 7, false).await }).await;
    result.unwrap();
    assert!(server.exists("user:7"), "not before the commit");
    evictions.apply().await.unwrap();
    assert!(!server.exists("user:7"));
}

#[derive(Debug)]
enum AppError {
    Cache(CacheError),
}

impl From<CacheError> for AppError {
    fn from(error: CacheError) -> Self {
        AppError::Cache(error)
    }
}

#[cache_evict(key = "user:{id}", propagate = true, cache = cache)]
async fn strict_rename(cache: &Cache, id: u32) -> Result<u32, AppError> {
    Ok(id)
}

/// Restarts Redis holding `key`'s old entry, as after a failover to a
/// replica, or a restart from a snapshot, that a failed eviction never
/// reached.
fn restart_holding_the_old_entry(server: &mut RedisServer, key: &str) {
    server.restart();
    let _: () = server.client().set(key, r#"{"v":1,"data":"old"}"#).unwrap();
}

/// Whether `key` is gone from Redis within 10 s: a parked eviction was
/// replayed.
async fn gone_within_10s(server: &RedisServer, key: &str) -> bool {
    eventually(Duration::from_secs(10), || {
        let gone = !server.exists(key);
        async move { gone }
    })
    .await
    .is_some()
}

#[tokio::test]
async fn a_failed_eviction_is_counted_retried_and_reported_when_asked() {
    support::install();
    let mut server = RedisServer::start();
    let cache = server
        .cache_builder()
        .deadline(Duration::from_millis(100))
        .build()
        .unwrap();
    let calls = Calls::default();
    get_user(&cache, &calls, 9).await;
    server.kill();

    assert_eq!(
        rename_user(&cache, 9, false).await,
        Ok(()),
        "the call still succeeds"
    );
    let Err(AppError::Cache(error)) = strict_rename(&cache, 9).await else {
        panic!("propagate = true returns the eviction failure");
    };
    assert!(
        matches!(error, CacheError::Unavailable | CacheError::Redis(_)),
        "{error}"
    );
    let metrics = support::of("invalidation::rename_user");
    assert!(metrics.eviction_errors >= 1);

    restart_holding_the_old_entry(&mut server, "user:9");
    assert_ne!(
        get_user(&cache, &calls, 9).await,
        "old",
        "a failed eviction's entry is never served"
    );
    assert!(
        gone_within_10s(&server, "user:9").await,
        "the parked eviction was replayed"
    );
    // Eventually: the replay runs on the cache's I/O thread, and this
    // runtime's own connection may still be reconnecting, or the replay
    // still sending its invalidation message, when the key is gone.
    let resumed = eventually(Duration::from_secs(10), || async {
        get_user(&cache, &calls, 9).await;
        let before = calls.get();
        get_user(&cache, &calls, 9).await;
        calls.get() == before
    })
    .await;
    assert!(resumed.is_some(), "and lookups resumed");
}

/// `Cache::delete` and `invalidate_prefix` go through the one eviction
/// routine too: deferred inside `deferred`, like `#[cache_evict]`.
#[tokio::test]
async fn evictions_by_hand_also_wait_inside_deferred() {
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();
    get_user(&cache, &calls, 11).await;
    let _: () = server.client().set("p:1", "x").unwrap();

    let (evicted, evictions) = deferred(async {
        (
            cache.delete("user:11").await.unwrap(),
            cache.invalidate_prefix("p:").await.unwrap(),
        )
    })
    .await;
    assert_eq!(evicted, (false, 0), "nothing is evicted before the commit");
    assert!(server.exists("user:11") && server.exists("p:1"));
    assert_eq!(evictions.len(), 2);

    evictions.apply().await.unwrap();
    assert!(!server.exists("user:11") && !server.exists("p:1"));
    assert!(
        !cache.delete("user:11").await.unwrap(),
        "it existed no more"
    );
}

/// A `Cache::delete` that fails is parked, as every eviction is: its entry
/// is never served, even when Redis comes back holding it.
#[tokio::test]
async fn a_failed_delete_is_parked_and_retried() {
    let mut server = RedisServer::start();
    let cache = server
        .cache_builder()
        .deadline(Duration::from_millis(100))
        .build()
        .unwrap();
    let calls = Calls::default();
    get_user(&cache, &calls, 12).await;
    server.kill();
    assert!(cache.delete("user:12").await.is_err());

    restart_holding_the_old_entry(&mut server, "user:12");
    assert_ne!(
        get_user(&cache, &calls, 12).await,
        "old",
        "a failed delete's entry is never served"
    );
    assert!(
        gone_within_10s(&server, "user:12").await,
        "the parked delete was replayed"
    );
}

struct Repo {
    cache: Arc<Cache>,
    tenant: String,
}

impl Repo {
    #[redis_cached(key = "t:{self.tenant}:item:{id}", ttl = 60, cache = self.cache)]
    async fn item(&self, id: u32) -> u32 {
        id
    }
}

#[tokio::test]
async fn method_helpers_take_self_when_the_key_or_cache_needs_it() {
    let server = RedisServer::start();
    let repo = Repo {
        cache: Arc::new(server.cache()),
        tenant: "acme".into(),
    };
    repo.item(1).await;
    assert!(server.exists("t:acme:item:1"));
    repo.item_invalidate(1).await.unwrap();
    assert!(!server.exists("t:acme:item:1"));
}

#[redis_cached(key = "racy:{id}", ttl = 60, cache = cache)]
async fn slow_read(
    cache: Arc<Cache>,
    db: Arc<std::sync::Mutex<String>>,
    gate: Arc<tokio::sync::Semaphore>,
    has_read: Arc<tokio::sync::Notify>,
    id: u32,
) -> String {
    let read = db.lock().unwrap().clone();
    has_read.notify_one();
    // The write commits and evicts while this read is still running.
    let _permit = gate.acquire().await;
    format!("{id}:{read}")
}

#[cache_evict(key = "racy:{id}", cache = cache)]
async fn write(cache: Arc<Cache>, db: Arc<std::sync::Mutex<String>>, id: u32, value: &str) {
    *db.lock().unwrap() = value.to_owned();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_started_before_a_write_does_not_store_the_old_value() {
    let server = RedisServer::start();
    let cache = Arc::new(server.cache());
    let db = Arc::new(std::sync::Mutex::new("old".to_owned()));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let has_read = Arc::new(tokio::sync::Notify::new());

    let reader = tokio::spawn(slow_read(
        cache.clone(),
        db.clone(),
        gate.clone(),
        has_read.clone(),
        1,
    ));
    has_read.notified().await;
    write(cache.clone(), db.clone(), 1, "new").await;
    gate.add_permits(100);
    assert_eq!(reader.await.unwrap(), "1:old", "it read before the write");

    assert!(!server.exists("racy:1"), "but did not store what it read");
    assert_eq!(slow_read(cache, db, gate, has_read, 1).await, "1:new");
}

#[redis_cached(key = "racy:{id}", ttl = 60, coalesce = false, cache = cache)]
async fn slow_uncoalesced_read(
    cache: Arc<Cache>,
    db: Arc<std::sync::Mutex<String>>,
    gate: Arc<tokio::sync::Semaphore>,
    has_read: Arc<tokio::sync::Notify>,
    id: u32,
) -> String {
    let read = db.lock().unwrap().clone();
    has_read.notify_one();
    let _permit = gate.acquire().await;
    format!("{id}:{read}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_without_a_flight_that_started_before_a_write_does_not_store_either() {
    let server = RedisServer::start();
    let cache = Arc::new(server.cache());
    let db = Arc::new(std::sync::Mutex::new("old".to_owned()));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let has_read = Arc::new(tokio::sync::Notify::new());

    let reader = tokio::spawn(slow_uncoalesced_read(
        cache.clone(),
        db.clone(),
        gate.clone(),
        has_read.clone(),
        1,
    ));
    has_read.notified().await;
    write(cache.clone(), db.clone(), 1, "new").await;
    gate.add_permits(100);
    assert_eq!(reader.await.unwrap(), "1:old");
    assert!(!server.exists("racy:1"), "it did not store what it read");
    assert_eq!(
        slow_uncoalesced_read(cache, db, gate, has_read, 1).await,
        "1:new"
    );
}

#[tokio::test]
async fn derived_helpers_report_their_own_counters() {
    support::install();
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();
    get_user(&cache, &calls, 77).await;
    get_user_invalidate(&cache, 77).await.unwrap();
    let metrics = support::of("invalidation::get_user_invalidate");
    assert!(metrics.evictions >= 1);
}

/// `Cache::clear` removes what is under its prefix, in Redis and in every
/// process's local tier, and nothing else; without a prefix it refuses.
#[tokio::test]
async fn clear_removes_everything_under_the_prefix_and_nothing_else() {
    #[redis_cached(key = "item:{id}", ttl = 60, tag = "items", local = true, cache = cache)]
    async fn item(cache: &Cache, calls: &Calls, id: u32) -> u32 {
        calls.bump();
        id
    }

    support::install();
    let server = RedisServer::start();
    let in_process = |prefix: &str| {
        server
            .cache_builder()
            .prefix(prefix)
            .local_tier(cache_runtime::LocalTierSettings::new())
            .build()
            .unwrap()
    };
    let (a, b) = (in_process("app"), in_process("app"));
    let other_app = in_process("other");
    let calls = Calls::default();
    for id in 0..3 {
        item(&a, &calls, id).await;
    }
    item(&other_app, &calls, 0).await;
    let _: () = server.client().set("unprefixed", "x").unwrap();
    // Process b keeps a local copy of item 0 (once its tier listens).
    let b_serves_locally = eventually(Duration::from_secs(5), || async {
        track_outcome(item(&b, &calls, 0)).await.1 == Some(Outcome::Local)
    })
    .await;
    assert!(
        b_serves_locally.is_some(),
        "b's local tier never served item 0"
    );
    item(&a, &calls, 0).await;
    assert!(server.keys().iter().any(|key| key.starts_with("app:")));

    assert!(a.clear().await.unwrap() >= 3);
    let keys = server.keys();
    assert!(
        keys.iter().all(|key| !key.starts_with("app:")),
        "left under the prefix: {keys:?}"
    );
    assert!(keys.contains(&"unprefixed".to_string()));
    assert!(keys.iter().any(|key| key.starts_with("other:")));
    // b's local copy goes when Redis reports the deletion.
    let b_dropped = eventually(Duration::from_secs(5), || async {
        let before = calls.get();
        item(&b, &calls, 0).await;
        calls.get() > before
    })
    .await;
    assert!(
        b_dropped.is_some(),
        "b still serves its local copy after clear"
    );

    let unprefixed = server.cache();
    match unprefixed.clear().await {
        Err(CacheError::NoKeyPrefix) => {}
        other => panic!("a cache without a prefix cleared: {other:?}"),
    }
    assert!(server.exists("unprefixed"));
}
