//! Keeping a cache true to its database: `#[cache_evict]` drops an entry
//! when a write succeeds, `#[cache_put]` stores a write's result
//! (write-through), and `deferred` holds evictions until a transaction
//! commits.
//!
//! Run against the Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`):
//!
//! ```text
//! cargo run -p cache-runtime --example evict_and_put
//! ```

mod common;

use std::collections::HashMap;
use std::sync::Mutex;

use cache_runtime::{Cache, Outcome, cache_evict, cache_put, deferred, redis_cached};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

#[derive(Debug)]
struct NotFound;

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no such user")
    }
}

impl std::error::Error for NotFound {}

/// Stands for a database: `db` is not in the key templates, so it is not
/// part of the keys.
#[derive(Default)]
struct Db {
    names: Mutex<HashMap<u64, String>>,
}

impl Db {
    fn user(&self, id: u64) -> Result<User, NotFound> {
        let names = self.names.lock().unwrap();
        let name = names.get(&id).ok_or(NotFound)?.clone();
        Ok(User { id, name })
    }

    fn set_name(&self, id: u64, name: &str) {
        self.names.lock().unwrap().insert(id, name.to_owned());
    }
}

#[redis_cached(key = "user:{id}", ttl = 60)]
async fn get_user(db: &Db, id: u64) -> Result<User, NotFound> {
    db.user(id)
}

/// Evicts `user:{id}` once the body returned `Ok`: the next read queries
/// the database.
#[cache_evict(key = "user:{id}")]
async fn rename_user(db: &Db, id: u64, name: &str) -> Result<(), NotFound> {
    db.user(id)?;
    db.set_name(id, name);
    Ok(())
}

/// Stores the body's `Ok` under `user:{id}`: the next read is a hit on the
/// new value, without querying.
#[cache_put(key = "user:{id}", ttl = 60)]
async fn save_user(db: &Db, id: u64, name: &str) -> Result<User, NotFound> {
    db.set_name(id, name);
    db.user(id)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cache = Cache::builder()
        .prefix("cache-runtime-example")
        .build()?
        .install()?;
    common::connected(cache).await?;
    let db = Db::default();
    db.set_name(1, "Ada");
    get_user_invalidate(1).await?;

    let (_, outcome) = common::timed("get_user(1), cold", get_user(&db, 1)).await;
    common::expect(outcome, Outcome::Miss)?;
    let (user, outcome) = common::timed("get_user(1), again", get_user(&db, 1)).await;
    common::expect(outcome, Outcome::Hit)?;
    println!("  -> {:?}", user?);

    println!("rename_user(1, \"Grace\"): #[cache_evict] drops user:1");
    rename_user(&db, 1, "Grace").await?;
    let (user, outcome) = common::timed("get_user(1), after the eviction", get_user(&db, 1)).await;
    common::expect(outcome, Outcome::Miss)?;
    let user = user?;
    println!("  -> {user:?}");
    if user.name != "Grace" {
        return Err("the read after the eviction did not see the rename".into());
    }

    println!("save_user(1, \"Alan\"): #[cache_put] stores the new value");
    save_user(&db, 1, "Alan").await?;
    let (user, outcome) = common::timed("get_user(1), after the put", get_user(&db, 1)).await;
    common::expect(outcome, Outcome::Hit)?;
    let user = user?;
    println!("  -> {user:?}");
    if user.name != "Alan" {
        return Err("the hit after the put did not return the stored value".into());
    }

    // Inside `deferred`, evictions are collected instead of sent: a reader
    // must not refill the cache with data the transaction may roll back.
    println!("deferred: rename_user(1, \"Edsger\") inside a transaction");
    let (renamed, evictions) = deferred(rename_user(&db, 1, "Edsger")).await;
    renamed?;
    println!("  {} eviction(s) pending until the commit", evictions.len());
    let (_, outcome) = common::timed("get_user(1), before the commit", get_user(&db, 1)).await;
    common::expect(outcome, Outcome::Hit)?;
    evictions.apply().await?; // committed: evict now
    let (user, outcome) = common::timed("get_user(1), after the commit", get_user(&db, 1)).await;
    common::expect(outcome, Outcome::Miss)?;
    println!("  -> {:?}", user?);
    Ok(())
}
