//! What every example shares: waiting for Redis, and printing how a call went.
//!
//! Not an example itself (Cargo builds only `examples/*.rs` and
//! `examples/*/main.rs` as examples).

use std::future::Future;
use std::time::{Duration, Instant};

use cache_runtime::{Cache, Outcome, track_outcome};

/// Waits until `cache` is connected, for up to 5 seconds.
///
/// A real program need not wait: calls made before the connection is up run
/// their body uncached, and caching starts by itself once it is. The examples
/// wait so that their first call is a plain miss, not an uncached run.
pub async fn connected(cache: &Cache) -> Result<(), String> {
    let start = Instant::now();
    while !cache.is_connected() {
        if start.elapsed() > Duration::from_secs(5) {
            return Err(format!(
                "no connection to Redis after 5 s: {} (set REDIS_URL, default redis://127.0.0.1:6379)",
                cache.last_connect_error().unwrap_or_default()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Runs `call`, prints how it went (`MISS`, `HIT`…) and how long it took,
/// and returns its value and outcome.
pub async fn timed<F: Future>(label: &str, call: F) -> (F::Output, Option<Outcome>) {
    let start = Instant::now();
    let (value, outcome) = track_outcome(call).await;
    let elapsed = start.elapsed();
    let outcome_name = match outcome {
        Some(Outcome::Local) => "LOCAL",
        Some(Outcome::Hit) => "HIT",
        Some(Outcome::Stale) => "STALE",
        Some(Outcome::Coalesced) => "COALESCED",
        Some(Outcome::Miss) => "MISS",
        Some(Outcome::Error) => "ERROR (Redis unusable, ran uncached)",
        // `Outcome` is non-exhaustive: later releases may add outcomes.
        Some(_) => "OTHER",
        None => "no cached call",
    };
    println!("{label:<40} {outcome_name:<10} {elapsed:>10.2?}");
    (value, outcome)
}

/// An error unless the call went as `expected`: the examples check what they
/// show, so that CI notices when they stop showing it.
pub fn expect(outcome: Option<Outcome>, expected: Outcome) -> Result<(), String> {
    if outcome == Some(expected) {
        Ok(())
    } else {
        Err(format!("expected {expected:?}, got {outcome:?}"))
    }
}
