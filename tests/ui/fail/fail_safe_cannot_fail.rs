use cache_runtime::redis_cached;

// A plain value never fails, and without `soft_timeout` nothing else would
// use the last good value.
#[redis_cached(key = "quote:{symbol}", fail_safe = "1h")]
async fn quote(symbol: String) -> f64 {
    symbol.len() as f64
}

fn main() {
    drop(quote("ACME".into()));
}
