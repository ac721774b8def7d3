use cache_runtime::redis_cached;

#[redis_cached(key = "rate:{pair}", ttl = "5d")]
async fn rate(pair: &str) -> f64 {
    pair.len() as f64
}

fn main() {
    drop(rate("EURUSD"));
}
