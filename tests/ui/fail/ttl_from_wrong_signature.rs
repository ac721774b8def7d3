use cache_runtime::redis_cached;

// It returns a `Duration`, not seconds.
fn token_lifetime(_: &String) -> u64 {
    60
}

#[redis_cached(key = "token:{id}", ttl = 3600, ttl_from = token_lifetime)]
async fn token(id: u32) -> String {
    id.to_string()
}

fn main() {
    drop(token(1));
}
