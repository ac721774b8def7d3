//! Fail-safe: an entry kept past its TTL (`fail_safe = …`) answers a call
//! whose body fails (`Err`) or passes its `soft_timeout`; a throttle
//! (`fail_safe_throttle`) spares a failing database the retries; and an
//! eviction is never undone by a fail-safe value.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, Outcome, redis_cached, track_outcome};
use cache_tests::{RedisServer, eventually};
use redis::Commands;
use tokio::task::JoinSet;

/// A wait that outlives the 300 ms `ttl` of every function here.
const PAST_TTL: Duration = Duration::from_millis(400);

/// The database: a value, whether it is down, and how long a query takes.
#[derive(Default)]
struct Db {
    value: AtomicU64,
    down: AtomicBool,
    delay_ms: AtomicU64,
    queries: AtomicUsize,
}

impl Db {
    fn with_value(value: u64) -> Arc<Db> {
        let db = Db::default();
        db.value.store(value, Ordering::SeqCst);
        Arc::new(db)
    }

    async fn query(&self) -> Result<u64, String> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let value = self.value.load(Ordering::SeqCst);
        let down = self.down.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(self.delay_ms.load(Ordering::SeqCst))).await;
        if down {
            Err("the database is down".to_owned())
        } else {
            Ok(value)
        }
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    fn set(&self, value: u64, down: bool, delay_ms: u64) {
        self.value.store(value, Ordering::SeqCst);
        self.down.store(down, Ordering::SeqCst);
        self.delay_ms.store(delay_ms, Ordering::SeqCst);
    }
}

fn cache(server: &RedisServer) -> Cache {
    server.cache_builder().ttl_jitter(0.0).build().unwrap()
}

#[redis_cached(key = "fs:{id}", ttl = "300ms", fail_safe = 60, cache = cache)]
async fn read(cache: &Cache, db: &Db, id: u32) -> Result<u64, String> {
    db.query().await
}

#[tokio::test]
async fn a_failed_call_gets_the_last_good_value_and_the_next_call_tries_again() {
    support::install();
    let server = RedisServer::start();
    let cache = cache(&server);
    let db = Db::with_value(1);

    assert_eq!(read(&cache, &db, 1).await, Ok(1));
    let kept_ms: i64 = server.client().pttl("fs:1").unwrap();
    assert!(
        (60_000..=60_300).contains(&kept_ms),
        "kept for ttl + fail_safe: {kept_ms} ms"
    );

    tokio::time::sleep(PAST_TTL).await;
    db.set(2, true, 0);
    for queries in [2, 3] {
        let (value, outcome) = track_outcome(read(&cache, &db, 1)).await;
        assert_eq!(value, Ok(1), "the last good value, not the error");
        assert_eq!(outcome, Some(Outcome::FailSafe));
        assert_eq!(db.queries(), queries, "each call tries the body again");
    }

    db.set(2, false, 0);
    let (value, outcome) = track_outcome(read(&cache, &db, 1)).await;
    assert_eq!((value, outcome), (Ok(2), Some(Outcome::Miss)));
    let (value, outcome) = track_outcome(read(&cache, &db, 1)).await;
    assert_eq!((value, outcome), (Ok(2), Some(Outcome::Hit)), "stored");
    assert_eq!(support::of("fail_safe::read").fail_safe, 2);
}

#[tokio::test]
async fn an_evicted_entry_is_no_fail_safe_value() {
    let server = RedisServer::start();
    let cache = cache(&server);
    let db = Db::with_value(1);
    assert_eq!(read(&cache, &db, 2).await, Ok(1));
    tokio::time::sleep(PAST_TTL).await;

    assert!(cache.delete("fs:2").await.unwrap());
    db.set(1, true, 0);
    assert_eq!(
        read(&cache, &db, 2).await,
        Err("the database is down".to_owned()),
        "a value evicted by a write must not come back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_of_a_failing_key_share_one_run_and_the_last_good_value() {
    support::install();
    let server = RedisServer::start();
    let cache = Arc::new(cache(&server));
    let db = Db::with_value(1);
    assert_eq!(read(&cache, &db, 3).await, Ok(1));
    tokio::time::sleep(PAST_TTL).await;

    db.set(2, true, 300);
    let mut callers = JoinSet::new();
    for _ in 0..20 {
        let (cache, db) = (cache.clone(), db.clone());
        callers.spawn(async move { track_outcome(read(&cache, &db, 3)).await });
    }
    while let Some(answer) = callers.join_next().await {
        assert_eq!(answer.unwrap(), (Ok(1), Some(Outcome::FailSafe)));
    }
    assert_eq!(db.queries(), 2, "one warm-up query, then one for all 20");
}

#[redis_cached(key = "fs:{id}", ttl = "300ms", fail_safe = 60, cache = cache)]
async fn read_uncoalesced(cache: &Cache, db: &Db, id: u32) -> Result<u64, String> {
    db.query().await
}

/// Another process writes and evicts while a call runs the body for an
/// expired entry: the value read before the write is not stored over the
/// eviction, although the expired entry stood when the body began.
#[tokio::test]
async fn a_refresh_of_an_expired_entry_does_not_land_over_a_later_eviction() {
    let server = RedisServer::start();
    let (a, b) = (cache(&server), cache(&server));
    let db = Db::with_value(1);
    assert_eq!(read(&a, &db, 4).await, Ok(1));
    tokio::time::sleep(PAST_TTL).await;

    db.set(2, false, 400);
    let write = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        db.value.store(3, Ordering::SeqCst);
        assert!(b.delete("fs:4").await.unwrap());
    };
    let (slow_read, ()) = tokio::join!(read_uncoalesced(&a, &db, 4), write);
    assert_eq!(slow_read, Ok(2), "read before the write");

    db.set(3, false, 0);
    assert_eq!(read(&b, &db, 4).await, Ok(3), "the write is seen");
}

#[redis_cached(
    key = "fs-throttled:{id}",
    ttl = "300ms",
    fail_safe = 60,
    fail_safe_throttle = "600ms",
    cache = cache
)]
async fn read_throttled(cache: &Cache, db: &Db, id: u32) -> Result<u64, String> {
    db.query().await
}

#[tokio::test]
async fn after_a_failure_the_throttle_answers_without_running_the_body() {
    let server = RedisServer::start();
    let cache = cache(&server);
    let db = Db::with_value(1);
    assert_eq!(read_throttled(&cache, &db, 1).await, Ok(1));
    tokio::time::sleep(PAST_TTL).await;

    db.set(2, true, 0);
    let answer = track_outcome(read_throttled(&cache, &db, 1)).await;
    assert_eq!(answer, (Ok(1), Some(Outcome::FailSafe)));
    assert_eq!(db.queries(), 2);

    // The database is back, but the throttle still holds.
    db.set(2, false, 0);
    let answer = track_outcome(read_throttled(&cache, &db, 1)).await;
    assert_eq!(answer, (Ok(1), Some(Outcome::FailSafe)));
    assert_eq!(db.queries(), 2, "throttled: the body did not run");

    let retried = eventually(Duration::from_secs(3), || async {
        read_throttled(&cache, &db, 1).await == Ok(2)
    })
    .await;
    assert!(
        retried.is_some(),
        "the body runs again once the throttle ends"
    );
    assert_eq!(db.queries(), 3);
}

#[redis_cached(
    key = "fs-soft:{id}",
    ttl = "300ms",
    fail_safe = 60,
    soft_timeout = "100ms",
    cache = cache
)]
async fn read_soft(cache: Arc<Cache>, db: Arc<Db>, id: u32) -> Result<u64, String> {
    db.query().await
}

#[tokio::test]
async fn a_slow_body_is_answered_with_the_last_good_value_and_stores_its_own() {
    support::install();
    let server = RedisServer::start();
    let cache = Arc::new(cache(&server));
    let db = Db::with_value(1);
    assert_eq!(read_soft(cache.clone(), db.clone(), 1).await, Ok(1));
    tokio::time::sleep(PAST_TTL).await;

    db.set(2, false, 1000);
    let answer = track_outcome(read_soft(cache.clone(), db.clone(), 1)).await;
    assert_eq!(
        answer,
        (Ok(1), Some(Outcome::FailSafe)),
        "answered before the body's 2"
    );

    // Calls made while the body runs on wait for it, up to their own soft
    // timeout, then get the last good value too.
    db.set(3, false, 0);
    let answered_fail_safe = AtomicU64::new(1);
    let stored = eventually(Duration::from_secs(5), || async {
        match track_outcome(read_soft(cache.clone(), db.clone(), 1)).await {
            (Ok(1), Some(Outcome::FailSafe)) => {
                answered_fail_safe.fetch_add(1, Ordering::SeqCst);
                false
            }
            (value, outcome) => {
                assert_eq!(value, Ok(2));
                assert!(
                    matches!(outcome, Some(Outcome::Hit | Outcome::Coalesced)),
                    "stored, or shared once stored: {outcome:?}"
                );
                true
            }
        }
    })
    .await;
    assert!(stored.is_some(), "the detached body stored its result");
    assert_eq!(db.queries(), 2, "no other run");
    assert_eq!(
        support::of("fail_safe::read_soft").fail_safe,
        answered_fail_safe.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn without_a_last_good_value_a_slow_body_is_waited_for() {
    let server = RedisServer::start();
    let cache = Arc::new(cache(&server));
    let db = Db::with_value(7);
    db.set(7, false, 300);
    let answer = track_outcome(read_soft(cache, db.clone(), 2)).await;
    assert_eq!(answer, (Ok(7), Some(Outcome::Miss)));
}

#[redis_cached(
    key = "fs-option:{id}",
    ttl = "300ms",
    fail_safe = 60,
    soft_timeout = 1,
    cache = cache
)]
async fn find(cache: Arc<Cache>, db: Arc<Db>, id: u32) -> Option<u64> {
    let value = db.query().await.ok()?;
    (value != 0).then_some(value)
}

#[tokio::test]
async fn none_is_a_value_not_a_failure() {
    let server = RedisServer::start();
    let cache = Arc::new(cache(&server));
    let db = Db::with_value(5);
    assert_eq!(find(cache.clone(), db.clone(), 1).await, Some(5));
    tokio::time::sleep(PAST_TTL).await;

    db.set(0, false, 0);
    let answer = track_outcome(find(cache, db, 1)).await;
    assert_eq!(answer, (None, Some(Outcome::Miss)));
}

/// Another process evicts the key while the body runs and fails: the caller
/// gets the failure, not the value the eviction removed.
#[tokio::test]
async fn a_value_evicted_while_the_body_runs_is_not_answered() {
    let server = RedisServer::start();
    let (a, b) = (cache(&server), cache(&server));
    let db = Db::with_value(1);
    assert_eq!(read(&a, &db, 5).await, Ok(1));
    tokio::time::sleep(PAST_TTL).await;

    db.set(2, true, 300);
    let evict = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(b.delete("fs:5").await.unwrap());
    };
    let (answer, ()) = tokio::join!(track_outcome(read(&a, &db, 5)), evict);
    assert_eq!(
        answer,
        (Err("the database is down".to_owned()), Some(Outcome::Miss)),
        "the evicted value came back as a fail-safe value"
    );
}
