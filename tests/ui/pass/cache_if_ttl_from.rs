use std::time::Duration;

use cache_runtime::{cache_put, redis_cached};

fn is_not_empty(hits: &Vec<u32>) -> bool {
    !hits.is_empty()
}

fn lifetime(token: &(String, u64)) -> Duration {
    Duration::from_secs(token.1)
}

mod rules {
    pub fn some_and_short(value: &Option<String>) -> bool {
        value.as_ref().is_some_and(|text| text.len() < 10)
    }
}

#[redis_cached(key = "search:{query}", cache_if = is_not_empty)]
async fn search(query: &str) -> Result<Vec<u32>, std::io::Error> {
    Ok(query.bytes().map(u32::from).collect())
}

#[cache_put(key = "search:{query}", cache_if = is_not_empty)]
async fn put_search(query: &str) -> Vec<u32> {
    query.bytes().map(u32::from).collect()
}

#[redis_cached(key = "token:{id}", ttl = "1h", ttl_from = lifetime)]
async fn token(id: u32) -> (String, u64) {
    (id.to_string(), 60)
}

#[redis_cached(key = "note:{id}", cache_none = true, cache_if = rules::some_and_short, stale = 60)]
async fn note(id: u32) -> Option<String> {
    Some(id.to_string())
}

fn main() {
    drop(search("a"));
    drop(put_search("a"));
    drop(token(1));
    drop(note(1));
}
