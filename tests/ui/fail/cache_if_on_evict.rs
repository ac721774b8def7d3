use cache_runtime::cache_evict;

fn always(_: &()) -> bool {
    true
}

#[cache_evict(key = "search:{query}", cache_if = always)]
async fn forget(query: String) {
    drop(query);
}

fn main() {
    drop(forget("a".into()));
}
