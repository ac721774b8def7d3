use cache_runtime::redis_cached;

#[redis_cached(key = "rate:{pair}", cache_none = true)]
async fn rate(pair: &str) -> Result<f64, String> {
    Ok(pair.len() as f64)
}

fn main() {
    drop(rate("EURUSD"));
}
