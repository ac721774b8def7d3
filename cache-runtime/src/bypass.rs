//! Bypass: the cached calls made inside a future skip the cache.

use std::future::Future;

tokio::task_local! {
    static BYPASSED: ();
}

/// Runs `future` with the cache bypassed: every `#[redis_cached]` call made
/// inside it, on this task, runs its body without reading the cache or
/// storing its result, and is counted as bypassed
/// (`cache_bypassed_total`, [`Outcome::Bypassed`](crate::Outcome)).
///
/// For tests, admin tools and paths that must read the source of truth.
/// Writes still reach the cache: evictions (`#[cache_evict]`, derived
/// `…_invalidate` helpers, [`Cache::delete`](crate::Cache::delete) and the
/// rest) run as usual, and so does `#[cache_put]`'s write-through, since
/// skipping a write would leave the old value for everyone else. To run one
/// call's body and store its result (a forced refresh), call the derived
/// `…_refresh` helper instead.
///
/// Tasks spawned inside `future` are not bypassed: the bypass belongs to
/// the task that awaits `future`.
///
/// ```no_run
/// # use cache_runtime::{bypass, redis_cached};
/// # #[redis_cached(key = "balance:{account}")]
/// # async fn balance(account: u64) -> u64 { 0 }
/// # async fn audit() {
/// // Straight from the database, whatever the cache holds.
/// let exact = bypass(balance(42)).await;
/// # }
/// ```
pub async fn bypass<F: Future>(future: F) -> F::Output {
    BYPASSED.scope((), future).await
}

/// Whether the current task runs inside [`bypass`].
pub(crate) fn bypassed() -> bool {
    BYPASSED.try_with(|_| ()).is_ok()
}
