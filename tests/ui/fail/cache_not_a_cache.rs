use cache_runtime::redis_cached;

struct Pool;

#[redis_cached(key = "rate:{pair}", cache = pool)]
async fn rate(pool: &Pool, pair: &str) -> f64 {
    let _ = pool;
    pair.len() as f64
}

fn main() {
    drop(rate(&Pool, "EURUSD"));
}
