//! Durations: whole seconds, or a string with a unit.

use cache_runtime::{cache_put, redis_cached};

#[redis_cached(key = "a:{id}", ttl = "250ms")]
async fn milliseconds(id: u32) -> u32 {
    id
}

#[redis_cached(key = "b:{id}", ttl = "90s", stale = "5m")]
async fn with_stale(id: u32) -> u32 {
    id
}

#[cache_put(key = "c:{id}", ttl = "1h")]
async fn hours(id: u32) -> u32 {
    id
}

#[redis_cached(key = "d:{id}", ttl = 60)]
async fn seconds(id: u32) -> u32 {
    id
}

fn main() {
    drop(milliseconds(1));
    drop(with_stale(1));
    drop(hours(1));
    drop(seconds(1));
}
