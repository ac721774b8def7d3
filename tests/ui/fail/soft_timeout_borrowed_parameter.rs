use cache_runtime::redis_cached;

// With `soft_timeout`, the body may run on after the call returns: it cannot
// borrow.
#[redis_cached(key = "quote:{symbol}", fail_safe = "1h", soft_timeout = "100ms")]
async fn quote(symbol: &str) -> Result<f64, String> {
    Ok(symbol.len() as f64)
}

fn main() {
    drop(quote("ACME"));
}
