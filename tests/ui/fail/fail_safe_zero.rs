use cache_runtime::redis_cached;

#[redis_cached(key = "quote:{symbol}", fail_safe = "0s")]
async fn quote(symbol: String) -> Result<f64, String> {
    Ok(symbol.len() as f64)
}

fn main() {
    drop(quote("ACME".into()));
}
