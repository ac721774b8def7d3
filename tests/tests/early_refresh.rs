//! Early refresh (`early_refresh = true`): a hot key is refreshed in the
//! background before it expires, so that its callers never miss it.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, Outcome, redis_cached, track_outcome};
use cache_tests::{Calls, RedisServer};
use redis::Commands;

/// How long the body takes: the weight of the early-refresh draw.
const BODY: Duration = Duration::from_millis(100);

#[redis_cached(key = "early:{id}", ttl = 1, early_refresh = true, cache = cache)]
async fn hot(cache: Arc<Cache>, calls: Arc<Calls>, id: u32) -> usize {
    calls.bump();
    tokio::time::sleep(BODY).await;
    calls.get()
}

#[redis_cached(key = "early-local:{id}", ttl = 1, early_refresh = true, local = true, cache = cache)]
async fn hot_local(cache: Arc<Cache>, calls: Arc<Calls>, id: u32) -> usize {
    calls.bump();
    tokio::time::sleep(BODY).await;
    calls.get()
}

/// Calls `call` in a loop for `period` (a hot key), and returns every
/// outcome but the first call's.
async fn hammer<F, Fut>(period: Duration, mut call: F) -> Vec<Outcome>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<Outcome>>,
{
    assert_eq!(
        call().await,
        Some(Outcome::Miss),
        "the first call is a miss"
    );
    let started = Instant::now();
    let mut outcomes = Vec::new();
    while started.elapsed() < period {
        outcomes.push(call().await.expect("a cached call"));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_is_refreshed_before_it_expires_and_never_missed() {
    support::install();
    let server = RedisServer::start();
    let cache = Arc::new(server.cache_builder().ttl_jitter(0.0).build().unwrap());
    let calls = Arc::new(Calls::default());

    let outcomes = hammer(Duration::from_millis(3500), || async {
        track_outcome(hot(cache.clone(), calls.clone(), 1)).await.1
    })
    .await;

    let not_hits: Vec<_> = outcomes.iter().filter(|o| **o != Outcome::Hit).collect();
    assert!(not_hits.is_empty(), "a caller waited: {not_hits:?}");
    // 3.5 s over a 1 s TTL: three expiries or more were refreshed ahead,
    // about once each.
    let refreshes = calls.get() - 1;
    assert!(
        (3..=6).contains(&refreshes),
        "{refreshes} refreshes in 3.5 s"
    );
    assert_eq!(
        support::of("early_refresh::hot").refreshes as usize,
        refreshes
    );
    let entry: String = server.client().get("early:1").unwrap();
    assert!(
        entry.contains(r#""took":"#),
        "the body's duration is stored: {entry}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_local_tier_a_hot_key_is_still_refreshed_ahead() {
    let server = RedisServer::start();
    let cache = Arc::new(server.cache_builder().ttl_jitter(0.0).build().unwrap());
    let calls = Arc::new(Calls::default());

    let outcomes = hammer(Duration::from_millis(3500), || async {
        track_outcome(hot_local(cache.clone(), calls.clone(), 1))
            .await
            .1
    })
    .await;

    let waited: Vec<_> = outcomes
        .iter()
        .filter(|o| !matches!(o, Outcome::Hit | Outcome::Local))
        .collect();
    assert!(waited.is_empty(), "a caller waited: {waited:?}");
    assert!(
        outcomes.contains(&Outcome::Local),
        "the local tier served calls"
    );
    let refreshes = calls.get() - 1;
    assert!(refreshes >= 3, "{refreshes} refreshes in 3.5 s");
}
