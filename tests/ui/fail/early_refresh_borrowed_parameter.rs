use cache_runtime::redis_cached;

// With `early_refresh`, the body may run in the background: it cannot borrow.
#[redis_cached(key = "quote:{symbol}", early_refresh = true)]
async fn quote(symbol: &str) -> f64 {
    symbol.len() as f64
}

fn main() {
    drop(quote("ACME"));
}
