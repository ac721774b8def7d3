use cache_runtime::redis_cached;

// The throttle starts at an `Err`, which an `Option` never is.
#[redis_cached(key = "quote:{symbol}", fail_safe = "1h", soft_timeout = "1s", fail_safe_throttle = "5s")]
async fn quote(symbol: String) -> Option<f64> {
    Some(symbol.len() as f64)
}

fn main() {
    drop(quote("ACME".into()));
}
