//! A free function cached in Redis: the first call runs the body (a MISS),
//! the second reads the stored value back (a HIT).
//!
//! Run against the Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`):
//!
//! ```text
//! cargo run -p cache-runtime --example basic
//! ```
//!
//! It exits non-zero if the second call was not a hit.

mod common;

use std::time::Duration;

use cache_runtime::{Cache, Outcome, redis_cached};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// The slow part a cache is for: a query, an HTTP call… Here, a sleep.
/// `Ok` values are stored under `user:{id}` (behind the cache's prefix) for
/// 60 seconds; an `Err` would not be stored.
#[redis_cached(key = "user:{id}", ttl = 60)]
async fn get_user(id: u64) -> Result<User, std::io::Error> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(User {
        id,
        name: "Ada".into(),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Zero configuration also works (the first cached call connects to
    // REDIS_URL); a prefix keeps the example's keys apart from yours.
    let cache = Cache::builder()
        .prefix("cache-runtime-example")
        .build()?
        .install()?;
    common::connected(cache).await?;
    // Start cold, so that running the example twice shows the same thing.
    // The macro derived `get_user_invalidate` from the key template.
    get_user_invalidate(42).await?;

    let (user, first) = common::timed("get_user(42), cold", get_user(42)).await;
    println!("  -> {:?}", user?);
    let (user, second) = common::timed("get_user(42), again", get_user(42)).await;
    println!("  -> {:?}", user?);
    println!("In redis-cli: GET {}", cache.full_key("user:42"));

    common::expect(first, Outcome::Miss)?;
    common::expect(second, Outcome::Hit)?;
    Ok(())
}
