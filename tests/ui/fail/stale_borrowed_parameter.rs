use cache_runtime::redis_cached;

// With `stale`, the body may outlive the call: it cannot borrow.
#[redis_cached(key = "quote:{symbol}", stale = 60)]
async fn quote(symbol: &str) -> f64 {
    symbol.len() as f64
}

fn main() {
    drop(quote("ACME"));
}
