use cache_runtime::redis_cached;

#[redis_cached(key = "report:{id}", lock = "yes")]
async fn report(id: u64) -> String {
    format!("report {id}")
}

fn main() {
    drop(report(1));
}
