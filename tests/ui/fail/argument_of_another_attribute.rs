use cache_runtime::redis_cached;

// `before` belongs to #[cache_evict].
#[redis_cached(key = "user:{id}", before = true)]
async fn get_user(id: u64) -> String {
    id.to_string()
}

fn main() {
    drop(get_user(1));
}
