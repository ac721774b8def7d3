use cache_runtime::redis_cached;

#[redis_cached(key = "n:{id}", stale = 60, local = true)]
async fn number(id: u32) -> u32 {
    id
}

fn main() {
    drop(number(1));
}
