//! The cached-call state machine, plain Rust and testable without the macro.
//!
//! ```text
//! local tier ─ copy ──────────────────────────────────────► return it
//! lookup ─┬─ fresh hit ───────────────────────────────────► return it
//!         ├─ fresh hit near its end (`early_refresh`, by
//!         │  an XFetch draw) ─ spawn one refresh ─────────► return it
//!         ├─ stale hit (`stale`) ─ spawn one refresh ─────► return it
//!         ├─ expired, kept by `fail_safe`, while a failure
//!         │  throttles the body (`fail_safe_throttle`) ───► return it
//!         └─ miss, expired (kept by `fail_safe`), or Redis failed
//!              │ coalescing: join the key's flight
//!              ├─ follower ─ wait for the leader's entry ─► return it
//!              └─ leader
//!                   │ `lock`: take the Redis lock, or wait for its holder's entry
//!                   │ lease: take it, or wait for its holder's entry (not
//!                   │   for an expired entry: its store replaces that one)
//!                   └─ lead the run: the body, then store the entry under
//!                      the lease, and share it, if the shape
//!                      allows ────────────────────────────► return the result
//! ```
//!
//! With an expired entry, a body that fails (`Err`), or passes its
//! `soft_timeout` (it then runs on, detached, and stores its result), is
//! answered with the expired entry's value: the fail-safe.
//!
//! The steps before the body are in `start.rs`, the run and its store in
//! `run.rs`, the runs no caller waits for (refreshes, bodies detached at
//! their `soft_timeout`) in `detached.rs`; the lease itself in `lease.rs`.
//!
//! One lookup phase serves both entry points, which differ by their
//! [`BodyPolicy`]: [`Attached`] for functions whose body only runs while
//! its caller waits, [`Detachable`] for those with `stale`, `soft_timeout`
//! or `early_refresh`. One routine, [`run::lead`], shares and stores a run's
//! result for a caller, a detached run and a background refresh alike.
//!
//! Nothing here returns a cache error to the caller: a failed lookup runs the
//! body, a failed store still returns the body's value. Both are counted in
//! the function's [`CallSite`] and logged, rate-limited.

use std::future::Future;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::codec::{self, Decoded};
use crate::engine::Engine;

use crate::incident::Incident;
use crate::local::{LocalOps, LocalTier, Mark};
use crate::metrics::{CallOptions, CallSite};
use crate::observe::{Observe, Observed, Outcome};
use crate::shape::{Shape, StoreRules};

mod detached;
mod run;
mod start;

use detached::{spawn_detached, spawn_refresh};
use run::miss_boxed;
pub(crate) use run::put_call;
use start::{Leader, Run};

/// An entry's full key, the full keys of the tag sets it joins, and the
/// eviction epoch before its lookup.
#[derive(Clone)]
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
    /// A value, and its entry's bytes (kept for `fail_safe`: a store that
    /// replaces an expired entry must find it still there).
    Hit(Decoded<T>, Vec<u8>),
    /// No entry (or another caller's lease), or, with its bytes, one that
    /// no longer decodes: the miss's lease replaces those.
    Miss(Option<Vec<u8>>),
    /// Redis could not be asked.
    Failed,
}

/// How long a local copy of a value read from Redis may live, and its
/// serialized size (its weight in the local tier).
#[derive(Clone, Copy)]
struct CopyBounds {
    ttl: Duration,
    serialized_len: usize,
}

/// How a call may run its body: only while its caller waits
/// ([`Attached`]), or also after the caller has its answer ([`Detachable`]):
/// a refresh of a stale value (`stale`) or of one about to expire
/// (`early_refresh`), and a body that passes its `soft_timeout`.
pub(crate) trait BodyPolicy<S: Shape<R>, R, Fut> {
    /// Starts the one background refresh of `key`, whose entry was read
    /// fresh until `seen_fresh_until` (ms since the Unix epoch).
    fn refresh(
        engine: &Arc<Engine>,
        site: &'static CallSite,
        key: EntryKey,
        seen_fresh_until: u64,
        rules: StoreRules<S::Stored>,
        body: Fut,
    );

    /// Runs the body and its store in the background under `leader`, and
    /// sends the caller its result; or gives them back.
    fn detach(
        engine: &Arc<Engine>,
        site: &'static CallSite,
        key: &EntryKey,
        leader: Leader,
        rules: StoreRules<S::Stored>,
        body: Fut,
    ) -> Detach<R, Fut>;
}

/// What became of a body asked to run detached.
pub(crate) enum Detach<R, Fut> {
    /// It runs; its result comes on the receiver.
    Running(oneshot::Receiver<R>),
    /// It cannot (the body may borrow, or there is no Tokio runtime): the
    /// caller runs it.
    Refused(Leader, Fut),
}

/// Functions without `stale`, `soft_timeout` or `early_refresh`: the body
/// runs only while its caller waits for it, so it may borrow.
pub(crate) struct Attached;

impl<S: Shape<R>, R, Fut> BodyPolicy<S, R, Fut> for Attached {
    fn refresh(
        _: &Arc<Engine>,
        _: &'static CallSite,
        _: EntryKey,
        _: u64,
        _: StoreRules<S::Stored>,
        _: Fut,
    ) {
        debug_assert!(
            false,
            "only a function with `stale` or `early_refresh` refreshes"
        );
    }

    fn detach(
        _: &Arc<Engine>,
        _: &'static CallSite,
        _: &EntryKey,
        leader: Leader,
        _: StoreRules<S::Stored>,
        body: Fut,
    ) -> Detach<R, Fut> {
        Detach::Refused(leader, body)
    }
}

/// Functions with `stale`, `soft_timeout` or `early_refresh`: the body may
/// run on after its caller has an answer, which is why it must be
/// `Send + 'static` here.
pub(crate) struct Detachable;

impl<S, R, Fut> BodyPolicy<S, R, Fut> for Detachable
where
    S: Shape<R>,
    S::Stored: Send + 'static,
    R: Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    fn refresh(
        engine: &Arc<Engine>,
        site: &'static CallSite,
        key: EntryKey,
        seen_fresh_until: u64,
        rules: StoreRules<S::Stored>,
        body: Fut,
    ) {
        spawn_refresh::<S, R, Fut>(engine, site, key, seen_fresh_until, rules, body);
    }

    fn detach(
        engine: &Arc<Engine>,
        site: &'static CallSite,
        key: &EntryKey,
        leader: Leader,
        rules: StoreRules<S::Stored>,
        body: Fut,
    ) -> Detach<R, Fut> {
        spawn_detached::<S, R, Fut>(engine, site, key, leader, rules, body)
    }
}

/// Runs one cached call: the lookup phase, then the miss path, with body
/// policy `P`. `key` is the full key (prefix included); `tags`, the full
/// keys of the tag sets the entry joins when stored.
///
/// With `stale`, `fail_safe` or `early_refresh` and a local tier, a local
/// copy lives only while its value is fresh: once it is stale, calls go to
/// Redis, which serves the stale value and starts the refresh, and the next
/// fresh hit from Redis fills the tier again.
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
    rules: StoreRules<S::Stored>,
    body: Fut,
) -> Observe<impl Future<Output = (R, Outcome)>>
where
    P: BodyPolicy<S, R, Fut>,
    S: Shape<R>,
    Fut: Future<Output = R>,
{
    let key = EntryKey::new(engine, key, tags);
    let local = local_tier_for(engine, site, local_ops);
    let observed = Observed::start(site);
    let started = observed.started;
    let call = async move {
        if crate::bypass::bypassed() {
            site.record_bypass();
            return (body.await, Outcome::Bypassed);
        }
        let (redis_failed, local, undecodable, expired) =
            match look_up::<S::Stored>(engine, site, &key, local, started).await {
                Found::Value(value, outcome) => return (S::from_stored(value), outcome),
                Found::Refresh {
                    value,
                    outcome,
                    seen_fresh_until,
                } => {
                    P::refresh(engine, site, key, seen_fresh_until, rules, body);
                    return (S::from_stored(value), outcome);
                }
                Found::Nothing {
                    redis_failed,
                    local,
                    undecodable,
                    expired,
                } => (redis_failed, local, undecodable, expired),
            };
        let (fallback, expired) = match expired {
            Some(Expired { value, bytes }) => (Some(value), Some(bytes)),
            None => (None, None),
        };
        let run = Run {
            engine,
            site,
            key: &key,
            redis_failed,
            undecodable,
            expired,
        };
        miss_boxed::<P, S, R, Fut>(run, body, local, fallback, rules).await
    };
    Observe::new(call, observed)
}

/// An entry past its freshness (and past `stale`) that `fail_safe` keeps:
/// its value, for when the body fails, and its bytes, which the body's
/// store must find still there.
struct Expired<T> {
    value: T,
    bytes: Vec<u8>,
}

/// What the lookup phase found.
enum Found<'a, T> {
    /// A value to return, and how it was found (`Local`, `Hit`, or
    /// `FailSafe` while a failure throttles the body).
    Value(T, Outcome),
    /// A value to return (`Stale`, or `Hit` about to expire), while one
    /// background refresh replaces its entry, read fresh until
    /// `seen_fresh_until`.
    Refresh {
        value: T,
        outcome: Outcome,
        seen_fresh_until: u64,
    },
    /// Nothing to return: run the miss path, knowing whether Redis failed
    /// the lookup, with the local tier the result may be copied into, the
    /// entry that did not decode, if that is what was found, and the
    /// expired entry that `fail_safe` keeps, if any.
    Nothing {
        redis_failed: bool,
        local: LocalRead<'a, T>,
        undecodable: Option<Vec<u8>>,
        expired: Option<Expired<T>>,
    },
}

/// How fresh a value read from Redis is, for its function's options.
enum Age {
    /// Fresh for this many more milliseconds (`None`: until its TTL), and
    /// whether an early refresh should start now.
    Fresh { fresh_for: Option<u64>, early: bool },
    /// Within `stale` past its freshness.
    Stale,
    /// Past its freshness and `stale`: kept by `fail_safe` only.
    Expired,
}

/// The age of an entry read now, made fresh until `fresh_until`, whose body
/// took `took_millis`, for a function with `options`; and, with
/// `early_refresh`, how long before the value's freshness ends a local copy
/// of it must end (ms).
fn age(options: &CallOptions, fresh_until: Option<u64>, took_millis: Option<u64>) -> (Age, u64) {
    let Some(until) = fresh_until.filter(|_| options.reads_freshness()) else {
        let fresh = Age::Fresh {
            fresh_for: None,
            early: false,
        };
        return (fresh, 0);
    };
    let now = codec::now_millis();
    if now >= until {
        let age = if now - until < options.stale_millis {
            Age::Stale
        } else {
            Age::Expired
        };
        return (age, 0);
    }
    let fresh_for = until - now;
    let (early, local_window) = match took_millis {
        Some(took) if options.early_refresh => (
            early_refresh_margin(took) >= fresh_for,
            took.saturating_mul(LOCAL_COPY_EARLY_END),
        ),
        _ => (false, 0),
    };
    let fresh = Age::Fresh {
        fresh_for: Some(fresh_for),
        early,
    };
    (fresh, local_window)
}

/// With `early_refresh`, a local copy ends this many body durations before
/// its value's freshness: in that last stretch every call reads Redis, where
/// each read draws whether to refresh (a copy held to the end would take
/// those reads, and their draws, away).
pub(crate) const LOCAL_COPY_EARLY_END: u64 = 3;

/// An early-refresh draw: how long before its end a value whose body took
/// `took_millis` is refreshed, for one read from Redis. XFetch (Vattani, Chierichetti
/// and Lowenstein, VLDB 2015) with β = 1: refresh when `took · -ln(u)`, for
/// `u` uniform in (0, 1], reaches the time left. The nearer the end and the
/// slower the body, the likelier; a hot key is read often enough near its
/// end that one read starts the refresh at least a body's time ahead.
fn early_refresh_margin(took_millis: u64) -> u64 {
    let draw = -(1.0 - crate::random::unit()).ln();
    (took_millis.max(1) as f64 * draw) as u64
}

/// The lookup phase: the local tier, then Redis, judged by the function's
/// options. Counts what it returns a value for.
async fn look_up<'a, T: DeserializeOwned>(
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
    // entry's remaining TTL), in the same round trip. Not
    // in a helper `async fn`, whose frame every call would copy.
    let (lookup, copy_bounds) = match local {
        Some(_) => lookup_with_ttl::<T>(engine, &key.key).await,
        None => (lookup::<T>(engine, &key.key).await, None),
    };
    let (entry, bytes) = match lookup {
        Lookup::Hit(entry, bytes) => (entry, bytes),
        Lookup::Miss(undecodable) => {
            return Found::Nothing {
                redis_failed: false,
                local,
                undecodable,
                expired: None,
            };
        }
        Lookup::Failed => {
            return Found::Nothing {
                redis_failed: true,
                local,
                undecodable: None,
                expired: None,
            };
        }
    };
    let (age, local_window) = age(&site.options, entry.fresh_until, entry.took_millis);
    let seen_fresh_until = entry.fresh_until.unwrap_or(0);
    let (fresh_for, early) = match age {
        Age::Fresh { fresh_for, early } => (fresh_for, early),
        Age::Stale => {
            site.record_stale_hit();
            return Found::Refresh {
                value: entry.value,
                outcome: Outcome::Stale,
                seen_fresh_until,
            };
        }
        Age::Expired => return expired(engine, site, key, local, entry.value, bytes),
    };
    // A local copy never outlives the value's freshness, and with
    // `early_refresh` ends before it (see `LOCAL_COPY_EARLY_END`).
    let copy_bounds = copy_bounds.map(|bounds| CopyBounds {
        ttl: fresh_for.map_or(bounds.ttl, |fresh| {
            bounds
                .ttl
                .min(Duration::from_millis(fresh.saturating_sub(local_window)))
        }),
        ..bounds
    });
    if !early {
        keep_local_copy(engine, key, &local, copy_bounds, &entry.value);
    }
    site.record_hit();
    if early {
        return Found::Refresh {
            value: entry.value,
            outcome: Outcome::Hit,
            seen_fresh_until,
        };
    }
    Found::Value(entry.value, Outcome::Hit)
}

/// An entry past its freshness and `stale`: with `fail_safe`, its value is
/// the fallback of the miss path (or the answer, while a recent failure
/// throttles the body); without, it is a miss, whose lease replaces it.
fn expired<'a, T>(
    engine: &Engine,
    site: &'static CallSite,
    key: &EntryKey,
    local: LocalRead<'a, T>,
    value: T,
    bytes: Vec<u8>,
) -> Found<'a, T> {
    let options = &site.options;
    if options.fail_safe_millis == 0 {
        return Found::Nothing {
            redis_failed: false,
            local,
            undecodable: Some(bytes),
            expired: None,
        };
    }
    if options.fail_safe_throttle_millis > 0 && engine.throttles.throttled(&key.key) {
        site.record_fail_safe();
        return Found::Value(value, Outcome::FailSafe);
    }
    Found::Nothing {
        redis_failed: false,
        local,
        undecodable: None,
        expired: Some(Expired { value, bytes }),
    }
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
            Some(value) => Lookup::Hit(value, bytes),
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
/// outlives it, and its serialized size.
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
        serialized_len: decoded.serialized_len,
    });
    (Lookup::Hit(decoded, entry.bytes), bounds)
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
        tier.insert(
            &key.key,
            value,
            ops,
            bounds.ttl,
            bounds.serialized_len,
            *since,
        );
    }
}
