use std::sync::Arc;

use cache_runtime::{Cache, redis_cached};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Report {
    lines: Vec<String>,
}

#[redis_cached(key = "report:{id}", ttl = 10)]
async fn report(id: u64) -> Result<Report, String> {
    tokio::task::yield_now().await;
    Ok(Report {
        lines: vec![id.to_string()],
    })
}

struct Service {
    cache: Arc<Cache>,
}

impl Service {
    #[redis_cached(key = "summary:{id}", cache = self.cache)]
    async fn summary(&self, id: u64) -> Option<String> {
        tokio::task::yield_now().await;
        Some(id.to_string())
    }
}

fn assert_send<T: Send>(_: &T) {}

fn spawn_only(service: Arc<Service>) {
    let future = report(1);
    assert_send(&future);
    drop(tokio::spawn(future));
    drop(tokio::spawn(async move { service.summary(2).await }));
}

// Only type-checked: spawning needs a runtime, and building a `Cache` starts
// its connection.
fn main() {
    assert_send(&report(1));
}
