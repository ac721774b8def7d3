use cache_runtime::redis_cached;

// ("1", "23") and ("12", "3") would share a key.
#[redis_cached(key = "pair:{a}{b}")]
async fn pair(a: u64, b: u64) -> String {
    format!("{a}-{b}")
}

// A letter is no delimiter: it can be part of an escaped value.
#[redis_cached(key = "pair:{a}x{b}")]
async fn times(a: u64, b: u64) -> u64 {
    a * b
}

fn main() {
    drop(pair(1, 23));
    drop(times(2, 3));
}
