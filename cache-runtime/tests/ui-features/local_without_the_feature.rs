use cache_runtime::redis_cached;

#[redis_cached(key = "n:{n}", ttl = 60, local = true)]
async fn cached(n: u32) -> u32 {
    n
}

fn main() {}
