//! The cached-call state machine, plain Rust and testable without the macro.
//!
//! ```text
//! lookup ──hit──────────────────────────────► return the stored value
//!    │
//!    ├─miss (absent, expired, undecodable) ─┐
//!    └─failed (down, deadline, error) ──────┴► run the body ─► store if the
//!                                                              shape allows ─► return
//! ```
//!
//! Nothing here returns a cache error to the caller: a failed lookup runs the
//! body, a failed store still returns the body's value. Both are counted in
//! the function's [`CallSite`] and logged, rate-limited.

use std::cell::Cell;
use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::cache::{Cache, Lookup};
use crate::metrics::CallSite;

/// Which results of a function are stored, and in what form.
///
/// The macro picks the shape from the declared return type: [`OkValues`] for
/// `Result`, [`SomeValues`] (or [`OptionValues`] with `cache_none = true`)
/// for `Option`, [`AnyValue`] for everything else.
#[diagnostic::on_unimplemented(
    message = "the return type `{R}` cannot be cached",
    label = "the cached value must implement `serde::Serialize` and `serde::de::DeserializeOwned`"
)]
pub trait Shape<R> {
    /// What is stored in Redis.
    type Stored: Serialize + DeserializeOwned;
    /// The part of `result` to store, or `None` to store nothing.
    fn storable(result: &R) -> Option<&Self::Stored>;
    /// Rebuilds a result from a stored value.
    fn from_stored(stored: Self::Stored) -> R;
}

/// `Result<T, E>`: stores `Ok(T)` as `T`; an `Err` is never stored.
pub struct OkValues;
/// `Option<T>`: stores `Some(T)` as `T`; `None` is never stored.
pub struct SomeValues;
/// `Option<T>` with `cache_none = true`: stores `Some` and `None` alike.
pub struct OptionValues;
/// Any other `T`: always stored.
pub struct AnyValue;

impl<T: Serialize + DeserializeOwned, E> Shape<Result<T, E>> for OkValues {
    type Stored = T;
    fn storable(result: &Result<T, E>) -> Option<&T> {
        result.as_ref().ok()
    }
    fn from_stored(stored: T) -> Result<T, E> {
        Ok(stored)
    }
}

impl<T: Serialize + DeserializeOwned> Shape<Option<T>> for SomeValues {
    type Stored = T;
    fn storable(result: &Option<T>) -> Option<&T> {
        result.as_ref()
    }
    fn from_stored(stored: T) -> Option<T> {
        Some(stored)
    }
}

impl<T: Serialize + DeserializeOwned> Shape<Option<T>> for OptionValues {
    type Stored = Option<T>;
    fn storable(result: &Option<T>) -> Option<&Option<T>> {
        Some(result)
    }
    fn from_stored(stored: Option<T>) -> Option<T> {
        stored
    }
}

impl<T: Serialize + DeserializeOwned> Shape<T> for AnyValue {
    type Stored = T;
    fn storable(result: &T) -> Option<&T> {
        Some(result)
    }
    fn from_stored(stored: T) -> T {
        stored
    }
}

/// How one cached call ended, as recorded on its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    /// Redis could not be used; the body ran uncached.
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Error => "error",
        }
    }
}

tokio::task_local! {
    static OUTCOME: Cell<Option<Outcome>>;
}

/// Runs `future` and reports how the last cached call that finished inside it
/// ended: for a web handler's `X-Cache: HIT` header, or a test.
///
/// ```no_run
/// # use cache_runtime::{redis_cached, track_outcome, Outcome};
/// # #[redis_cached(key = "answer")] async fn answer() -> u32 { 42 }
/// # async fn handler() {
/// let (value, outcome) = track_outcome(answer()).await;
/// let header = if outcome == Some(Outcome::Hit) { "HIT" } else { "MISS" };
/// # }
/// ```
///
/// `None` if no cached call finished inside `future`.
pub async fn track_outcome<F: Future>(future: F) -> (F::Output, Option<Outcome>) {
    OUTCOME
        .scope(Cell::new(None), async {
            let output = future.await;
            (output, OUTCOME.with(Cell::get))
        })
        .await
}

/// Runs one cached call: the lookup, then on a miss the body and the store.
///
/// `key` is the full key (prefix included, see [`Cache::key_builder`]); `ttl`
/// of `None` means the cache's default TTL.
pub async fn cached_call<S, R, Fut>(
    cache: &Cache,
    site: &'static CallSite,
    key: String,
    ttl: Option<Duration>,
    body: Fut,
) -> R
where
    S: Shape<R>,
    Fut: Future<Output = R>,
{
    site.register();
    let span = tracing::debug_span!(
        "redis_cached",
        function = site.name(),
        outcome = tracing::field::Empty,
        elapsed_us = tracing::field::Empty,
    );
    let record_span = span.clone();
    let started = Instant::now();
    let (result, outcome) = async {
        let outcome = match cache.lookup::<S::Stored>(&key).await {
            Lookup::Hit(stored) => return (S::from_stored(stored), Outcome::Hit),
            Lookup::Miss => {
                site.record_miss();
                Outcome::Miss
            }
            Lookup::Failed => {
                site.record_error();
                Outcome::Error
            }
        };
        let result = body.await;
        if let Some(stored) = S::storable(&result) {
            let ttl = ttl.unwrap_or_else(|| cache.default_ttl());
            if cache.store(&key, stored, ttl).await.is_err() && outcome != Outcome::Error {
                site.record_error();
            }
        }
        (result, outcome)
    }
    .instrument(span)
    .await;
    let elapsed = started.elapsed();
    if outcome == Outcome::Hit {
        site.record_hit();
    }
    site.record_latency(elapsed);
    let _ = OUTCOME.try_with(|tracked| tracked.set(Some(outcome)));
    record_span.record("outcome", outcome.as_str());
    record_span.record(
        "elapsed_us",
        u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
    );
    result
}
