//! The local tier: `local = true` keeps decoded values in the process too,
//! so that a hit is a hash-map lookup and a clone (LOCAL, about a
//! microsecond) instead of a Redis round trip and a decode (HIT). Every
//! change to the key in Redis drops the local copies, in every process:
//! Redis reports it (`CLIENT TRACKING`), whoever made it.
//!
//! Run against the Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`):
//!
//! ```text
//! cargo run -p cache-runtime --example local_tier
//! ```

mod common;

use std::sync::Arc;
use std::time::Duration;

use cache_runtime::{Cache, LocalTierSettings, Outcome, redis_cached};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Report {
    region: String,
    rows: Vec<(String, u64)>,
}

/// A large value, declared as `Arc<…>` (serde's `rc` feature) so that a
/// local hit clones a reference count, not the rows. The stored type must be
/// `Clone + Send + Sync + 'static` for `local = true`.
#[redis_cached(key = "report:{region}", ttl = 60, local = true)]
async fn report(region: &str) -> Result<Arc<Report>, std::io::Error> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rows = (0..1_000).map(|i| (format!("item {i}"), i * 7)).collect();
    Ok(Arc::new(Report {
        region: region.to_owned(),
        rows,
    }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Set on the builder, the tier starts with the cache and listens to
    // Redis for changes at once.
    let cache = Cache::builder()
        .prefix("cache-runtime-example")
        .local_tier(
            LocalTierSettings::new()
                .max_entries(10_000)
                // The longest a copy is used; also what bounds a change
                // Redis does not report, where it refuses tracking.
                .max_ttl(Duration::from_secs(10)),
        )
        .build()?
        .install()?;
    common::connected(cache).await?;
    report_invalidate("eu").await?;

    let (_, first) = common::timed("report(\"eu\"), cold", report("eu")).await;
    // Redis reports this process's own store back too (a report does not
    // say whose write it was), and the copy the miss kept goes when it
    // arrives, about a millisecond later: the next call reads Redis once
    // more, and keeps a copy.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (_, after_store) = common::timed("after the report of its store", report("eu")).await;
    let (value, second) = common::timed("report(\"eu\"), again", report("eu")).await;
    let value = value?;
    println!("  -> {} rows for {}", value.rows.len(), value.region);

    cache.clear_local_tier();
    let (_, from_redis) = common::timed("after clear_local_tier()", report("eu")).await;
    let (_, refilled) = common::timed("again: the Redis hit refilled it", report("eu")).await;

    // Every eviction drops the local copy first, even if Redis is down.
    report_invalidate("eu").await?;
    let (_, evicted) = common::timed("after report_invalidate(\"eu\")", report("eu")).await;

    common::expect(first, Outcome::Miss)?;
    common::expect(after_store, Outcome::Hit)?;
    common::expect(second, Outcome::Local)?;
    common::expect(from_redis, Outcome::Hit)?;
    common::expect(refilled, Outcome::Local)?;
    common::expect(evicted, Outcome::Miss)?;
    Ok(())
}
