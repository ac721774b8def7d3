use cache_runtime::redis_cached;

#[redis_cached(key = "token:{id}", ttl = 3600, ttl_from = "60s")]
async fn token(id: u32) -> String {
    id.to_string()
}

fn main() {
    drop(token(1));
}
