//! A lane's supervisor: connects, reconnects with backoff, checks the idle
//! connection with PING, and restarts or abandons the lane after a panic.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::watch;

use super::lane::{Lane, LaneGuard, State};
use super::server::{RedisConnection, Server, Shared, connect, ping};
use crate::incident::Incident;
use crate::sync::lock;

/// Drives one lane until its cache or its runtime goes away: connects, then
/// keeps reconnecting whenever the connection fails.
///
/// A panic on a runtime's lane (a runtime without an I/O driver panics at
/// the first connection attempt) abandons the lane for good, and its
/// runtime's calls go through the I/O thread's. A panic on the I/O thread's
/// lane, which has no fallback, restarts its supervisor after a pause.
pub(super) async fn supervise(shared: Arc<Shared>, guard: LaneGuard, stop: watch::Receiver<()>) {
    let mut stopped = stop.clone();
    let on_io_thread = guard.forget_from.is_none();
    // Kept across restarts, so that a failure seen on a connection from
    // before a panic never takes down one made after it.
    let mut generation = 0u64;
    loop {
        let outcome = std::panic::AssertUnwindSafe(supervise_lane(
            &shared,
            &guard.lane,
            stop.clone(),
            &mut generation,
        ))
        .catch_unwind()
        .await;
        if outcome.is_ok() {
            return;
        }
        if !on_io_thread {
            guard.lane.abandon();
            tracing::error!(
                target: "cache_runtime",
                "the cache's connection task panicked on this Tokio runtime (does it have its I/O driver enabled?); its calls use the cache's own I/O thread instead"
            );
            // Keep the abandoned lane in the map while its runtime lives, so
            // that its calls go to the I/O thread rather than start (and
            // panic) again; the guard forgets it when the runtime or the
            // cache goes.
            let _ = stopped.changed().await;
            return;
        }
        guard.lane.set_state(State::Down);
        // Rate-limited: a panic that repeats would otherwise log every
        // restart.
        shared.incidents.warn(Incident::Connect, || {
            "the cache's connection task on its I/O thread panicked; calls run uncached until it has restarted and reconnected".to_owned()
        });
        tokio::select! {
            _ = stopped.changed() => return,
            _ = tokio::time::sleep(PANIC_RESTART_DELAY) => {}
        }
    }
}

/// How long the I/O thread's supervisor waits before it restarts after a
/// panic: long enough not to spin on a panic that repeats.
const PANIC_RESTART_DELAY: Duration = Duration::from_secs(1);

async fn supervise_lane(
    shared: &Shared,
    lane: &Lane,
    mut stop: watch::Receiver<()>,
    generation: &mut u64,
) {
    let Some(server) = &shared.server else {
        return;
    };
    // `changed` returns (an error) only when the sender drops with the cache.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        let connect = connect_with_backoff(shared, lane, server);
        let mut connection = tokio::select! {
            _ = &mut stopped => return,
            connection = connect => connection,
        };
        *generation += 1;
        let generation = *generation;
        lane.set_state(State::Up {
            generation,
            connection: connection.clone(),
        });
        // Wait for a call to report a failure, and meanwhile check the idle
        // connection now and then, so that a server that died or restarted
        // while nobody called is reconnected to before the next call.
        loop {
            let answered = tokio::select! {
                _ = &mut stopped => return,
                _ = lane.wake_supervisor.notified() => {
                    if lane.is_in_service(generation) {
                        // A wake-up left over from a connection this one
                        // replaced: nothing to do.
                        continue;
                    }
                    if !lane.is_suspect(generation) {
                        break;
                    }
                    // A deadline passed: the server stalled, or the runtime
                    // was too busy to read its reply in time. Only the
                    // former needs a new connection.
                    let answered = tokio::select! {
                        _ = &mut stopped => return,
                        answered = answers_ping(&mut connection, shared.connect_timeout) => answered,
                    };
                    answered && lane.restore(generation)
                }
                _ = tokio::time::sleep(HEALTH_CHECK_INTERVAL) => {
                    tokio::select! {
                        _ = &mut stopped => return,
                        answered = answers_ping(&mut connection, shared.connect_timeout) => answered,
                    }
                }
            };
            if !answered {
                lane.take_down(generation);
                break;
            }
        }
    }
}

/// Tries to connect until it succeeds, backing off 0, 25, 50, 100 … ms
/// between attempts, capped at `max_backoff`.
async fn connect_with_backoff(shared: &Shared, lane: &Lane, server: &Server) -> RedisConnection {
    let mut backoff = Duration::ZERO;
    let mut failures = 0u64;
    loop {
        let attempt = connect(server, shared.connect_timeout)
            .await
            .map_err(|error| shared.scrub(&error.to_string()));
        *lock(&lane.last_connect_error) = attempt.as_ref().err().cloned();
        match attempt {
            Ok(connection) => {
                if failures > 0 {
                    shared.incidents.recovered(|| {
                        format!(
                            "connected to Redis at {} after {failures} failed attempt(s); caching resumes",
                            shared.redacted_url
                        )
                    });
                }
                return connection;
            }
            Err(error) => {
                failures += 1;
                lane.set_state(State::Down);
                shared.incidents.warn(Incident::Connect, || {
                    format!(
                        "cannot connect to Redis at {}: {error}; calls run uncached while it retries",
                        shared.redacted_url
                    )
                });
                backoff = next_backoff(backoff, shared.max_backoff);
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// How often the supervisor checks a connection that is up.
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);

async fn answers_ping(connection: &mut RedisConnection, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, ping(connection)).await,
        Ok(Ok(()))
    )
}

fn next_backoff(previous: Duration, max: Duration) -> Duration {
    let next = if previous.is_zero() {
        Duration::from_millis(25)
    } else {
        previous * 2
    };
    next.min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_millis(500);
        let mut backoff = Duration::ZERO;
        let mut seen = vec![];
        for _ in 0..7 {
            backoff = next_backoff(backoff, max);
            seen.push(backoff.as_millis());
        }
        assert_eq!(seen, [25, 50, 100, 200, 400, 500, 500]);
    }
}
