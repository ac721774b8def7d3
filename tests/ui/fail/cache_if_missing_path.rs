use cache_runtime::redis_cached;

#[redis_cached(key = "search:{query}", cache_if = is_not_empty)]
async fn search(query: String) -> Vec<u32> {
    query.bytes().map(u32::from).collect()
}

fn main() {
    drop(search("a".into()));
}
