use cache_runtime::{cache_put, redis_cached};

#[redis_cached(key = "users", ttl = 60, format = "binary", local = true)]
async fn users() -> Vec<(u64, String)> {
    vec![(1, "Ada".to_owned())]
}

#[redis_cached(key = "user:{id}", format = "json")]
async fn user(id: u64) -> Result<String, std::io::Error> {
    Ok(id.to_string())
}

#[cache_put(key = "user:{id}", format = "binary")]
async fn save(id: u64) -> String {
    id.to_string()
}

fn main() {
    drop(users());
    drop(user(1));
    drop(save(1));
}
