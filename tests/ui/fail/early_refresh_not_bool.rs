use cache_runtime::redis_cached;

#[redis_cached(key = "quote:{symbol}", early_refresh = 1)]
async fn quote(symbol: String) -> f64 {
    symbol.len() as f64
}

fn main() {
    drop(quote("ACME".into()));
}
