//! A method cached in the cache its struct holds (`cache = self.cache`),
//! with `self`'s fields in the key: two repositories, each with its own
//! cache and tenant, never see each other's entries.
//!
//! Run against the Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`):
//!
//! ```text
//! cargo run -p cache-runtime --example method
//! ```

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cache_runtime::{Cache, Outcome, redis_cached};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Product {
    id: u32,
    name: String,
}

/// Stands for a database pool: counts the queries that reach it.
#[derive(Default)]
struct Db {
    queries: AtomicU32,
}

impl Db {
    async fn product(&self, tenant: &str, id: u32) -> Option<Product> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        (id < 1000).then(|| Product {
            id,
            name: format!("{tenant}'s product {id}"),
        })
    }
}

struct Repo {
    db: Db,
    cache: Cache,
    tenant: String,
}

impl Repo {
    /// `self.tenant` is part of the key; `self.cache` is evaluated on each
    /// call. `Some` values are stored, `None` is not (unless
    /// `cache_none = true`).
    #[redis_cached(key = "{self.tenant}:product:{id}", ttl = 60, cache = self.cache)]
    async fn product(&self, id: u32) -> Option<Product> {
        self.db.product(&self.tenant, id).await
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One cache per repository here; clones of one `Cache` would share its
    // connections.
    let shop = Repo {
        db: Db::default(),
        cache: Cache::builder()
            .prefix("cache-runtime-example:shop")
            .build()?,
        tenant: "acme".into(),
    };
    let other = Repo {
        db: Db::default(),
        cache: Cache::builder()
            .prefix("cache-runtime-example:other")
            .build()?,
        tenant: "globex".into(),
    };
    for repo in [&shop, &other] {
        common::connected(&repo.cache).await?;
        // The derived helper takes `&self`, since the key and the `cache`
        // expression use it: it evicts from `self.cache`.
        repo.product_invalidate(7).await?;
    }

    let (product, first) = common::timed("shop.product(7), cold", shop.product(7)).await;
    println!("  -> {product:?}");
    let (product, second) = common::timed("shop.product(7), again", shop.product(7)).await;
    println!("  -> {product:?}");
    let (product, third) = common::timed("other.product(7), its own cache", other.product(7)).await;
    println!("  -> {product:?}");
    let (product, _) = common::timed("shop.product(5000), None", shop.product(5000)).await;
    println!("  -> {product:?} (not stored: the next call queries again)");
    println!(
        "Queries that reached the databases: shop {}, other {}",
        shop.db.queries.load(Ordering::Relaxed),
        other.db.queries.load(Ordering::Relaxed)
    );

    common::expect(first, Outcome::Miss)?;
    common::expect(second, Outcome::Hit)?;
    common::expect(third, Outcome::Miss)?;
    Ok(())
}
