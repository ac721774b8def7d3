use cache_runtime::redis_cached;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Report {
    rows: Vec<u32>,
}

// The local tier hands out clones of the decoded value.
#[redis_cached(key = "report:{id}", local = true)]
async fn report(id: u32) -> Report {
    Report { rows: vec![id] }
}

fn main() {
    drop(report(1));
}
