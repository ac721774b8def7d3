use cache_runtime::{Cache, redis_cached};

#[redis_cached(key = "double:{n}", cache = cache)]
async fn double(cache: &Cache, n: u32) -> u32 {
    let _ = cache;
    n * 2
}

fn build_only(cache: &Cache) {
    drop(double(cache, 4));
}

// Only type-checked: building a `Cache` would start its connection.
fn main() {}
