use cache_runtime::redis_cached;

// `None` is stored too.
#[redis_cached(key = "nickname:{id}", cache_none = true)]
async fn nickname(id: i64) -> Option<String> {
    (id % 2 == 0).then(|| format!("even-{id}"))
}

// `cache_none = false` is the default, written out.
#[redis_cached(key = "alias:{id}", cache_none = false)]
async fn alias(id: i64) -> Option<String> {
    (id % 2 == 1).then(|| format!("odd-{id}"))
}

fn main() {
    drop(nickname(2));
    drop(alias(3));
}
