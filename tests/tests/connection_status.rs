//! What a cache says about its connection, for health checks: a runtime's
//! connection is connecting until its first attempt ends, then connected or
//! disconnected; `settled_connection_status` waits for that first attempt,
//! within a limit, so that a fresh worker's health check reports how it
//! went rather than "not yet".

use std::net::TcpListener;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, ConnectionStatus};
use cache_tests::{RedisServer, current_thread_runtime};

#[test]
fn a_fresh_runtime_is_connecting_until_its_first_attempt_ends() {
    let server = RedisServer::start();
    // Built outside a runtime: no connection until a runtime asks.
    let cache = server.cache();
    // A current-thread runtime runs the connection's task only when the
    // caller awaits: the first answer comes before any attempt was made.
    let runtime = current_thread_runtime();
    let (now, settled, connected) = runtime.block_on(async {
        let now = cache.connection_status();
        let settled = cache
            .settled_connection_status(Duration::from_secs(5))
            .await;
        (now, settled, cache.is_connected())
    });
    assert_eq!(
        now,
        ConnectionStatus::Connecting,
        "what a fresh worker's health check saw: not down, not connected yet"
    );
    assert_eq!(settled, ConnectionStatus::Connected);
    assert!(connected);
    assert_eq!(
        runtime.block_on(async { cache.connection_status() }),
        ConnectionStatus::Connected
    );
}

#[test]
fn nothing_listening_is_disconnected_once_the_attempt_fails() {
    let port = RedisServer::unused_port();
    let cache = Cache::builder()
        .url(format!("redis://127.0.0.1:{port}"))
        .build()
        .unwrap();
    let runtime = current_thread_runtime();
    let started = Instant::now();
    let settled = runtime.block_on(cache.settled_connection_status(Duration::from_secs(5)));
    assert_eq!(settled, ConnectionStatus::Disconnected);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a refused connection ends the wait at once: {:?}",
        started.elapsed()
    );
    assert!(cache.last_connect_error().is_some(), "and says why");
}

#[test]
fn an_attempt_that_outlasts_the_limit_is_still_connecting() {
    // Accepts connections (the kernel completes them) but never answers:
    // each attempt lasts the connect timeout, waiting for Redis's reply.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let cache = Cache::builder()
        .url(format!("redis://127.0.0.1:{port}"))
        .connect_timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    let runtime = current_thread_runtime();
    let (early, late) = runtime.block_on(async {
        let early = cache
            .settled_connection_status(Duration::from_millis(100))
            .await;
        let late = cache
            .settled_connection_status(Duration::from_secs(5))
            .await;
        (early, late)
    });
    assert_eq!(early, ConnectionStatus::Connecting, "past the limit");
    assert_eq!(
        late,
        ConnectionStatus::Disconnected,
        "the attempt timed out"
    );
}
