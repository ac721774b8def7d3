use cache_runtime::redis_cached;

struct Wrapper(u32, (String, i8));

#[redis_cached(key = "pair:{pair.0}:{pair.1}:{wrapper.0}:{wrapper.1.1}")]
async fn combine(pair: (u32, char), wrapper: Wrapper) -> String {
    format!("{}{}{}{}", pair.0, pair.1, wrapper.0, (wrapper.1).0)
}

fn main() {
    drop(combine((1, 'x'), Wrapper(2, ("y".into(), 3))));
}
