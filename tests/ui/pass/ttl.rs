use cache_runtime::redis_cached;

#[redis_cached(key = "rate:{pair}", ttl = 60)]
async fn rate(pair: &str) -> f64 {
    pair.len() as f64
}

// Every argument at once, in any order.
#[redis_cached(ttl = 86_400, cache_none = true, key = "holiday:{day}")]
async fn holiday(day: u32) -> Option<String> {
    (day == 1).then(|| "New Year".to_owned())
}

fn main() {
    drop(rate("EURUSD"));
    drop(holiday(1));
}
