use cache_runtime::redis_cached;

#[redis_cached(key = "rate:{pair}", ttl = 1.5)]
async fn rate(pair: &str) -> f64 {
    pair.len() as f64
}

fn main() {
    drop(rate("EURUSD"));
}
