//! One "process" of the multi-process stampede test: starts N concurrent
//! callers of one cold key with `lock = true`, once the test says go, and
//! prints how many times this process ran the body.
//!
//! Usage: `stampede_worker <redis-url> <callers> <body-ms>`

use std::sync::Arc;
use std::time::Duration;

use cache_runtime::{Cache, redis_cached};
use cache_tests::Calls;

#[redis_cached(key = "stampede:hot", ttl = 60, lock = true, cache = cache)]
async fn hot(cache: Arc<Cache>, calls: Arc<Calls>, body: Duration) -> String {
    calls.bump();
    tokio::time::sleep(body).await;
    "computed".to_owned()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, callers, body_ms] = &args[..] else {
        panic!("usage: stampede_worker <redis-url> <callers> <body-ms>");
    };
    let callers: usize = callers.parse().expect("callers");
    let body = Duration::from_millis(body_ms.parse().expect("body-ms"));
    let cache = Arc::new(
        Cache::builder()
            .url(url.as_str())
            .deadline(Duration::from_secs(1))
            .build()
            .expect("cache"),
    );
    let calls = Arc::new(Calls::default());

    // Connect, then wait for the test's signal so that all processes start
    // their callers together.
    let mut admin = redis::Client::open(url.as_str())
        .and_then(|client| client.get_connection())
        .expect("connect");
    println!("ready");
    while redis::cmd("GET")
        .arg("stampede:go")
        .query::<Option<String>>(&mut admin)
        .expect("GET go")
        .is_none()
    {
        std::thread::sleep(Duration::from_millis(5));
    }

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        tasks.spawn(hot(cache.clone(), calls.clone(), body));
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.expect("caller"), "computed");
    }
    println!("runs={}", calls.get());
}
