//! `local = true` on a `Clone` value; generic functions without `Clone`
//! still compile (they never use the local tier).

use cache_runtime::redis_cached;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[redis_cached(key = "user:{id}", ttl = 60, local = true)]
async fn user(id: u64) -> Result<Vec<String>, String> {
    Ok(vec![id.to_string()])
}

#[redis_cached(key = "any:{id}", ttl = 60)]
async fn any<T: Serialize + DeserializeOwned>(id: u64, value: T) -> T {
    let _ = id;
    value
}

fn main() {
    drop(user(1));
    drop(any(1, 2u8));
}
