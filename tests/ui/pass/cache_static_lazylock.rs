use std::sync::LazyLock;

use cache_runtime::{Cache, redis_cached};

static SESSIONS: LazyLock<Cache> = LazyLock::new(|| {
    Cache::builder()
        .prefix("sessions:")
        .build()
        .expect("valid configuration")
});

#[redis_cached(key = "session:{token}", cache = SESSIONS)]
async fn session_user(token: &str) -> Option<u64> {
    token.strip_prefix("user-")?.parse().ok()
}

fn main() {
    // The `LazyLock` is not forced until the future is polled.
    drop(session_user("user-1"));
}
