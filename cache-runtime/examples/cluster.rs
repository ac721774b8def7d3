//! A cache on a Redis Cluster: entries spread over the masters' slots, and
//! everything works across them: hits, tags (a tag's entries live in many
//! slots) and prefix eviction (`SCAN` on every master).
//!
//! Run against the cluster whose seed nodes `REDIS_CLUSTER_URLS` lists. A
//! throwaway local cluster of three masters, with redis-server 7 or later:
//!
//! ```text
//! mkdir -p /tmp/redis-cluster
//! for port in 7000 7001 7002; do
//!     redis-server --port $port --cluster-enabled yes --cluster-config-file nodes-$port.conf \
//!         --dir /tmp/redis-cluster --save "" --appendonly no --daemonize yes --logfile $port.log
//! done
//! redis-cli --cluster create 127.0.0.1:7000 127.0.0.1:7001 127.0.0.1:7002 \
//!     --cluster-replicas 0 --cluster-yes
//! REDIS_CLUSTER_URLS=redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002 \
//!     cargo run -p cache-runtime --example cluster
//! for port in 7000 7001 7002; do redis-cli -p $port shutdown nosave; done   # to stop it
//! ```
//!
//! (A zero-configuration cache, or `Cache::builder()` without `url`, also
//! uses `REDIS_CLUSTER_URLS` when it is set; this example reads it itself to
//! say so when it is missing.)

mod common;

use std::time::Duration;

use cache_runtime::{Cache, Outcome, redis_cached};

/// Each city's entry lands in its own slot; all join the `cities` tag.
#[redis_cached(key = "city:{name}", ttl = 60, tag = "cities")]
async fn population(name: &str) -> u64 {
    tokio::time::sleep(Duration::from_millis(100)).await;
    name.len() as u64 * 1_000_000
}

const CITIES: [&str; 4] = ["Paris", "Lagos", "Lima", "Osaka"];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(urls) = std::env::var("REDIS_CLUSTER_URLS") else {
        return Err(
            "set REDIS_CLUSTER_URLS to the cluster's seed nodes, comma-separated \
                    (the header of examples/cluster.rs shows how to start a local cluster)"
                .into(),
        );
    };
    let cache = Cache::builder()
        .cluster_urls(urls.split(',').map(str::trim))
        .prefix("cache-runtime-example")
        .build()?
        .install()?;
    assert!(cache.is_cluster());
    common::connected(cache).await?;
    let evicted = cache.invalidate_prefix("city:").await?;
    println!("invalidate_prefix(\"city:\") on every master: {evicted} key(s) from an earlier run");

    for city in CITIES {
        let (_, outcome) =
            common::timed(&format!("population({city:?}), cold"), population(city)).await;
        common::expect(outcome, Outcome::Miss)?;
    }
    for city in CITIES {
        let (_, outcome) =
            common::timed(&format!("population({city:?}), again"), population(city)).await;
        common::expect(outcome, Outcome::Hit)?;
    }

    // The tag's set lists its members, whatever their slots.
    cache.invalidate_tag("cities").await?;
    println!("invalidate_tag(\"cities\")");
    for city in CITIES {
        let (_, outcome) =
            common::timed(&format!("population({city:?}), evicted"), population(city)).await;
        common::expect(outcome, Outcome::Miss)?;
    }
    Ok(())
}
