use cache_runtime::redis_cached;

#[redis_cached(key = "square:{n}")]
async fn square(n: u64) -> u64 {
    n * n
}

fn main() {
    // Building the future runs nothing, so no Redis is needed.
    drop(square(7));
}
