use cache_runtime::redis_cached;

#[redis_cached(key = "user:{id")]
async fn user_name(id: u64) -> String {
    id.to_string()
}

fn main() {
    drop(user_name(1));
}
