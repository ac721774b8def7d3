use cache_runtime::redis_cached;

struct Filter {
    min: u32,
}

#[redis_cached(key = "search:{filter}")]
async fn search(filter: Filter) -> Vec<u32> {
    vec![filter.min]
}

fn main() {
    drop(search(Filter { min: 1 }));
}
