use std::sync::Arc;

use cache_runtime::{Cache, redis_cached};

// The body may use, even move, the `Arc` that the cache comes from.
#[redis_cached(key = "len:{text}", cache = cache)]
async fn length(cache: Arc<Cache>, text: &str) -> usize {
    drop(cache);
    text.len()
}

// An expression, not just a name.
#[redis_cached(key = "upper:{text}", cache = caches[0])]
async fn upper(caches: &[Arc<Cache>], text: &str) -> String {
    let _ = caches;
    text.to_uppercase()
}

fn build_only(cache: Arc<Cache>) {
    drop(upper(std::slice::from_ref(&cache), "a"));
    drop(length(cache, "abc"));
}

// Only type-checked: building a `Cache` would start its connection.
fn main() {}
