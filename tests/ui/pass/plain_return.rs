use std::collections::BTreeMap;

use cache_runtime::redis_cached;

// Any other type is always stored.
#[redis_cached(key = "histogram:{text}")]
async fn histogram(text: String) -> BTreeMap<char, usize> {
    let mut counts = BTreeMap::new();
    for c in text.chars() {
        *counts.entry(c).or_insert(0) += 1;
    }
    counts
}

fn main() {
    drop(histogram("hello".into()));
}
