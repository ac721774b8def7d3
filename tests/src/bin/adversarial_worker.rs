//! One process of the adversarial read-your-writes test
//! (`tests/tests/adversarial.rs`): a writer or a reader of one row, whose
//! database is a counter on a Redis server of its own and whose cache is
//! another Redis server (behind the test's delaying proxy). It prints its
//! history, timed by the database server's clock.
//!
//! Usage: `adversarial_worker <cache-url> <database-url> writer|reader <tasks> <run-ms> <seed>`
//!
//! It prints `ready`, waits for the test's go (the database key `go`), runs
//! `tasks` concurrent tasks of its role for `run-ms`, then prints one line
//! per operation, each with the database server's `TIME` (in µs) taken
//! before the operation began and after it returned:
//! - `write <start> <end> <version> <route>`: set the row to `version`, then
//!   evicted its entry by `route`, and the eviction returned `Ok`;
//! - `unconfirmed <start> <end>`: the same, but the eviction returned an
//!   error (printed on stderr), so it promises nothing;
//! - `read <start> <end> <version>`: the cached read returned `version`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, CacheError, cache_evict, redis_cached};
use cache_tests::Xorshift;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

/// The one row every process reads and writes: contention on one key is
/// what races a read's store with a write's eviction.
const ROW: u32 = 1;

/// Reads the row's version, then waits `delay_ms` before returning it, so
/// that its store comes late: after writes, and their evictions, that the
/// read did not see.
#[redis_cached(key = "row:{id}", ttl = 60, tag = "rows", cache = cache)]
async fn read_row(cache: &Cache, database: &MultiplexedConnection, delay_ms: u64, id: u32) -> u64 {
    let version: Option<u64> = database
        .clone()
        .get(row_in_database(id))
        .await
        .expect("read the database");
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    version.unwrap_or(0)
}

/// Writes the row, then evicts its entry by key.
#[cache_evict(key = "row:{id}", propagate = true, cache = cache)]
async fn write_row(
    cache: &Cache,
    database: &MultiplexedConnection,
    id: u32,
) -> Result<u64, CacheError> {
    Ok(bump(database, id).await)
}

/// Writes the row, then evicts every entry tagged `rows`.
#[cache_evict(tag = "rows", propagate = true, cache = cache)]
async fn write_rows(
    cache: &Cache,
    database: &MultiplexedConnection,
    id: u32,
) -> Result<u64, CacheError> {
    Ok(bump(database, id).await)
}

/// Increments the row's version in the database; the new version.
async fn bump(database: &MultiplexedConnection, id: u32) -> u64 {
    database
        .clone()
        .incr(row_in_database(id), 1)
        .await
        .expect("write the database")
}

fn row_in_database(id: u32) -> String {
    format!("row:{id}")
}

/// How a write evicts the row's entry: every kind of eviction the runtime
/// offers, since each reaches the lease by its own path.
#[derive(Clone, Copy, Debug)]
enum Route {
    /// `#[cache_evict(key = …)]`.
    EvictKey,
    /// `#[cache_evict(tag = …)]`: the tag set's members, the lease among them.
    EvictTag,
    /// The derived `read_row_invalidate`.
    Invalidate,
    /// `Cache::delete`.
    Delete,
    /// `Cache::invalidate_prefix`: found by `SCAN`.
    Prefix,
}

const ROUTES: [Route; 5] = [
    Route::EvictKey,
    Route::EvictTag,
    Route::Invalidate,
    Route::Delete,
    Route::Prefix,
];

/// Writes the row and evicts its entry by `route`; the version written,
/// once the eviction has returned `Ok`.
async fn write(
    cache: &Cache,
    database: &MultiplexedConnection,
    route: Route,
) -> Result<u64, CacheError> {
    match route {
        Route::EvictKey => write_row(cache, database, ROW).await,
        Route::EvictTag => write_rows(cache, database, ROW).await,
        Route::Invalidate => {
            let version = bump(database, ROW).await;
            read_row_invalidate(cache, ROW).await.map(|()| version)
        }
        Route::Delete => {
            let version = bump(database, ROW).await;
            cache.delete(&format!("row:{ROW}")).await.map(|_| version)
        }
        Route::Prefix => {
            let version = bump(database, ROW).await;
            cache.invalidate_prefix("row:").await.map(|_| version)
        }
    }
}

/// The database server's clock, in µs: one clock for every process. Taken
/// before an operation, it is earlier than the operation's start; taken
/// after, later than its end, since the server answers between the two.
async fn now(database: &MultiplexedConnection) -> u64 {
    let (seconds, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut database.clone())
        .await
        .expect("the database's TIME");
    seconds * 1_000_000 + micros
}

/// Writes, with short random pauses so that reads find cached entries
/// between writes; one history line per write.
async fn writer(
    cache: Arc<Cache>,
    database: MultiplexedConnection,
    run: Duration,
    seed: u64,
) -> Vec<String> {
    let mut random = Xorshift::new(seed);
    let mut history = Vec::new();
    let until = Instant::now() + run;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(random.below(40))).await;
        let route = ROUTES[random.below(ROUTES.len() as u64) as usize];
        let start = now(&database).await;
        let written = write(&cache, &database, route).await;
        let end = now(&database).await;
        history.push(match written {
            Ok(version) => format!("write {start} {end} {version} {route:?}"),
            Err(error) => {
                eprintln!("a write's eviction by {route:?} failed: {error}");
                format!("unconfirmed {start} {end}")
            }
        });
    }
    history
}

/// Reads, each read's body taking a random time; one history line per read.
/// The random pauses between reads stagger this process's tasks, so that
/// some join a read already in flight (as its flight's followers) after a
/// write that the read did not see.
async fn reader(
    cache: Arc<Cache>,
    database: MultiplexedConnection,
    run: Duration,
    seed: u64,
) -> Vec<String> {
    let mut random = Xorshift::new(seed);
    let mut history = Vec::new();
    let until = Instant::now() + run;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(random.below(20))).await;
        let delay_ms = random.below(80);
        let start = now(&database).await;
        let version = read_row(&cache, &database, delay_ms, ROW).await;
        let end = now(&database).await;
        history.push(format!("read {start} {end} {version}"));
    }
    history
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, cache_url, database_url, role, tasks, run_ms, seed] = &args[..] else {
        panic!(
            "usage: adversarial_worker <cache-url> <database-url> writer|reader <tasks> <run-ms> <seed>"
        );
    };
    let tasks: u64 = tasks.parse().expect("tasks");
    let run = Duration::from_millis(run_ms.parse().expect("run-ms"));
    let seed: u64 = seed.parse().expect("seed");
    // A deadline far above the proxy's longest hold: the test is about late
    // commands, not lost ones.
    let cache = Arc::new(
        Cache::builder()
            .url(cache_url.as_str())
            .deadline(Duration::from_secs(2))
            .build()
            .expect("cache"),
    );
    let database = redis::Client::open(database_url.as_str())
        .expect("the database's URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the database");

    // Every process starts its tasks at the test's go, so that all of them
    // race from the first operation.
    println!("ready");
    let started_waiting = Instant::now();
    while database
        .clone()
        .get::<_, Option<String>>("go")
        .await
        .expect("GET go")
        .is_none()
    {
        assert!(
            started_waiting.elapsed() < Duration::from_secs(60),
            "no go from the test within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let mut running = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let (cache, database) = (cache.clone(), database.clone());
        let seed = seed.wrapping_add(task.wrapping_mul(0x9e37_79b9));
        match role.as_str() {
            "writer" => running.spawn(writer(cache, database, run, seed)),
            "reader" => running.spawn(reader(cache, database, run, seed)),
            other => panic!("unknown role {other:?}: writer or reader"),
        };
    }
    // Printed at the end, so that printing does not slow the race down.
    while let Some(history) = running.join_next().await {
        for line in history.expect("a task") {
            println!("{line}");
        }
    }
}
