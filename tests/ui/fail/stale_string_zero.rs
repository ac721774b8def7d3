use cache_runtime::redis_cached;

#[redis_cached(key = "rate:{pair}", ttl = 60, stale = "0ms")]
async fn rate(pair: String) -> f64 {
    pair.len() as f64
}

fn main() {
    drop(rate("EURUSD".into()));
}
