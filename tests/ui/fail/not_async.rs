use cache_runtime::redis_cached;

#[redis_cached(key = "square:{n}")]
fn square(n: u64) -> u64 {
    n * n
}

fn main() {
    let _ = square(2);
}
