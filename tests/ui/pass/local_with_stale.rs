//! `local = true` with `stale`: local copies while the value is fresh, the
//! stale window served from Redis; the future is still `Send`.

use cache_runtime::redis_cached;

#[redis_cached(key = "price:{symbol}", ttl = 10, stale = 300, local = true)]
async fn price(symbol: String) -> Result<u64, String> {
    tokio::task::yield_now().await;
    Ok(symbol.len() as u64)
}

fn assert_send<T: Send>(_: &T) {}

// Only type-checked: building a `Cache` would start its connection.
fn main() {
    assert_send(&price("ACME".into()));
}
