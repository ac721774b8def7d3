//! Invalidation: evicting keys, tags and prefixes, with bounded retries, and
//! deferrable until a database transaction commits.
//!
//! **Tags.** An entry stored by a function with `tag = "…"` is also added to
//! a Redis set per tag (`<prefix>#tag:<tag>`), whose expiry is kept at least
//! as long as its longest-lived member. Invalidating a tag walks that set with
//! `SSCAN` and unlinks its members in batches, then the set itself. We chose
//! tag sets over a namespace version that every lookup would read first:
//! tags cost one pipelined write per store and nothing on a hit, while a
//! version costs an extra round trip on every hit, the path that matters.
//!
//! **Prefixes.** [`Cache::invalidate_prefix`] has no index to use, so it walks
//! the keyspace with `SCAN MATCH <prefix>* COUNT 500` and unlinks each batch:
//! never `KEYS`, and never one command that blocks Redis for long.
//!
//! **Failures.** An eviction that fails is logged, counted, and parked: the
//! cache then skips its lookups (calls run their body, as when Redis is down)
//! while a background task retries the parked evictions, backing off up to
//! once a second, until they succeed. So this process never serves an entry
//! whose eviction it failed to apply, even when Redis comes back holding its
//! old data. With `propagate = true` the call also retries inline twice
//! (20 ms, 100 ms apart) and returns the failure as the function's error.
//! Other processes read Redis, which keeps the old value until a retry
//! succeeds (if none ever does, until its TTL); their local copies go when
//! the retry's invalidation message arrives. An invalidation message that
//! may not have gone out is not an eviction failure: it is owed and sent
//! again on its own (see [`crate::local`]), without skipping lookups.
//!
//! **Transactions.** Inside [`deferred`], evictions are collected instead of
//! sent; the caller applies them after the commit, or drops them on rollback.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::Value;

use crate::cache::Cache;
use crate::error::CacheError;
use crate::incident::Incident;
use crate::local::Change;
use crate::metrics::CallSite;
use crate::retry::Round;

/// Where tag sets live, after the cache's prefix.
pub(crate) const TAG_MARKER: &str = "#tag:";

/// One thing to evict, as a full key (prefix included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One entry.
    Key(String),
    /// Every entry stored with this tag (the tag set's full key).
    Tag(String),
}

const SCAN_BATCH: usize = 500;
const INLINE_RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(20), Duration::from_millis(100)];
/// The most evictions kept parked; past it the oldest are dropped (and
/// logged): their entries then live until their TTL.
const MAX_PARKED: usize = 10_000;

tokio::task_local! {
    static DEFERRED: RefCell<Vec<(Cache, Target)>>;
}

/// Runs `future`, collecting the evictions it issues (through
/// `#[cache_evict]` functions and derived `…_invalidate` helpers) instead of
/// sending them. Apply them once the database transaction has committed;
/// drop them if it rolled back.
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
#[derive(Debug, Default)]
pub struct PendingInvalidations {
    targets: Vec<(Cache, Target)>,
}

impl PendingInvalidations {
    /// How many evictions are pending.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// What is pending, as full keys and tag-set keys.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter().map(|(_, target)| target)
    }

    /// Sends the evictions. A failure is retried in the background, and the
    /// first one is returned.
    pub async fn apply(mut self) -> Result<(), CacheError> {
        let mut first_error = None;
        for (cache, target) in std::mem::take(&mut self.targets) {
            if let Err(error) = run(&cache, vec![target], None, false).await {
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

/// Evicts `targets`, or defers them inside [`deferred`].
///
/// One attempt inline; on failure, background retries, plus (with
/// `propagate`) two inline retries before the error is returned.
pub(crate) async fn run(
    cache: &Cache,
    targets: Vec<Target>,
    site: Option<&'static CallSite>,
    propagate: bool,
) -> Result<(), CacheError> {
    let deferred = DEFERRED.try_with(|deferred| {
        deferred
            .borrow_mut()
            .extend(targets.iter().map(|t| (cache.clone(), t.clone())));
    });
    if deferred.is_ok() {
        return Ok(());
    }
    let mut result = evict_once(cache, &targets).await;
    if propagate {
        for delay in INLINE_RETRY_DELAYS {
            if result.is_ok() {
                break;
            }
            tokio::time::sleep(delay).await;
            result = evict_once(cache, &targets).await;
        }
    }
    match result {
        Ok(()) => {
            if let Some(site) = site {
                site.record_eviction();
            }
            Ok(())
        }
        Err(error) => {
            if let Some(site) = site {
                site.record_eviction_error();
            }
            cache.incidents().warn(Incident::Evict, || {
                format!(
                    "eviction of {} failed: {}; lookups skip Redis until it is retried successfully in the background",
                    describe(&targets),
                    cache.scrub(&error)
                )
            });
            park(cache, targets);
            Err(error)
        }
    }
}

/// Evictions that failed, waiting for Redis. While any wait, the cache's
/// lookups are skipped: see the module documentation.
#[derive(Default)]
pub(crate) struct Parked {
    targets: Mutex<Vec<Target>>,
    /// Whether `targets` is non-empty: read by every lookup, so an atomic.
    any: AtomicBool,
    /// Whether a replay task is running.
    replaying: AtomicBool,
}

impl Parked {
    /// Whether lookups must be skipped.
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Target>> {
        crate::sync::lock(&self.targets)
    }
}

/// Parks failed evictions and makes sure a task replays them.
fn park(cache: &Cache, targets: Vec<Target>) {
    let parked = cache.parked();
    {
        let mut waiting = parked.lock();
        for target in targets {
            if !waiting.contains(&target) {
                waiting.push(target);
            }
        }
        if waiting.len() > MAX_PARKED {
            let dropped = waiting.len() - MAX_PARKED;
            waiting.drain(..dropped);
            tracing::error!(
                target: "cache_runtime",
                "{dropped} failed eviction(s) dropped: more than {MAX_PARKED} wait for Redis; their entries live until their TTL"
            );
        }
        parked.any.store(true, Ordering::Release);
    }
    if parked.replaying.swap(true, Ordering::AcqRel) {
        return;
    }
    let cache = cache.clone();
    let replay = move || {
        let cache = cache.clone();
        async move {
            let parked = cache.parked();
            let batch = parked.lock().clone();
            if evict_once(&cache, &batch).await.is_err() {
                return Round::Failed;
            }
            let mut waiting = parked.lock();
            waiting.retain(|target| !batch.contains(target));
            if !waiting.is_empty() {
                return Round::Progress;
            }
            parked.any.store(false, Ordering::Release);
            parked.replaying.store(false, Ordering::Release);
            drop(waiting);
            cache.incidents().recovered(|| {
                format!(
                    "{} failed eviction(s) applied; cache lookups resume",
                    batch.len()
                )
            });
            Round::Done
        }
    };
    if crate::retry::spawn_until_done(replay).is_err() {
        parked.replaying.store(false, Ordering::Release);
    }
}

fn describe(targets: &[Target]) -> String {
    let names: Vec<String> = targets
        .iter()
        .map(|target| match target {
            Target::Key(key) => format!("`{key}`"),
            Target::Tag(tag) => format!("tag set `{tag}`"),
        })
        .collect();
    names.join(", ")
}

/// One attempt at every target.
async fn evict_once(cache: &Cache, targets: &[Target]) -> Result<(), CacheError> {
    // Reads of these keys still in the air in this process must not store
    // what they read before the write. A tag stands for keys we cannot list
    // here, so it invalidates every read in the air.
    // This process's local copies go first, whether or not Redis can be
    // reached: a failed eviction must not leave them in use.
    let flights = cache.flights();
    for target in targets {
        let change = match target {
            Target::Key(key) => Change::Key(key.clone()),
            Target::Tag(_) => Change::All,
        };
        flights.evicted(&change);
        cache.forget_local(&change);
    }
    let keys: Vec<&str> = targets
        .iter()
        .filter_map(|target| match target {
            Target::Key(key) => Some(key.as_str()),
            Target::Tag(_) => None,
        })
        .collect();
    if !keys.is_empty() {
        cache.send(redis::cmd("UNLINK").arg(&keys)).await?;
        for key in keys {
            cache.announce(Change::Key(key.to_owned())).await;
        }
    }
    for target in targets {
        if let Target::Tag(tag_key) = target {
            evict_tag_set(cache, tag_key).await?;
            cache.announce(Change::All).await;
        }
    }
    Ok(())
}

/// Unlinks every member of a tag set in batches, then the set. Returns how
/// many members it had.
async fn evict_tag_set(cache: &Cache, tag_key: &str) -> Result<u64, CacheError> {
    let mut cursor = 0u64;
    let mut evicted = 0u64;
    loop {
        let reply = cache
            .send(
                redis::cmd("SSCAN")
                    .arg(tag_key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(SCAN_BATCH),
            )
            .await?;
        let (next, members) = scan_reply(reply)?;
        if !members.is_empty() {
            evicted += members.len() as u64;
            cache.send(redis::cmd("UNLINK").arg(&members)).await?;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    cache.send(redis::cmd("UNLINK").arg(tag_key)).await?;
    Ok(evicted)
}

/// `[cursor, [member, …]]`, as SCAN and SSCAN answer.
fn scan_reply(reply: Value) -> Result<(u64, Vec<Vec<u8>>), CacheError> {
    let unexpected = || {
        CacheError::Redis(redis::RedisError::from((
            redis::ErrorKind::Parse,
            "unexpected SCAN reply",
        )))
    };
    let Value::Array(mut parts) = reply else {
        return Err(unexpected());
    };
    if parts.len() != 2 {
        return Err(unexpected());
    }
    let members = match parts.pop() {
        Some(Value::Array(members)) => members
            .into_iter()
            .filter_map(|member| match member {
                Value::BulkString(bytes) => Some(bytes),
                _ => None,
            })
            .collect(),
        _ => return Err(unexpected()),
    };
    let cursor = match parts.pop() {
        Some(Value::BulkString(bytes)) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(unexpected)?,
        _ => return Err(unexpected()),
    };
    Ok((cursor, members))
}

/// `*`, `?`, `[`, `]` and `\` matched literally by SCAN MATCH.
fn escape_glob(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// `#[cache_evict]`: evicts `targets` after a successful body (or before it,
/// with `before`). A failed eviction never fails the call: it is logged,
/// counted and retried in the background.
pub async fn evict_call<S, R, Fut>(
    cache: &Cache,
    site: &'static CallSite,
    targets: Vec<Target>,
    before: bool,
    body: Fut,
) -> R
where
    S: crate::call::Succeeded<R>,
    Fut: Future<Output = R>,
{
    site.register();
    if before {
        let _ = run(cache, targets, Some(site), false).await;
        return body.await;
    }
    let result = body.await;
    if S::succeeded(&result) {
        let _ = run(cache, targets, Some(site), false).await;
    }
    result
}

/// `#[cache_evict(propagate = true)]` on a function returning
/// `Result<T, E>`: an eviction that still fails after two inline retries
/// becomes the function's `Err`, through `E: From<CacheError>`.
pub async fn evict_call_propagating<T, E, Fut>(
    cache: &Cache,
    site: &'static CallSite,
    targets: Vec<Target>,
    before: bool,
    body: Fut,
) -> Result<T, E>
where
    E: From<CacheError>,
    Fut: Future<Output = Result<T, E>>,
{
    site.register();
    if before {
        run(cache, targets, Some(site), true).await?;
        return body.await;
    }
    let value = body.await?;
    run(cache, targets, Some(site), true).await?;
    Ok(value)
}

impl Cache {
    /// Evicts one key (see [`Cache::full_key`]). Inside [`deferred`], the
    /// eviction waits for [`PendingInvalidations::apply`].
    pub async fn invalidate(&self, key: &str) -> Result<(), CacheError> {
        run(self, vec![Target::Key(self.full_key(key))], None, false).await
    }

    /// Evicts every entry stored with `tag`, as the tag renders (values in
    /// a tag template are escaped: see [`escape_key_part`](crate::escape_key_part)).
    pub async fn invalidate_tag(&self, tag: &str) -> Result<(), CacheError> {
        run(self, vec![Target::Tag(self.tag_key(tag))], None, false).await
    }

    /// Evicts every key that starts with `prefix` (after the cache's own
    /// prefix), walking the keyspace with `SCAN` in batches of 500. Returns how
    /// many keys it evicted. This is never deferred: it has nothing to defer
    /// but a pattern.
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<u64, CacheError> {
        let full_prefix = self.full_key(prefix);
        self.flights().evicted(&Change::Prefix(full_prefix.clone()));
        self.forget_local(&Change::Prefix(full_prefix.clone()));
        let pattern = format!("{}*", escape_glob(&full_prefix));
        let evicted = if self.is_cluster() {
            // SCAN walks one node's keyspace: walk every master's.
            let mut evicted = 0;
            for (host, port) in self.cluster_masters().await? {
                evicted += self.scan_and_unlink(&pattern, Some((&host, port))).await?;
            }
            evicted
        } else {
            self.scan_and_unlink(&pattern, None).await?
        };
        self.announce(Change::Prefix(full_prefix)).await;
        Ok(evicted)
    }

    /// `SCAN MATCH pattern` in batches, unlinking each batch; on one cluster
    /// node if `node` is given.
    async fn scan_and_unlink(
        &self,
        pattern: &str,
        node: Option<(&str, u16)>,
    ) -> Result<u64, CacheError> {
        let mut cursor = 0u64;
        let mut evicted = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH);
            let reply = match node {
                Some((host, port)) => self.send_to_node(&scan, host, port).await?,
                None => self.send(&scan).await?,
            };
            let (next, keys) = scan_reply(reply)?;
            if !keys.is_empty() {
                evicted += keys.len() as u64;
                // A cluster routes a multi-key UNLINK slot by slot.
                self.send(redis::cmd("UNLINK").arg(&keys)).await?;
            }
            cursor = next;
            if cursor == 0 {
                return Ok(evicted);
            }
        }
    }

    /// The full key of a tag's set.
    pub(crate) fn tag_key(&self, tag: &str) -> String {
        let mut builder = self.tag_builder(tag.len());
        builder.push_literal(tag);
        builder.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn scan_replies_are_parsed() {
        let reply = Value::Array(vec![
            Value::BulkString(b"17".to_vec()),
            Value::Array(vec![Value::BulkString(b"k1".to_vec())]),
        ]);
        assert_eq!(scan_reply(reply).unwrap(), (17, vec![b"k1".to_vec()]));
        assert!(scan_reply(Value::Nil).is_err());
    }
}
