//! Redis Cluster: every feature keeps working across slots (hits, coalescing,
//! the lock, tags, prefixes), user values never form hash tags, a master
//! killed mid-run fails open for its slots only, and the local tier hears of
//! a change made on any master, one that joined later included. The cluster
//! is real: three masters started by the test and joined with `redis-cli
//! --cluster create`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, LocalTierSettings, Outcome, cache_evict, redis_cached, track_outcome};
use cache_tests::{Calls, RedisCluster, eventually};
use tokio::task::JoinSet;

fn cluster_cache(cluster: &RedisCluster) -> Arc<Cache> {
    Arc::new(
        Cache::builder()
            .cluster_urls(cluster.seed_urls())
            .deadline(Duration::from_millis(500))
            .build()
            .unwrap(),
    )
}

#[redis_cached(key = "item:{id}", ttl = 60, tag = "items", cache = cache)]
async fn item(cache: Arc<Cache>, calls: Arc<Calls>, id: String) -> String {
    calls.bump();
    tokio::time::sleep(Duration::from_millis(50)).await;
    format!("item {id}")
}

#[redis_cached(key = "locked:{id}", ttl = 60, lock = true, cache = cache)]
async fn locked(cache: Arc<Cache>, calls: Arc<Calls>, id: u32) -> u32 {
    calls.bump();
    tokio::time::sleep(Duration::from_millis(100)).await;
    id
}

#[cache_evict(tag = "items", cache = cache)]
async fn clear_items(cache: Arc<Cache>) {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_feature_works_across_slots() {
    let cluster = RedisCluster::start(3);
    let cache = cluster_cache(&cluster);
    assert!(cache.is_cluster());
    let calls = Arc::new(Calls::default());

    // Hits and misses, on keys spread over all three masters.
    for id in 0..30 {
        item(cache.clone(), calls.clone(), id.to_string()).await;
    }
    for id in 0..30 {
        assert_eq!(
            item(cache.clone(), calls.clone(), id.to_string()).await,
            format!("item {id}")
        );
    }
    assert_eq!(calls.get(), 30, "every second call was a hit");
    let keys = cluster.keys();
    assert!(keys.contains(&"item:7".to_owned()), "{keys:?}");
    let masters_with_items = cluster
        .nodes
        .iter()
        .filter(|node| {
            redis::cmd("KEYS")
                .arg("item:*")
                .query::<Vec<String>>(&mut node.client())
                .is_ok_and(|keys| !keys.is_empty())
        })
        .count();
    assert_eq!(masters_with_items, 3, "the keys span every master");

    // A user value can never become a hash tag.
    item(cache.clone(), calls.clone(), "{42}".into()).await;
    assert!(cluster.keys().contains(&"item:%7B42%7D".to_owned()));

    // Coalescing: 100 concurrent callers of a cold key, one run.
    let before = calls.get();
    let mut callers = JoinSet::new();
    for _ in 0..100 {
        callers.spawn(item(cache.clone(), calls.clone(), "hot".into()));
    }
    while callers.join_next().await.is_some() {}
    assert_eq!(calls.get(), before + 1);

    // The lock: two "processes" (caches), concurrent callers, one run.
    let other = cluster_cache(&cluster);
    let lock_calls = Arc::new(Calls::default());
    let mut callers = JoinSet::new();
    for n in 0..20 {
        let cache = if n % 2 == 0 {
            cache.clone()
        } else {
            other.clone()
        };
        callers.spawn(locked(cache, lock_calls.clone(), 9));
    }
    while let Some(value) = callers.join_next().await {
        assert_eq!(value.unwrap(), 9);
    }
    assert_eq!(lock_calls.get(), 1);
    assert!(!cluster.keys().iter().any(|key| key.ends_with("#lock")));

    // A tag evicts its members on every master.
    clear_items(cache.clone()).await;
    assert!(
        !cluster.keys().iter().any(|key| key.starts_with("item:")),
        "{:?}",
        cluster.keys()
    );

    // A prefix scans every master.
    for id in 0..30 {
        locked(cache.clone(), lock_calls.clone(), id).await;
    }
    assert_eq!(cache.invalidate_prefix("locked:").await.unwrap(), 30);
    assert!(!cluster.keys().iter().any(|key| key.starts_with("locked:")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_run_fails_open_for_its_slots_only() {
    let mut cluster = RedisCluster::start(3);
    let cache = cluster_cache(&cluster);
    let calls = Arc::new(Calls::default());
    for id in 0..30 {
        item(cache.clone(), calls.clone(), id.to_string()).await;
    }

    cluster.nodes[0].kill();
    let mut hits = 0;
    for id in 0..30 {
        let before = calls.get();
        let started = Instant::now();
        let value = tokio::time::timeout(
            Duration::from_secs(30),
            item(cache.clone(), calls.clone(), id.to_string()),
        )
        .await
        .expect("a call hung on the dead master");
        assert_eq!(value, format!("item {id}"), "a correct value, hit or not");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        if calls.get() == before {
            hits += 1;
        }
    }
    // About two thirds of the keys live on the surviving masters.
    assert!(
        hits >= 10,
        "the other masters' slots kept caching: {hits} hits"
    );
    assert!(
        hits < 30,
        "the dead master's keys ran their body: {hits} hits"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_survive_a_resharding_and_moved_redirects_are_followed() {
    let cluster = RedisCluster::start(3);
    let cache = cluster_cache(&cluster);
    let calls = Arc::new(Calls::default());
    for id in 0..60 {
        item(cache.clone(), calls.clone(), id.to_string()).await;
    }

    // Move a third of the slots, keys included, from the first master to the
    // second: the client's slot map is now stale, so it gets MOVED replies.
    cluster.reshard(0, 1, 3000);

    for id in 0..60 {
        assert_eq!(
            item(cache.clone(), calls.clone(), id.to_string()).await,
            format!("item {id}")
        );
    }
    assert_eq!(calls.get(), 60, "every entry was found after the move");
}

#[redis_cached(key = "near:{id}", ttl = 60, local = true, cache = cache)]
async fn near(cache: Arc<Cache>, id: u32) -> u32 {
    id
}

/// How long a change may take to reach a local copy here (see
/// `tracking.rs`; without tracking, a copy lives for `max_ttl`, 60 s).
const SEEN_WITHIN: Duration = Duration::from_secs(1);

fn local_cluster_cache(cluster: &RedisCluster, tier: LocalTierSettings) -> Arc<Cache> {
    Arc::new(
        Cache::builder()
            .cluster_urls(cluster.seed_urls())
            .deadline(Duration::from_millis(500))
            .local_tier(tier)
            .build()
            .unwrap(),
    )
}

/// The first id whose key master `node` serves.
fn id_on(cluster: &RedisCluster, node: usize) -> u32 {
    (0..)
        .find(|id| cluster.owns(node, &format!("near:{id}")))
        .expect("every master serves some key")
}

/// Calls `near(id)` until it is served from the local tier.
async fn serve_locally(cache: &Arc<Cache>, id: u32) -> bool {
    eventually(Duration::from_secs(5), || async {
        track_outcome(near(cache.clone(), id)).await.1 == Some(Outcome::Local)
    })
    .await
    .is_some()
}

/// Writes `value` into `near(id)`'s entry on master `node`, behind the
/// library's back; returns whether the local tier hears of it in time.
async fn change_is_seen(
    cluster: &RedisCluster,
    cache: &Arc<Cache>,
    node: usize,
    id: u32,
    value: u32,
) -> bool {
    let _: () = redis::cmd("SET")
        .arg(format!("near:{id}"))
        .arg(format!(r#"{{"v":1,"data":{value}}}"#))
        .query(&mut cluster.nodes[node].client())
        .unwrap();
    eventually(SEEN_WITHIN, || async {
        near(cache.clone(), id).await == value
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_on_any_master_reaches_the_local_tier() {
    let cluster = RedisCluster::start(3);
    let cache = local_cluster_cache(&cluster, LocalTierSettings::new());
    for node in 0..3 {
        let id = id_on(&cluster, node);
        assert!(serve_locally(&cache, id).await, "master {node}'s key");
        assert!(
            change_is_seen(&cluster, &cache, node, id, id + 1000).await,
            "a change made on master {node} was not seen"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_joins_is_tracked_once_the_listener_sees_it() {
    let mut cluster = RedisCluster::start(3);
    let cache = local_cluster_cache(
        &cluster,
        LocalTierSettings::new().health_check_interval(Duration::from_millis(100)),
    );
    assert!(serve_locally(&cache, id_on(&cluster, 0)).await);

    let new = cluster.add_master();
    cluster.reshard(0, new, 2000);
    let id = id_on(&cluster, new);
    // The listener compares the masters every 100 ms; once it has seen the
    // new one (emptying the tier), it tracks it like the others. Until then,
    // a change there can be missed: hence the rounds.
    let round = AtomicU32::new(1000);
    let tracked = eventually(Duration::from_secs(10), || async {
        let value = round.fetch_add(1, Ordering::SeqCst);
        serve_locally(&cache, id).await && change_is_seen(&cluster, &cache, new, id, value).await
    })
    .await;
    assert!(
        tracked.is_some(),
        "changes on the master that joined never reached the local tier"
    );
}
