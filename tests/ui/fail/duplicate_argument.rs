use cache_runtime::redis_cached;

#[redis_cached(key = "rate:{pair}", ttl = 60, ttl = 120)]
async fn rate(pair: &str) -> f64 {
    pair.len() as f64
}

fn main() {
    drop(rate("EURUSD"));
}
