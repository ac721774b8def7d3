use cache_runtime::redis_cached;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[redis_cached(key = "default:{name}")]
async fn default_of<T: Serialize + DeserializeOwned + Default>(name: &str) -> T {
    let _ = name;
    T::default()
}

fn main() {
    drop(default_of::<Vec<u8>>("bytes"));
    drop(default_of::<String>("text"));
}
