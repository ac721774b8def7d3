//! Stampede control: concurrent callers of one cold key run the body once,
//! in one process and across processes (`lock = true`); no caller hangs when
//! a leader is cancelled or panics; stale values are served while exactly one
//! refresh runs (`stale = …`).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, redis_cached};
use cache_tests::{Calls, RedisServer, eventually};
use redis::Commands;
use tokio::task::JoinSet;

const BODY: Duration = Duration::from_millis(200);
/// The stale test's body: long, so that "did not wait for the refresh" holds
/// with a wide margin on a loaded machine.
const REFRESH_BODY: Duration = Duration::from_secs(2);

#[redis_cached(key = "cold:{id}", ttl = 60, cache = cache)]
async fn cold(cache: Arc<Cache>, calls: Arc<Calls>, id: u32) -> u32 {
    calls.bump();
    tokio::time::sleep(BODY).await;
    id
}

/// Called by one test only, so that its counters are that test's.
#[redis_cached(key = "hot:{id}", ttl = 60, cache = cache)]
async fn hot(cache: Arc<Cache>, calls: Arc<Calls>, id: u32) -> u32 {
    calls.bump();
    tokio::time::sleep(BODY).await;
    id
}

#[redis_cached(key = "cold:{id}", ttl = 60, coalesce = false, cache = cache)]
async fn cold_uncoalesced(cache: Arc<Cache>, calls: Arc<Calls>, id: u32) -> u32 {
    calls.bump();
    tokio::time::sleep(BODY).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_callers_of_a_cold_key_run_the_body_once() {
    support::install();
    let server = RedisServer::start();
    let cache = Arc::new(server.cache());
    let calls = Arc::new(Calls::default());

    let mut callers = JoinSet::new();
    for _ in 0..200 {
        callers.spawn(hot(cache.clone(), calls.clone(), 1));
    }
    while let Some(value) = callers.join_next().await {
        assert_eq!(value.unwrap(), 1);
    }
    assert_eq!(calls.get(), 1);
    let metrics = support::of("stampede::hot");
    assert_eq!((metrics.misses, metrics.coalesced), (200, 199));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_coalescing_every_caller_runs_the_body() {
    let server = RedisServer::start();
    let cache = Arc::new(server.cache());
    let calls = Arc::new(Calls::default());

    let mut callers = JoinSet::new();
    for _ in 0..20 {
        callers.spawn(cold_uncoalesced(cache.clone(), calls.clone(), 1));
    }
    while callers.join_next().await.is_some() {}
    assert_eq!(
        calls.get(),
        20,
        "the control case: coalescing is what saves runs"
    );
}

#[redis_cached(key = "gated:{id}", ttl = 60, cache = cache)]
async fn gated(cache: Arc<Cache>, gate: Arc<tokio::sync::Semaphore>, id: u32) -> u32 {
    let _permit = gate.acquire().await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_keys_never_wait_on_each_other() {
    let server = RedisServer::start();
    let cache = Arc::new(server.cache());
    let closed = Arc::new(tokio::sync::Semaphore::new(0));
    let open = Arc::new(tokio::sync::Semaphore::new(100));

    let stuck = tokio::spawn(gated(cache.clone(), closed.clone(), 1));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let other = tokio::time::timeout(Duration::from_secs(10), gated(cache.clone(), open, 2)).await;
    assert_eq!(other.expect("key 2 waited for key 1"), 2);
    assert!(!stuck.is_finished());
    closed.add_permits(1);
    assert_eq!(stuck.await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_does_not_strand_its_followers() {
    let server = RedisServer::start();
    let cache = Arc::new(server.cache());
    let calls = Arc::new(Calls::default());

    let leader = tokio::spawn(cold(cache.clone(), calls.clone(), 5));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut followers = JoinSet::new();
    for _ in 0..20 {
        followers.spawn(cold(cache.clone(), calls.clone(), 5));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());

    while let Some(value) = tokio::time::timeout(Duration::from_secs(10), followers.join_next())
        .await
        .expect("a follower hung")
    {
        assert_eq!(value.unwrap(), 5);
    }
    assert!(
        calls.get() <= 2,
        "one follower took over: {} runs",
        calls.get()
    );
}

#[redis_cached(key = "flaky:{id}", ttl = 60, cache = cache)]
async fn panics_first(cache: Arc<Cache>, calls: Arc<Calls>, id: u32) -> u32 {
    calls.bump();
    tokio::time::sleep(Duration::from_millis(100)).await;
    if calls.get() == 1 {
        panic!("the first run panics");
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_body_releases_every_waiter_promptly_and_poisons_nothing() {
    let server = RedisServer::start();
    let cache = Arc::new(server.cache());
    let calls = Arc::new(Calls::default());

    let leader = tokio::spawn(panics_first(cache.clone(), calls.clone(), 1));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut waiters = JoinSet::new();
    for _ in 0..20 {
        waiters.spawn(panics_first(cache.clone(), calls.clone(), 1));
    }
    assert!(leader.await.unwrap_err().is_panic());
    let released = Instant::now();
    while let Some(value) = tokio::time::timeout(Duration::from_secs(10), waiters.join_next())
        .await
        .expect("a waiter hung")
    {
        assert_eq!(value.unwrap(), 1, "each waiter ran its own body");
    }
    let took = released.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "waiters were released in {took:?}"
    );

    assert_eq!(panics_first(cache.clone(), calls.clone(), 1).await, 1);
    assert_eq!(panics_first(cache, calls, 2).await, 2, "later calls work");
}

#[redis_cached(key = "failing:{id}", ttl = 60, cache = cache)]
async fn failing(cache: Arc<Cache>, calls: Arc<Calls>, id: u32) -> Result<u32, String> {
    calls.bump();
    tokio::time::sleep(Duration::from_millis(100)).await;
    Err(format!("{id} failed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_err_releases_waiters_to_run_their_own_body() {
    let server = RedisServer::start();
    let cache = Arc::new(server.cache());
    let calls = Arc::new(Calls::default());

    let mut callers = JoinSet::new();
    for _ in 0..10 {
        callers.spawn(failing(cache.clone(), calls.clone(), 1));
    }
    while let Some(value) = tokio::time::timeout(Duration::from_secs(10), callers.join_next())
        .await
        .expect("a caller hung")
    {
        assert_eq!(value.unwrap(), Err("1 failed".into()));
    }
    assert!(calls.get() >= 2, "waiters ran their own bodies");
    assert!(!server.exists("failing:1"));
}

#[test]
fn four_processes_of_fifty_callers_run_the_body_once_with_the_lock() {
    let server = RedisServer::start();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_stampede_worker"))
                .args([server.url(), "50".into(), "500".into()])
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a worker process")
        })
        .collect();
    let mut outputs: Vec<_> = workers
        .into_iter()
        .map(|mut child| {
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            assert_eq!(lines.next().unwrap().unwrap(), "ready");
            (child, lines)
        })
        .collect();
    let _: () = server.client().set("stampede:go", 1).unwrap();

    let mut runs = 0;
    for (child, lines) in &mut outputs {
        let last = lines.next().expect("a result line").unwrap();
        runs += last
            .strip_prefix("runs=")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("unexpected worker output {last:?}"));
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(runs, 1, "200 callers in 4 processes, one run of the body");
    assert!(!server.exists("stampede:hot#lock"), "the lock was released");
}

#[redis_cached(key = "locked:{id}", ttl = 60, lock = true, cache = cache)]
async fn locked(cache: Arc<Cache>, calls: Arc<Calls>, id: u32, panic: bool) -> u32 {
    calls.bump();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!panic, "the body panics");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_is_never_left_behind_after_a_panic_or_a_cancellation() {
    let server = RedisServer::start();
    let cache = Arc::new(server.cache());
    let calls = Arc::new(Calls::default());
    let lock_exists = |id: u32| {
        let server = &server;
        move || {
            let held = server.exists(&format!("locked:{id}#lock"));
            async move { !held }
        }
    };

    let panicked = tokio::spawn(locked(cache.clone(), calls.clone(), 1, true));
    assert!(panicked.await.unwrap_err().is_panic());
    assert!(
        eventually(Duration::from_secs(5), lock_exists(1))
            .await
            .is_some()
    );

    let cancelled = tokio::spawn(locked(cache.clone(), calls.clone(), 2, false));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(server.exists("locked:2#lock"), "held");
    cancelled.abort();
    let _ = cancelled.await;
    assert!(
        eventually(Duration::from_secs(5), lock_exists(2))
            .await
            .is_some()
    );

    assert_eq!(locked(cache, calls, 3, false).await, 3);
    assert!(!server.exists("locked:3#lock"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_by_a_crashed_process_delays_a_caller_by_lock_wait_at_most() {
    let server = RedisServer::start();
    let cache = Arc::new(
        server
            .cache_builder()
            .lock_wait(Duration::from_millis(300))
            .build()
            .unwrap(),
    );
    let calls = Arc::new(Calls::default());
    // A holder that crashed: its lease has 60 s to go.
    let _: () = redis::cmd("SET")
        .arg(&["locked:9#lock", "dead-token", "PX", "60000"][..])
        .query(&mut server.client())
        .unwrap();

    let value = tokio::time::timeout(
        Duration::from_secs(10),
        locked(cache.clone(), calls.clone(), 9, false),
    )
    .await
    .expect("the caller waited for the dead holder");
    assert_eq!(value, 9);
    assert_eq!(calls.get(), 1, "it ran the body itself");
    let token: String = server.client().get("locked:9#lock").unwrap();
    assert_eq!(token, "dead-token", "only the owner may release a lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_waiting_on_the_lock_takes_the_holders_value() {
    let server = RedisServer::start();
    let cache = Arc::new(server.cache());
    let calls = Arc::new(Calls::default());
    let _: () = redis::cmd("SET")
        .arg(&["locked:4#lock", "other-process", "PX", "60000"][..])
        .query(&mut server.client())
        .unwrap();

    let waiting = tokio::spawn(locked(cache.clone(), calls.clone(), 4, false));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The other process stores its value.
    let _: () = server
        .client()
        .set("locked:4", r#"{"v":1,"data":44}"#)
        .unwrap();
    assert_eq!(waiting.await.unwrap(), 44);
    assert_eq!(calls.get(), 0);
}

#[redis_cached(key = "swr:{id}", ttl = 1, stale = 60, cache = cache)]
async fn versioned(cache: Arc<Cache>, calls: Arc<Calls>, id: u32) -> usize {
    calls.bump();
    tokio::time::sleep(REFRESH_BODY).await;
    calls.get() * 100 + id as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_values_are_served_at_once_while_one_refresh_runs() {
    support::install();
    let server = RedisServer::start();
    let cache = Arc::new(server.cache_builder().ttl_jitter(0.0).build().unwrap());
    let calls = Arc::new(Calls::default());

    assert_eq!(versioned(cache.clone(), calls.clone(), 1).await, 101);
    let redis_ttl: i64 = server.client().pttl("swr:1").unwrap();
    assert!(
        (59_000..=61_000).contains(&redis_ttl),
        "kept for ttl + stale: {redis_ttl} ms"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let mut callers = JoinSet::new();
    for _ in 0..50 {
        let (cache, calls) = (cache.clone(), calls.clone());
        callers.spawn(async move {
            let started = Instant::now();
            let value = versioned(cache, calls, 1).await;
            (value, started.elapsed())
        });
    }
    while let Some(result) = callers.join_next().await {
        let (value, took) = result.unwrap();
        assert_eq!(value, 101, "the stale value");
        assert!(
            took < REFRESH_BODY / 2,
            "a stale caller waited for the refresh: {took:?}"
        );
    }
    let refreshed = eventually(Duration::from_secs(5), || {
        let (cache, calls) = (cache.clone(), calls.clone());
        async move { versioned(cache, calls, 1).await == 201 }
    })
    .await;
    assert!(refreshed.is_some(), "the refresh stored a fresh value");
    assert_eq!(calls.get(), 2, "exactly one refresh ran");
    let metrics = support::of("stampede::versioned");
    assert_eq!(metrics.refreshes, 1);
    assert!(metrics.stale_hits >= 50);
}
