//! Eviction: the one routine that removes entries from the cache (keys, tags
//! and prefixes), whoever asks — `#[cache_evict]`, the derived `…_invalidate`
//! helpers, [`Cache::delete`](crate::Cache::delete) and
//! [`Cache::invalidate`](crate::Cache::invalidate)`*` — with one set of
//! guarantees, and [`deferred`] for database transactions.
//!
//! **The routine.** Inside [`deferred`], targets are collected instead of
//! sent. Otherwise, for each target: this process's flights of the keys it
//! covers are closed (reads in the air must not store what they read
//! before the write), its local copies are dropped (first, whether or not
//! Redis can be reached), the keys are unlinked, and the change is
//! announced to every other process's local tier.
//!
//! **Tags.** An entry stored by a function with `tag = "…"` is also added to
//! a Redis set per tag (`<prefix>#tag:<tag>`), whose expiry is kept at least
//! as long as its longest-lived member. Evicting a tag walks that set with
//! `SSCAN` and unlinks its members in batches, then the set itself. We chose
//! tag sets over a namespace version that every lookup would read first:
//! tags cost one pipelined write per store and nothing on a hit, while a
//! version costs an extra round trip on every hit, the path that matters.
//!
//! **Prefixes** have no index to use: the keyspace is walked with `SCAN
//! MATCH <prefix>* COUNT 500` (on every master of a cluster).
//!
//! **Failures.** An eviction that fails is logged, counted and parked
//! ([`crate::parked`]), and retried in the background through
//! [`crate::retry`]; what that guarantees to callers is documented once, on
//! the `cache_evict` attribute ("When an eviction fails"). An invalidation
//! message that may not have gone out is not an eviction failure: it is owed
//! and sent again on its own ([`crate::announce`]), without skipping lookups.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::change::{Change, Target};
use crate::engine::Engine;
use crate::error::CacheError;
use crate::incident::Incident;
use crate::metrics::{CallSite, SiteKind};
use crate::retry::Round;

const INLINE_RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(20), Duration::from_millis(100)];

tokio::task_local! {
    static DEFERRED: RefCell<Vec<(Arc<Engine>, Target)>>;
}

/// Runs `future`, collecting the evictions it issues (through
/// `#[cache_evict]` functions, derived `…_invalidate` helpers, and
/// [`Cache::delete`](crate::Cache::delete) or
/// [`Cache::invalidate`](crate::Cache::invalidate)`*`) instead of sending
/// them. Apply them once the database transaction has committed; drop them
/// if it rolled back.
///
/// ```no_run
/// # async fn example() -> Result<(), cache_runtime::CacheError> {
/// let (result, evictions) = cache_runtime::deferred(async {
///     // let mut tx = pool.begin().await?;
///     // rename_user(&mut tx, 42, "new name").await?;  // #[cache_evict(key = "user:{id}")]
///     // tx.commit().await
///     Ok::<(), std::io::Error>(())
/// })
/// .await;
/// if result.is_ok() {
///     evictions.apply().await?; // committed: evict now
/// } // else: rolled back; dropping `evictions` evicts nothing
/// # Ok(()) }
/// ```
pub async fn deferred<F: Future>(future: F) -> (F::Output, PendingInvalidations) {
    DEFERRED
        .scope(RefCell::new(Vec::new()), async {
            let output = future.await;
            let targets = DEFERRED.with(|deferred| deferred.take());
            (output, PendingInvalidations { targets })
        })
        .await
}

/// Evictions collected by [`deferred`]. Dropping them discards them.
#[must_use = "apply the evictions after the commit, or drop them on rollback"]
#[derive(Default)]
pub struct PendingInvalidations {
    targets: Vec<(Arc<Engine>, Target)>,
}

impl fmt::Debug for PendingInvalidations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.targets()).finish()
    }
}

impl PendingInvalidations {
    /// How many evictions are pending.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether no eviction is pending.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// What is pending, as full keys, tag-set keys and full prefixes.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter().map(|(_, target)| target)
    }

    /// Sends the evictions. A failure is retried in the background, and the
    /// first one is returned.
    pub async fn apply(mut self) -> Result<(), CacheError> {
        let mut first_error = None;
        for (engine, target) in std::mem::take(&mut self.targets) {
            if let Err(error) = evict(&engine, vec![target], None, false).await {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for PendingInvalidations {
    fn drop(&mut self) {
        if !self.targets.is_empty() {
            tracing::debug!(
                target: "cache_runtime",
                "{} deferred eviction(s) discarded (transaction rolled back?)",
                self.targets.len()
            );
        }
    }
}

/// What became of an eviction.
pub(crate) enum Evicted {
    /// Applied: this many keys existed (tag sets' members included).
    Applied(u64),
    /// Collected by [`deferred`], to be applied after the commit.
    Deferred,
}

/// The one eviction routine: evicts `targets`, or defers them inside
/// [`deferred`]. See the module documentation for what it guarantees.
///
/// One attempt inline; on failure, background retries, plus (with
/// `propagate`) two inline retries before the error is returned. `site`, if
/// given, counts the outcome.
pub(crate) async fn evict(
    engine: &Arc<Engine>,
    targets: Vec<Target>,
    site: Option<&'static CallSite>,
    propagate: bool,
) -> Result<Evicted, CacheError> {
    let deferred = DEFERRED.try_with(|deferred| {
        deferred
            .borrow_mut()
            .extend(targets.iter().map(|t| (engine.clone(), t.clone())));
    });
    if deferred.is_ok() {
        return Ok(Evicted::Deferred);
    }
    let mut result = evict_once(engine, &targets).await;
    if propagate {
        for delay in INLINE_RETRY_DELAYS {
            if result.is_ok() {
                break;
            }
            tokio::time::sleep(delay).await;
            result = evict_once(engine, &targets).await;
        }
    }
    match result {
        Ok(existed) => {
            if let Some(site) = site {
                site.record_eviction();
            }
            Ok(Evicted::Applied(existed))
        }
        Err(error) => {
            if let Some(site) = site {
                site.record_eviction_error();
            }
            engine.incidents().warn(Incident::Evict, || {
                format!(
                    "eviction of {} failed: {}; lookups skip Redis until it is retried successfully in the background",
                    describe(&targets),
                    engine.store.scrub(&error)
                )
            });
            park(engine, targets);
            Err(error)
        }
    }
}

/// Parks failed evictions and makes sure a task retries them.
fn park(engine: &Arc<Engine>, targets: Vec<Target>) {
    if !engine.parked.park(targets) {
        return;
    }
    let engine_for_task = engine.clone();
    let retry = move || {
        let engine = engine_for_task.clone();
        async move {
            let batch = engine.parked.batch();
            if evict_once(&engine, &batch).await.is_err() {
                return Round::Failed;
            }
            if !engine.parked.applied(&batch) {
                return Round::Progress;
            }
            engine.incidents().recovered(|| {
                format!(
                    "{} failed eviction(s) applied; cache lookups resume",
                    batch.len()
                )
            });
            Round::Done
        }
    };
    if crate::retry::spawn_until_done(retry).is_err() {
        engine.parked.stopped();
    }
}

fn describe(targets: &[Target]) -> String {
    let names: Vec<String> = targets
        .iter()
        .map(|target| match target {
            Target::Key(key) => format!("`{key}`"),
            Target::Tag(tag) => format!("tag set `{tag}`"),
            Target::Prefix(prefix) => format!("every key under `{prefix}`"),
        })
        .collect();
    names.join(", ")
}

/// One attempt at every target; how many keys existed.
async fn evict_once(engine: &Engine, targets: &[Target]) -> Result<u64, CacheError> {
    // This process's reads in the air and local copies go first, whether or
    // not Redis can be reached: a failed eviction must not leave them in use.
    for target in targets {
        let change = Change::of(target);
        engine.flights.evicted(&change);
        engine.forget_local(&change);
    }
    let store = &engine.store;
    let keys: Vec<&str> = targets
        .iter()
        .filter_map(|target| match target {
            Target::Key(key) => Some(key.as_str()),
            Target::Tag(_) | Target::Prefix(_) => None,
        })
        .collect();
    let mut existed = 0;
    if !keys.is_empty() {
        existed += store.unlink(&keys).await?;
        for key in keys {
            engine.announce(Change::Key(key.to_owned())).await;
        }
    }
    for target in targets {
        match target {
            Target::Key(_) => continue,
            Target::Tag(tag_key) => existed += store.unlink_tag_set(tag_key).await?,
            Target::Prefix(prefix) => existed += store.unlink_prefix(prefix).await?,
        }
        engine.announce(Change::of(target)).await;
    }
    Ok(existed)
}

/// `#[cache_evict]`: evicts `targets` after a successful body (or before it,
/// with `before`). A failed eviction never fails the call: it is logged,
/// counted and retried in the background.
pub(crate) async fn evict_call<S, R, Fut>(
    engine: &Arc<Engine>,
    site: &'static CallSite,
    targets: Vec<Target>,
    before: bool,
    body: Fut,
) -> R
where
    S: crate::shape::Succeeded<R>,
    Fut: Future<Output = R>,
{
    site.register(SiteKind::Evict);
    if before {
        let _ = evict(engine, targets, Some(site), false).await;
        return body.await;
    }
    let result = body.await;
    if S::succeeded(&result) {
        let _ = evict(engine, targets, Some(site), false).await;
    }
    result
}

/// `#[cache_evict(propagate = true)]` on a function returning
/// `Result<T, E>`: an eviction that still fails after two inline retries
/// becomes the function's `Err`, through `E: From<CacheError>`.
pub(crate) async fn evict_call_propagating<T, E, Fut>(
    engine: &Arc<Engine>,
    site: &'static CallSite,
    targets: Vec<Target>,
    before: bool,
    body: Fut,
) -> Result<T, E>
where
    E: From<CacheError>,
    Fut: Future<Output = Result<T, E>>,
{
    site.register(SiteKind::Evict);
    if before {
        evict(engine, targets, Some(site), true).await?;
        return body.await;
    }
    let value = body.await?;
    evict(engine, targets, Some(site), true).await?;
    Ok(value)
}
