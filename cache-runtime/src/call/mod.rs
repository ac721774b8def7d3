//! The cached-call state machine, plain Rust and testable without the macro.
//!
//! ```text
//! local tier ─ copy ──────────────────────────────────────► return it
//! lookup ─┬─ fresh hit ───────────────────────────────────► return it
//!         ├─ stale hit (`stale`) ─ spawn one refresh ─────► return it
//!         └─ miss, or Redis failed
//!              │ coalescing: join the key's flight
//!              ├─ follower ─ wait for the leader's entry ─► return it
//!              └─ leader
//!                   │ `lock`: take the Redis lock, or wait for its holder's entry
//!                   │ lease: take it, or wait for its holder's entry
//!                   └─ lead the run: the body, then store the entry under
//!                      the lease, and share it, if the shape
//!                      allows ────────────────────────────► return the result
//! ```
//!
//! The steps before the body are in `start.rs`, the run and its store in
//! `run.rs`; the lease itself in `lease.rs`.
//!
//! One lookup phase serves both entry points, parameterised by its
//! [`HitPolicy`]: [`FreshOnly`] for functions without `stale`, [`StaleAware`]
//! for those with it. One routine, [`run::lead`], shares and stores a
//! run's result for a caller and for a background refresh alike.
//!
//! Nothing here returns a cache error to the caller: a failed lookup runs the
//! body, a failed store still returns the body's value. Both are counted in
//! the function's [`CallSite`] and logged, rate-limited.

use std::future::Future;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::codec::{self, Decoded};
use crate::engine::Engine;

use crate::incident::Incident;
use crate::local::{LocalOps, LocalTier, Mark};
use crate::metrics::CallSite;
use crate::observe::{Observe, Observed, Outcome};
use crate::shape::Shape;

mod run;
mod start;

pub(crate) use run::put_call;
use run::{miss_boxed, spawn_refresh};
use start::Run;

/// An entry's full key, the full keys of the tag sets it joins, and the
/// eviction epoch before its lookup.
pub(crate) struct EntryKey {
    key: String,
    tags: Vec<String>,
    epoch: u64,
}

impl EntryKey {
    fn new(engine: &Engine, key: String, tags: Vec<String>) -> EntryKey {
        EntryKey {
            key,
            tags,
            epoch: engine.flights.epoch(),
        }
    }
}

/// What a lookup found.
enum Lookup<T> {
    Hit(Decoded<T>),
    /// No entry (or another caller's lease), or, with its bytes, one that
    /// no longer decodes: the miss's lease replaces those.
    Miss(Option<Vec<u8>>),
    /// Redis could not be asked.
    Failed,
}

/// How long a local copy of a value read from Redis may live, and its
/// encoded size (its weight in the local tier).
#[derive(Clone, Copy)]
struct CopyBounds {
    ttl: Duration,
    encoded_len: usize,
}

/// How the lookup phase treats a hit: whether an entry is still fresh.
pub(crate) trait Freshness {
    /// How many more milliseconds an entry that is fresh until
    /// `fresh_until` stays fresh: `None` for always, `Some(0)` for stale.
    fn fresh_for(fresh_until: Option<u64>) -> Option<u64>;
}

/// How a call treats a stale hit.
pub(crate) trait HitPolicy<S: Shape<R>, R, Fut>: Freshness {
    /// A stale hit: start the one background refresh of `key`.
    fn refresh(engine: &Arc<Engine>, site: &'static CallSite, key: EntryKey, body: Fut);
}

/// Functions without `stale`: every hit is fresh (entries carry no
/// freshness), so nothing is ever refreshed.
pub(crate) struct FreshOnly;

impl Freshness for FreshOnly {
    fn fresh_for(_: Option<u64>) -> Option<u64> {
        None
    }
}

impl<S: Shape<R>, R, Fut> HitPolicy<S, R, Fut> for FreshOnly {
    fn refresh(_: &Arc<Engine>, _: &'static CallSite, _: EntryKey, _: Fut) {
        debug_assert!(false, "`fresh_for` never reports a stale hit");
    }
}

/// Functions with `stale = …`: a stale entry is returned at once while the
/// body runs in the background, which is why the body must be
/// `Send + 'static` here.
pub(crate) struct StaleAware;

impl Freshness for StaleAware {
    fn fresh_for(fresh_until: Option<u64>) -> Option<u64> {
        fresh_until.map(|until| until.saturating_sub(codec::now_millis()))
    }
}

impl<S, R, Fut> HitPolicy<S, R, Fut> for StaleAware
where
    S: Shape<R>,
    S::Stored: Send,
    R: Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    fn refresh(engine: &Arc<Engine>, site: &'static CallSite, key: EntryKey, body: Fut) {
        spawn_refresh::<S, R, Fut>(engine, site, key, body);
    }
}

/// Runs one cached call: the lookup phase under hit policy `P`, then the
/// miss path. `key` is the full key (prefix included); `tags`, the full keys
/// of the tag sets the entry joins when stored.
///
/// With `stale` and a local tier, a local copy lives only while its value
/// is fresh: once it is stale, calls go to Redis, which serves the stale
/// value and starts the refresh, and the next fresh hit from Redis fills
/// the tier again.
///
/// Not an `async fn`: one would keep its arguments, the body among them, in
/// its state beside the `async` block that runs the call, and every call
/// moves that state a few times. Here the block owns them, once.
///
/// The code generic over the body's type `Fut` is compiled once per
/// annotated function, in the user's crate, and again whenever that crate's
/// code unit is rebuilt: so it is kept to this block and the miss path's
/// shell ([`run::miss`]), and everything they call is generic over the
/// value's type at most ([`look_up`]) or not at all.
pub(crate) fn cached_call<P, S, R, Fut>(
    engine: &Arc<Engine>,
    site: &'static CallSite,
    key: String,
    tags: Vec<String>,
    local_ops: Option<LocalOps<S::Stored>>,
    body: Fut,
) -> Observe<impl Future<Output = (R, Outcome)>>
where
    P: HitPolicy<S, R, Fut>,
    S: Shape<R>,
    Fut: Future<Output = R>,
{
    let key = EntryKey::new(engine, key, tags);
    let local = local_tier_for(engine, site, local_ops);
    let observed = Observed::start(site);
    let started = observed.started;
    let call = async move {
        let (redis_failed, local, undecodable) =
            match look_up::<P, S::Stored>(engine, site, &key, local, started).await {
                Found::Value(value, outcome) => return (S::from_stored(value), outcome),
                Found::Stale(value) => {
                    P::refresh(engine, site, key, body);
                    return (S::from_stored(value), Outcome::Stale);
                }
                Found::Nothing {
                    redis_failed,
                    local,
                    undecodable,
                } => (redis_failed, local, undecodable),
            };
        let run = Run {
            engine,
            site,
            key: &key,
            redis_failed,
            undecodable,
        };
        miss_boxed::<S, R, Fut>(run, body, local).await
    };
    Observe::new(call, observed)
}

/// What the lookup phase found.
enum Found<'a, T> {
    /// A value to return, and where it came from (`Local` or `Hit`).
    Value(T, Outcome),
    /// A stale value: return it, and refresh it in the background.
    Stale(T),
    /// Nothing to return: run the miss path, knowing whether Redis failed
    /// the lookup, with the local tier the result may be copied into, and
    /// the entry that did not decode, if that is what was found.
    Nothing {
        redis_failed: bool,
        local: LocalRead<'a, T>,
        undecodable: Option<Vec<u8>>,
    },
}

/// The lookup phase: the local tier, then Redis under freshness `P`.
/// Counts what it returns a value for.
async fn look_up<'a, P: Freshness, T: DeserializeOwned>(
    engine: &'a Engine,
    site: &'static CallSite,
    key: &EntryKey,
    local: LocalUse<'a, T>,
    started: Instant,
) -> Found<'a, T> {
    if let Some(value) = local_hit(key, &local, started) {
        site.record_local_hit();
        return Found::Value(value, Outcome::Local);
    }
    let local = mark_read(local, key);
    // With a local tier, the lookup also reads what a local copy needs (the
    // entry's remaining TTL, its encoded size), in the same round trip. Not
    // in a helper `async fn`, whose frame every call would copy.
    let (lookup, copy_bounds) = match local {
        Some(_) => lookup_with_ttl::<T>(engine, &key.key).await,
        None => (lookup::<T>(engine, &key.key).await, None),
    };
    let entry = match lookup {
        Lookup::Hit(entry) => entry,
        Lookup::Miss(undecodable) => {
            return Found::Nothing {
                redis_failed: false,
                local,
                undecodable,
            };
        }
        Lookup::Failed => {
            return Found::Nothing {
                redis_failed: true,
                local,
                undecodable: None,
            };
        }
    };
    let fresh_for = P::fresh_for(entry.fresh_until);
    if fresh_for == Some(0) {
        site.record_stale_hit();
        return Found::Stale(entry.value);
    }
    // A local copy never outlives the value's freshness.
    let copy_bounds = copy_bounds.map(|bounds| CopyBounds {
        ttl: fresh_for.map_or(bounds.ttl, |fresh| {
            bounds.ttl.min(Duration::from_millis(fresh))
        }),
        ..bounds
    });
    keep_local_copy(engine, key, &local, copy_bounds, &entry.value);
    site.record_hit();
    Found::Value(entry.value, Outcome::Hit)
}

/// The lookup: never an error, only what to do next.
async fn lookup<T: DeserializeOwned>(engine: &Engine, full_key: &str) -> Lookup<T> {
    // An eviction that failed is waiting to be applied: what Redis holds
    // may be what it should have evicted.
    if engine.parked.any() {
        return Lookup::Failed;
    }
    match engine.store.get(full_key).await {
        // Another caller's miss is running the body.
        Ok(Some(bytes)) if codec::is_lease(&bytes) => Lookup::Miss(None),
        Ok(Some(bytes)) => match engine.decode(&bytes) {
            Some(value) => Lookup::Hit(value),
            None => Lookup::Miss(Some(bytes)),
        },
        Ok(None) => Lookup::Miss(None),
        Err(error) => {
            warn_lookup_failed(engine, &error);
            Lookup::Failed
        }
    }
}

/// [`lookup`] for a call with a local tier: also reads the entry's
/// remaining TTL (in the same round trip), so that a local copy never
/// outlives it, and its encoded size.
async fn lookup_with_ttl<T: DeserializeOwned>(
    engine: &Engine,
    full_key: &str,
) -> (Lookup<T>, Option<CopyBounds>) {
    if engine.parked.any() {
        return (Lookup::Failed, None);
    }
    let entry = match engine.store.get_with_ttl(full_key).await {
        Ok(Some(entry)) if codec::is_lease(&entry.bytes) => return (Lookup::Miss(None), None),
        Ok(Some(entry)) => entry,
        Ok(None) => return (Lookup::Miss(None), None),
        Err(error) => {
            warn_lookup_failed(engine, &error);
            return (Lookup::Failed, None);
        }
    };
    let Some(decoded) = engine.decode(&entry.bytes) else {
        return (Lookup::Miss(Some(entry.bytes)), None);
    };
    let bounds = entry.ttl.map(|ttl| CopyBounds {
        ttl,
        encoded_len: entry.bytes.len(),
    });
    (Lookup::Hit(decoded), bounds)
}

/// Logs a lookup that Redis failed.
fn warn_lookup_failed(engine: &Engine, error: &crate::error::CacheError) {
    engine.warn_redis_failed(
        Incident::Lookup,
        "cache lookup failed, running the function uncached",
        error,
    );
}

/// The local tier one call uses, and how.
type LocalUse<'a, T> = Option<(&'a LocalTier, LocalOps<T>)>;

/// After a local miss: the local tier a value read from Redis (or made by
/// the body) may be copied into, and the changes counted before the read
/// (a read that crossed one is not kept).
pub(crate) type LocalRead<'a, T> = Option<(&'a LocalTier, LocalOps<T>, Mark)>;

/// Marks the local tier's changes before a read from Redis: only on a local
/// miss, so that a local hit does not pay for hashing the key again.
fn mark_read<'a, T>(local: LocalUse<'a, T>, key: &EntryKey) -> LocalRead<'a, T> {
    local.map(|(tier, ops)| (tier, ops, tier.mark(&key.key)))
}

/// The local tier this call uses, if any: the function's type must allow it
/// (`local_ops`), the function or the builder must ask for it, and no
/// eviction may be parked (local copies are not trusted then, as Redis is
/// not).
fn local_tier_for<'a, T>(
    engine: &'a Engine,
    site: &CallSite,
    local_ops: Option<LocalOps<T>>,
) -> LocalUse<'a, T> {
    local_ops
        .filter(|_| !engine.parked.any())
        .and_then(|ops| engine.local_for(site).map(|tier| (&**tier, ops)))
}

/// The local tier's copy of the entry, unless there is none or it had
/// expired by `now`. The call's start stands for "now": one clock read fewer
/// on the fastest path, for a copy that expired at most a few nanoseconds ago.
fn local_hit<T>(key: &EntryKey, local: &LocalUse<'_, T>, now: Instant) -> Option<T> {
    let (tier, ops) = local.as_ref()?;
    tier.get(&key.key, ops, now)
}

/// Keeps a local copy of a value read from Redis, within `bounds`; not one
/// that this process evicted while it was read (the eviction has already
/// dropped the local copy), nor one that an invalidation message crossed.
fn keep_local_copy<T>(
    engine: &Engine,
    key: &EntryKey,
    local: &LocalRead<'_, T>,
    bounds: Option<CopyBounds>,
    value: &T,
) {
    if let (Some((tier, ops, since)), Some(bounds)) = (local, bounds)
        && !engine.flights.evicted_since(&key.key, key.epoch)
    {
        tier.insert(&key.key, value, ops, bounds.ttl, bounds.encoded_len, *since);
    }
}
