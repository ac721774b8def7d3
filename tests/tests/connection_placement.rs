//! Where the cache's connections run. By default each Tokio runtime that
//! calls gets a connection of its own, driven by tasks on that runtime: a
//! runtime that ends closes only its own, and one that stalls holds up only
//! its own calls. With `ConnectionPlacement::IoThread` there is one
//! connection, on the cache's own thread; and a runtime that cannot drive a
//! connection (no I/O driver) is served by the I/O thread's.

use std::time::{Duration, Instant};

use cache_runtime::{Cache, ConnectionPlacement, redis_cached};
use cache_tests::{Calls, RedisServer, eventually, one_worker_runtime};
use tokio::runtime::Runtime;

#[redis_cached(key = "placed:{id}", ttl = 60, cache = cache)]
async fn placed(cache: &Cache, calls: &Calls, id: u32) -> u32 {
    calls.bump();
    id * 2
}

/// How many clients the server has, other than the one asking.
fn clients(server: &RedisServer) -> usize {
    server.client_list().lines().count() - 1
}

/// Waits up to 5 s for the server to count `expected` clients.
fn wait_for_clients(server: &RedisServer, expected: usize) {
    let started = Instant::now();
    while clients(server) != expected {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the server still has {} clients, not {expected}",
            clients(server)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn each_runtime_that_calls_has_a_connection_of_its_own() {
    let server = RedisServer::start();
    // Built outside any runtime: no connection until a runtime calls.
    let cache = server.cache();
    assert_eq!(clients(&server), 0, "nothing connects before a call");
    let calls = Calls::default();

    let first = one_worker_runtime();
    assert_eq!(first.block_on(placed(&cache, &calls, 21)), 42);
    assert_eq!(first.block_on(placed(&cache, &calls, 21)), 42);
    assert_eq!(calls.get(), 1, "the second call is a hit");
    assert_eq!(clients(&server), 1);
    assert!(
        first.metrics().num_alive_tasks() >= 2,
        "the supervisor and redis-rs's connection task run on the calling runtime: {} tasks",
        first.metrics().num_alive_tasks()
    );

    let second = one_worker_runtime();
    assert_eq!(second.block_on(placed(&cache, &calls, 21)), 42);
    assert_eq!(
        calls.get(),
        1,
        "a hit through the second runtime's connection"
    );
    assert_eq!(clients(&server), 2, "one connection per runtime");
    assert!(second.metrics().num_alive_tasks() >= 2);

    // The first runtime ends: its connection closes, the second's keeps
    // serving hits.
    drop(first);
    wait_for_clients(&server, 1);
    for _ in 0..3 {
        assert_eq!(second.block_on(placed(&cache, &calls, 21)), 42);
    }
    assert_eq!(calls.get(), 1, "still hits after the first runtime ended");

    // And a third runtime gets a connection of its own again.
    let third = one_worker_runtime();
    assert_eq!(third.block_on(placed(&cache, &calls, 21)), 42);
    assert_eq!(calls.get(), 1);
    assert_eq!(clients(&server), 2);
}

#[test]
fn a_stalled_runtime_does_not_hold_up_the_others() {
    let server = RedisServer::start();
    let cache = server.cache();
    let calls = Calls::default();
    let (stalled, healthy) = (one_worker_runtime(), one_worker_runtime());
    assert_eq!(stalled.block_on(placed(&cache, &calls, 3)), 6);
    // Block the stalled runtime's only worker, which drives its connection,
    // for longer than the deadline (1 s).
    stalled.spawn(async { std::thread::sleep(Duration::from_secs(3)) });
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..3 {
        assert_eq!(healthy.block_on(placed(&cache, &calls, 3)), 6);
    }
    assert_eq!(
        calls.get(),
        1,
        "the other runtime's calls hit, through its own connection"
    );
}

#[test]
fn asking_whether_it_is_connected_connects_the_asking_runtime() {
    let server = RedisServer::start();
    let cache = server.cache();
    assert!(!cache.is_connected(), "outside a runtime, before any call");
    let runtime = one_worker_runtime();
    let connected = runtime.block_on(eventually(Duration::from_secs(5), || async {
        cache.is_connected()
    }));
    assert!(connected.is_some(), "never connected");
    assert_eq!(clients(&server), 1);
}

#[test]
fn a_cache_built_on_a_runtime_connects_there_at_once() {
    let server = RedisServer::start();
    let runtime = one_worker_runtime();
    let cache = runtime.block_on(async { server.cache() });
    let connected = runtime.block_on(eventually(Duration::from_secs(5), || async {
        cache.is_connected()
    }));
    assert!(
        connected.is_some(),
        "never connected on the runtime that built the cache"
    );
    assert_eq!(clients(&server), 1);
    assert!(runtime.metrics().num_alive_tasks() >= 2);
    // Dropping the cache stops its supervisor, which closes the connection.
    drop(cache);
    wait_for_clients(&server, 0);
}

#[test]
fn on_the_io_thread_every_runtime_shares_one_connection() {
    let server = RedisServer::start();
    let cache = server
        .cache_builder()
        .connection_placement(ConnectionPlacement::IoThread)
        .build()
        .unwrap();
    let calls = Calls::default();
    let (first, second) = (one_worker_runtime(), one_worker_runtime());
    assert_eq!(first.block_on(placed(&cache, &calls, 4)), 8);
    assert_eq!(second.block_on(placed(&cache, &calls, 4)), 8);
    assert_eq!(calls.get(), 1, "the second runtime's call is a hit");
    assert_eq!(clients(&server), 1, "one connection for both runtimes");
    assert_eq!(
        first.metrics().num_alive_tasks() + second.metrics().num_alive_tasks(),
        0,
        "nothing of the cache's runs on the callers' runtimes"
    );
    drop(first);
    assert_eq!(second.block_on(placed(&cache, &calls, 4)), 8);
    assert_eq!(calls.get(), 1);
    assert_eq!(clients(&server), 1);
}

/// Timers, which every call's deadline needs, but no I/O: a connection
/// cannot be driven here, and trying to panics inside redis-rs.
fn runtime_without_io() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn a_runtime_without_an_io_driver_is_served_by_the_io_thread() {
    let server = RedisServer::start();
    let cache = server.cache();
    let runtime = runtime_without_io();
    let calls = Calls::default();
    // The first call finds its runtime's connection gone and runs uncached;
    // the second stores through the I/O thread's connection, the rest hit.
    for _ in 0..4 {
        assert_eq!(runtime.block_on(placed(&cache, &calls, 7)), 14);
    }
    assert_eq!(
        calls.get(),
        2,
        "the value was stored and then read through the I/O thread's connection"
    );
    assert_eq!(
        clients(&server),
        1,
        "one connection, on the I/O thread, and no retry on this runtime"
    );
    // Asked there, `is_connected` answers for the connection its calls use.
    assert!(runtime.block_on(async { cache.is_connected() }));
}

#[test]
fn is_connected_on_a_runtime_without_an_io_driver_starts_the_io_threads_connection() {
    let server = RedisServer::start();
    let cache = server.cache();
    let runtime = runtime_without_io();
    let connected = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cache.is_connected() {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    });
    assert!(connected, "waiting for is_connected never ended");
    assert_eq!(clients(&server), 1, "the I/O thread's connection");
}
