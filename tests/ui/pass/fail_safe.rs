use std::sync::Arc;

use cache_runtime::{Cache, redis_cached};

// `fail_safe` alone runs the body only while its caller waits: it may borrow.
#[redis_cached(key = "user:{id}", ttl = "30s", fail_safe = "1h", fail_safe_throttle = "5s")]
async fn user(db: &str, id: u64) -> Result<String, std::io::Error> {
    Ok(format!("{db}:{id}"))
}

// A `soft_timeout` answers slow calls, so `fail_safe` applies to any shape.
#[redis_cached(key = "profile:{id}", fail_safe = 3600, soft_timeout = "250ms")]
async fn profile(id: u64) -> Option<String> {
    Some(id.to_string())
}

#[redis_cached(key = "rates", ttl = 60, stale = 60, fail_safe = "1h", soft_timeout = "1s", early_refresh = true, lock = true, cache = cache)]
async fn rates(cache: Arc<Cache>) -> Result<Vec<f64>, String> {
    drop(cache);
    Ok(vec![1.0])
}

#[redis_cached(key = "hot", early_refresh = true, local = true)]
async fn hot() -> u64 {
    1
}

#[redis_cached(key = "cold", early_refresh = false)]
async fn cold(db: &str) -> usize {
    db.len()
}

fn build_only(cache: Arc<Cache>) {
    drop(rates(cache));
}

fn main() {
    drop(user("db", 1));
    drop(profile(1));
    drop(hot());
    drop(cold("db"));
    let _ = build_only;
}
