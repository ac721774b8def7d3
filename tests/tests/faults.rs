//! The cache never makes a call fail or hang: with Redis absent, killed,
//! stalled or out of memory, every call returns its body's value within the
//! deadline plus the body's time, and caching resumes on its own once Redis
//! is back.
//!
//! The time bounds asserted here are generous (seconds, for a deadline of
//! 100 ms) so they hold on a loaded 2-core CI machine; what they catch is a
//! call that waits for a reconnection, or hangs on a stalled server, which
//! without the deadline and the circuit breaker would take many seconds or
//! forever.

mod support;

use std::time::{Duration, Instant};

use cache_runtime::{Cache, redis_cached};
use cache_tests::{Calls, RedisServer, caches, eventually, resumes};
use redis::Commands;

const DEADLINE: Duration = Duration::from_millis(100);
/// The most a call may take while Redis misbehaves: the deadline, plus a
/// wide margin for scheduling on a busy machine. The body takes no time.
const CALL_BOUND: Duration = Duration::from_secs(2);
/// How long caching may take to resume after Redis is back (documented as
/// "about a second"; the margin is for CI).
const RESUME_BOUND: Duration = Duration::from_secs(10);

#[redis_cached(key = "fault:{id}", ttl = 60, cache = cache)]
async fn double(cache: &Cache, calls: &Calls, id: u64) -> u64 {
    calls.bump();
    id * 2
}

fn fault_cache(url: String) -> Cache {
    // Before `double`'s first call: it takes its metric handles then.
    support::install();
    Cache::builder()
        .url(url)
        .deadline(DEADLINE)
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

/// Calls `double` and checks its value and that it came back in time.
async fn call_in_time(cache: &Cache, calls: &Calls, id: u64) {
    let started = Instant::now();
    let value = tokio::time::timeout(Duration::from_secs(30), double(cache, calls, id))
        .await
        .expect("a cached call hung");
    let took = started.elapsed();
    assert_eq!(value, id * 2);
    assert!(took < CALL_BOUND, "a call took {took:?}");
}

/// Whether a fresh key is stored by one call and served to the next.
async fn caching_works(cache: &Cache, calls: &Calls, id: u64) -> bool {
    caches(calls, || double(cache, calls, id)).await
}

/// Whether caching resumes within [`RESUME_BOUND`]: a fresh key each try.
async fn caching_resumes(cache: &Cache, calls: &Calls) -> bool {
    resumes(RESUME_BOUND, calls, |id| double(cache, calls, id)).await
}

#[tokio::test]
async fn redis_absent_at_start_then_started() {
    let port = RedisServer::unused_port();
    let cache = fault_cache(format!("redis://127.0.0.1:{port}"));
    let calls = Calls::default();

    for id in 0..20 {
        call_in_time(&cache, &calls, id % 3).await;
    }
    assert_eq!(calls.get(), 20, "nothing could be cached");
    assert!(!cache.is_connected());

    let _server = RedisServer::start_on(port);
    assert!(
        caching_resumes(&cache, &calls).await,
        "caching did not resume once Redis started"
    );
    assert!(cache.is_connected());
}

#[tokio::test]
async fn redis_killed_mid_run_then_restarted() {
    let mut server = RedisServer::start();
    let cache = fault_cache(server.url());
    let calls = Calls::default();
    assert!(caching_works(&cache, &calls, 1).await);

    server.kill();
    let before = calls.get();
    for _ in 0..20 {
        call_in_time(&cache, &calls, 1).await;
    }
    assert_eq!(calls.get(), before + 20, "every call ran its body");

    server.restart();
    assert!(
        caching_resumes(&cache, &calls).await,
        "caching did not resume after the restart"
    );
}

#[tokio::test]
async fn redis_restarted_while_idle_is_reconnected_before_the_next_call() {
    let mut server = RedisServer::start();
    let cache = fault_cache(server.url());
    let calls = Calls::default();
    assert!(caching_works(&cache, &calls, 1).await);

    server.restart();
    // No call in between: the supervisor's health check notices on its own.
    let reconnected = eventually(RESUME_BOUND, || {
        let cache = cache.clone();
        async move { cache.is_connected() }
    })
    .await;
    assert!(reconnected.is_some());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(cache.is_connected(), "the new connection stays up");
    assert!(
        caching_works(&cache, &calls, 2).await,
        "the first calls already cache"
    );
}

#[tokio::test]
async fn redis_stalled_with_sigstop() {
    let server = RedisServer::start();
    let cache = fault_cache(server.url());
    let calls = Calls::default();
    assert!(caching_works(&cache, &calls, 1).await);

    server.pause();
    let before = calls.get();
    for _ in 0..20 {
        call_in_time(&cache, &calls, 1).await;
    }
    assert_eq!(calls.get(), before + 20, "no call could read the cache");

    server.resume();
    assert!(
        caching_resumes(&cache, &calls).await,
        "caching did not resume after SIGCONT"
    );
}

/// How many connections the server has accepted since it started.
fn connections_received(admin: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(admin).unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("total_connections_received:"))
        .and_then(|count| count.trim().parse().ok())
        .expect("INFO stats has total_connections_received")
}

#[tokio::test]
async fn a_reply_late_for_the_deadline_sets_the_connection_aside_without_replacing_it() {
    support::install();
    let server = RedisServer::start();
    // A stall longer than the deadline but shorter than the PING that
    // checks the connection may take.
    let cache = Cache::builder()
        .url(server.url())
        .deadline(DEADLINE)
        .connect_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let calls = Calls::default();
    assert!(caching_works(&cache, &calls, 1).await);
    let mut admin = server.client();
    let connections_before = connections_received(&mut admin);

    server.pause();
    let before = calls.get();
    for _ in 0..5 {
        call_in_time(&cache, &calls, 1).await;
    }
    assert_eq!(calls.get(), before + 5, "no call could read the cache");
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.resume();

    assert!(
        caching_resumes(&cache, &calls).await,
        "caching did not resume after SIGCONT"
    );
    assert_eq!(
        connections_received(&mut admin),
        connections_before,
        "the connection answered the supervisor's PING and was put back in service, not replaced"
    );
}

#[tokio::test]
async fn redis_out_of_memory() {
    let server = RedisServer::start();
    let cache = fault_cache(server.url());
    let calls = Calls::default();
    let mut admin = server.client();
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory-policy", "noeviction"][..])
        .query(&mut admin)
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "1"][..])
        .query(&mut admin)
        .unwrap();

    for _ in 0..5 {
        call_in_time(&cache, &calls, 7).await;
    }
    assert_eq!(calls.get(), 5, "nothing could be stored");
    assert!(!admin.exists::<_, bool>("fault:7").unwrap());
    let errors = support::of("faults::double").errors;
    assert!(errors >= 5, "failed stores are counted: {errors}");
    assert!(
        cache.is_connected(),
        "an OOM reply does not take the connection down"
    );

    // Asked directly, the cache reports the refusal instead of a success
    // that stored nothing.
    let refused = cache
        .set("fault:direct", &1u64, Duration::from_secs(60))
        .await
        .expect_err("Redis refused the SET");
    assert!(refused.to_string().contains("OOM"), "{refused}");
    assert!(!admin.exists::<_, bool>("fault:direct").unwrap());

    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "maxmemory", "0"][..])
        .query(&mut admin)
        .unwrap();
    assert!(caching_works(&cache, &calls, 8).await);
}
