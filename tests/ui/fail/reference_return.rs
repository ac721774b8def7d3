use cache_runtime::redis_cached;

#[redis_cached(key = "name:{id}")]
async fn name(id: u64) -> &'static str {
    if id == 0 { "zero" } else { "other" }
}

fn main() {
    drop(name(1));
}
