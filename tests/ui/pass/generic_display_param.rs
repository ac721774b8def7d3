use std::fmt::Display;

use cache_runtime::redis_cached;

#[redis_cached(key = "label:{id}")]
async fn label<T: Display>(id: T) -> String {
    format!("<{id}>")
}

fn main() {
    drop(label(42));
    drop(label("forty-two"));
}
