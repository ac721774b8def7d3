//! The database load of a hot-key expiry under 200 concurrent callers, with
//! and without each stampede mechanism; then the same callers calling
//! without pause across several expiries, with `early_refresh`, `stale` or
//! neither, against a key that never expires.
//!
//! Run: `cargo bench -p cache-tests --bench stampede`
//!
//! A real `redis-server` is started on a free port. The "database" is a body
//! that takes 50 ms and counts its runs. The 200 callers are spread over four
//! `Cache` instances of 50 callers each: an instance has its own connection
//! and its own coalescing, exactly as a process would, so the four stand for
//! four application processes sharing one Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, redis_cached};
use cache_tests::{Calls, RedisServer};
use tokio::task::JoinSet;

const QUERY: Duration = Duration::from_millis(50);
const PROCESSES: usize = 4;
const CALLERS_PER_PROCESS: usize = 50;

#[redis_cached(key = "bench:none", ttl = 1, coalesce = false, cache = cache)]
async fn unprotected(cache: Arc<Cache>, db: Arc<Calls>) -> u64 {
    query(&db).await
}

#[redis_cached(key = "bench:coalesced", ttl = 1, cache = cache)]
async fn coalesced(cache: Arc<Cache>, db: Arc<Calls>) -> u64 {
    query(&db).await
}

#[redis_cached(key = "bench:locked", ttl = 1, lock = true, cache = cache)]
async fn locked(cache: Arc<Cache>, db: Arc<Calls>) -> u64 {
    query(&db).await
}

#[redis_cached(key = "bench:stale", ttl = 1, stale = 60, lock = true, cache = cache)]
async fn stale(cache: Arc<Cache>, db: Arc<Calls>) -> u64 {
    query(&db).await
}

#[redis_cached(key = "bench:sustained:none", ttl = 1, cache = cache)]
async fn sustained_plain(cache: Arc<Cache>, db: Arc<Calls>) -> u64 {
    query(&db).await
}

#[redis_cached(key = "bench:sustained:stale", ttl = 1, stale = 60, cache = cache)]
async fn sustained_stale(cache: Arc<Cache>, db: Arc<Calls>) -> u64 {
    query(&db).await
}

#[redis_cached(key = "bench:sustained:early", ttl = 1, early_refresh = true, cache = cache)]
async fn sustained_early(cache: Arc<Cache>, db: Arc<Calls>) -> u64 {
    query(&db).await
}

#[redis_cached(key = "bench:sustained:hits", ttl = 3600, cache = cache)]
async fn sustained_hits(cache: Arc<Cache>, db: Arc<Calls>) -> u64 {
    query(&db).await
}

/// How long the sustained scenarios call: three expiries of a 1 s TTL.
const SUSTAINED: Duration = Duration::from_millis(3200);
/// Each sustained caller's pause between calls: 200 callers make about
/// 20,000 calls a second.
const PAUSE: Duration = Duration::from_millis(10);

/// 200 callers in four processes call for [`SUSTAINED`], pausing [`PAUSE`]
/// between calls; the key was warmed just before.
async fn sustained(server: &RedisServer, name: &'static str, call: Call) -> Row {
    let caches: Vec<Arc<Cache>> = (0..PROCESSES)
        .map(|_| Arc::new(server.cache_builder().ttl_jitter(0.0).build().unwrap()))
        .collect();
    let db = Arc::new(Calls::default());
    call(caches[0].clone(), db.clone()).await;
    let runs_before = db.get();

    let mut callers = JoinSet::new();
    let started = Instant::now();
    for cache in &caches {
        for _ in 0..CALLERS_PER_PROCESS {
            let (cache, db) = (cache.clone(), db.clone());
            callers.spawn(async move {
                let mut latencies = Vec::new();
                while started.elapsed() < SUSTAINED {
                    let call_started = Instant::now();
                    assert_eq!(call(cache.clone(), db.clone()).await, 42);
                    latencies.push(call_started.elapsed());
                    tokio::time::sleep(PAUSE).await;
                }
                latencies
            });
        }
    }
    let mut latencies = Vec::new();
    while let Some(caller) = callers.join_next().await {
        latencies.extend(caller.unwrap());
    }
    tokio::time::sleep(QUERY * 4).await;
    latencies.sort();
    Row {
        name,
        runs: db.get() - runs_before,
        latencies,
    }
}

async fn query(db: &Calls) -> u64 {
    db.bump();
    tokio::time::sleep(QUERY).await;
    42
}

type Call = fn(Arc<Cache>, Arc<Calls>) -> std::pin::Pin<Box<dyn Future<Output = u64> + Send>>;

struct Row {
    name: &'static str,
    runs: usize,
    latencies: Vec<Duration>,
}

async fn scenario(server: &RedisServer, name: &'static str, call: Call) -> Row {
    let caches: Vec<Arc<Cache>> = (0..PROCESSES)
        .map(|_| Arc::new(server.cache_builder().ttl_jitter(0.0).build().unwrap()))
        .collect();
    let db = Arc::new(Calls::default());
    // Warm the key, then let it expire (past `ttl`, within `stale`).
    call(caches[0].clone(), db.clone()).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let runs_before = db.get();

    let mut callers = JoinSet::new();
    for cache in &caches {
        for _ in 0..CALLERS_PER_PROCESS {
            let (cache, db) = (cache.clone(), db.clone());
            callers.spawn(async move {
                let started = Instant::now();
                assert_eq!(call(cache, db).await, 42);
                started.elapsed()
            });
        }
    }
    let mut latencies = Vec::new();
    while let Some(latency) = callers.join_next().await {
        latencies.push(latency.unwrap());
    }
    // Let background refreshes finish before counting.
    tokio::time::sleep(QUERY * 4).await;
    latencies.sort();
    Row {
        name,
        runs: db.get() - runs_before,
        latencies,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let server = RedisServer::start();
    let rows = [
        scenario(&server, "no protection (coalesce = false)", |c, d| {
            Box::pin(unprotected(c, d))
        })
        .await,
        scenario(&server, "coalescing (default)", |c, d| {
            Box::pin(coalesced(c, d))
        })
        .await,
        scenario(&server, "coalescing + lock = true", |c, d| {
            Box::pin(locked(c, d))
        })
        .await,
        scenario(&server, "coalescing + lock + stale = 60", |c, d| {
            Box::pin(stale(c, d))
        })
        .await,
    ];
    println!(
        "hot-key expiry: {} callers in {PROCESSES} processes, a {} ms query",
        PROCESSES * CALLERS_PER_PROCESS,
        QUERY.as_millis()
    );
    println!("| mechanism | query runs | caller p50 | caller p99 | caller max |");
    println!("|---|---:|---:|---:|---:|");
    for row in rows {
        print_row(&row);
    }

    let rows = [
        sustained(&server, "a key that never expires (hits only)", |c, d| {
            Box::pin(sustained_hits(c, d))
        })
        .await,
        sustained(&server, "ttl = 1 (coalescing only)", |c, d| {
            Box::pin(sustained_plain(c, d))
        })
        .await,
        sustained(&server, "ttl = 1, stale = 60", |c, d| {
            Box::pin(sustained_stale(c, d))
        })
        .await,
        sustained(&server, "ttl = 1, early_refresh = true", |c, d| {
            Box::pin(sustained_early(c, d))
        })
        .await,
    ];
    println!();
    println!(
        "sustained: {} callers in {PROCESSES} processes calling for {:.1} s (a 1 s TTL: 3 expiries), {} ms apart, a {} ms query",
        PROCESSES * CALLERS_PER_PROCESS,
        SUSTAINED.as_secs_f64(),
        PAUSE.as_millis(),
        QUERY.as_millis()
    );
    println!("| mechanism | query runs | calls | caller p50 | caller p99 | caller max |");
    println!("|---|---:|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {} | {} | {:.2} ms | {:.2} ms | {:.1} ms |",
            row.name,
            row.runs,
            row.latencies.len(),
            ms(percentile(&row.latencies, 0.5)),
            ms(percentile(&row.latencies, 0.99)),
            ms(*row.latencies.last().unwrap()),
        );
    }
}

fn print_row(row: &Row) {
    println!(
        "| {} | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
        row.name,
        row.runs,
        ms(percentile(&row.latencies, 0.5)),
        ms(percentile(&row.latencies, 0.99)),
        ms(*row.latencies.last().unwrap()),
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
