use cache_runtime::redis_cached;

#[redis_cached(key = "user:{user_id}")]
async fn user_name(id: u64, tenant: &str) -> String {
    format!("{tenant}/{id}")
}

fn main() {
    drop(user_name(1, "acme"));
}
