use cache_runtime::redis_cached;

#[redis_cached(key = "user:{id}", format = "binary")]
async fn user(id: u64) -> String {
    id.to_string()
}

fn main() {
    drop(user(1));
}
