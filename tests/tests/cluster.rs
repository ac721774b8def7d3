//! Redis Cluster: every feature keeps working across slots (hits, coalescing,
//! the lock, tags, prefixes), user values never form hash tags, and a master
//! killed mid-run fails open for its slots only. The cluster is real: three
//! masters started by the test and joined with `redis-cli --cluster create`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cache_evict, redis_cached};
use cache_tests::{Calls, RedisCluster};
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
    let id_of = |node: usize| -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut cluster.nodes[node].client())
            .unwrap()
    };
    let output = std::process::Command::new("redis-cli")
        .args(["--cluster", "reshard"])
        .arg(format!("127.0.0.1:{}", cluster.nodes[0].port()))
        .args(["--cluster-from", &id_of(0), "--cluster-to", &id_of(1)])
        .args(["--cluster-slots", "3000", "--cluster-yes"])
        .output()
        .expect("run redis-cli --cluster reshard");
    assert!(
        output.status.success(),
        "reshard failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );

    for id in 0..60 {
        assert_eq!(
            item(cache.clone(), calls.clone(), id.to_string()).await,
            format!("item {id}")
        );
    }
    assert_eq!(calls.get(), 60, "every entry was found after the move");
}
