use cache_runtime::redis_cached;

struct Pool;

// Without `key`, every parameter is part of the key.
#[redis_cached]
async fn count(pool: &Pool, table: &str) -> u64 {
    let _ = pool;
    table.len() as u64
}

fn main() {
    drop(count(&Pool, "users"));
}
