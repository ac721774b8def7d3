//! Asking a cache how it behaves through its body runs: [`Calls`] counts
//! them, [`caches`] and [`resumes`] tell whether caching works, and
//! [`eventually`] waits for a condition to hold.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Polls `condition` every 20 ms until it holds or `limit` passes; returns
/// how long it took, or `None`.
pub async fn eventually<F, Fut>(limit: Duration, mut condition: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if condition().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Counts body runs: pass `&Calls` to a cached function (it is not part of
/// the key) and bump it in the body.
#[derive(Default)]
pub struct Calls(AtomicUsize);

impl Calls {
    /// Counts one run of the body.
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// How many runs were counted.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Whether caching works for one fresh key: of two calls, the first runs the
/// body and stores the value, and the second is served from the cache.
/// `call` calls the cached function, which bumps `calls`, with that key.
pub async fn caches<F, Fut>(calls: &Calls, mut call: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future,
{
    body_runs_once(calls, call(), call()).await
}

/// Whether caching resumes within `limit`: asks [`caches`] every 20 ms, each
/// time of a fresh key, until it holds. `call(id)` calls the cached function
/// with the key of `id`; ids count up from 101.
pub async fn resumes<F, Fut>(limit: Duration, calls: &Calls, mut call: F) -> bool
where
    F: FnMut(u64) -> Fut,
    Fut: Future,
{
    let mut id = 100;
    eventually(limit, || {
        id += 1;
        body_runs_once(calls, call(id), call(id))
    })
    .await
    .is_some()
}

/// Whether running `first`, then `second`, runs the body once. The futures
/// do nothing until awaited, so making both up front changes nothing.
async fn body_runs_once(calls: &Calls, first: impl Future, second: impl Future) -> bool {
    let before = calls.get();
    first.await;
    second.await;
    calls.get() == before + 1
}
