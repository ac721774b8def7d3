use cache_runtime::redis_cached;

struct User {
    id: u64,
}

#[redis_cached(key = "user:{id}")]
async fn user(id: u64) -> Option<User> {
    Some(User { id })
}

fn main() {
    drop(user(1));
}
