use cache_runtime::redis_cached;

#[redis_cached(key = "user:{id}")]
struct User {
    id: u64,
}

fn main() {
    let user = User { id: 1 };
    let _ = user.id;
}
