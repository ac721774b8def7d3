use std::sync::Arc;

use cache_runtime::{Cache, redis_cached};

// A stale value is served for up to 300 s past the TTL while the body
// refreshes it in the background; the body owns what it uses.
#[redis_cached(key = "quote:{symbol}", ttl = 10, stale = 300)]
async fn quote(symbol: String) -> Result<f64, String> {
    tokio::task::yield_now().await;
    Ok(symbol.len() as f64)
}

#[redis_cached(key = "rates:{base}", ttl = 10, stale = 60, cache = cache)]
async fn rates(cache: Arc<Cache>, base: &'static str) -> Vec<(String, f64)> {
    let _ = cache;
    vec![(base.to_owned(), 1.0)]
}

fn assert_send<T: Send>(_: &T) {}

fn build_only(cache: Arc<Cache>) {
    assert_send(&rates(cache, "EUR"));
}

// Only type-checked: building a `Cache` would start its connection.
fn main() {
    assert_send(&quote("ACME".into()));
}
