use cache_runtime::redis_cached;

// It takes the stored value, `&Vec<u32>`, not the `Result`.
fn is_not_empty(result: &Result<Vec<u32>, String>) -> bool {
    result.as_ref().is_ok_and(|hits| !hits.is_empty())
}

#[redis_cached(key = "search:{query}", cache_if = is_not_empty)]
async fn search(query: String) -> Result<Vec<u32>, String> {
    Ok(query.bytes().map(u32::from).collect())
}

fn main() {
    drop(search("a".into()));
}
