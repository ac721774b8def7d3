use cache_runtime::redis_cached;

// Across processes, one caller at a time runs the body for a key.
#[redis_cached(key = "report:{id}", ttl = 60, lock = true)]
async fn report(id: u64) -> String {
    format!("report {id}")
}

// Concurrent callers in this process each run the body.
#[redis_cached(key = "fresh:{id}", coalesce = false)]
async fn fresh(id: u64) -> u64 {
    id
}

// The defaults, written out.
#[redis_cached(key = "plain:{id}", lock = false, coalesce = true)]
async fn plain(id: u64) -> u64 {
    id
}

fn main() {
    drop(report(1));
    drop(fresh(1));
    drop(plain(1));
}
