use cache_runtime::redis_cached;

#[redis_cached(key = "touch:{id}")]
async fn touch(id: u64) {
    let _ = id;
}

fn main() {
    drop(touch(1));
}
