use cache_runtime::redis_cached;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct User {
    id: i64,
    name: String,
}

// Only `Some` is stored.
#[redis_cached(key = "user:{id}")]
async fn find_user(id: i64) -> Option<User> {
    if id < 0 {
        return None;
    }
    Some(User {
        id,
        name: "Ada".into(),
    })
}

fn main() {
    drop(find_user(1));
}
