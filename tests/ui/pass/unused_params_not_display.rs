use std::sync::atomic::{AtomicUsize, Ordering};

use cache_runtime::redis_cached;

/// Stands for a database pool: not `Display`, not part of the key.
struct Pool {
    _connections: Vec<u8>,
}

// Parameters the template does not name need not be `Display`.
#[redis_cached(key = "row:{id}")]
async fn row(pool: &Pool, calls: &AtomicUsize, id: i64) -> String {
    let _ = pool;
    calls.fetch_add(1, Ordering::Relaxed);
    format!("row {id}")
}

fn main() {
    let pool = Pool {
        _connections: Vec::new(),
    };
    let calls = AtomicUsize::new(0);
    drop(row(&pool, &calls, 1));
}
