use cache_runtime::redis_cached;

#[redis_cached(key = "user:{id}", format = "yaml")]
async fn user(id: u64) -> String {
    id.to_string()
}

fn main() {
    drop(user(1));
}
