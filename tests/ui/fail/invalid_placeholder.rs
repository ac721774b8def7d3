use cache_runtime::redis_cached;

#[redis_cached(key = "user:{a b}")]
async fn user_name(a: u64, b: u64) -> String {
    format!("{a}{b}")
}

fn main() {
    drop(user_name(1, 2));
}
