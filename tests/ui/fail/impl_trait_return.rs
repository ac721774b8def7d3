use std::fmt::Display;

use cache_runtime::redis_cached;

#[redis_cached(key = "label:{id}")]
async fn label(id: u64) -> impl Display {
    id
}

fn main() {
    drop(label(1));
}
