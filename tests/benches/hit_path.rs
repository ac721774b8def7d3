//! What a Redis hit costs through `#[redis_cached]`, side by side with a
//! hand-written redis-rs `GET` + `serde_json` decode of the same value.
//!
//! Run: `cargo bench -p cache-tests --bench hit_path`

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, redis_cached};
use cache_tests::RedisServer;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: i64,
    username: String,
    email: String,
}

fn users(n: usize) -> Vec<User> {
    (0..n as i64)
        .map(|id| User {
            id,
            username: format!("user{id}"),
            email: format!("user{id}@example.com"),
        })
        .collect()
}

#[redis_cached(key = "bench:small:{id}", ttl = 600, cache = cache)]
async fn small(cache: &Cache, id: i64) -> User {
    users(1).remove(0)
}

#[redis_cached(key = "bench:large:{id}", ttl = 600, cache = cache)]
async fn large(cache: &Cache, id: i64) -> Vec<User> {
    users(1000)
}

struct Stats {
    median: Duration,
    p99: Duration,
    per_second: f64,
}

async fn sequential<F, Fut>(iterations: usize, mut call: F) -> (Duration, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        call().await;
        samples.push(started.elapsed());
    }
    samples.sort();
    (samples[iterations / 2], samples[iterations * 99 / 100])
}

async fn concurrent<F, Fut>(tasks: usize, per_task: usize, call: F) -> f64
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let call = call.clone();
        set.spawn(async move {
            for _ in 0..per_task {
                call().await;
            }
        });
    }
    while set.join_next().await.is_some() {}
    (tasks * per_task) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let server = RedisServer::start();
    let cache: &'static Cache = Box::leak(Box::new(server.cache()));
    let client = redis::Client::open(server.url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    small(cache, 1).await;
    large(cache, 1).await;
    let key = |name: &str| format!("bench:{name}:1");

    for (name, iterations) in [("small", 20_000), ("large", 2_000)] {
        let raw_key: &'static str = Box::leak(key(name).into_boxed_str());
        let mut results: Vec<(&str, Stats)> = Vec::new();
        for round in 0..2 {
            // Alternate the two cases, so that drift in the machine's speed
            // does not favour either.
            for case in ["hand-written", "macro"] {
                let conn = conn.clone();
                let (median, p99, per_second) = match (case, name) {
                    ("hand-written", "small") => {
                        let c = conn.clone();
                        let (m, p) =
                            sequential(iterations, || hand_written::<User>(c.clone(), raw_key))
                                .await;
                        let t = concurrent(64, iterations / 64, move || {
                            hand_written::<User>(conn.clone(), raw_key)
                        })
                        .await;
                        (m, p, t)
                    }
                    ("hand-written", _) => {
                        let c = conn.clone();
                        let (m, p) = sequential(iterations, || {
                            hand_written::<Vec<User>>(c.clone(), raw_key)
                        })
                        .await;
                        let t = concurrent(64, iterations / 64, move || {
                            hand_written::<Vec<User>>(conn.clone(), raw_key)
                        })
                        .await;
                        (m, p, t)
                    }
                    (_, "small") => {
                        let (m, p) = sequential(iterations, || async {
                            std::hint::black_box(small(cache, 1).await);
                        })
                        .await;
                        let t = concurrent(64, iterations / 64, move || async move {
                            std::hint::black_box(small(cache, 1).await);
                        })
                        .await;
                        (m, p, t)
                    }
                    _ => {
                        let (m, p) = sequential(iterations, || async {
                            std::hint::black_box(large(cache, 1).await);
                        })
                        .await;
                        let t = concurrent(64, iterations / 64, move || async move {
                            std::hint::black_box(large(cache, 1).await);
                        })
                        .await;
                        (m, p, t)
                    }
                };
                if round == 1 {
                    results.push((
                        case,
                        Stats {
                            median,
                            p99,
                            per_second,
                        },
                    ));
                }
            }
        }
        let base = &results[0].1;
        for (case, stats) in &results {
            println!(
                "{name:5} {case:12} median {:7.1} µs ({:.2}x)  p99 {:7.1} µs  64 tasks {:8.0}/s ({:.2}x)",
                stats.median.as_secs_f64() * 1e6,
                stats.median.as_secs_f64() / base.median.as_secs_f64(),
                stats.p99.as_secs_f64() * 1e6,
                stats.per_second,
                base.per_second / stats.per_second,
            );
        }
    }
}

async fn hand_written<T: serde::de::DeserializeOwned>(
    mut conn: redis::aio::MultiplexedConnection,
    key: &str,
) {
    #[derive(Deserialize)]
    struct Envelope<T> {
        #[allow(dead_code)]
        v: u32,
        data: T,
    }
    let bytes: Vec<u8> = redis::AsyncCommands::get(&mut conn, key).await.unwrap();
    let envelope: Envelope<T> = serde_json::from_slice(&bytes).unwrap();
    std::hint::black_box(envelope.data);
}
