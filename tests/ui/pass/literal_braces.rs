use cache_runtime::redis_cached;

// `{{` and `}}` are literal braces, as in `format!`.
#[redis_cached(key = "{{tag}}:{id}:{{x}}")]
async fn tagged(id: u32) -> u32 {
    id
}

fn main() {
    drop(tagged(1));
}
